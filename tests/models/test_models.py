"""Recommenders on hand-made data (exact expectations) and the shared interface (recommend, save, load)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopmind.data.interactions import Interactions
from shopmind.models import ALS, BPR, MODELS, ItemKNN, MostPopular


@pytest.fixture
def data() -> Interactions:
    # Two taste groups: {a, b, c} and {x, y, z}; "d" is in the catalog but never seen (cold item).
    rows = [("u1", "a", 0), ("u1", "b", 1), ("u1", "c", 2), ("u2", "a", 0), ("u2", "b", 1), ("u3", "b", 0),
            ("u3", "c", 1), ("u4", "x", 0), ("u4", "y", 1), ("u4", "z", 2), ("u5", "x", 0), ("u5", "y", 1),
            ("u6", "y", 0), ("u6", "z", 1), ("u7", "a", 0), ("u7", "c", 1)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "seq"])
    return Interactions.from_frame(df, items=["a", "b", "c", "d", "x", "y", "z"])


def test_interactions_indexing(data: Interactions) -> None:
    assert list(data.item_ids) == ["a", "b", "c", "d", "x", "y", "z"] and data.n_users == 7
    assert [data.item_ids[i] for i in data.sequences[data.user_index("u1")]] == ["a", "b", "c"]
    assert data.item_popularity()[data.item_index("d")] == 0
    assert data.matrix().sum() == 16


def test_popular(data: Interactions) -> None:
    m = MostPopular().fit(data)
    # a, b, c and y have 3 users each; ties keep catalog order.
    assert m.recommend([], k=4) == [("a", 3.0), ("b", 3.0), ("c", 3.0), ("y", 3.0)]
    assert m.recommend(["a"], k=1) == [("b", 3.0)]
    assert m.recommend([], k=7)[-1] == ("d", 0.0)


def test_itemknn_stays_in_taste_group_and_decay_prefers_recent(data: Interactions) -> None:
    m = ItemKNN(neighbors=10).fit(data)
    assert {i for i, _ in m.recommend(["x"], k=2)} == {"y", "z"}
    recent = ItemKNN(neighbors=10, decay=0.1).fit(data)
    # History a (old) then y (recent): with strong decay the y-group wins.
    assert recent.recommend(["a", "y"], k=1)[0][0] in ("x", "z")
    s = m.similarity.toarray()
    assert np.allclose(s, s.T, atol=1e-6) and (s.diagonal() == 0).all()


@pytest.mark.parametrize("cls", [ALS, BPR])
def test_factor_models_learn_groups(data: Interactions, cls) -> None:
    m = cls(factors=8, iterations=200 if cls is BPR else 30, seed=1).fit(data)
    recs = [i for i, _ in m.recommend(["x", "y"], k=2, user="u5")]
    assert "z" in recs


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_load_roundtrip(data: Interactions, tmp_path: Path, name: str) -> None:
    m = MODELS[name](seed=3).fit(data)
    m.save(tmp_path / name)
    back = MODELS[name].load(tmp_path / name)
    hist = [data.sequences[0]]
    assert np.allclose(m.score(hist, np.array([0])), back.score(hist, np.array([0])), atol=1e-5)
    assert back.recommend(["a"], 3) == m.recommend(["a"], 3)


def test_recommend_filters(data: Interactions) -> None:
    m = ItemKNN().fit(data)
    got = m.recommend(["a"], k=5, allowed=["c", "d"])
    assert [i for i, _ in got] == ["c", "d"] or [i for i, _ in got] == ["c"]
    assert "a" not in [i for i, _ in m.recommend(["a"], k=6)]
    assert "a" in [i for i, _ in m.recommend(["a"], k=6, exclude_seen=False)]


def test_sasrec_learns_order_and_scores_cold_items() -> None:
    from shopmind.models import SASRec

    # Sequences walk a cycle a -> b -> c -> d -> e -> a; the model must predict the next step.
    cycle = ["a", "b", "c", "d", "e"]
    data = _cycle_data()
    # Text vectors: "f" (never seen) gets the same text as "c".
    text = np.eye(6, dtype=np.float32)
    text[data.item_index("f")] = text[data.item_index("c")]
    m = SASRec(dim=16, layers=1, heads=1, epochs=60, batch_size=16, lr=5e-3, dropout=0.0, seed=0).fit(data, text)
    assert m.history[-1]["loss"] < m.history[0]["loss"]
    for prev, nxt in zip(cycle, cycle[1:] + cycle[:1]):
        assert m.recommend([prev], k=1, exclude_seen=False)[0][0] in (nxt, "f" if nxt == "c" else nxt)
    assert np.isfinite(m.score([np.array([data.item_index("b")])])[0][data.item_index("f")])  # cold item scored
    assert not np.isnan(m.score([np.array([], np.int64)])).any()


def _cycle_data() -> Interactions:
    """60 users walking the cycle a -> b -> c -> d -> e -> a from random starts; "f" is a cold catalog item."""
    cycle = ["a", "b", "c", "d", "e"]
    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):
        start = int(rng.integers(0, 5))
        rows += [(f"u{u}", cycle[(start + i) % 5], i) for i in range(6)]
    return Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id", "seq"]), items=cycle + ["f"])


@pytest.mark.parametrize("full_softmax_items", [100_000, 1])  # full softmax, then in-batch sampled + logQ
def test_twotower_learns_next_item_and_serves_cold_items_and_users(full_softmax_items: int) -> None:
    from shopmind.models import TwoTower

    data = _cycle_data()
    text = np.eye(6, dtype=np.float32)
    text[data.item_index("f")] = text[data.item_index("c")]  # the never-seen "f" reads like "c"
    m = TwoTower(dim=16, epochs=80, batch_size=32, lr=1e-2, dropout=0.0, weight_decay=0.0,
                 full_softmax_items=full_softmax_items, seed=0).fit(data, text)
    assert m.history[-1]["loss"] < m.history[0]["loss"]
    cycle = ["a", "b", "c", "d", "e"]
    hits = sum(m.recommend([p], k=2, exclude_seen=False)[0][0] in (n, "f" if n == "c" else n)
               for p, n in zip(cycle, cycle[1:] + cycle[:1]))
    assert hits >= 4
    s = m.score([np.array([data.item_index("b")])])[0]
    assert s[data.item_index("f")] > np.median(s)  # the cold item is scored through its text
    cold_user = m.score([np.array([], np.int64)])[0]
    assert np.isfinite(cold_user).all() and cold_user[data.item_index("f")] < cold_user.max()


def test_twotower_id_cannot_score_cold_items_by_text() -> None:
    from shopmind.models import TwoTower, TwoTowerID

    assert TwoTower.supports_cold_items and not TwoTowerID.supports_cold_items
    assert TwoTowerID().use_text is False


def test_lightgcn_learns_groups_and_folds_in_histories(data: Interactions) -> None:
    from shopmind.models import LightGCN

    m = LightGCN(dim=16, epochs=60, batch_size=8, lr=0.05, seed=0).fit(data)
    assert m.history[-1]["loss"] < m.history[0]["loss"]
    assert {i for i, _ in m.recommend(["x", "y"], k=1, user="u5")} == {"z"}
    assert {i for i, _ in m.recommend(["x", "y"], k=1)} == {"z"}  # unknown user: fold-in of the history


def test_popular_in_category_prefers_the_users_groups(data: Interactions) -> None:
    from shopmind.models import PopularInCategory

    data.with_groups([["g1"], ["g1"], ["g1"], ["g1"], ["g2"], ["g2"], ["g2"]])
    m = PopularInCategory().fit(data)
    assert [i for i, _ in m.recommend(["x"], k=2)] == ["y", "z"]  # g2 first, by popularity inside g2
    assert [i for i, _ in m.recommend(["a"], k=2)] == ["b", "c"]  # g1, ties in catalog order
    assert [i for i, _ in m.recommend([], k=1)] == ["a"]  # no history: global popularity


def test_training_writes_tensorboard_logs(data: Interactions, tmp_path: Path) -> None:
    from shopmind.models import TwoTower

    TwoTower(dim=8, epochs=3, log_dir=str(tmp_path)).fit_validated(data, None, [data.sequences[0][:-1]],
                                                                    np.array([data.sequences[0][-1]]))
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1 and any(f.name.startswith("events.out.tfevents") for f in runs[0].iterdir())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(runs[0]))
    acc.Reload()
    assert {"loss", "valid_ndcg@10"} <= set(acc.Tags()["scalars"]) and len(acc.Scalars("loss")) == 3


def test_hybrid_weights_come_from_the_simplex(data: Interactions) -> None:
    from shopmind.models import Hybrid
    from shopmind.models.hybrid import simplex

    assert len(simplex(3)) == 66 and all(abs(sum(w) - 1) < 1e-9 for w in simplex(3))
    m = Hybrid(sasrec_epochs=4, twotower_epochs=4).fit_validated(data, None, [np.array([0])], np.array([1]))
    assert abs(sum(m.weights) - 1) < 1e-9 and m.tuned["w_itemknn"] == m.w_itemknn


@pytest.mark.parametrize("name", ["twotower", "lightgcn", "sasrec", "pop-cat", "itemknn", "als"])
def test_same_seed_same_scores(data: Interactions, name: str) -> None:
    kwargs = {"twotower": {"epochs": 5}, "lightgcn": {"epochs": 5}, "sasrec": {"epochs": 3}}.get(name, {})
    a = MODELS[name](seed=7, **kwargs).fit(data)
    b = MODELS[name](seed=7, **kwargs).fit(data)
    hist = [data.sequences[0], data.sequences[3]]
    assert np.array_equal(a.score(hist, np.array([0, 3])), b.score(hist, np.array([0, 3])))
