"""Search metrics on hand-made judgments: gains, left-out queries, recall threshold, random baseline."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from shopmind.search import metrics as SM


def test_ndcg_gain_is_grade_minus_one_and_unjudged_gain_nothing() -> None:
    grades = {"a": 3.0, "b": 2.0, "c": 1.0}
    assert SM.ndcg(["a", "b", "c"], grades) == pytest.approx(1.0)
    assert SM.ndcg(["x", "a", "b"], grades) < SM.ndcg(["a", "b", "x"], grades)
    assert SM.ndcg(["c", "x"], grades) == 0.0
    assert SM.ndcg(["a"], {"a": 1.0, "b": 1.0}) is None  # all grade 1: no ideal gain, query left out


def test_recall_counts_only_grades_from_threshold() -> None:
    grades = {"a": 3.0, "b": 2.67, "c": 2.33}
    assert SM.recall(["a", "c"], grades) == 0.5
    assert SM.recall(["a"], {"c": 2.0}) is None


def test_random_ndcg_is_the_mean_over_all_orders() -> None:
    grades = {"a": 3.0, "b": 2.0, "c": 1.0, "d": 2.5}
    orders = list(itertools.permutations(grades))
    brute = np.mean([SM.ndcg(list(o), grades) for o in orders])
    # Exact for k >= number of items: every position's expected gain is the mean gain.
    assert SM.random_ndcg(grades) == pytest.approx(brute, rel=1e-9)
    assert SM.lift(1.0, 0.9) == pytest.approx(1.0) and SM.lift(0.9, 0.9) == 0.0
