"""User profiles: the incremental update equals the closed form of time-decayed, weighted sums."""

from __future__ import annotations

import numpy as np

from shopmind.knowledge.profiles import UserProfile, build_profiles, event_weight


def _closed_form(events, vectors, half_life, now):
    v = sum(event_weight(t, val) * 2 ** (-(now - ts) / half_life) * vectors[i] for i, t, val, ts in events)
    return v / np.linalg.norm(v)


def test_incremental_matches_closed_form_including_out_of_order_and_rebase() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(6, 16)).astype(np.float32)
    day = 86400.0
    # Times span far more than 30 half-lives, which forces the internal rebase; one event arrives late.
    events = [(0, "view", None, 0.0), (1, "purchase", None, 5 * day), (2, "rating", 5.0, 400 * day),
              (3, "rating", 1.0, 1500 * day), (4, "click", None, 1499 * day), (5, "add_to_cart", None, 1501 * day)]
    p = UserProfile(16, half_life=30 * day)
    for i, t, val, ts in events:
        p.update(vectors[i], event_weight(t, val), ts, keywords=[f"k{i}"], categories=["c"])
    expected = _closed_form(events, vectors, 30 * day, 1501 * day)
    assert np.allclose(p.embedding(), expected, atol=1e-4)
    kw = dict(p.top_keywords(10))
    assert kw["k5"] > kw["k4"] > kw["k0"]  # recent and strong actions dominate
    assert abs(dict(p.top_categories())["c"] - sum(kw.values())) < 1e-3


def test_event_weights() -> None:
    assert event_weight("purchase") > event_weight("view") > 0
    assert event_weight("rating", 5) > event_weight("rating", 3) > event_weight("rating", 1) > 0
    assert event_weight("impression") == 0


def test_build_profiles_skips_unknown_items() -> None:
    vectors = np.eye(3, dtype=np.float32)
    profiles = build_profiles([("u", "a", "view", None, 1.0), ("u", "zzz", "view", None, 2.0),
                               ("v", "c", "search", None, 1.0)], {"a": 0, "b": 1, "c": 2}, vectors,
                              [["x"], ["y"], ["z"]], [["A"], ["B"], ["C"]], half_life=10)
    assert set(profiles) == {"u"} and profiles["u"].events == 1
    assert np.allclose(profiles["u"].embedding(), vectors[0])
