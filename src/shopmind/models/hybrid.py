"""Hybrid: a validated blend of recency-weighted item-KNN, the text-enhanced SASRec and the two-tower model.

Each component's scores are standardised per user (z-scores), then mixed with weights that sum to 1.
`fit_validated` trains the neural parts with early stopping and picks the weights on the validation targets
(a grid over the simplex, step 0.1, on at most `valid_max` users); a refit reuses weights and epoch counts
(they are in `tuned`). The parts see different signals: co-occurrence counts favour items bought with the
latest ones, the transformer models order, the two-tower model a decayed interest profile, and both neural
parts generalise through the product text.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from ..data.interactions import Interactions
from .base import Recommender
from .itemknn import ItemKNN
from .sasrec import SASRec
from .training import valid_sample
from .twotower import TwoTower

PARTS = ("itemknn", "sasrec", "twotower")


def _z(scores: np.ndarray) -> np.ndarray:
    return (scores - scores.mean(axis=1, keepdims=True)) / (scores.std(axis=1, keepdims=True) + 1e-9)


def simplex(parts: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """All weight vectors with `parts` entries, multiples of `step`, summing to 1."""
    n = round(1 / step)
    return [tuple(c / n for c in combo) for combo in itertools.product(range(n + 1), repeat=parts) if sum(combo) == n]


class Hybrid(Recommender):
    name = "hybrid"
    supports_cold_items = True

    def __init__(self, w_itemknn: float = 0.2, w_sasrec: float = 0.4, w_twotower: float = 0.4,
                 neighbors: int = 50, shrink: float = 10.0, decay: float = 0.7, sasrec_epochs: int = 50,
                 twotower_epochs: int = 60, valid_max: int = 5000, log_dir: str | None = None, seed: int = 0) -> None:
        super().__init__(seed)
        self.w_itemknn, self.w_sasrec, self.w_twotower = w_itemknn, w_sasrec, w_twotower
        self.neighbors, self.shrink, self.decay = neighbors, shrink, decay
        self.sasrec_epochs, self.twotower_epochs = sasrec_epochs, twotower_epochs
        self.valid_max, self.log_dir = valid_max, log_dir
        self.tuned: dict[str, float] = {}

    @property
    def weights(self) -> tuple[float, float, float]:
        return self.w_itemknn, self.w_sasrec, self.w_twotower

    def _models(self) -> tuple[ItemKNN, SASRec, TwoTower]:
        return (ItemKNN(self.neighbors, self.shrink, self.decay, seed=self.seed),
                SASRec(epochs=self.sasrec_epochs, log_dir=self.log_dir, seed=self.seed),
                TwoTower(epochs=self.twotower_epochs, log_dir=self.log_dir, seed=self.seed))

    def fit(self, data: Interactions, item_features: np.ndarray | None = None) -> "Hybrid":
        self.data = data
        knn, sas, tt = self._models()
        self._parts = (knn.fit(data), sas.fit(data, item_features), tt.fit(data, item_features))
        return self

    def fit_validated(self, data: Interactions, item_features: np.ndarray | None,
                      valid_histories: Sequence[np.ndarray], valid_targets: np.ndarray,
                      valid_users: np.ndarray | None = None) -> "Hybrid":
        self.data = data
        knn, sas, tt = self._models()
        self._parts = (knn.fit(data), sas.fit_validated(data, item_features, valid_histories, valid_targets),
                       tt.fit_validated(data, item_features, valid_histories, valid_targets))
        hist, targets, _ = valid_sample(valid_histories, valid_targets, None, self.valid_max, self.seed)
        scores = self._z_scores(hist)
        rows = np.arange(len(targets))

        def ndcg(w: tuple[float, ...]) -> float:
            s = sum(wi * part for wi, part in zip(w, scores) if wi)
            ranks = (s > s[rows, targets][:, None]).sum(1)
            return float(np.where(ranks < 10, 1 / np.log2(ranks + 2), 0).mean())

        self.w_itemknn, self.w_sasrec, self.w_twotower = max(simplex(3), key=ndcg)
        self.tuned = {"w_itemknn": self.w_itemknn, "w_sasrec": self.w_sasrec, "w_twotower": self.w_twotower,
                      "sasrec_epochs": self._parts[1].tuned["epochs"], "twotower_epochs": self._parts[2].tuned["epochs"]}
        return self

    def _z_scores(self, histories: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [np.vstack([_z(m.score(histories[i:i + 1024])) for i in range(0, len(histories), 1024)])
                for m in self._parts]

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> np.ndarray:
        out = np.zeros((len(histories), self._require_data().n_items), np.float32)
        for w, m in zip(self.weights, self._parts):
            if w:
                out += w * _z(m.score(histories)).astype(np.float32)
        return out

    def save(self, path):  # type: ignore[override]
        from pathlib import Path

        super().save(path)
        self._parts[1].save(Path(path) / "sasrec")
        self._parts[2].save(Path(path) / "twotower")

    @classmethod
    def load(cls, path):  # type: ignore[override]
        from pathlib import Path

        model = super().load(path)
        knn = model._models()[0].fit(model._require_data())
        model._parts = (knn, SASRec.load(Path(path) / "sasrec"), TwoTower.load(Path(path) / "twotower"))
        return model
