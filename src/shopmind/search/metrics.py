"""Search quality measures on graded judgments (Home Depot style: mean human grade 1..3).

Retrieval (the whole catalog is searched): NDCG@10 with gain = grade - 1 (1 = irrelevant gains nothing),
unjudged items gain 0, the ideal DCG from the query's judged grades; queries whose judged items are all
grade 1 have no ideal gain and are left out. Recall@100 counts judged items with grade >= 2.5.
Re-ranking (only the query's judged items are ranked): NDCG@10 with the same gains, the exact expected
NDCG of a random order, and the lift (NDCG - random) / (1 - random).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

RELEVANT = 2.5


def _dcg(gains: Sequence[float], k: int) -> float:
    g = np.asarray(gains[:k], np.float64)
    return float((g / np.log2(np.arange(2, len(g) + 2))).sum())


def ndcg(ranked: Sequence[str], grades: Mapping[str, float], k: int = 10) -> float | None:
    """NDCG@k of a ranked list against judged grades; None when no judged item has gain."""
    ideal = _dcg(sorted((g - 1 for g in grades.values()), reverse=True), k)
    if ideal <= 0:
        return None
    return _dcg([grades.get(i, 1.0) - 1 for i in ranked[:k]], k) / ideal


def recall(ranked: Sequence[str], grades: Mapping[str, float], k: int = 100,
           threshold: float = RELEVANT) -> float | None:
    """Share of the judged items with grade >= threshold found in the top k; None when there are none."""
    relevant = {i for i, g in grades.items() if g >= threshold}
    if not relevant:
        return None
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def random_ndcg(grades: Mapping[str, float], k: int = 10) -> float | None:
    """Expected NDCG@k of a uniformly random order of the judged items (exact: every position gets the mean gain)."""
    gains = [g - 1 for g in grades.values()]
    ideal = _dcg(sorted(gains, reverse=True), k)
    if ideal <= 0:
        return None
    return _dcg([float(np.mean(gains))] * min(len(gains), k), k) / ideal


def summarize(per_query: Sequence[float | None]) -> tuple[float, int]:
    """Mean over the queries where the measure is defined, and their number."""
    vals = [v for v in per_query if v is not None]
    return (float(np.mean(vals)) if vals else 0.0), len(vals)


def lift(value: float, random: float) -> float:
    return (value - random) / (1 - random) if random < 1 else 0.0
