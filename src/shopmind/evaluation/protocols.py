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

from ..data.interactions import Interactions
from ..data.splits import given_split, leave_one_out
from ..data.store import Store


@dataclass
class Cases:
    """Users to evaluate: their index, the history the model sees, and the held-out target item."""

    users: np.ndarray
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


PROTOCOLS = {
    # name: (split function, mask the history in the ranking?)
    "unisrec": (given_split, False),
    "s3rec": (leave_one_out, True),
}
DEFAULT_PROTOCOL = {"amazon-scientific": "unisrec", "s3rec-beauty": "s3rec"}


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

    def cases(part: str, base: Interactions) -> Cases:
        rows = df[df["split"] == part]
        users = np.array([base.user_index(str(u)) for u in rows["user_id"]], dtype=object)
        keep = np.array([u is not None for u in users])
        rows, users = rows[keep], users[keep].astype(np.int64)
        targets = np.array([base.item_index(str(i)) for i in rows["item_id"]], np.int64)
        return Cases(users, [base.sequences[u] for u in users], targets)

    return Protocol(f"{name}{'' if mask == PROTOCOLS[name][1] else ('+mask' if mask else '-mask')}", mask,
                    train, cases("valid", train), full, cases("test", full))
