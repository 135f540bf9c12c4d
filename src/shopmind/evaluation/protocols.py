"""Evaluation protocols: which events train a model, which histories it sees, which item it must rank.

Both published protocols are leave-one-out per user (last item test, second to last valid) and rank the
target among all items. They differ in masking: UniSRec / RecBole results on amazon-scientific keep the
user's own history items in the ranking; S3-Rec's code removes them. Model selection uses `valid` (model
trained on `train`); the test is then run once with the model refitted on train + valid, each user's
history being everything before the test item.

The `time` protocol (evaluation/timesplit.py) is a global time-based hold-out: the latest events of the
whole shop are the test, nothing after a cut-off time is seen in training. It is the default for datasets
the registry does not know (a shop's own data); registered datasets keep their published protocol.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..data.interactions import Interactions
from ..data.registry import REGISTRY
from ..data.splits import SplitError, given_split, leave_one_out
from ..data.store import Store
from . import timesplit


@dataclass
class Cases:
    """Users to evaluate: their index, the history the model sees, and the held-out target item."""

    users: np.ndarray | None  # None: the models fold the history in (no user index)
    histories: list[np.ndarray]
    targets: np.ndarray


@dataclass
class Protocol:
    name: str
    mask_history: bool
    train: Interactions  # fit here for validation
    valid: Cases
    full: Interactions  # train + valid: refit here for the test
    test: Cases
    frame: pd.DataFrame | None = None  # the split events (user_id, item_id, timestamp, ..., split)
    note: str = ""  # e.g. why another protocol than the one asked for was used
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # time protocol: cases made and skipped


PROTOCOLS = {
    # name: (split function, mask the history in the ranking?); `time` splits in evaluation/timesplit.py
    "unisrec": (given_split, False),
    "s3rec": (leave_one_out, True),
    "time": (None, True),
}
DEFAULT_PROTOCOL = {"amazon-scientific": "unisrec", "s3rec-beauty": "s3rec"}
TIME_FALLBACK_NOTE = ("time protocol asked for, but no event has a timestamp: each user's last events by "
                      "sequence are held out instead (leave-one-out, as s3rec)")


def default_protocol(dataset: str) -> str:
    """The published protocol of a registered dataset (s3rec when it has none); `time` for any other."""
    if dataset in DEFAULT_PROTOCOL:
        return DEFAULT_PROTOCOL[dataset]
    return "s3rec" if REGISTRY.get(dataset) is not None else "time"


def item_group_labels(store: Store, dataset: str, item_ids: np.ndarray) -> list[list[str]]:
    """Each item's groups for per-category models: its category path, else the category text of UniSRec
    files, else S3-Rec attribute ids, else MovieLens genres; [] when the catalog has none of these."""
    rows = store.con.execute("SELECT item_id, categories, text_fields, attributes FROM items WHERE dataset = ?",
                             [dataset]).fetchall()
    labels: dict[str, list[str]] = {}
    for item, cats, text_fields, attributes in rows:
        cat_text = _json_field(text_fields, "category_text")
        attr_ids, genres = _json_field(attributes, "attribute_ids"), _json_field(attributes, "genres")
        if cats:
            labels[item] = [" > ".join(cats)]
        elif cat_text:
            labels[item] = [cat_text]
        elif attr_ids:
            labels[item] = [f"attr:{a}" for a in attr_ids.split()]
        elif genres:
            labels[item] = [f"genre:{g}" for g in genres.split("|") if g]
    return [labels.get(str(i), []) for i in item_ids]


def _json_field(raw: str | None, key: str) -> str | None:
    """A JSON object's field as text (a string as is, anything else as JSON), like json_extract_string."""
    try:
        value = json.loads(raw).get(key) if raw else None
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) or value is None else json.dumps(value)


def _suffix(name: str, mask: bool) -> str:
    return "" if mask == PROTOCOLS[name][1] else ("+mask" if mask else "-mask")


def time_protocol(events: pd.DataFrame, catalog: Sequence[str] = (), mask_history: bool | None = None,
                  valid_fraction: float = 0.1, test_fraction: float = 0.1, max_cases: int = timesplit.MAX_CASES,
                  groups: Callable[[np.ndarray], list[list[str]]] | None = None, dataset: str = "dataset") -> Protocol:
    """The `time` protocol on these events (user_id, item_id, type, timestamp, seq, event_id); `catalog`: every
    item id of the shop; `groups`: item ids -> group labels (categories). See evaluation/timesplit.py."""
    mask = PROTOCOLS["time"][1] if mask_history is None else mask_history
    df = timesplit.cut_windows(events, valid_fraction, test_fraction, dataset)
    train, full = timesplit.window_data(df, catalog)
    if groups is not None:
        labels = groups(full.item_ids)
        train.with_groups(labels)
        full.with_groups(labels)
    parts = {}
    counts = {}
    for part, base in (("valid", train), ("test", full)):
        users, histories, targets, counts[part] = timesplit.window_cases(df, part, base, mask, max_cases)
        if not len(targets):
            raise SplitError(f"{dataset}: no {part} case for the time protocol: none of the "
                             f"{counts[part]['window_users']:,} users of the {part} window has an earlier event and "
                             f"a new item there ({counts[part]['no_history']:,} have no earlier event); a shop needs "
                             "returning customers to be measured")
        parts[part] = Cases(users, histories, targets)
    note = f"time windows: valid from {df.attrs['valid_from']}, test from {df.attrs['test_from']}"
    return Protocol(f"time{_suffix('time', mask)}", mask, train, parts["valid"], full, parts["test"], df, note, counts)


def _time_events(store: Store, dataset: str) -> pd.DataFrame:
    types = ", ".join(f"'{t}'" for t in timesplit.EXCLUDED_TYPES)
    return store.table("SELECT event_id, user_id, item_id, type, value, timestamp, seq FROM events "
                       f"WHERE dataset = ? AND item_id IS NOT NULL AND type NOT IN ({types}) "
                       "ORDER BY timestamp, seq, event_id", [dataset])


def build(store: Store, dataset: str, protocol: str | None = None, mask_history: bool | None = None) -> Protocol:
    name = protocol or default_protocol(dataset)
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; use one of {', '.join(PROTOCOLS)}")
    catalog = [r[0] for r in store.con.execute("SELECT item_id FROM items WHERE dataset = ?", [dataset]).fetchall()]
    if name == "time":
        events = _time_events(store, dataset)
        if len(events) and events["timestamp"].isna().all():
            fallback = build(store, dataset, "s3rec", mask_history)
            fallback.note = TIME_FALLBACK_NOTE
            return fallback
        if not len(events):
            raise SplitError(f"{dataset}: no events with an item in the store (ingest the shop's events first)")
        return time_protocol(events, catalog, mask_history, dataset=dataset,
                             groups=lambda ids: item_group_labels(store, dataset, ids))
    split_fn, mask = PROTOCOLS[name]
    assert split_fn is not None
    mask = mask if mask_history is None else mask_history
    df = split_fn(store, dataset)
    # Every item of any split gets an index, also when the catalog lacks it (a dataset of reviews without
    # metadata): the index must not depend on the split.
    catalog = sorted(set(catalog) | set(df["item_id"].dropna().astype(str)))
    order = ["timestamp", "seq", "event_id"] if df["timestamp"].notna().all() else ["seq", "event_id"]
    train = Interactions.from_frame(df[df["split"] == "train"], catalog, order)
    full = Interactions.from_frame(df[df["split"] != "test"], catalog, order)
    assert list(train.item_ids) == list(full.item_ids), "item index must not depend on the split"
    groups = item_group_labels(store, dataset, full.item_ids)
    train.with_groups(groups)
    full.with_groups(groups)

    def cases(part: str, base: Interactions) -> Cases:
        rows = df[df["split"] == part]
        users = np.array([base.user_index(str(u)) for u in rows["user_id"]], dtype=object)
        keep = np.array([u is not None for u in users])
        rows, users = rows[keep], users[keep].astype(np.int64)
        targets = np.array([base.item_index(str(i)) for i in rows["item_id"]], np.int64)
        return Cases(users, [base.sequences[u] for u in users], targets)

    return Protocol(f"{name}{_suffix(name, mask)}", mask, train, cases("valid", train), full, cases("test", full), df)


def cold_items(protocol: Protocol, share: float = 0.1, seed: int = 0) -> tuple[Interactions, Cases, np.ndarray]:
    """A cold-item experiment on the test part: a seeded `share` of the items with interactions lose all of
    them (removed from every training sequence and history, kept in the catalog with their text), and the
    cases are the test users whose target is one of those items. Returns (training data, cases, cold items)."""
    full = protocol.full
    seen = np.flatnonzero(full.item_popularity() > 0)
    cold = np.sort(np.random.default_rng(seed).choice(seen, max(1, int(share * len(seen))), replace=False))
    is_cold = np.zeros(full.n_items, bool)
    is_cold[cold] = True
    seqs = [s[~is_cold[s]] for s in full.sequences]
    reduced = Interactions(full.user_ids, full.item_ids, seqs, item_groups=full.item_groups)
    keep = is_cold[protocol.test.targets]
    users = protocol.test.users[keep]
    return reduced, Cases(users, [seqs[u] for u in users], protocol.test.targets[keep]), cold
