"""Interactions: the integer-indexed view of events that recommenders train on (RecTools' Dataset idea).

Users and items get dense indices; each user has a time-ordered item sequence and the matrix holds
interaction counts. Items of the catalog without events keep an index too (cold items).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp


@dataclass
class Interactions:
    """Time-ordered interactions with dense user and item indices."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    sequences: list[np.ndarray]  # per user index: item indices, oldest first
    item_groups: sp.csr_matrix | None = None  # items x groups (categories, genres, attributes), 1 = member
    _user_index: dict[str, int] = field(default_factory=dict, repr=False)
    _item_index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._user_index = {u: i for i, u in enumerate(self.user_ids)}
        self._item_index = {it: i for i, it in enumerate(self.item_ids)}

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_index(self, user_id: str) -> int | None:
        return self._user_index.get(user_id)

    def item_index(self, item_id: str) -> int | None:
        return self._item_index.get(item_id)

    def matrix(self, binary: bool = False) -> sp.csr_matrix:
        """Users x items: interaction counts (or 1/0)."""
        rows = np.repeat(np.arange(self.n_users), [len(s) for s in self.sequences])
        cols = np.concatenate(self.sequences) if self.sequences else np.zeros(0, np.int64)
        m = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(self.n_users, self.n_items))
        if binary:
            m.data[:] = 1.0
        return m

    def item_popularity(self) -> np.ndarray:
        return np.bincount(np.concatenate(self.sequences), minlength=self.n_items).astype(np.float64) \
            if self.sequences else np.zeros(self.n_items)

    def with_groups(self, labels: Sequence[Sequence[str]]) -> "Interactions":
        """Attach item groups: `labels[i]` are the group names of item i (e.g. its categories)."""
        names = sorted({g for gs in labels for g in gs})
        index = {g: j for j, g in enumerate(names)}
        rows = np.repeat(np.arange(len(labels)), [len(set(gs)) for gs in labels])
        cols = np.array([index[g] for gs in labels for g in dict.fromkeys(gs)], np.int64)
        self.item_groups = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)),
                                         shape=(self.n_items, max(len(names), 1)))
        return self

    @classmethod
    def from_frame(cls, events: pd.DataFrame, items: Iterable[str] = (), order: Sequence[str] = ("seq",)
                   ) -> "Interactions":
        """events: columns user_id, item_id and the ordering columns. `items`: the whole catalog, so items
        without events get an index too. Users are indexed in sorted order for reproducibility."""
        ev = events.sort_values(["user_id", *order], kind="stable")
        item_ids = np.array(sorted(set(map(str, items)) | set(ev["item_id"].astype(str))), dtype=object)
        index = {it: i for i, it in enumerate(item_ids)}
        codes = ev["item_id"].astype(str).map(index).to_numpy(np.int64)
        users, starts = np.unique(ev["user_id"].astype(str).to_numpy(), return_index=True)
        bounds = list(starts) + [len(ev)]
        sequences = [codes[bounds[i]:bounds[i + 1]] for i in range(len(users))]
        return cls(np.array(users, dtype=object), item_ids, sequences)
