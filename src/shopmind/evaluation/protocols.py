"""Evaluation protocols: which events train a model, which histories it sees, which item it must rank.

Both published protocols are leave-one-out per user (last item test, second to last valid) and rank the
target among all items. They differ in masking: UniSRec / RecBole results on amazon-scientific keep the
user's own history items in the ranking; S3-Rec's code removes them. Model selection uses `valid` (model
trained on `train`); the test is then run once with the model refitted on train + valid, each user's
history being everything before the test item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.interactions import Interactions
from ..data.splits import given_split, leave_one_out
from ..data.store import Store


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


PROTOCOLS = {
    # name: (split function, mask the history in the ranking?)
    "unisrec": (given_split, False),
    "s3rec": (leave_one_out, True),
}
DEFAULT_PROTOCOL = {"amazon-scientific": "unisrec", "s3rec-beauty": "s3rec"}


def item_group_labels(store: Store, dataset: str, item_ids: np.ndarray) -> list[list[str]]:
    """Each item's groups for per-category models: its category path, else the category text of UniSRec
    files, else S3-Rec attribute ids, else MovieLens genres; [] when the catalog has none of these."""
    rows = store.con.execute(
        "SELECT item_id, categories, json_extract_string(text_fields, '$.category_text'), "
        "json_extract_string(attributes, '$.attribute_ids'), json_extract_string(attributes, '$.genres') "
        "FROM items WHERE dataset = ?", [dataset]).fetchall()
    labels: dict[str, list[str]] = {}
    for item, cats, cat_text, attr_ids, genres in rows:
        if cats:
            labels[item] = [" > ".join(cats)]
        elif cat_text:
            labels[item] = [cat_text]
        elif attr_ids:
            labels[item] = [f"attr:{a}" for a in attr_ids.split()]
        elif genres:
            labels[item] = [f"genre:{g}" for g in genres.split("|") if g]
    return [labels.get(str(i), []) for i in item_ids]


def build(store: Store, dataset: str, protocol: str | None = None, mask_history: bool | None = None) -> Protocol:
    name = protocol or DEFAULT_PROTOCOL.get(dataset, "s3rec")
    split_fn, mask = PROTOCOLS[name]
    mask = mask if mask_history is None else mask_history
    df = split_fn(store, dataset)
    order = ["timestamp", "seq", "event_id"] if df["timestamp"].notna().all() else ["seq", "event_id"]
    catalog = [r[0] for r in store.con.execute("SELECT item_id FROM items WHERE dataset = ?", [dataset]).fetchall()]
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

    return Protocol(f"{name}{'' if mask == PROTOCOLS[name][1] else ('+mask' if mask else '-mask')}", mask,
                    train, cases("valid", train), full, cases("test", full), df)


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
