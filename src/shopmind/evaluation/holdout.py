"""The trainer's hold-out: the newest events judge a retrained model against the served one.

A live shop's question is not a benchmark's ("does the model predict each user's last item?") but "does a
model retrained on what happened since predict what happens next better than the one serving now?". So:

- every event of the dataset, in global time order (events without a timestamp, e.g. an ingested
  benchmark sequence, count as older than every timestamped one; then seq, then event id);
- the **slice** is the newest `share` of the events that are newer than the served artifact's training
  data (`since`, unix seconds), so the served model has never seen any of it;
- a **case** is a slice event of a user who did something before it, on an item new to them: the history
  is everything they did before it, before the slice and earlier in it (what serving knows online from
  the event log), the target its item (at most five cases per user);
- the candidate is fitted on everything before the slice (its ranker on each user's last pre-slice event,
  leave-one-out) and both models rank the full catalog for every case, without the user's history items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.interactions import Interactions
from ..data.store import Store
from .protocols import Cases, Protocol, item_group_labels
from .timesplit import EXCLUDED_TYPES  # impressions (shown, not chosen) and searches never train


@dataclass
class Slice:
    start: float  # unix seconds: events at or after it are held out
    events: int  # events in the slice
    new_events: int  # events newer than `since`


def events_frame(store: Store, dataset: str) -> pd.DataFrame:
    """Every item interaction (not impressions) of the dataset with a global order key `t` (unix seconds; -inf
    without a timestamp), sorted by (t, seq, event_id)."""
    df = store.table("SELECT user_id, item_id, type, value, timestamp, seq, event_id FROM events "
                     "WHERE dataset = ? AND item_id IS NOT NULL AND type <> ALL(?)",
                     [dataset, list(EXCLUDED_TYPES)])
    ts = pd.to_datetime(df["timestamp"])
    df["t"] = np.array([-np.inf if pd.isna(x) else x.timestamp() for x in ts], np.float64)
    df["seq"] = df["seq"].fillna(0)
    return df.sort_values(["t", "seq", "event_id"], kind="stable").reset_index(drop=True)


def choose_slice(frame: pd.DataFrame, since: float | None, share: float = 0.5, max_events: int = 50_000
                 ) -> Slice | None:
    """The newest `share` (at most `max_events`) of the events newer than `since`; None when there are none.
    The cut is a timestamp, so events with the same time fall on one side."""
    t = frame["t"].to_numpy()
    new = t > (since if since is not None else -np.inf)
    new &= np.isfinite(t)
    n_new = int(new.sum())
    if not n_new:
        return None
    newest = np.sort(t[new])
    take = max(1, min(max_events, int(round(n_new * share))))
    start = float(newest[-take])
    return Slice(start, int((t >= start).sum()), n_new)


def recent_protocol(store: Store, dataset: str, frame: pd.DataFrame, cut: Slice, max_cases: int = 5000,
                    seed: int = 0, targets_per_user: int = 5) -> Protocol:
    """A Protocol for `ranking.train.train_pipeline`: `full` = events before the slice, `train` = `full`
    without each user's last event, `valid` = those last events (leave-one-out, for early stopping and the
    ranker), `test` = the slice cases (at most `max_cases`, a seeded sample; see `_slice_cases`).
    Histories mask in the ranking."""
    catalog = [r[0] for r in store.con.execute("SELECT item_id FROM items WHERE dataset = ?", [dataset]).fetchall()]
    before = frame[frame["t"] < cut.start].copy()
    after = frame[frame["t"] >= cut.start]
    last = before.groupby("user_id").cumcount(ascending=False) == 0
    multi = before.groupby("user_id")["item_id"].transform("size") >= 2
    before["split"] = np.where(last & multi, "valid", "train")
    order = ["t", "seq", "event_id"]
    full = Interactions.from_frame(before, set(catalog) | set(frame["item_id"].astype(str)), order)
    train = Interactions.from_frame(before[before["split"] == "train"], full.item_ids, order)
    groups = item_group_labels(store, dataset, full.item_ids)
    full.with_groups(groups)
    train.with_groups(groups)
    valid = _cases(before[before["split"] == "valid"], train)
    test = _slice_cases(after, full, max_cases, seed, targets_per_user)
    split_frame = pd.concat([before, after.assign(split="test")], ignore_index=True)
    split_frame["timestamp"] = pd.to_datetime(split_frame["timestamp"])
    return Protocol("recent", True, train, valid, full, test, split_frame)


def _slice_cases(after: pd.DataFrame, full: Interactions, max_cases: int, seed: int, per_user: int) -> Cases:
    """Next-event cases in the slice, in time order: an event of a user who did something before it is a case
    when its item is new to them (serving never re-recommends what they had); the history is everything they
    did before it, before the slice and earlier in it, as serving knows it online from the event log. The
    models were fitted on the pre-slice events only, so no case's target was ever trained on. At most
    `per_user` cases per user (a shopper busy in the slice does not outweigh the others)."""
    history = {str(u): list(s) for u, s in zip(full.user_ids, full.sequences)}
    count: dict[str, int] = {}
    hist, targets = [], []
    for user, item in zip(after["user_id"].astype(str), after["item_id"].astype(str)):
        i = full.item_index(item)
        h = history.setdefault(user, [])
        if i is None:
            continue
        if h and i not in h and count.get(user, 0) < per_user:
            count[user] = count.get(user, 0) + 1
            hist.append(np.array(h, np.int64))
            targets.append(i)
        h.append(i)
    if len(targets) > max_cases:
        pick = np.sort(np.random.default_rng(seed).choice(len(targets), max_cases, replace=False))
        hist, targets = [hist[i] for i in pick], [targets[i] for i in pick]
    return Cases(None, hist, np.array(targets, np.int64))


def _cases(rows: pd.DataFrame, base: Interactions, max_cases: int | None = None, seed: int = 0) -> Cases:
    """Cases of these (user, target) rows against `base`: users `base` knows with a non-empty history, targets
    not in that history."""
    users, hist, targets = [], [], []
    for user, item in zip(rows["user_id"].astype(str), rows["item_id"].astype(str)):
        u, i = base.user_index(user), base.item_index(item)
        if u is None or i is None or not len(base.sequences[u]) or i in set(base.sequences[u].tolist()):
            continue
        users.append(u)
        hist.append(base.sequences[u])
        targets.append(i)
    if max_cases is not None and len(users) > max_cases:
        pick = np.sort(np.random.default_rng(seed).choice(len(users), max_cases, replace=False))
        users, hist, targets = [users[i] for i in pick], [hist[i] for i in pick], [targets[i] for i in pick]
    return Cases(np.array(users, np.int64), hist, np.array(targets, np.int64))


def remap(cases: Cases, source: np.ndarray, target: np.ndarray) -> tuple[Cases, np.ndarray]:
    """The cases in another model's item index (`source`/`target`: item ids by row): unknown history items
    are dropped; returns (cases whose target the other model knows, their positions in `cases`)."""
    index = {str(i): r for r, i in enumerate(target)}
    to = np.array([index.get(str(i), -1) for i in source], np.int64)
    keep, hist, targets = [], [], []
    for n, (h, t) in enumerate(zip(cases.histories, cases.targets)):
        mapped = to[h]
        if to[t] < 0:
            continue
        keep.append(n)
        hist.append(mapped[mapped >= 0])
        targets.append(to[t])
    return Cases(None, hist, np.array(targets, np.int64)), np.array(keep, np.int64)
