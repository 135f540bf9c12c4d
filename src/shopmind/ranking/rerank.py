"""Final re-ranking of a ranked candidate list: MMR diversity, category caps, and one exploration slot.

Business exclusions (purchased items, out of stock, filters) are applied before candidates are drawn
(`blocked` in `RankingPipeline.rank`), so nothing here can bring them back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bandit import ThompsonExplorer
from .diversity import mmr


@dataclass
class RerankConfig:
    diversity: float = 0.2  # MMR weight; 0 keeps the ranker's order
    category_cap: int = 0  # at most this many items of one leaf category in the list; 0 = no cap
    explore: bool = True  # reserve one slot for an item with little data (Thompson sampling)
    explore_position: int = 3  # 0-based position of the exploration slot
    pool: int = 50  # how many ranked candidates MMR and the caps choose from


@dataclass
class Slot:
    row: int
    score: float
    explore: bool = False


def rerank(rows: np.ndarray, scores: np.ndarray, k: int, vectors: np.ndarray, leaf: np.ndarray | None,
           explorer: ThompsonExplorer | None, config: RerankConfig) -> list[Slot]:
    """rows/scores: ranked candidates (best first). vectors: L2-normalised item vectors (n_items x d, may be
    d = 0: no diversity). leaf: leaf-category index per item (-1: none). Returns k slots."""
    rows = np.asarray(rows, np.int64)[:max(config.pool, k)]
    scores = np.asarray(scores, np.float64)[:len(rows)]
    if not len(rows) or k <= 0:
        return []
    if config.diversity > 0 and vectors.shape[1]:
        order = mmr(scores, vectors[rows], len(rows), config.diversity)
    else:
        order = np.arange(len(rows))
    picked: list[Slot] = []
    per_cat: dict[int, int] = {}
    for pos in order:
        r = int(rows[pos])
        c = int(leaf[r]) if leaf is not None else -1
        if config.category_cap and c >= 0 and per_cat.get(c, 0) >= config.category_cap:
            continue
        per_cat[c] = per_cat.get(c, 0) + 1
        picked.append(Slot(r, float(scores[pos])))
        if len(picked) == k:
            break
    if config.explore and explorer is not None and k > 1:
        chosen = {s.row for s in picked}
        # Exploration candidates: ranked candidates not shown, with little feedback so far.
        rest = np.array([r for r in rows if int(r) not in chosen], np.int64)
        pick = explorer.pick(rest) if len(rest) else None
        if pick is not None:
            slot = Slot(pick, float(scores[int(np.flatnonzero(rows == pick)[0])]), explore=True)
            at = min(config.explore_position, len(picked))
            picked = (picked[:at] + [slot] + picked[at:])[:k]
    return picked
