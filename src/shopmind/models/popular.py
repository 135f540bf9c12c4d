"""Most popular items in the training data (the floor every model must beat)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data.interactions import Interactions
from .base import Recommender


class MostPopular(Recommender):
    name = "pop"
    supports_cold_users = True
    _arrays = ("popularity",)

    def fit(self, data: Interactions, item_features: np.ndarray | None = None) -> "MostPopular":
        self.data = data
        self.popularity = data.item_popularity()
        return self

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> np.ndarray:
        return np.tile(self.popularity.astype(np.float32), (len(histories), 1))

