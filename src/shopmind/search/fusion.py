"""Fusing the lexical and the dense leg: reciprocal rank fusion and normalised score fusion.

RRF (Cormack et al., 2009) needs no score scale: sum of 1 / (k + rank). Score fusion min-max normalises
each leg's scores over the candidate set and mixes them, alpha * dense + (1 - alpha) * lexical; with a
tuned alpha it usually beats equal-weight RRF, because BM25 and cosine are not equally reliable.
"""

from __future__ import annotations

import numpy as np


def unit(scores: np.ndarray, flat: float = 0.0) -> np.ndarray:
    """Scores scaled to [0, 1] over their own range (float64); every score is `flat` when all are equal."""
    scores = np.asarray(scores, np.float64)
    lo, span = (float(scores.min()), float(scores.max() - scores.min())) if len(scores) else (0.0, 0.0)
    return (scores - lo) / span if span > 0 else np.full(len(scores), flat)


def minmax(scores: np.ndarray) -> np.ndarray:
    """Like unit, but the range always includes 0 (a retriever's 0 means 'not found')."""
    lo, hi = float(scores.min(initial=0.0)), float(scores.max(initial=0.0))
    return (scores - lo) / (hi - lo) if hi > lo else np.zeros_like(scores, dtype=np.float32)


def score_fusion(lexical: np.ndarray, dense: np.ndarray, alpha: float) -> np.ndarray:
    """alpha * minmax(dense) + (1 - alpha) * minmax(lexical), over the same candidates."""
    return alpha * minmax(dense) + (1 - alpha) * minmax(lexical)


def rrf(rank_lists: list[np.ndarray], n: int, k: float = 60.0, weights: list[float] | None = None) -> np.ndarray:
    """RRF scores for n candidates from several rankings (each an array of candidate positions, best first)."""
    out = np.zeros(n, np.float64)
    for w, ranking in zip(weights or [1.0] * len(rank_lists), rank_lists):
        out[ranking] += w / (k + np.arange(1, len(ranking) + 1))
    return out
