"""Item-based nearest neighbours: cosine similarity of items' user columns, scored from the history.

score(i) = sum over history items j of w_j * sim(j, i), where w_j = decay^(steps from the end), so with
decay < 1 the latest items count most (next-item data rewards that). Similarities are shrunk towards 0
for items with few users and cut to the `neighbors` most similar items per item.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp

from ..data.interactions import Interactions
from .base import Recommender


BLOCK_PAIRS = 20_000_000  # co-occurrence entries computed at once (about 240 MB)


class ItemKNN(Recommender):
    name = "itemknn"
    supports_cold_users = False

    def __init__(self, neighbors: int = 100, shrink: float = 0.0, decay: float = 1.0, seed: int = 0) -> None:
        super().__init__(seed)
        self.neighbors = neighbors
        self.shrink = shrink
        self.decay = decay

    def fit(self, data: Interactions, item_features: np.ndarray | None = None) -> "ItemKNN":
        self.data = data
        x = data.matrix(binary=True).tocsr()
        counts = np.asarray(x.sum(axis=0)).ravel()
        norms = np.sqrt(counts)
        xt = x.T.tocsr()
        # The co-occurrence matrix is built a block of items at a time and cut to the top neighbours at once:
        # whole, it holds sum over users of (history length)^2 entries (billions at 20M events), a block at most
        # BLOCK_PAIRS. An item's share of that is the summed history lengths of its users.
        pairs = xt @ np.diff(x.indptr).astype(np.float64)
        bounds = np.searchsorted(np.cumsum(pairs), np.arange(1, int(pairs.sum() // BLOCK_PAIRS) + 1) * BLOCK_PAIRS)
        edges = np.unique(np.concatenate([[0], np.minimum(bounds + 1, data.n_items), [data.n_items]]))
        parts = []
        for a, b in zip(edges[:-1], edges[1:]):
            co = (xt[a:b] @ x).tocsr().astype(np.float32)
            co.setdiag(0, k=int(a))  # an item is not its own neighbour
            co.eliminate_zeros()
            rows = np.repeat(np.arange(a, b), np.diff(co.indptr))
            co.data = co.data / (norms[rows] * norms[co.indices] + self.shrink)
            parts.append(self._top_k(co, self.neighbors))
        self.similarity = sp.vstack(parts, format="csr", dtype=np.float32) if parts else \
            sp.csr_matrix((data.n_items, data.n_items), dtype=np.float32)
        return self

    def _restore(self) -> None:
        # The sparse similarity is recomputed from the saved interactions (deterministic, about a second).
        self.fit(self._require_data())

    @staticmethod
    def _top_k(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
        """Keep the k largest entries of each row."""
        indptr, indices, data = [0], [], []
        for r in range(m.shape[0]):
            s, e = m.indptr[r], m.indptr[r + 1]
            vals, cols = m.data[s:e], m.indices[s:e]
            if e - s > k:
                keep = np.argpartition(-vals, k)[:k]
                vals, cols = vals[keep], cols[keep]
            indices.append(cols)
            data.append(vals)
            indptr.append(indptr[-1] + len(cols))
        return sp.csr_matrix((np.concatenate(data) if data else [], np.concatenate(indices) if indices else [], indptr),
                             shape=m.shape, dtype=np.float32)

    def prepare_top(self) -> Callable[[np.ndarray, int | None], Any]:
        """The user's scores as one sparse row (history weights @ similarity): every other item scores 0."""
        from .candidates import sparse_top

        sim = self.similarity
        n_items = sim.shape[0]

        def top(history: np.ndarray, user: int | None) -> Any:
            h = np.asarray(history, np.int64)
            if not len(h):
                return sparse_top(np.zeros(0, np.int64), np.zeros(0, np.float32), n_items)
            w = sp.csr_matrix((self.decay ** np.arange(len(h) - 1, -1, -1, dtype=np.float64),
                               (np.zeros(len(h), np.int64), h)), shape=(1, n_items), dtype=np.float32)
            row = (w @ sim).tocsr()
            return sparse_top(row.indices, row.data, n_items)

        return top

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> np.ndarray:
        rows, cols, vals = [], [], []
        for r, h in enumerate(histories):
            if len(h):
                w = self.decay ** np.arange(len(h) - 1, -1, -1, dtype=np.float64)
                rows.append(np.full(len(h), r))
                cols.append(h)
                vals.append(w)
        n_items = self.similarity.shape[0]
        if not rows:
            return np.zeros((len(histories), n_items), np.float32)
        weights = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                shape=(len(histories), n_items), dtype=np.float32)
        return np.asarray((weights @ self.similarity).todense(), dtype=np.float32)
