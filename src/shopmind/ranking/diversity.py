"""Diversity for a ranked list: MMR over the item vectors, and the intra-list similarity it lowers.

The relevance is min-max scaled to [0, 1] before MMR so that the diversity weight means the same whatever
scorer produced it (ranker margins, cosines, blends); weight 0 keeps the original order.
"""

from __future__ import annotations

import numpy as np

from ..knowledge.text import mmr as _mmr
from ..search.fusion import unit


def mmr(scores: np.ndarray, vectors: np.ndarray, k: int, diversity: float = 0.3) -> np.ndarray:
    """Positions (into scores) of the k picked candidates in MMR order. vectors: L2-normalised, one per score."""
    if not 0.0 <= diversity <= 1.0:
        raise ValueError("diversity must be in [0, 1]")
    scores = np.asarray(scores, np.float64)
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64)
    if diversity == 0.0:
        return np.lexsort((np.arange(len(scores)), -scores))[:k].astype(np.int64)
    return np.array(_mmr(unit(scores, flat=1.0), vectors, k, diversity), np.int64)


def intra_list_similarity(vectors: np.ndarray) -> float:
    """Mean pairwise cosine of a list (lower = more diverse); 0 for fewer than two items."""
    v = np.asarray(vectors, np.float32)
    n = len(v)
    if n < 2:
        return 0.0
    s = v @ v.T
    return float((s.sum() - np.trace(s)) / (n * (n - 1)))
