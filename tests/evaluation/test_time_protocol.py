"""The `time` protocol: a global time-based hold-out with no leakage, on hand-made frames and on real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopmind.data.splits import SplitError
from shopmind.evaluation import timesplit
from shopmind.evaluation.protocols import TIME_FALLBACK_NOTE, build, default_protocol, time_protocol

T0 = pd.Timestamp("2024-01-01")


def frame(rows: list[tuple[str, str, float]], type_: str = "view") -> pd.DataFrame:
    """Events from (user, item, day) triples."""
    return pd.DataFrame({"event_id": [f"e{i:04d}" for i in range(len(rows))], "user_id": [r[0] for r in rows],
                         "item_id": [r[1] for r in rows], "type": type_,
                         "timestamp": [T0 + pd.Timedelta(days=r[2]) for r in rows], "seq": np.nan})


def shop(users: int = 40, days: int = 50, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{int(rng.integers(0, 30))}", float(rng.integers(0, days))) for u in range(users)
            for _ in range(int(rng.integers(3, 12)))]
    return frame(rows)


def check_no_leakage(df: pd.DataFrame) -> None:
    by = {p: df.loc[df["split"] == p, "timestamp"] for p in ("train", "valid", "test")}
    assert all(len(v) for v in by.values())
    assert by["train"].max() < by["valid"].min() and by["valid"].max() < by["test"].min()
    assert str(by["valid"].min()) == df.attrs["valid_from"] and str(by["test"].min()) == df.attrs["test_from"]


def test_windows_are_cut_on_time_and_ties_never_straddle() -> None:
    events = shop()  # whole days only: many equal timestamps at every cut-off
    df = timesplit.cut_windows(events)
    check_no_leakage(df)
    assert len(df) == len(events) and sorted(df["event_id"]) == sorted(events["event_id"])
    n = len(df)  # ties go to the later window: the test window is at least its share, never much more here
    assert 0.1 * n <= (df["split"] == "test").sum() < 0.25 * n
    assert 0.2 * n <= (df["split"] != "train").sum() < 0.4 * n


def test_cases_use_only_the_past_and_count_what_is_skipped() -> None:
    rows = [("a", "x", 0), ("a", "y", 1), ("b", "x", 2), ("b", "z", 3), ("c", "y", 4)] * 4
    rows = [(u, i, d + 10 * k) for k, (u, i, d) in enumerate(rows)]  # spread the copies over time
    rows += [("a", "x", 300), ("a", "w", 301),  # valid: a repeats x, then a new item w -> target w
             ("newcomer", "x", 302), ("b", "z", 303),  # newcomer has no history; b only repeats z
             ("a", "brand-new", 400), ("a", "x", 401), ("c", "brand-new", 402), ("c", "q", 403),
             ("b", "w", 404), ("late", "y", 405)]
    p = time_protocol(frame(rows), catalog=["x", "y", "z", "w", "q"], valid_fraction=0.12, test_fraction=0.2)
    check_no_leakage(p.frame)
    assert p.name == "time" and p.mask_history
    assert "brand-new" not in set(p.full.item_ids)  # first seen in the test window: no index
    valid = {p.train.user_ids[u]: p.train.item_ids[t] for u, t in zip(p.valid.users, p.valid.targets)}
    assert valid == {"a": "w"}
    assert p.counts["valid"] | {"cases": 1} == {"window_events": 4, "window_users": 3, "no_history": 1,
                                                "unknown_item": 0, "only_repeats": 1, "capped": 0, "cases": 1}
    test = {p.full.user_ids[u]: p.full.item_ids[t] for u, t in zip(p.test.users, p.test.targets)}
    # a: brand-new is unknown, x is already had -> skipped; c: first known new item q; b: w (new to b)
    assert test == {"c": "q", "b": "w"}
    assert p.counts["test"]["no_history"] == 1 and p.counts["test"]["only_repeats"] == 1
    # histories: everything before the window, nothing after
    for cases, base, part in ((p.valid, p.train, "valid"), (p.test, p.full, "test")):
        start = p.frame.loc[p.frame["split"] == part, "timestamp"].min()
        for u, h in zip(cases.users, cases.histories):
            user = base.user_ids[u]
            past = p.frame[(p.frame["user_id"] == user) & (p.frame["timestamp"] < start)]
            assert [base.item_ids[i] for i in h] == list(past["item_id"])


def test_unknown_targets_are_counted_and_cases_capped() -> None:
    events = shop(users=200)
    unknown = events["timestamp"] >= events["timestamp"].quantile(0.95)
    events.loc[unknown, "item_id"] = [f"fresh{i}" for i in range(int(unknown.sum()))]
    p = time_protocol(events, mask_history=False, max_cases=25)
    assert p.name == "time-mask" and not p.mask_history
    assert p.counts["test"]["unknown_item"] > 0 and p.counts["valid"]["capped"] > 0
    assert len(p.valid.targets) == len(p.test.targets) == 25
    assert all(not str(i).startswith("fresh") for i in p.full.item_ids)


@pytest.mark.parametrize("events, message", [
    (frame([("u", "i", d) for d in range(19)]), "needs at least 20 events with an item, got 19"),
    (frame([("u", "i", 0)] * 30), "cannot cut 30 events at 1 distinct times"),
    (frame([("u", "i", d) for d in range(30)]).assign(timestamp=lambda f: f["timestamp"].where(f.index > 3)),
     "4 of 30 events have no timestamp"),
    (frame([(f"u{d}", "i", d) for d in range(30)]), "no valid case for the time protocol"),
])
def test_data_that_cannot_be_split_says_why(events: pd.DataFrame, message: str) -> None:
    with pytest.raises(SplitError, match=message):
        time_protocol(events)


def test_impressions_are_not_interactions() -> None:
    events = pd.concat([shop(), frame([("u1", "i1", 1)] * 5, type_="impression")], ignore_index=True)
    assert (timesplit.cut_windows(events)["type"] != "impression").all()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, data_dir: Path):
    """amazon2018-giftcards under its own name and under a name the registry does not know, and a shop whose
    events carry an order but no time."""
    from shopmind.config import load_settings
    from shopmind.data.adapters import Mapping
    from shopmind.data.api import ingest_source, open_source
    from shopmind.data.store import Store

    tmp = tmp_path_factory.mktemp("time")
    settings = load_settings(overrides={"store.path": tmp / "s.duckdb", "data.dir": str(data_dir),
                                        "data.allow_download": False}, environ={})
    (tmp / "clockless.csv").write_text("user,item,pos\n" + "".join(f"u{u},i{(u + k) % 7},{k}\n" for u in range(30)
                                                                for k in range(5)))
    mapping = Mapping(kind="events", columns={"user_id": "user", "item_id": "item", "seq": "pos"},
                      constants={"type": "view"})
    with Store(settings.store.path) as s:
        for target, name, m in (("amazon2018-giftcards", None, None), ("amazon2018-giftcards", "my-cards", None),
                                (str(tmp / "clockless.csv"), "clockless", mapping)):
            ingest_source(s, settings, open_source(settings, target, name=name, mapping=m))
        yield s


def test_unregistered_datasets_default_to_time(store) -> None:
    assert default_protocol("amazon-scientific") == "unisrec" and default_protocol("ml-100k") == "s3rec"
    assert default_protocol("my-cards") == "time"
    assert build(store, "amazon2018-giftcards").name == "s3rec"
    p = build(store, "my-cards")
    assert p.name == "time" and p.note.startswith("time windows: valid from")
    check_no_leakage(p.frame)
    assert p.frame["split"].value_counts().to_dict() == {"train": 2377, "valid": 295, "test": 300}
    assert len(p.valid.targets) == 66 and len(p.test.targets) == 67 and p.full.n_items == 1547
    assert p.train.matrix().sum() == 2377 and p.full.matrix().sum() == 2377 + 295
    # the same protocol on request for the registered name
    assert build(store, "amazon2018-giftcards", "time").counts == p.counts


def test_no_timestamps_fall_back_to_leave_one_out(store) -> None:
    p = build(store, "clockless")
    assert p.name == "s3rec" and p.note == TIME_FALLBACK_NOTE and len(p.test.targets) == 30


def test_an_unknown_protocol_is_a_clear_error(store) -> None:
    with pytest.raises(ValueError, match="unknown protocol 'weekly'; use one of unisrec, s3rec, time"):
        build(store, "my-cards", "weekly")
