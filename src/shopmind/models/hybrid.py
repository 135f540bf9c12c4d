"""Hybrid: a validated blend of recency-weighted item-KNN and the text-enhanced SASRec.

Each component's scores are standardised per user (z-scores), then mixed: w * knn + (1 - w) * sasrec.
`fit_validated` trains SASRec with early stopping and picks w on the validation targets; a refit reuses
both (they are in `tuned`). The two see different signals: co-occurrence counts favour items bought with
the latest ones, the transformer generalises through order and product text.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data.interactions import Interactions
from .base import Recommender
from .itemknn import ItemKNN
from .sasrec import SASRec

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


def _z(scores: np.ndarray) -> np.ndarray:
    return (scores - scores.mean(axis=1, keepdims=True)) / (scores.std(axis=1, keepdims=True) + 1e-9)


class Hybrid(Recommender):
    name = "hybrid"
    supports_cold_items = True

    def __init__(self, weight: float = 0.3, neighbors: int = 50, shrink: float = 10.0, decay: float = 0.7,
                 epochs: int = 50, dim: int = 64, seed: int = 0) -> None:
        super().__init__(seed)
        self.weight, self.neighbors, self.shrink, self.decay = weight, neighbors, shrink, decay
        self.epochs, self.dim = epochs, dim
        self.tuned: dict[str, float] = {}

    def _knn(self) -> ItemKNN:
        return ItemKNN(self.neighbors, self.shrink, self.decay, seed=self.seed)

    def _sasrec(self) -> SASRec:
        return SASRec(dim=self.dim, epochs=self.epochs, seed=self.seed)

    def fit(self, data: Interactions, item_features: np.ndarray | None = None) -> "Hybrid":
        self.data = data
        self._k = self._knn().fit(data)
        self._s = self._sasrec().fit(data, item_features)
        return self

    def fit_validated(self, data: Interactions, item_features: np.ndarray | None,
                      valid_histories: Sequence[np.ndarray], valid_targets: np.ndarray) -> "Hybrid":
        self.data = data
        self._k = self._knn().fit(data)
        self._s = self._sasrec().fit_validated(data, item_features, valid_histories, valid_targets)
        a, b = self._parts(valid_histories)
        rows = np.arange(len(valid_targets))

        def ndcg(w: float) -> float:
            s = w * a + (1 - w) * b
            ranks = (s > s[rows, valid_targets][:, None]).sum(1)
            return float(np.where(ranks < 10, 1 / np.log2(ranks + 2), 0).mean())

        self.weight = max(WEIGHTS, key=ndcg)
        self.tuned = {"weight": self.weight, **self._s.tuned}
        return self

    def _parts(self, histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        a = np.vstack([_z(self._k.score(histories[i:i + 1024])) for i in range(0, len(histories), 1024)])
        b = np.vstack([_z(self._s.score(histories[i:i + 1024])) for i in range(0, len(histories), 1024)])
        return a, b

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> np.ndarray:
        a, b = self._parts(histories)
        return (self.weight * a + (1 - self.weight) * b).astype(np.float32)

    def save(self, path):  # type: ignore[override]
        from pathlib import Path

        super().save(path)
        self._s.save(Path(path) / "sasrec")

    @classmethod
    def load(cls, path):  # type: ignore[override]
        from pathlib import Path

        model = super().load(path)
        model._k = model._knn().fit(model._require_data())
        model._s = SASRec.load(Path(path) / "sasrec")
        return model
