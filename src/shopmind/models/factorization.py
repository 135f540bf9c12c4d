"""Matrix factorisation with the `implicit` library: ALS (weighted least squares) and BPR.

ALS recomputes a user's factors from whatever history it is given (one least-squares solve), so it scores
histories it never trained on; BPR uses the factors learned for the user.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from ..data.interactions import Interactions
from .base import Recommender


def _threads() -> int:
    return os.cpu_count() or 1


class ALS(Recommender):
    name = "als"
    _arrays = ("user_factors", "item_factors")

    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 10.0, iterations: int = 15,
                 seed: int = 0) -> None:
        super().__init__(seed)
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations

    def fit(self, data: Interactions, item_features: np.ndarray | None = None) -> "ALS":
        from implicit.cpu.als import AlternatingLeastSquares

        self.data = data
        with threadpool_limits(1, "blas"):  # implicit runs its own threads; nested BLAS threads slow it down
            model = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                                            iterations=self.iterations, random_state=self.seed, num_threads=_threads())
            model.fit(data.matrix(binary=True), show_progress=False)
        self.user_factors = np.asarray(model.user_factors, np.float32)
        self.item_factors = np.asarray(model.item_factors, np.float32)
        self._model = model
        return self

    def _user_vectors(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Least-squares user factors for the histories (implicit's confidence weighting, alpha * count)."""
        y = self.item_factors
        reg = self.regularization * np.eye(y.shape[1], dtype=np.float64)
        yty = y.T.astype(np.float64) @ y
        out = np.zeros((len(histories), y.shape[1]), np.float32)
        for r, h in enumerate(histories):
            if not len(h):
                continue
            items = np.unique(h)  # fit uses the binary matrix, so repeats add nothing
            conf = self.alpha * np.ones(len(items))
            yi = y[items].astype(np.float64)
            a = yty + (yi.T * conf) @ yi + reg
            b = (yi.T * (1 + conf)).sum(axis=1)
            out[r] = np.linalg.solve(a, b)
        return out

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> np.ndarray:
        return self._user_vectors(histories) @ self.item_factors.T

    def factor_parts(self) -> tuple[np.ndarray, None]:
        return self.item_factors, None

    def factor_users(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> np.ndarray:
        return self._user_vectors(histories)


class BPR(Recommender):
    name = "bpr"
    _arrays = ("user_factors", "item_factors")

    def __init__(self, factors: int = 64, learning_rate: float = 0.05, regularization: float = 0.01,
                 iterations: int = 100, seed: int = 0) -> None:
        super().__init__(seed)
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations

    def fit(self, data: Interactions, item_features: np.ndarray | None = None) -> "BPR":
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        self.data = data
        model = BayesianPersonalizedRanking(factors=self.factors, learning_rate=self.learning_rate,
                                            regularization=self.regularization, iterations=self.iterations,
                                            random_state=self.seed, num_threads=_threads())
        with threadpool_limits(1, "blas"):
            model.fit(sp.csr_matrix(data.matrix(binary=True)), show_progress=False)
        self.user_factors = np.asarray(model.user_factors, np.float32)
        self.item_factors = np.asarray(model.item_factors, np.float32)
        return self

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> np.ndarray:
        return self.factor_users(histories, users) @ self.item_factors.T

    def factor_parts(self) -> tuple[np.ndarray, None]:
        return self.item_factors, None

    def factor_users(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> np.ndarray:
        if users is None:
            # Unknown user: the mean factors of the history items stand in for a user vector.
            return np.stack([self.item_factors[h].mean(0) if len(h) else np.zeros(self.item_factors.shape[1])
                             for h in histories]).astype(np.float32)
        return self.user_factors[users]
