"""Most popular items in the training data (the floor every model must beat)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

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

    def prepare_top(self) -> Callable[[np.ndarray, int | None], Any]:
        """Every user gets the same scores: one order and one mean and deviation, computed here."""
        from .candidates import pop_top

        pop = self.popularity.astype(np.float32)
        order = np.lexsort((np.arange(len(pop)), -pop))
        top = pop_top(order, pop, float(pop.mean()), float(pop.std()))
        return lambda history, user: top



class PopularInCategory(Recommender):
    """Most popular items within the groups (categories, genres, attributes) of the user's history.

    score(i | u) = sum over groups g of P(g | u) * P(i | g), where P(g | u) is the recency-weighted (`decay`
    per step back) share of the user's history in g and P(i | g) is item i's share of g's interactions. A
    tiny multiple of global popularity breaks ties and ranks items outside the user's groups (and cold users).
    """

    name = "pop-cat"
    supports_cold_users = True
    _arrays = ("popularity", "group_indptr", "group_indices", "group_shape")

    def __init__(self, decay: float = 0.8, seed: int = 0) -> None:
        super().__init__(seed)
        self.decay = decay

    def fit(self, data: Interactions, item_features: np.ndarray | None = None) -> "PopularInCategory":
        import scipy.sparse as sp

        self.data = data
        self.popularity = data.item_popularity()
        g = data.item_groups if data.item_groups is not None else sp.csr_matrix((data.n_items, 1), dtype=np.float32)
        self.group_indptr, self.group_indices, self.group_shape = g.indptr, g.indices, np.array(g.shape)
        self._restore()
        return self

    def _restore(self) -> None:
        import scipy.sparse as sp

        self._groups = sp.csr_matrix((np.ones(len(self.group_indices), np.float32), self.group_indices,
                                      self.group_indptr), shape=tuple(self.group_shape))
        totals = np.asarray(self._groups.T @ self.popularity).ravel()
        share = sp.diags(self.popularity.astype(np.float32)) @ self._groups @ sp.diags(1 / np.maximum(totals, 1))
        self._share = share.T.tocsr().astype(np.float32)  # groups x items: P(i | g)

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> np.ndarray:
        n_groups = self._groups.shape[1]
        weights = np.zeros((len(histories), n_groups), np.float32)
        for r, h in enumerate(histories):
            if len(h):
                w = self.decay ** np.arange(len(h) - 1, -1, -1, dtype=np.float32)
                g = np.asarray(self._groups[h].multiply(w[:, None]).sum(axis=0)).ravel()
                weights[r] = g / max(g.sum(), 1e-9)
        match = np.asarray((self._share.T @ weights.T).T)
        return (match + 1e-6 * self.popularity / max(self.popularity.sum(), 1)).astype(np.float32)
