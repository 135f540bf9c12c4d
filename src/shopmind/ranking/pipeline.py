"""The multi-stage recommendation pipeline: candidates from several sources, a learned ranker over their
union, and the offline protocol that trains and measures it.

1. Candidates: the top `per_source` items of each source (item-KNN, SASRec, two-tower, popularity, ...),
   after the exclusions (history when the protocol masks it, purchased items, filters).
2. Ranking: LightGBM LambdaRank over `features.candidate_features`, trained on the validation cases
   (sources fitted on the train part; the held-out item is the positive, the other candidates negatives),
   with early stopping on a held-out fifth of those users.
3. The test is run once with the sources refitted on train + valid and the ranker kept, against each
   source alone and against a z-score blend of the sources whose weights were chosen on the same
   validation users: the ranker has to beat both to earn its place.
Re-ranking for diversity, business rules and exploration happen at serving time (`ranking.rerank`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..evaluation import metrics as M
from ..evaluation.protocols import Cases
from ..models.base import bounded_batch
from ..models.hybrid import simplex
from ..search.ltr import LTRRanker
from .features import ItemInfo, candidate_features, feature_names
from .sources import Sources

StepFn = Callable[[str], None]


@dataclass
class Ranked:
    """One user's ranked candidates: item rows and final scores (best first), plus every source's scores
    over the whole catalog (for explanations)."""

    rows: np.ndarray
    scores: np.ndarray
    source_scores: dict[str, np.ndarray] = field(default_factory=dict)
    # Without catalog-sized scores (large catalogs): per source, each returned row's rank among the items not
    # blocked (0 = its best; per_source when beyond its candidates), for online.origins_from_ranks.
    source_ranks: dict[str, np.ndarray] | None = None


def _z(s: np.ndarray) -> np.ndarray:
    finite = np.isfinite(s)
    mu, sd = s[finite].mean(), s[finite].std()
    return np.where(finite, (s - mu) / (sd + 1e-9), -np.inf)


SPARSE_FROM = 50_000  # catalogs at least this large rank one user without catalog-sized score vectors


class RankingPipeline:
    def __init__(self, sources: Sources, info: ItemInfo, ranker: LTRRanker | None = None, per_source: int = 50,
                 depth: int = 100, blend: dict[str, float] | None = None) -> None:
        self.sources, self.info, self.ranker = sources, info, ranker
        self.per_source, self.depth = per_source, depth
        self.blend = blend or {}  # z-score blend weights (the baseline; also the fallback without a ranker)
        self.sparse_from = SPARSE_FROM

    @property
    def feature_names(self) -> list[str]:
        return feature_names(self.sources.names)

    # -- one user ------------------------------------------------------------------------------------------
    def candidates(self, scores: dict[str, np.ndarray], blocked: np.ndarray | None = None) -> np.ndarray:
        """Union of every source's top `per_source` rows, without the blocked ones (bool mask)."""
        picks = []
        for s in scores.values():
            s = np.where(blocked, -np.inf, s) if blocked is not None else s
            n = min(self.per_source, int(np.isfinite(s).sum()))
            if n:
                top = np.argpartition(-s, n - 1)[:n]
                picks.append(top[np.isfinite(s[top])])
        return np.unique(np.concatenate(picks)) if picks else np.zeros(0, np.int64)

    def order(self, scores: dict[str, np.ndarray], rows: np.ndarray, history: np.ndarray,
              features: np.ndarray | None = None) -> np.ndarray:
        """Scores of the candidate rows: the ranker's, else the blend's."""
        if not len(rows):
            return np.zeros(0)
        if self.ranker is not None:
            x = features if features is not None else candidate_features(scores, rows, history, self.info, self.depth)
            return np.asarray(self.ranker.predict(x), np.float64)
        weights = self.blend or {n: 1.0 / len(scores) for n in scores}
        return sum(w * _z(scores[n])[rows] for n, w in weights.items() if n in scores)

    def rank(self, history: Sequence[int], user: int | None = None, k: int = 100,
             blocked: np.ndarray | None = None, extra: Sequence[int] = ()) -> Ranked:
        """The top k candidates of one user (history: item rows, oldest first; user: index when known).
        extra: more candidate rows from outside the sources (e.g. search results for the current query);
        the ranker scores them with the same features."""
        h = np.asarray(history, np.int64)
        if self.info.n_items >= self.sparse_from:
            return self._rank_tops(h, user, k, blocked, extra)
        scores = self.sources.score([h], None if user is None else np.array([user]))
        scores = {n: s[0] for n, s in scores.items()}
        rows = self.candidates(scores, blocked)
        if len(extra):
            more = np.asarray(extra, np.int64)
            rows = np.union1d(rows, more[~blocked[more]] if blocked is not None else more)
        s = self.order(scores, rows, h)
        top = np.lexsort((rows, -s))[:k]
        return Ranked(rows[top], s[top], scores)

    def _rank_tops(self, h: np.ndarray, user: int | None, k: int, blocked: np.ndarray | None,
                   extra: Sequence[int]) -> Ranked:
        """`rank` for large catalogs: the same candidates, features and order from each source's top items
        (models/candidates.py), never an n_items-sized score vector per source."""
        tops = self.sources.tops(h, user)
        lists = {n: t.ranked(self.per_source, blocked) for n, t in tops.items()}
        picked = [v for v in lists.values() if len(v)]
        rows = np.unique(np.concatenate(picked)) if picked else np.zeros(0, np.int64)
        if len(extra):
            more = np.asarray(extra, np.int64)
            rows = np.union1d(rows, more[~blocked[more]] if blocked is not None else more)
        if not len(rows):
            return Ranked(rows, np.zeros(0), {}, {})
        if self.ranker is not None:
            s = np.asarray(self.ranker.predict(candidate_features(tops, rows, h, self.info, self.depth)), np.float64)
        else:
            weights = self.blend or {n: 1.0 / len(tops) for n in tops}
            s = sum(w * (np.asarray(tops[n].score_at(rows), np.float64) - tops[n].mean) / (tops[n].std + 1e-9)
                    for n, w in weights.items() if n in tops)
        top = np.lexsort((rows, -s))[:k]
        kept = rows[top]
        ranks = {}
        for name, lst in lists.items():
            where = {int(r): i for i, r in enumerate(lst)}
            ranks[name] = np.array([where.get(int(r), self.per_source) for r in kept], np.int64)
        return Ranked(kept, s[top], {}, ranks)

    # -- training ------------------------------------------------------------------------------------------
    def _rows_for(self, cases: Cases, mask_history: bool, batch: int = 512
                  ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[dict[str, np.ndarray]]]:
        """Per case: candidate rows, their features and labels (1 = the held-out item), and blend scores."""
        rows_all, x_all, y_all, z_all = [], [], [], []
        batch = bounded_batch(self.info.n_items, batch, copies=2 * len(self.sources.names))
        for s in range(0, len(cases.targets), batch):
            hist = cases.histories[s:s + batch]
            scores = self.sources.score(hist, None if cases.users is None else cases.users[s:s + batch])
            for j, (h, t) in enumerate(zip(hist, cases.targets[s:s + batch])):
                one = {n: v[j] for n, v in scores.items()}
                blocked = None
                if mask_history and len(h):
                    blocked = np.zeros(self.info.n_items, bool)
                    blocked[np.setdiff1d(h, [t])] = True
                    one = {n: np.where(blocked, -np.inf, v) for n, v in one.items()}
                rows = self.candidates(one, blocked)
                rows_all.append(rows)
                x_all.append(candidate_features(one, rows, h, self.info, self.depth))
                y_all.append((rows == t).astype(np.int32))
                z_all.append({n: _z(v)[rows] for n, v in one.items()})
        return rows_all, x_all, y_all, z_all

    def fit_ranker(self, cases: Cases, mask_history: bool, valid_share: float = 0.2, max_cases: int = 8000,
                   seed: int = 0, on_step: StepFn | None = None, **params: Any) -> dict[str, Any]:
        """Train the ranker on these cases (sources already fitted without them); also choose the blend
        weights on the early-stopping part. Returns a report."""
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(cases.targets), min(max_cases, len(cases.targets)), replace=False))
        sub = Cases(cases.users[pick], [cases.histories[i] for i in pick], cases.targets[pick])
        if on_step:
            on_step(f"ranker: candidates and features for {len(pick):,} validation users")
        rows, x, y, z = self._rows_for(sub, mask_history)
        hit = np.array([yy.any() for yy in y])
        is_valid = rng.random(len(rows)) < valid_share
        fit_idx = np.flatnonzero(hit & ~is_valid)
        stop_idx = np.flatnonzero(hit & is_valid)
        if len(fit_idx) < 20 or len(stop_idx) < 5:
            raise ValueError(f"too few validation users with the target among the candidates ({int(hit.sum())} of "
                             f"{len(rows)}; the ranker needs about 30): the data needs more returning users")

        def stack(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
            return np.vstack([x[i] for i in idx]), np.concatenate([y[i] for i in idx]), [len(y[i]) for i in idx]

        if on_step:
            on_step(f"ranker: LambdaRank on {len(fit_idx):,} users, early stopping on {len(stop_idx):,}")
        t0 = time.perf_counter()
        self.ranker = LTRRanker(**{"min_child_samples": 100, "num_leaves": 31, **params}).fit(
            *stack(fit_idx), self.feature_names, stack(stop_idx))
        # The blend baseline: simplex weights by NDCG@10 on the same early-stopping users (all of them:
        # a user whose target is not a candidate scores 0 for every weight).
        stop_all = np.flatnonzero(is_valid)
        best_w, best = None, -1.0
        for w in simplex(len(self.sources.names), 0.1):
            total = 0.0
            for i in stop_all:
                if y[i].any():
                    s = sum(wi * z[i][n] for wi, n in zip(w, self.sources.names))
                    t = int(np.flatnonzero(y[i])[0])
                    rank = int((s > s[t]).sum() + (s[np.arange(len(s)) != t] == s[t]).sum())
                    total += 1 / np.log2(rank + 2) if rank < 10 else 0.0
            if total > best:
                best_w, best = w, total
        self.blend = dict(zip(self.sources.names, best_w or ()))
        return {"cases": len(pick), "target_in_candidates": round(float(hit.mean()), 4),
                "mean_candidates": round(float(np.mean([len(r) for r in rows])), 1), "trees": self.ranker.best_iteration,
                "seconds": round(time.perf_counter() - t0, 1), "blend": self.blend,
                "importance": dict(list(self.ranker.importance().items())[:12])}

    # -- evaluation ----------------------------------------------------------------------------------------
    def evaluate(self, cases: Cases, mask_history: bool, ks: Sequence[int] = M.KS) -> dict[str, dict[str, Any]]:
        """Full-catalog metrics of the ranker, the blend and every source alone on the same cases; a target
        outside the candidates counts as a miss for the ranker and the blend."""
        n_items = self.info.n_items
        ranks: dict[str, list[np.ndarray]] = {"ranker": [], "blend": [], **{n: [] for n in self.sources.names}}
        batch = bounded_batch(self.info.n_items, 512, copies=2 * len(self.sources.names))
        for s in range(0, len(cases.targets), batch):
            hist = cases.histories[s:s + batch]
            targets = cases.targets[s:s + batch]
            scores = self.sources.score(hist, None if cases.users is None else cases.users[s:s + batch])
            masks = [np.setdiff1d(h, [t]) for h, t in zip(hist, targets)] if mask_history else None
            for n, v in scores.items():
                ranks[n].append(M.target_ranks(v, targets, masks, keep_top=10)[0])
            sub = Cases(None if cases.users is None else cases.users[s:s + batch], hist, targets)
            rows, x, y, z = self._rows_for(sub, mask_history)
            x_all = np.vstack(x) if x else np.zeros((0, len(self.feature_names)), np.float32)
            pred = np.asarray(self.ranker.predict(x_all), np.float64) if self.ranker is not None and len(x_all) else None
            start = 0
            r_rank, b_rank = [], []
            for i in range(len(rows)):
                end = start + len(rows[i])
                t = np.flatnonzero(y[i])
                if not len(t):
                    r_rank.append(n_items)
                    b_rank.append(n_items)
                else:
                    t = int(t[0])
                    for out, sc in ((r_rank, pred[start:end] if pred is not None else None),
                                    (b_rank, sum(self.blend.get(n, 0.0) * z[i][n] for n in self.sources.names))):
                        if sc is None:
                            out.append(n_items)
                            continue
                        others = np.arange(len(sc)) != t
                        out.append(int((sc[others] >= sc[t]).sum()))  # pessimistic ties, as in target_ranks
                start = end
            ranks["ranker"].append(np.array(r_rank))
            ranks["blend"].append(np.array(b_rank))
        out = {}
        for name, parts in ranks.items():
            r = np.concatenate(parts) if parts else np.zeros(0)
            out[name] = {**M.accuracy(r, ks), "_ranks": r}
        return out
