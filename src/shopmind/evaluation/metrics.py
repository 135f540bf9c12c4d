"""Full-ranking metrics (every item is a candidate) and beyond-accuracy measures.

Ranks are pessimistic: a target tied with other items is ranked below all of them, so a model cannot gain
from ties (a constant scorer gets the worst rank, not a lucky one).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

KS = (5, 10, 20, 50)


def target_ranks(scores: np.ndarray, targets: np.ndarray, masks: Sequence[np.ndarray] | None = None,
                 keep_top: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """0-based rank of each target among all items, and the top `keep_top` items per row.
    `masks`: per row, items removed from the ranking (never the target itself)."""
    scores = scores.astype(np.float64, copy=True)
    rows = np.arange(len(targets))
    if masks is not None:
        for r, m in enumerate(masks):
            if len(m):
                scores[r, m] = -np.inf
    t = scores[rows, targets].copy()
    scores[rows, targets] = np.nan  # excluded from the comparison below
    ranks = (scores >= t[:, None]).sum(axis=1)
    scores[rows, targets] = t
    top = np.argpartition(-np.nan_to_num(scores, nan=-np.inf), keep_top, axis=1)[:, :keep_top] \
        if scores.shape[1] > keep_top else np.argsort(-scores, axis=1)
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return ranks, np.take_along_axis(top, order, axis=1)


def accuracy(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """Recall@K (= HR@K with one target), NDCG@K and MRR from 0-based ranks."""
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2), 0.0).mean())
    out["mrr"] = float((1.0 / (ranks + 1)).mean())
    return out


def per_user_ndcg(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2), 0.0)


def coverage(top_lists: np.ndarray, n_items: int, k: int = 10) -> float:
    """Share of the catalog recommended to at least one user in the top k."""
    return float(len(np.unique(top_lists[:, :k])) / n_items)


def novelty(top_lists: np.ndarray, popularity: np.ndarray, n_users: int, k: int = 10) -> float:
    """Mean self-information -log2(p(i)) of recommended items, p(i) = share of users with item i."""
    p = np.clip(popularity / max(n_users, 1), 1e-12, 1)
    return float((-np.log2(p[top_lists[:, :k]])).mean())


def popularity_share(top_lists: np.ndarray, popularity: np.ndarray, k: int = 10, head: float = 0.2) -> float:
    """Share of recommendations from the most popular `head` fraction of items (popularity bias)."""
    cut = np.sort(popularity)[::-1][max(int(len(popularity) * head) - 1, 0)]
    return float((popularity[top_lists[:, :k]] >= cut).mean())


def intra_list_diversity(top_lists: np.ndarray, item_vectors: np.ndarray, k: int = 10) -> float:
    """Mean pairwise cosine distance between recommended items (by their LM embeddings)."""
    v = item_vectors[top_lists[:, :k]]
    sims = np.einsum("uid,ujd->uij", v, v)
    n = v.shape[1]
    return float(1 - (sims.sum(axis=(1, 2)) - np.trace(sims, axis1=1, axis2=2)).mean() / (n * (n - 1)))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0,
                     stat: Callable[[np.ndarray], float] = np.mean) -> dict[str, float]:
    """Difference stat(a) - stat(b) over the same users, with a 95 % bootstrap interval."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n, len(a)))
    diffs = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": float(stat(a) - stat(b)), "ci_low": float(lo), "ci_high": float(hi),
            "p_not_better": float((diffs <= 0).mean())}
