"""The trainer's hold-out: the newest unseen events judge, nothing of them leaks into training."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from shopmind.data.store import Store
from shopmind.evaluation.holdout import choose_slice, events_frame, recent_protocol, remap


def _store(tmp_path, events):
    """A store with items i0..i9 and these (user, item, unix seconds or None, seq) events."""
    s = Store(tmp_path / "s.duckdb")
    s.con.execute("INSERT INTO ingest_runs (run_id, dataset, status) VALUES (1, 'd', 'completed')")
    for i in range(10):
        s.con.execute("INSERT INTO items (dataset, item_id, title, content_hash, run_id) VALUES ('d', ?, ?, 'h', 1)",
                      [f"i{i}", f"item {i}"])
    for n, (u, i, t, seq) in enumerate(events):
        ts = datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None) if t is not None else None
        s.con.execute("INSERT INTO events (dataset, event_id, user_id, item_id, type, timestamp, seq, run_id) "
                      "VALUES ('d', ?, ?, ?, 'view', ?, ?, 1)", [f"e{n:04d}", u, i, ts, seq])
    return s


def test_untimed_events_are_older_and_the_slice_is_the_newest_share(tmp_path):
    events = [("a", "i1", None, 1), ("a", "i2", None, 2), ("b", "i3", None, 1)]
    events += [("a", f"i{k % 10}", 1000.0 + k, None) for k in range(10)]
    with _store(tmp_path, events) as s:
        f = events_frame(s, "d")
        assert set(f["item_id"][:3]) == {"i1", "i2", "i3"}
        assert not np.isfinite(f["t"][:3]).any() and np.isfinite(f["t"][3:]).all()
        assert choose_slice(f, since=2000.0) is None  # nothing newer than the served data
        cut = choose_slice(f, since=1003.0, share=0.5)  # 6 new events (1004..1009): the newest 3
        assert cut.new_events == 6 and cut.start == 1007.0 and cut.events == 3
        cut = choose_slice(f, since=None, share=0.2)
        assert cut.new_events == 10 and cut.start == 1008.0


def test_recent_protocol_never_trains_on_the_slice(tmp_path):
    rng = np.random.default_rng(0)
    events = [(f"u{u}", f"i{rng.integers(60)}", 100.0 * k + u, None) for k in range(28) for u in range(20)]
    with _store(tmp_path, events) as s:
        f = events_frame(s, "d")
        cut = choose_slice(f, since=None, share=0.25)
        p = recent_protocol(s, "d", f, cut)
        frame = p.frame
        assert frame.loc[frame["split"] != "test", "t"].max() < cut.start <= frame.loc[frame["split"] == "test", "t"].min()
        # full = every event before the slice; train = full minus each user's last one (the valid cases)
        assert sum(map(len, p.full.sequences)) == int((f["t"] < cut.start).sum())
        held = int((frame["split"] == "valid").sum())
        assert held == 20 and sum(map(len, p.train.sequences)) + held == sum(map(len, p.full.sequences))
        assert 0 < len(p.valid.targets) <= held  # (a last item the user had before is no validation case)
        # test cases: each slice event, in time order, of a user who did something before it, on an item new
        # to them; the history is everything they did before it (pre-slice and earlier in the slice)
        expected, done, per = [], {}, {}
        for u, i, t in zip(f["user_id"], f["item_id"], f["t"]):
            h = done.setdefault(u, [])
            if t >= cut.start and h and i not in h and per.get(u, 0) < 5:
                per[u] = per.get(u, 0) + 1
                expected.append((list(h), i))
            h.append(i)
        got = [([p.full.item_ids[x] for x in h], p.full.item_ids[t]) for h, t in zip(p.test.histories, p.test.targets)]
        assert got == expected and len(got) > 20 and p.test.users is None
        assert max(per.values()) == 5
        one = recent_protocol(s, "d", f, cut, targets_per_user=1)
        assert len(one.test.targets) == len({u for u in per})
        assert p.mask_history


def test_cases_need_a_history_and_remap_drops_unknown_items(tmp_path):
    events = [("a", "i1", 1.0, None), ("a", "i2", 2.0, None), ("b", "i3", 3.0, None)]  # b: only in the slice
    with _store(tmp_path, events) as s:
        f = events_frame(s, "d")
        p = recent_protocol(s, "d", f, choose_slice(f, since=None, share=0.34))
        assert len(p.test.targets) == 0  # b has no history before the slice
        p = recent_protocol(s, "d", f, choose_slice(f, since=1.5, share=0.5))  # slice = b's i3
        assert len(p.test.targets) == 0
    from shopmind.evaluation.protocols import Cases

    ids = np.array(["x", "y", "z"], dtype=object)
    cases = Cases(np.array([0, 1]), [np.array([0, 1]), np.array([2])], np.array([2, 0]))
    other = np.array(["y", "z"], dtype=object)  # knows neither x
    mapped, keep = remap(cases, ids, other)
    assert list(keep) == [0] and list(mapped.targets) == [1] and list(mapped.histories[0]) == [0]
    assert mapped.users is None


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_bad_share_is_refused(share):
    from shopmind.serving.trainer import TrainerConfig

    with pytest.raises(ValueError, match="holdout_share"):
        TrainerConfig(holdout_share=share)
