"""The LambdaRank ranker on synthetic lists: it finds the informative feature, and save/load keep it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shopmind.search.ltr import LTRRanker, labels_from_grades


def test_labels_follow_the_grades() -> None:
    assert labels_from_grades(np.array([1.0, 1.33, 2.0, 2.67, 3.0, 0.5])).tolist() == [0, 1, 3, 5, 6, 0]


def test_ranker_learns_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3))
    y = labels_from_grades(1 + 2 / (1 + np.exp(-3 * x[:, 1])) + rng.normal(0, 0.1, 4000))  # only column b matters
    ranker = LTRRanker(n_estimators=100).fit(x[:3000], y[:3000], [20] * 150, ["a", "b", "c"],
                                             (x[3000:], y[3000:], [20] * 50))
    assert next(iter(ranker.importance())) == "b"
    pred = ranker.predict(x[3000:])
    assert np.corrcoef(pred, x[3000:, 1])[0, 1] > 0.9
    ranker.save(tmp_path / "r.txt")
    back = LTRRanker.load(tmp_path / "r.txt")
    assert np.allclose(back.predict(x[3000:]), pred) and back.feature_names == ["a", "b", "c"]
