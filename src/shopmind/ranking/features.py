"""Features of (user, candidate item) pairs for the learned ranker.

Per source: its score, its score as a z-value over the whole catalog for this user (scales differ between
models and users), and the candidate's rank in that source. Per item: popularity, price, age (days since
its first event; NaN when the data has no time), the number of its recent events. Per pair: text
similarity of the item's LM vector to the user's profile (mean of the history vectors) and to the last
item, the share of the history in the item's categories, price distance to the history's prices, whether
the item is already in the history, and the history length. Missing values stay NaN (LightGBM learns a
direction for them), so catalogs without prices or times use the same feature set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

PAIR_FEATURES = ("log_popularity", "log_recent", "log_price", "age_days", "profile_sim", "last_sim", "category_share",
                 "price_gap", "seen_count", "log_history")


def feature_names(sources: Sequence[str]) -> list[str]:
    return [f"{s}_{kind}" for s in sources for kind in ("score", "z", "rank")] + list(PAIR_FEATURES)


@dataclass
class ItemInfo:
    """What the features need to know about every item (rows follow the interactions' item index)."""

    popularity: np.ndarray  # events in the training data
    recent: np.ndarray  # events in the last `recent_days` of the training data (0 without times)
    price: np.ndarray  # NaN when unknown
    first_seen: np.ndarray  # seconds since epoch of the first event; NaN when unknown
    reference_time: float  # "now" for the age feature: the last training event (NaN without times)
    vectors: np.ndarray  # L2-normalised LM item vectors (zero rows without text); (n, 0) when none
    groups: sp.csr_matrix | None  # items x categories

    @property
    def n_items(self) -> int:
        return len(self.popularity)

    @classmethod
    def build(cls, item_ids: np.ndarray, item_index: dict[str, int], events: Sequence[tuple[str, float | None]],
              prices: dict[str, float], vectors: np.ndarray | None, groups: sp.csr_matrix | None,
              recent_days: float = 30.0) -> "ItemInfo":
        """events: (item id, unix seconds or None) of the training events."""
        n = len(item_ids)
        pop = np.zeros(n, np.float64)
        first = np.full(n, np.nan)
        times = np.full(len(events), np.nan)
        rows = np.full(len(events), -1, np.int64)
        for e, (item, t) in enumerate(events):
            r = item_index.get(str(item))
            if r is not None:
                rows[e] = r
                times[e] = np.nan if t is None else float(t)
        ok = rows >= 0
        np.add.at(pop, rows[ok], 1.0)
        timed = ok & np.isfinite(times)
        recent = np.zeros(n, np.float64)
        reference = float(np.nanmax(times[timed])) if timed.any() else float("nan")
        if timed.any():
            np.fmin.at(first, rows[timed], times[timed])
            late = timed & (times >= reference - recent_days * 86400)
            np.add.at(recent, rows[late], 1.0)
        price = np.array([prices.get(str(i), np.nan) for i in item_ids], np.float64)
        if vectors is None or vectors.ndim != 2 or vectors.shape[0] != n:
            vectors = np.zeros((n, 0), np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True) if vectors.shape[1] else np.ones((n, 1))
        vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
        return cls(pop, recent, price, first, reference, vectors, groups)


def _ranks(scores: np.ndarray, rows: np.ndarray, depth: int) -> np.ndarray:
    """1-based rank of `rows` in `scores` (descending), capped at depth + 1."""
    if len(scores) > depth:
        top = np.argpartition(-scores, depth - 1)[:depth]
        top = top[np.lexsort((top, -scores[top]))]
    else:
        top = np.lexsort((np.arange(len(scores)), -scores))
    rank = np.full(len(scores), depth + 1, np.float32)
    rank[top] = np.arange(1, len(top) + 1)
    return rank[rows]


def candidate_features(source_scores: Mapping[str, Any], rows: np.ndarray, history: np.ndarray, info: ItemInfo,
                       depth: int = 100) -> np.ndarray:
    """One row per candidate `rows` of one user; columns as feature_names(list(source_scores)). A source's
    value is its score vector over the catalog, or a models.candidates.SourceTop (the same three features
    without a catalog-sized vector)."""
    n = len(rows)
    rows = np.asarray(rows, np.int64)
    out = np.full((n, 3 * len(source_scores) + len(PAIR_FEATURES)), np.nan, np.float32)
    for j, s in enumerate(source_scores.values()):
        if not isinstance(s, np.ndarray) and hasattr(s, "score_at"):
            at = np.asarray(s.score_at(rows), np.float32)
            out[:, 3 * j] = at
            out[:, 3 * j + 1] = (at - s.mean) / (s.std if s.std > 0 else 1.0)
            out[:, 3 * j + 2] = np.log1p(s.ranks(rows, depth))
            continue
        s = np.asarray(s, np.float32)
        finite = np.isfinite(s)
        mu, sd = (float(s[finite].mean()), float(s[finite].std())) if finite.any() else (0.0, 1.0)
        out[:, 3 * j] = s[rows]
        out[:, 3 * j + 1] = (s[rows] - mu) / (sd if sd > 0 else 1.0)
        out[:, 3 * j + 2] = np.log1p(_ranks(np.where(finite, s, -np.inf), rows, depth))
    b = 3 * len(source_scores)
    out[:, b + 0] = np.log1p(info.popularity[rows])
    out[:, b + 1] = np.log1p(info.recent[rows])
    out[:, b + 2] = np.log1p(info.price[rows])
    if np.isfinite(info.reference_time):
        out[:, b + 3] = np.maximum(info.reference_time - info.first_seen[rows], 0) / 86400
    history = np.asarray(history, np.int64)
    if len(history) and info.vectors.shape[1]:
        hv = info.vectors[history]
        profile = hv.mean(0)
        profile /= max(float(np.linalg.norm(profile)), 1e-12)
        out[:, b + 4] = info.vectors[rows] @ profile
        out[:, b + 5] = info.vectors[rows] @ hv[-1]
    if len(history) and info.groups is not None and info.groups.shape[1] > 1:
        share = np.asarray(info.groups[history].sum(0)).ravel() / len(history)
        out[:, b + 6] = np.minimum(info.groups[rows] @ share, 1.0)
    if len(history):
        hp = info.price[history]
        hp = hp[np.isfinite(hp)]
        if len(hp):
            out[:, b + 7] = np.abs(np.log1p(info.price[rows]) - np.log1p(hp).mean())
        seen, times = np.unique(history, return_counts=True)  # not an n_items-long count vector
        at = np.minimum(np.searchsorted(seen, rows), len(seen) - 1)
        out[:, b + 8] = np.where(seen[at] == rows, times[at], 0)
    else:
        out[:, b + 8] = 0.0
    out[:, b + 9] = np.log1p(len(history))
    return out
