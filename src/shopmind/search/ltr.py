"""Learning to rank with LightGBM LambdaRank on the shop's own graded judgments.

Labels are the graded gains (grade - 1, in thirds: 0..6) with a linear label gain, so the objective
optimises the same NDCG the evaluation reports; unjudged candidates count as gain 0, as in the metric.
Early stopping on validation queries picks the number of trees. Saved as LightGBM's own text model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

LEVELS = 7  # gains 0, 1/3, ..., 2 for grades 1..3


def labels_from_grades(grades: np.ndarray) -> np.ndarray:
    """Grades 1..3 (unjudged = 1) -> integer levels 0..6."""
    return np.clip(np.rint((np.asarray(grades, np.float64) - 1) * 3), 0, LEVELS - 1).astype(np.int32)


class LTRRanker:
    def __init__(self, n_estimators: int = 500, learning_rate: float = 0.05, num_leaves: int = 31,
                 min_child_samples: int = 50, early_stopping: int = 50, seed: int = 0) -> None:
        self.params = dict(n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
                           min_child_samples=min_child_samples, seed=seed)
        self.early_stopping = early_stopping
        self.feature_names: list[str] = []
        self.best_iteration = 0
        self._booster = None

    def fit(self, x: np.ndarray, y: np.ndarray, groups: Sequence[int], feature_names: Sequence[str],
            valid: tuple[np.ndarray, np.ndarray, Sequence[int]] | None = None) -> "LTRRanker":
        import lightgbm as lgb

        self.feature_names = list(feature_names)
        model = lgb.LGBMRanker(objective="lambdarank", label_gain=[i / 3 for i in range(LEVELS)],
                               lambdarank_truncation_level=20, verbose=-1, n_jobs=2, **self.params)
        kwargs = {}
        if valid is not None:
            kwargs = dict(eval_X=(valid[0],), eval_y=(valid[1],), eval_group=[list(valid[2])], eval_at=[10],
                          callbacks=[lgb.early_stopping(self.early_stopping, verbose=False)])
        model.fit(x, y, group=list(groups), feature_name=self.feature_names, **kwargs)
        self._booster = model.booster_
        self.best_iteration = int(model.best_iteration_ or self.params["n_estimators"])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self._booster is None:
            raise RuntimeError("LTRRanker is not fitted")
        return self._booster.predict(x, num_iteration=self.best_iteration, num_threads=1)

    def importance(self) -> dict[str, float]:
        gains = self._booster.feature_importance("gain")
        total = float(gains.sum()) or 1.0
        return {n: round(float(g) / total, 4) for n, g in sorted(zip(self.feature_names, gains), key=lambda kv: -kv[1])}

    def save(self, path: str | Path) -> None:
        self._booster.save_model(str(path), num_iteration=self.best_iteration)

    @classmethod
    def load(cls, path: str | Path) -> "LTRRanker":
        import lightgbm as lgb

        r = cls()
        r._booster = lgb.Booster(model_file=str(path))
        r.feature_names = r._booster.feature_name()
        r.best_iteration = r._booster.current_iteration()
        return r
