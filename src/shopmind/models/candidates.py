"""One source's best items for one user without a score for every item of a million-item catalog.

`top_for(model, history, user)` gives a `SourceTop`: the items in the source's order (best first, ties by row,
as the dense path orders them), any item's score, and the mean and standard deviation of the scores over the
whole catalog (the ranker's z feature), each computed without an `n_items` vector where the model allows:
- popularity: one precomputed order;
- item-KNN: the sparse row `history weights @ similarity` (every other item scores 0);
- factor models (SASRec, two-tower, LightGCN, ALS, BPR: score = u·v_i + b_i): a FAISS inner-product index over
  the item vectors with the bias appended ([u, 1]·[v_i, b_i] is the score). Exact (flat) up to `EXACT_MAX`
  items, HNSW up to `HNSW_MAX`, IVF above. HNSW searches inner product directly: on clustered factors that
  found 99% of the exact top 50 at efSearch 160, where the usual reduction to cosine (a padding dimension that
  equalises norms) found 88% (tests/models/test_candidates.py measures recall on each build). Mean and
  variance of the scores come exactly from the item vectors' mean and covariance;
- any other model: its dense scores (correct, not scaled).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

EXACT_MAX = 100_000
HNSW_MAX = 300_000


@dataclass
class SourceTop:
    """A source's view of one user. `ranked(k, blocked)`: the k best rows that are not blocked, best first."""

    n_items: int
    mean: float
    std: float
    score_at: Callable[[np.ndarray], np.ndarray]
    ranked: Callable[[int, np.ndarray | None], np.ndarray]
    dense: np.ndarray | None = None  # the whole score vector when the source has nothing better
    _cache: dict = field(default_factory=dict)

    def ranks(self, rows: np.ndarray, depth: int) -> np.ndarray:
        """1-based rank of `rows` among all items (ties by row), capped at depth + 1."""
        top = self._cache.get(depth)
        if top is None:
            top = self._cache[depth] = self.ranked(depth, None)
        where = {int(r): i + 1 for i, r in enumerate(top)}
        return np.array([where.get(int(r), depth + 1) for r in rows], np.float32)


def _order_by(scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """rows sorted by score descending, ties by row ascending."""
    return rows[np.lexsort((rows, -scores))]


def dense_top(scores: np.ndarray) -> SourceTop:
    s = np.asarray(scores, np.float32)
    finite = np.isfinite(s)
    mu, sd = (float(s[finite].mean()), float(s[finite].std())) if finite.any() else (0.0, 1.0)

    def ranked(k: int, blocked: np.ndarray | None) -> np.ndarray:
        v = np.where(blocked, -np.inf, s) if blocked is not None else s
        n = min(k, int(np.isfinite(v).sum()))
        if n <= 0:
            return np.zeros(0, np.int64)
        if n < len(v):  # the n best; among items tied with the n-th, the lowest rows
            kth = v[np.argpartition(-v, n - 1)[n - 1]]
            above = np.flatnonzero(v > kth)
            top = np.concatenate([above, np.flatnonzero(v == kth)[:n - len(above)]])
        else:
            top = np.arange(len(v))
        return _order_by(v[top], top)

    return SourceTop(len(s), mu, sd, lambda rows: s[rows], ranked, dense=s)


def pop_top(order: np.ndarray, popularity: np.ndarray, mu: float, sd: float) -> SourceTop:
    """Popularity: `order` is every row by popularity (descending, ties by row), computed once per model."""

    def ranked(k: int, blocked: np.ndarray | None) -> np.ndarray:
        if blocked is None:
            return order[:k]
        out, start, step = [], 0, max(4 * k, 1024)
        while start < len(order) and sum(len(o) for o in out) < k:
            chunk = order[start:start + step]
            out.append(chunk[~blocked[chunk]])
            start += step
            step *= 4
        return np.concatenate(out)[:k] if out else np.zeros(0, np.int64)

    pop = popularity.astype(np.float32)
    return SourceTop(len(pop), mu, sd, lambda rows: pop[rows], ranked)


def sparse_top(cols: np.ndarray, vals: np.ndarray, n_items: int) -> SourceTop:
    """Scores that are `vals` at `cols` and 0 elsewhere (item-KNN); all scores are >= 0."""
    cols = np.asarray(cols, np.int64)
    vals = np.asarray(vals, np.float32)
    nz = vals != 0
    cols, vals = cols[nz], vals[nz]
    mu = float(vals.sum(dtype=np.float64) / n_items)
    sd = float(np.sqrt(max(float((vals.astype(np.float64) ** 2).sum() / n_items) - mu * mu, 0.0)))
    order = _order_by(vals, cols)
    lookup = dict(zip(cols.tolist(), vals.tolist()))

    def score_at(rows: np.ndarray) -> np.ndarray:
        return np.array([lookup.get(int(r), 0.0) for r in rows], np.float32)

    def ranked(k: int, blocked: np.ndarray | None) -> np.ndarray:
        head = order if blocked is None else order[~blocked[order]]
        if len(head) >= k:
            return head[:k]
        # Then the items scoring 0, by row (how the dense path breaks the tie).
        mask = np.ones(n_items, bool)
        mask[cols] = False
        if blocked is not None:
            mask &= ~blocked
        zeros = np.flatnonzero(mask)[:k - len(head)]
        return np.concatenate([head, zeros])

    return SourceTop(n_items, mu, sd, score_at, ranked)


class FactorIndex:
    """Maximum inner product search over score = u·v_i + b_i (see the module docstring)."""

    def __init__(self, vectors: np.ndarray, bias: np.ndarray | None = None, exact_max: int = EXACT_MAX,
                 hnsw_max: int = HNSW_MAX, ef_search: int = 200, nprobe: int = 48) -> None:
        import faiss

        v = np.asarray(vectors, np.float32)
        b = np.zeros(len(v), np.float32) if bias is None else np.asarray(bias, np.float32).ravel()
        self.aug = np.hstack([v, b[:, None]]).astype(np.float32)  # score = [u, 1] · [v, b]
        self.n_items, self.dim = self.aug.shape
        a64 = self.aug.astype(np.float64)
        self.mean_vec = a64.mean(0)
        self.cov = np.cov(a64, rowvar=False, bias=True) if self.n_items > 1 else np.zeros((self.dim, self.dim))
        data = np.ascontiguousarray(self.aug)
        d = data.shape[1]
        if self.n_items <= exact_max:
            self.index = faiss.IndexFlatIP(d)
            self.kind = "exact"
        elif self.n_items <= hnsw_max:
            self.index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = 120
            self.kind = f"hnsw(M=32, efSearch={ef_search})"
        else:
            nlist = int(4 * np.sqrt(self.n_items))
            quantizer = faiss.IndexFlatIP(d)
            self.index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            self.index.train(data[rng.choice(self.n_items, min(self.n_items, 64 * nlist), replace=False)])
            self.kind = f"ivf(nlist={nlist}, nprobe={nprobe})"
        self.index.add(data)
        self.ef_search, self.nprobe = ef_search, nprobe

    def _params(self, k: int, sel=None):  # noqa: ANN001 - faiss objects
        import faiss

        if self.kind.startswith("hnsw"):
            return faiss.SearchParametersHNSW(sel=sel, efSearch=max(self.ef_search, k)) if sel is not None \
                else faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
        if self.kind.startswith("ivf"):
            return faiss.SearchParametersIVF(sel=sel, nprobe=self.nprobe) if sel is not None \
                else faiss.SearchParametersIVF(nprobe=self.nprobe)
        return faiss.SearchParameters(sel=sel) if sel is not None else None

    def search(self, u: np.ndarray, k: int, blocked: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k best rows (not blocked) for the user vector u, best first (ties by row), with their scores."""
        import faiss

        q = np.ones((1, self.dim), np.float32)
        q[0, :-1] = u
        allowed = self.n_items if blocked is None else int(self.n_items - blocked.sum())
        k = min(k, allowed)
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        sel = None if blocked is None else faiss.IDSelectorBitmap(np.packbits(~blocked, bitorder="little"))
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # one request, one thread: requests run side by side
        try:
            _, rows = self.index.search(q, k, params=self._params(k, sel))
        finally:
            faiss.omp_set_num_threads(threads)
        rows = rows[0][rows[0] >= 0].astype(np.int64)
        scores = self.aug[rows] @ q[0]
        order = np.lexsort((rows, -scores))
        return rows[order], scores[order]

    def top(self, u: np.ndarray) -> SourceTop:
        q = np.append(np.asarray(u, np.float64), 1.0)
        mu = float(q @ self.mean_vec)
        sd = float(np.sqrt(max(float(q @ self.cov @ q), 0.0)))
        uf = np.asarray(u, np.float32)

        def score_at(rows: np.ndarray) -> np.ndarray:
            r = np.asarray(rows, np.int64)
            return self.aug[r, :-1] @ uf + self.aug[r, -1]

        return SourceTop(self.n_items, mu, sd, score_at, lambda k, blocked: self.search(uf, k, blocked)[0])


def prepared_dense(model) -> Callable[[np.ndarray, int | None], SourceTop]:  # noqa: ANN001 - a Recommender
    """The fallback: the model's dense scores for the user."""

    def top(history: np.ndarray, user: int | None) -> SourceTop:
        return dense_top(model.score([history], None if user is None else np.array([user]))[0])

    return top


def prepared_factors(model) -> Callable[[np.ndarray, int | None], SourceTop]:  # noqa: ANN001 - a Recommender
    """For models with `factor_parts()` and `factor_users(histories, users)`: one FAISS index, built here."""
    vectors, bias = model.factor_parts()
    index = FactorIndex(vectors, bias)

    def top(history: np.ndarray, user: int | None) -> SourceTop:
        u = model.factor_users([history], None if user is None else np.array([user]))[0]
        return index.top(u)

    top.index = index  # type: ignore[attr-defined]  # for recall checks and reports
    return top


def recall_at(index: FactorIndex, users: np.ndarray, k: int = 50) -> float:
    """Mean recall@k of the index's search against exact scoring for these user vectors."""
    hits = 0
    for u in users:
        exact = np.argsort(-(index.aug[:, :-1] @ u + index.aug[:, -1]), kind="stable")[:k]
        got = index.search(u, k)[0]
        hits += len(np.intersect1d(exact, got))
    return hits / (k * max(len(users), 1))
