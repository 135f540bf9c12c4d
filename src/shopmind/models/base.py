"""The recommender interface: parameters in __init__, learning in fit, scores for histories, top-k.

Every model scores a batch of users from their item histories (indices into `Interactions.item_ids`),
so sequential models, neighbourhood models and factor models share one evaluation path. Models declare
whether they serve cold users (no history) and cold items (no interactions, text only).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from ..data.interactions import Interactions


SCORE_BUDGET = 256 << 20  # bytes of dense scores one evaluation batch may hold


def bounded_batch(n_items: int, want: int, copies: int = 1) -> int:
    """Users per scoring batch so that `copies` float32 score blocks of batch x n_items stay within
    SCORE_BUDGET: at a million items a 1,024-user batch would be 4 GB per model."""
    return max(1, min(want, SCORE_BUDGET // max(1, 4 * n_items * copies)))


class Recommender(ABC):
    """Base class. Subclasses set `name`, the cold-start flags, implement `fit` and `score`."""

    name: ClassVar[str]
    supports_cold_users: ClassVar[bool] = False
    supports_cold_items: ClassVar[bool] = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.data: Interactions | None = None

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "data"
                and isinstance(v, (int, float, str, bool, type(None)))}

    @abstractmethod
    def fit(self, data: Interactions, item_features: np.ndarray | None = None) -> "Recommender":
        """Learn from the interactions (and optional item feature rows aligned with data.item_ids)."""

    def fit_validated(self, data: Interactions, item_features: np.ndarray | None,
                      valid_histories: Sequence[np.ndarray], valid_targets: np.ndarray,
                      valid_users: np.ndarray | None = None) -> "Recommender":
        """Fit with a validation set at hand (for early stopping). Models that tune something this way put it
        in `self.tuned` (e.g. {"epochs": 23}) so a refit can reuse it; the default simply fits.
        `valid_users`: the cases' user indices in `data`, for models that score known users by index."""
        return self.fit(data, item_features)

    tuned: dict[str, Any] = {}

    @abstractmethod
    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> np.ndarray:
        """Scores (len(histories) x n_items) for users with these histories (user indices when known)."""

    def prepare_top(self) -> Callable[[np.ndarray, int | None], Any]:
        """A function (history rows, user index or None) -> candidates.SourceTop that finds this model's best
        items without scoring the whole catalog where the model allows (see models/candidates.py). Prepared
        once per fitted model (it may build an index)."""
        from .candidates import prepared_dense, prepared_factors

        if hasattr(self, "factor_parts") and hasattr(self, "factor_users"):
            return prepared_factors(self)
        return prepared_dense(self)

    def recommend(self, history: Sequence[str], k: int = 10, exclude_seen: bool = True,
                  allowed: Sequence[str] | None = None, user: str | None = None) -> list[tuple[str, float]]:
        """Top-k (item id, score) for a history of item ids; unknown items in the history are ignored."""
        data = self._require_data()
        idx = np.array([i for i in (data.item_index(h) for h in history) if i is not None], np.int64)
        uidx = data.user_index(user) if user is not None else None
        scores = self.score([idx], None if uidx is None else np.array([uidx]))[0].astype(np.float64)
        if exclude_seen and len(idx):
            scores[idx] = -np.inf
        if allowed is not None:
            mask = np.full(len(scores), True)
            mask[[i for i in (data.item_index(a) for a in allowed) if i is not None]] = False
            scores[mask] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        return [(str(data.item_ids[i]), float(scores[i])) for i in top if np.isfinite(scores[i])]

    def similar_items(self, item: str, k: int = 10) -> list[tuple[str, float]]:
        """Items a user who just interacted with `item` would be shown next."""
        return self.recommend([item], k)

    def _require_data(self) -> Interactions:
        if self.data is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return self.data

    # Persistence without pickle: parameters as JSON, arrays as .npz (subclasses list their arrays).
    _arrays: ClassVar[tuple[str, ...]] = ()

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        data = self._require_data()
        (path / "model.json").write_text(json.dumps({"class": type(self).__name__, "params": self.params()}))
        np.savez(path / "arrays.npz", user_ids=data.user_ids.astype(str), item_ids=data.item_ids.astype(str),
                 seq_lengths=np.array([len(s) for s in data.sequences]),
                 seq_items=np.concatenate(data.sequences) if data.sequences else np.zeros(0, np.int64),
                 **{a: getattr(self, a) for a in self._arrays})

    @classmethod
    def load(cls, path: str | Path) -> "Recommender":
        path = Path(path)
        meta = json.loads((path / "model.json").read_text())
        if meta["class"] != cls.__name__:
            raise ValueError(f"{path} holds a {meta['class']}, not a {cls.__name__}")
        model = cls(**meta["params"])
        arrays = np.load(path / "arrays.npz", allow_pickle=False)
        bounds = np.concatenate([[0], np.cumsum(arrays["seq_lengths"])])
        items = arrays["seq_items"]  # read once: every [] on an NpzFile reads and decompresses the array again
        seqs = [items[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]
        model.data = Interactions(arrays["user_ids"].astype(object), arrays["item_ids"].astype(object), seqs)
        for a in cls._arrays:
            setattr(model, a, arrays[a])
        model._restore()
        return model

    def _restore(self) -> None:  # noqa: B027 - an optional hook, deliberately empty by default
        """Rebuild derived state after `load` (models whose state is cheap to recompute from the data)."""
