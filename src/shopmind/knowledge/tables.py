"""Knowledge tables in the shopmind store, and the embedding cache keyed by (model id, text hash)."""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from ..data.store import Store

DDL = """
CREATE TABLE IF NOT EXISTS embedding_cache (
    model VARCHAR NOT NULL, text_hash VARCHAR NOT NULL, dtype VARCHAR NOT NULL, dim INTEGER NOT NULL,
    vector BLOB NOT NULL, PRIMARY KEY (model, text_hash));
CREATE TABLE IF NOT EXISTS item_texts (
    dataset VARCHAR NOT NULL, item_id VARCHAR NOT NULL, text VARCHAR NOT NULL, text_hash VARCHAR NOT NULL,
    PRIMARY KEY (dataset, item_id));
CREATE TABLE IF NOT EXISTS item_keywords (
    dataset VARCHAR NOT NULL, item_id VARCHAR NOT NULL, keywords VARCHAR[], PRIMARY KEY (dataset, item_id));
CREATE TABLE IF NOT EXISTS knowledge_cards (
    dataset VARCHAR NOT NULL, item_id VARCHAR NOT NULL, card JSON NOT NULL, PRIMARY KEY (dataset, item_id));
CREATE TABLE IF NOT EXISTS user_profiles (
    dataset VARCHAR NOT NULL, user_id VARCHAR NOT NULL, vector FLOAT[] NOT NULL, keywords VARCHAR[], interests JSON,
    categories JSON, events INTEGER, last_time DOUBLE, PRIMARY KEY (dataset, user_id));
CREATE TABLE IF NOT EXISTS item_edges (
    dataset VARCHAR NOT NULL, src VARCHAR NOT NULL, dst VARCHAR NOT NULL, kind VARCHAR NOT NULL, weight DOUBLE NOT NULL);
CREATE TABLE IF NOT EXISTS taxonomy (
    dataset VARCHAR NOT NULL, node_id VARCHAR NOT NULL, parent_id VARCHAR, kind VARCHAR NOT NULL, name VARCHAR NOT NULL,
    depth INTEGER NOT NULL, item_count INTEGER NOT NULL, PRIMARY KEY (dataset, node_id));
"""

TABLES = ("item_texts", "item_keywords", "knowledge_cards", "user_profiles", "item_edges", "taxonomy")


def ensure_tables(store: Store) -> None:
    # Knowledge tables hold derived data that `mine` recomputes: a table from an older layout is dropped.
    cols = {r[0] for r in store.con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'user_profiles' "
        "AND table_schema = current_schema()").fetchall()}
    if cols and "interests" not in cols:
        store.con.execute("DROP TABLE user_profiles")
    if not set(TABLES) | {"embedding_cache"} <= store.tables():
        store.create_tables(DDL)


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def replace_rows(store: Store, table: str, dataset: str, rows: pa.Table) -> None:
    """Replace everything `table` holds for `dataset` with `rows`, in one transaction."""
    with store.transaction():
        store.con.execute(f"DELETE FROM {table} WHERE dataset = ?", [dataset])
        if rows.num_rows:
            store.con.register("_rows", rows)
            try:
                cols = ", ".join(rows.column_names)
                store.con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _rows").fetchall()
            finally:
                store.con.unregister("_rows")


class EmbeddingCache:
    """Vectors by (model id, text hash) in the store: unchanged texts are never encoded twice."""

    def __init__(self, store: Store, dtype: str = "float32") -> None:
        if dtype not in ("float32", "float16"):
            raise ValueError(f"embedding dtype must be float32 or float16, got {dtype!r}")
        self.store = store
        self.dtype = dtype
        ensure_tables(store)

    def get(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        if not hashes:
            return {}
        keys = pa.table({"text_hash": pa.array(list(set(hashes)), pa.string())})
        self.store.con.register("_keys", keys)
        try:
            rows = self.store.con.execute(
                "SELECT c.text_hash, c.dtype, c.vector FROM embedding_cache c JOIN _keys k USING (text_hash) "
                "WHERE c.model = ?", [model]).fetchall()
        finally:
            self.store.con.unregister("_keys")
        return {h: np.frombuffer(v, dtype=d).astype(np.float32) for h, d, v in rows}

    def put(self, model: str, hashes: Sequence[str], vectors: np.ndarray) -> None:
        if not len(hashes):
            return
        data = vectors.astype(self.dtype)
        rows = pa.table({"model": [model] * len(hashes), "text_hash": list(hashes), "dtype": [self.dtype] * len(hashes),
                         "dim": [data.shape[1]] * len(hashes), "vector": [r.tobytes() for r in data]})
        with self.store.transaction():
            self.store.con.register("_vec", rows)
            try:
                self.store.con.execute("INSERT INTO embedding_cache SELECT * FROM _vec ON CONFLICT (model, text_hash) "
                                       "DO UPDATE SET dtype = excluded.dtype, dim = excluded.dim, "
                                       "vector = excluded.vector").fetchall()
            finally:
                self.store.con.unregister("_vec")

    def encode(self, encoder, texts: Sequence[str], progress: Callable[[int, int], None] | None = None
               ) -> tuple[np.ndarray, int]:
        """Vectors for `texts`, encoding only those not cached (each distinct text once).
        Returns (vectors, number of texts actually encoded)."""
        hashes = [text_hash(t) for t in texts]
        encoder.prepare(texts)
        found = self.get(encoder.model_id, hashes)
        missing = {h: t for h, t in zip(hashes, texts) if h not in found}
        if missing:
            new = encoder.encode(list(missing.values()), progress)
            self.put(encoder.model_id, list(missing), new)
            found.update(zip(missing, new))
        if not texts:
            return np.zeros((0, 0), np.float32), 0
        return np.vstack([found[h] for h in hashes]).astype(np.float32), len(missing)
