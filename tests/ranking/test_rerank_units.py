"""Hand-made cases for the re-ranking pieces: MMR, category caps, the Thompson explorer, explanations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from shopmind.ranking.bandit import ThompsonExplorer
from shopmind.ranking.diversity import intra_list_similarity, mmr
from shopmind.ranking.explain import Explainer
from shopmind.ranking.rerank import RerankConfig, rerank


def _unit(v: list[list[float]]) -> np.ndarray:
    a = np.array(v, np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


# items 0 and 1 are near-duplicates, 2 is different
VECS = _unit([[1, 0, 0], [0.99, 0.1, 0], [0, 1, 0], [0, 0, 1]])


def test_mmr_zero_keeps_order_and_positive_diversifies() -> None:
    scores = np.array([3.0, 2.9, 2.0, 1.0])
    assert mmr(scores, VECS, 3, 0.0).tolist() == [0, 1, 2]
    picked = mmr(scores, VECS, 3, 0.5)
    assert picked.tolist()[:2] == [0, 2]
    assert intra_list_similarity(VECS[picked]) < intra_list_similarity(VECS[[0, 1, 2]])
    with pytest.raises(ValueError):
        mmr(scores, VECS, 2, 1.5)
    assert mmr(np.zeros(0), np.zeros((0, 3)), 5).tolist() == []


def test_category_cap_and_exploration_slot() -> None:
    rows = np.array([0, 1, 2, 3])
    scores = np.array([4.0, 3.0, 2.0, 1.0])
    leaf = np.array([7, 7, 7, 8])
    slots = rerank(rows, scores, 3, VECS, leaf, None, RerankConfig(diversity=0.0, category_cap=2, explore=False))
    assert [s.row for s in slots] == [0, 1, 3]
    explorer = ThompsonExplorer(4, seed=0)
    slots = rerank(rows, scores, 3, VECS, leaf, explorer, RerankConfig(diversity=0.0, explore=True, explore_position=1))
    assert len(slots) == 3 and slots[1].explore and slots[1].row == 3  # the only candidate not already shown
    assert [s.row for s in slots if not s.explore] == [0, 1]


def test_thompson_prefers_items_that_get_clicked_and_stops_exploring_saturated_ones() -> None:
    ex = ThompsonExplorer(3, prior_ctr=0.05, prior_weight=20, max_impressions=100, seed=1)
    for _ in range(80):
        ex.record(0, impressions=1)  # shown 80 times, never clicked
        ex.record(1, impressions=1)
    for _ in range(20):
        ex.record(1, clicks=1)  # clicked a quarter of the time
    picks = [ex.pick(np.array([0, 1])) for _ in range(200)]
    assert picks.count(1) > 180
    assert ex.posterior_mean(np.array([1]))[0] > ex.posterior_mean(np.array([0]))[0]
    for _ in range(30):
        ex.record(1, impressions=1)
    assert ex.pick(np.array([1])) is None  # 110 impressions: no longer needs exploring
    ex.record(2, clicks=1)  # a click without a reported impression still counts as shown
    assert ex.impressions[2] == 1 and ex.clicks[2] == 1


def test_explanations_come_from_real_signals() -> None:
    sim = sp.csr_matrix(np.array([[0, 0.5, 0, 0], [0.5, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], np.float32))
    ex = Explainer(titles=["drill", "drill bits", "gloves", "tape"],
                   keywords=[["drill"], ["drill", "bits"], ["leather", "work gloves"], ["duct tape"]],
                   aspects=[[], ["sharp edges"], [], []], leaf=np.array([0, 0, 1, -1]), leaf_names=["Tools", "Safety"],
                   popularity=np.array([10.0, 5.0, 8.0, 1.0]), similarity=sim, vectors=None)
    why = ex.explain(1, [0])
    assert why["kind"] == "history" and why["item_row"] == 0 and "drill" in why["text"]
    assert why["review_aspects"] == ["sharp edges"]
    assert ex.explain(2, [3], interests=["leather"])["kind"] == "interests"
    cat = ex.explain(2, [3])
    assert cat["kind"] == "category" and cat["rank"] == 1 and cat["category"] == "Safety"
    assert ex.explain(3, [])["kind"] == "popular"
    assert ex.explain(3, [0], explore=True)["kind"] == "explore"
    assert ex.user_keywords([0, 1])[0] == "drill"
