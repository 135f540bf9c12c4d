"""Evaluation splits shared by every later stage: given, leave-one-out, global temporal, and by query.

Each function returns a DataFrame with the record ids and a `split` column ('train' / 'valid' / 'test'),
computed in DuckDB from the store. Splits are deterministic (ties broken by ids; query split by hash).
"""

from __future__ import annotations

import pandas as pd

from .schema import stable_hash
from .store import Store

STRATEGIES = ("given", "leave_one_out", "temporal", "query")
_EVENT_COLS = "event_id, user_id, item_id, type, value, timestamp, seq"


class SplitError(ValueError):
    """The dataset does not support the requested split."""


def _order(store: Store, dataset: str, descending: bool = False) -> str:
    """Order a user's events by time when every event has one, else by the source's sequence position."""
    no_ts, no_seq = store.con.execute(
        "SELECT count(*) FILTER (WHERE timestamp IS NULL), count(*) FILTER (WHERE seq IS NULL) "
        "FROM events WHERE dataset = ?", [dataset]).fetchall()[0]
    if no_ts == 0:
        keys = ["timestamp", "seq", "event_id"]
    elif no_seq == 0:
        keys = ["seq", "event_id"]
    else:
        raise SplitError(f"{dataset}: events have neither complete timestamps nor sequence positions "
                         "(map a timestamp=COLUMN or seq=COLUMN when ingesting them)")
    direction = " DESC NULLS LAST" if descending else " ASC NULLS FIRST"
    return ", ".join(k + direction for k in keys)


def _require_events(store: Store, dataset: str) -> None:
    if not store.con.execute("SELECT count(*) FROM events WHERE dataset = ?", [dataset]).fetchall()[0][0]:
        raise SplitError(f"{dataset}: no events in the store (ingest it first)")


def given_split(store: Store, dataset: str) -> pd.DataFrame:
    """The split published with the data (e.g. UniSRec's .train/.valid/.test.inter)."""
    _require_events(store, dataset)
    missing = store.con.execute("SELECT count(*) FROM events WHERE dataset = ? AND split IS NULL",
                                [dataset]).fetchall()[0][0]
    if missing:
        raise SplitError(f"{dataset}: {missing} events carry no given split; use leave_one_out or temporal")
    return store.table(f"SELECT {_EVENT_COLS}, split FROM events WHERE dataset = ? ORDER BY user_id, seq, event_id",
                       [dataset])


def leave_one_out(store: Store, dataset: str, min_events: int = 3) -> pd.DataFrame:
    """S3-Rec / SASRec protocol: per user, the last event is test, the second to last valid, the rest
    train. Users with fewer than `min_events` events keep all of them in train."""
    _require_events(store, dataset)
    order, reverse = _order(store, dataset), _order(store, dataset, descending=True)
    return store.table(f"""
        WITH ranked AS (
            SELECT {_EVENT_COLS},
                   row_number() OVER (PARTITION BY user_id ORDER BY {reverse}) AS from_end,
                   count(*) OVER (PARTITION BY user_id) AS n
            FROM events WHERE dataset = ? AND item_id IS NOT NULL)
        SELECT {_EVENT_COLS},
               CASE WHEN n < ? THEN 'train' WHEN from_end = 1 THEN 'test' WHEN from_end = 2 THEN 'valid'
                    ELSE 'train' END AS split
        FROM ranked ORDER BY user_id, {order}""", [dataset, min_events])


def temporal_split(store: Store, dataset: str, valid_fraction: float = 0.1, test_fraction: float = 0.1) -> pd.DataFrame:
    """Global time split: the latest `test_fraction` of events (by timestamp) is test, the
    `valid_fraction` before it valid. Needs timestamps; every event at a cut-off time goes to the later part."""
    _require_events(store, dataset)
    if not (0 <= valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise SplitError("fractions must be in [0, 1) and add up to less than 1")
    missing = store.con.execute("SELECT count(*) FILTER (WHERE timestamp IS NULL) FROM events WHERE dataset = ?",
                                [dataset]).fetchall()[0][0]
    if missing:
        raise SplitError(f"{dataset}: {missing} events have no timestamp; a temporal split needs times "
                         "(use leave_one_out for sequence datasets)")
    t_valid, t_test = store.con.execute(
        "SELECT percentile_disc(?) WITHIN GROUP (ORDER BY timestamp), percentile_disc(?) WITHIN GROUP (ORDER BY timestamp) "
        "FROM events WHERE dataset = ?",
        [1 - valid_fraction - test_fraction, 1 - test_fraction, dataset]).fetchall()[0]
    df = store.table(f"SELECT {_EVENT_COLS} FROM events WHERE dataset = ? ORDER BY timestamp, event_id", [dataset])
    df["split"] = "train"
    df.loc[df["timestamp"] >= pd.Timestamp(t_valid), "split"] = "valid"
    df.loc[df["timestamp"] >= pd.Timestamp(t_test), "split"] = "test"
    df.attrs.update(valid_from=str(t_valid), test_from=str(t_test))
    return df


def query_split(store: Store, dataset: str, valid_fraction: float = 0.2, test_fraction: float = 0.2,
                seed: str = "shopmind") -> pd.DataFrame:
    """Judgments split by query (a query's judgments are all in one part), by a seeded hash of the
    normalised query text, so the split is fixed, reproducible and independent of file order."""
    if not (0 <= valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise SplitError("fractions must be in [0, 1) and add up to less than 1")
    df = store.table("SELECT judgment_id, query, item_id, grade FROM judgments WHERE dataset = ? "
                     "ORDER BY query, item_id", [dataset])
    if df.empty:
        raise SplitError(f"{dataset}: no relevance judgments in the store")
    return assign_query_parts(df, valid_fraction, test_fraction, seed)


def assign_query_parts(df: pd.DataFrame, valid_fraction: float = 0.2, test_fraction: float = 0.2,
                       seed: str = "shopmind") -> pd.DataFrame:
    """Adds `split` (train / valid / test) to judgment rows by a seeded hash of each normalised query."""
    queries = df["query"].drop_duplicates()
    u = {q: int(stable_hash(seed, q.strip().lower(), size=8), 16) / 2**64 for q in queries}
    bucket = df["query"].map(u)
    df = df.copy()
    df["split"] = "train"
    df.loc[bucket >= 1 - valid_fraction - test_fraction, "split"] = "valid"
    df.loc[bucket >= 1 - test_fraction, "split"] = "test"
    return df


def make_split(store: Store, dataset: str, strategy: str, **kwargs: float) -> pd.DataFrame:
    funcs = {"given": given_split, "leave_one_out": leave_one_out, "temporal": temporal_split, "query": query_split}
    if strategy not in funcs:
        raise SplitError(f"unknown split strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    return funcs[strategy](store, dataset, **kwargs)


def summarize(df: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Rows, users (or queries) and items per split part."""
    who = "user_id" if "user_id" in df else "query"
    out = {}
    for part in ("train", "valid", "test"):
        sub = df[df["split"] == part]
        out[part] = {"rows": int(len(sub)), ("users" if who == "user_id" else "queries"): int(sub[who].nunique()),
                     "items": int(sub["item_id"].nunique())}
    return out
