"""The `time` protocol: a global time-based hold-out, the honest measure for a shop's own data.

All events (with an item; impressions excluded: being shown an item is not an interaction) are ordered by
(timestamp, seq, event_id). The latest `test_fraction` of them form the test window and the `valid_fraction`
before it the valid window. The windows are cut on timestamps: the cut-off times are the timestamps of the
events at those positions, and every event at a cut-off time goes to the later window, so equal timestamps
never straddle two windows (a window can be a little larger than its fraction when many events share a time).

    train = events before the valid window         (fit for validation)
    full  = events before the test window          (refit for the test)

A valid case is a user with an event in the valid window and at least one earlier (train) event: the target
is the first item of the user's valid-window events that is in the item index and (when the history is
masked, the default, as serving excludes what the user already has) not already in the user's history; the
history is the user's whole train sequence. Test cases likewise from the test window with `full`
histories. Users whose first event is in the window (no history), whose window items are all unknown to the
item index (not in the catalog and never seen before the test window) or who only repeat items they had are
skipped, and counted in `Protocol.counts`. At most `MAX_CASES` cases per part (a seeded sample).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..data.interactions import Interactions
from ..data.splits import SplitError

MIN_EVENTS = 20  # fewer events than this cannot give a train, a valid and a test window
MAX_CASES = 20_000  # per part: beyond this, a seeded sample (full ranking costs cases x items)
EXCLUDED_TYPES = ("impression", "search")
ORDER = ["timestamp", "seq", "event_id"]


def cut_windows(events: pd.DataFrame, valid_fraction: float = 0.1, test_fraction: float = 0.1,
                dataset: str = "dataset") -> pd.DataFrame:
    """The events (columns user_id, item_id, timestamp, seq, event_id, ...) in time order with a `split`
    column: 'train', 'valid' or 'test'. attrs: valid_from, test_from (the cut-off times)."""
    if not (0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise SplitError("time protocol: valid and test fractions must be in (0, 1) and add up to less than 1")
    df = events[events["item_id"].notna() & ~events["type"].astype(str).isin(EXCLUDED_TYPES)] \
        if "type" in events else events[events["item_id"].notna()]
    n = len(df)
    if n < MIN_EVENTS:
        raise SplitError(f"{dataset}: the time protocol needs at least {MIN_EVENTS} events with an item, got {n}")
    missing = int(df["timestamp"].isna().sum())
    if missing:
        raise SplitError(f"{dataset}: {missing:,} of {n:,} events have no timestamp; the time protocol needs a "
                         "time on every event (map one with timestamp=COLUMN), or on none (then it holds out "
                         "each user's last events by sequence)")
    df = df.assign(timestamp=pd.to_datetime(df["timestamp"]))
    df = df.sort_values([c for c in ORDER if c in df], kind="stable", na_position="first").reset_index(drop=True)
    ts = df["timestamp"].to_numpy()
    t_valid = ts[min(n - 1, int(np.floor(n * (1 - valid_fraction - test_fraction))))]
    t_test = ts[min(n - 1, int(np.floor(n * (1 - test_fraction))))]
    if not ts[0] < t_valid < t_test:
        raise SplitError(f"{dataset}: the time protocol cannot cut {n:,} events at {len(np.unique(ts)):,} distinct "
                         "times into train, valid and test windows (events at a cut-off time go to the later "
                         "window); it needs events spread over time")
    split = np.where(ts >= t_test, "test", np.where(ts >= t_valid, "valid", "train"))
    df["split"] = split
    df.attrs.update(valid_from=str(pd.Timestamp(t_valid)), test_from=str(pd.Timestamp(t_test)))
    return df


def window_cases(frame: pd.DataFrame, part: str, base: Interactions, mask_history: bool = True,
                 max_cases: int = MAX_CASES, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], np.ndarray,
                                                                         dict[str, int]]:
    """(users, histories, targets, counts) of one window: one case per user of the window who has a history
    in `base` (the events before the window). See the module docstring for the target."""
    rows = frame[frame["split"] == part]
    counts = {"window_events": int(len(rows)), "window_users": int(rows["user_id"].nunique()), "no_history": 0,
              "unknown_item": 0, "only_repeats": 0, "capped": 0}
    users: list[int] = []
    targets: list[int] = []
    for user, items in rows.groupby("user_id", sort=True)["item_id"]:
        u = base.user_index(str(user))
        if u is None:
            counts["no_history"] += 1
            continue
        known = [i for i in (base.item_index(str(x)) for x in items) if i is not None]
        if not known:
            counts["unknown_item"] += 1
            continue
        had = set(base.sequences[u].tolist()) if mask_history else set()
        target = next((i for i in known if i not in had), None)
        if target is None:
            counts["only_repeats"] += 1
            continue
        users.append(u)
        targets.append(target)
    u_arr, t_arr = np.array(users, np.int64), np.array(targets, np.int64)
    if len(u_arr) > max_cases:
        keep = np.sort(np.random.default_rng(seed).choice(len(u_arr), max_cases, replace=False))
        counts["capped"] = int(len(u_arr) - max_cases)
        u_arr, t_arr = u_arr[keep], t_arr[keep]
    counts["cases"] = int(len(u_arr))
    return u_arr, [base.sequences[u] for u in u_arr], t_arr, counts


def window_data(frame: pd.DataFrame, catalog: Sequence[str]) -> tuple[Interactions, Interactions]:
    """(train, full) interactions with one item index: the catalog plus every item of an event before the
    test window (an item first seen in the test window has no index: its cases are skipped)."""
    before_test = frame[frame["split"] != "test"]
    items = sorted(set(map(str, catalog)) | set(before_test["item_id"].astype(str)))
    order = [c for c in ORDER if c in frame]
    train = Interactions.from_frame(frame[frame["split"] == "train"], items, order)
    full = Interactions.from_frame(before_test, items, order)
    return train, full
