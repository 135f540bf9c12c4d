"""Metrics on hand-computed cases: ranks with ties and masks, NDCG, recall, MRR, bootstrap."""

from __future__ import annotations

import numpy as np

from shopmind.evaluation import metrics as M


def test_ranks_are_pessimistic_about_ties_and_respect_masks() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.5, 0.0],
                       [1.0, 1.0, 1.0, 1.0, 1.0]])
    ranks, top = M.target_ranks(scores, np.array([2, 0]), keep_top=3)
    assert ranks.tolist() == [2, 4]  # tie with item 3 counts against the target; a constant scorer is last
    masked, _ = M.target_ranks(scores, np.array([2, 0]), masks=[np.array([1]), np.array([])], keep_top=3)
    assert masked.tolist() == [1, 4]
    assert top[0].tolist()[0] == 1


def test_accuracy_values() -> None:
    acc = M.accuracy(np.array([0, 1, 9, 10, 100]), ks=(1, 10))
    assert acc["recall@1"] == 0.2 and acc["recall@10"] == 0.6
    assert np.isclose(acc["ndcg@10"], (1 + 1 / np.log2(3) + 1 / np.log2(11)) / 5)
    assert np.isclose(acc["mrr"], (1 + 1 / 2 + 1 / 10 + 1 / 11 + 1 / 101) / 5)


def test_beyond_accuracy() -> None:
    tops = np.array([[0, 1], [0, 2]])
    assert M.coverage(tops, 4, k=2) == 0.75
    pop = np.array([10.0, 1.0, 1.0, 0.0])
    assert M.popularity_share(tops, pop, k=2, head=0.25) == 0.5
    vecs = np.eye(3, dtype=np.float32)
    assert np.isclose(M.intra_list_diversity(tops, vecs, k=2), 1.0)


def test_paired_bootstrap_detects_a_real_difference() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(2000)
    better = M.paired_bootstrap(a + 0.05, a)
    assert better["ci_low"] > 0 and better["p_not_better"] == 0.0
    same = M.paired_bootstrap(a, a + rng.normal(0, 0.01, 2000))
    assert same["ci_low"] < 0 < same["ci_high"]
