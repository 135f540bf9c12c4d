"""Candidate sources: fitted recommenders that each score every item for a user's history.

A source is any `Recommender`; the defaults are the ones that did best on their own in the recommender
benchmark and see different signals: item-KNN co-visitation, the SASRec transformer over the (live)
sequence, the softmax two-tower model with LM item text, and popularity. Each is fitted with early
stopping on the validation cases, then refitted on train + valid with the epoch counts found there
(Gorse's split: heavy offline training, cheap online scoring).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..data.interactions import Interactions
from ..models import MODELS, Recommender
from ..models.ray_train import fit_model

DEFAULT_SOURCES: dict[str, dict[str, Any]] = {
    "itemknn": {"neighbors": 50, "shrink": 10.0, "decay": 0.7},  # the benchmark's selected setting
    "sasrec": {},
    "twotower": {},
    "pop": {},
}
StepFn = Callable[[str], None]


class Sources:
    def __init__(self, config: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0, ray: str | None = None,
                 ray_workers: int = 2) -> None:
        """ray: a Ray cluster address; the neural sources then train on Ray Train with `ray_workers` workers."""
        self.config = {k: dict(v) for k, v in (config or DEFAULT_SOURCES).items()}
        unknown = sorted(set(self.config) - set(MODELS))
        if unknown:
            raise ValueError(f"unknown source model(s) {', '.join(unknown)}; known: {', '.join(sorted(MODELS))}")
        self.seed = seed
        self.ray, self.ray_workers = ray, ray_workers
        self.models: dict[str, Recommender] = {}

    @property
    def names(self) -> list[str]:
        return list(self.config)

    @property
    def data(self) -> Interactions:
        return next(iter(self.models.values()))._require_data()

    def fit_validated(self, data: Interactions, item_vectors: np.ndarray | None, histories: Sequence[np.ndarray],
                      targets: np.ndarray, users: np.ndarray | None = None, on_step: StepFn | None = None) -> "Sources":
        """Fit every source on `data`, early-stopping the neural ones on these validation cases."""
        for name, params in self.config.items():
            if on_step:
                on_step(f"source {name}: fitting with validation")
            model = MODELS[name](**params, seed=self.seed)
            self.models[name] = fit_model(model, data, item_vectors, (histories, targets, users), ray=self.ray,
                                          workers=self.ray_workers, on_step=on_step)
        return self

    def refit(self, data: Interactions, item_vectors: np.ndarray | None, on_step: StepFn | None = None) -> "Sources":
        """New sources fitted on `data` with what validation chose (e.g. epochs) fixed."""
        config = {name: {**params, **self.models[name].tuned} if name in self.models else params
                  for name, params in self.config.items()}
        out = Sources(config, self.seed, self.ray, self.ray_workers)
        for name, params in config.items():
            if on_step:
                on_step(f"source {name}: refitting on train + valid")
            out.models[name] = fit_model(MODELS[name](**params, seed=self.seed), data, item_vectors, ray=self.ray,
                                         workers=self.ray_workers, on_step=on_step)
        return out

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """name -> scores (len(histories) x n_items)."""
        return {name: np.asarray(m.score(histories, users), np.float32) for name, m in self.models.items()}

    def tops(self, history: np.ndarray, user: int | None = None) -> dict[str, Any]:
        """name -> models.candidates.SourceTop for one user: each source's best items, any item's score and the
        catalog-wide score statistics, without n_items-sized scores where the model allows. Each model's
        search structure (a FAISS index for factor models) is built on first use and kept."""
        prepared = self.__dict__.setdefault("_prepared", {})
        out = {}
        for name, model in self.models.items():
            entry = prepared.get(name)
            if entry is None or entry[0] is not model:
                entry = prepared[name] = (model, model.prepare_top())
            out[name] = entry[1](np.asarray(history, np.int64), user)
        return out

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, model in self.models.items():
            model.save(folder / name)
        (folder / "sources.json").write_text(json.dumps({"config": self.config, "seed": self.seed}))

    @classmethod
    def load(cls, folder: str | Path) -> "Sources":
        folder = Path(folder)
        meta = json.loads((folder / "sources.json").read_text())
        out = cls(meta["config"], meta["seed"])
        for name in out.config:
            out.models[name] = MODELS[name].load(folder / name)
        return out
