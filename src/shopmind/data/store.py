"""The embedded DuckDB store: items, events, judgments, users, ingest runs and rejects, per dataset; and the
serving-log shipper's checkpoints (`ship_checkpoints`, `ship_forgets`: see serving/shipper.py).

Every table is keyed by (dataset, id), so one store holds many datasets without id clashes. Writes come
in chunks, each in one transaction (see ingest.py): the store is consistent after a crash at any point.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import duckdb
import pyarrow as pa

from .schema import hash_user_id

SCHEMA_VERSION = 1

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS items (
    dataset VARCHAR NOT NULL, item_id VARCHAR NOT NULL,
    title VARCHAR, description VARCHAR, brand VARCHAR, categories VARCHAR[], price DOUBLE,
    attributes JSON, image_url VARCHAR, text_fields JSON, related JSON,
    content_hash VARCHAR NOT NULL, run_id BIGINT NOT NULL,
    PRIMARY KEY (dataset, item_id));
CREATE TABLE IF NOT EXISTS events (
    dataset VARCHAR NOT NULL, event_id VARCHAR NOT NULL, user_id VARCHAR NOT NULL, item_id VARCHAR,
    type VARCHAR NOT NULL, value DOUBLE, timestamp TIMESTAMP, seq INTEGER, session_id VARCHAR,
    query VARCHAR, review_text VARCHAR, summary VARCHAR, split VARCHAR, extra JSON, run_id BIGINT NOT NULL,
    PRIMARY KEY (dataset, event_id));
CREATE TABLE IF NOT EXISTS judgments (
    dataset VARCHAR NOT NULL, judgment_id VARCHAR NOT NULL, query VARCHAR NOT NULL, item_id VARCHAR NOT NULL,
    grade DOUBLE NOT NULL, content_hash VARCHAR NOT NULL, run_id BIGINT NOT NULL,
    PRIMARY KEY (dataset, judgment_id));
CREATE TABLE IF NOT EXISTS users (
    dataset VARCHAR NOT NULL, user_id VARCHAR NOT NULL, attributes JSON,
    content_hash VARCHAR NOT NULL, run_id BIGINT NOT NULL,
    PRIMARY KEY (dataset, user_id));
CREATE SEQUENCE IF NOT EXISTS run_id_seq START 1;
CREATE TABLE IF NOT EXISTS ingest_runs (
    run_id BIGINT PRIMARY KEY, dataset VARCHAR NOT NULL, format VARCHAR, source VARCHAR, files JSON,
    started_at TIMESTAMP, finished_at TIMESTAMP, status VARCHAR NOT NULL, chunks BIGINT DEFAULT 0,
    rows_read BIGINT DEFAULT 0, counts JSON, rejects_file VARCHAR, error VARCHAR);
CREATE TABLE IF NOT EXISTS rejects (
    run_id BIGINT NOT NULL, dataset VARCHAR NOT NULL, file VARCHAR, line BIGINT, reason VARCHAR, raw VARCHAR);
CREATE TABLE IF NOT EXISTS ship_checkpoints (
    dataset VARCHAR PRIMARY KEY, log_path VARCHAR NOT NULL, log_inode BIGINT NOT NULL, log_offset BIGINT NOT NULL,
    tail VARCHAR NOT NULL, shipped BIGINT NOT NULL DEFAULT 0, run_id BIGINT, updated_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS ship_forgets (
    dataset VARCHAR NOT NULL, record VARCHAR NOT NULL, removed BIGINT, applied_at TIMESTAMP,
    PRIMARY KEY (dataset, record));
"""

# Columns written per table, in order (the staging Arrow tables follow these).
COLUMNS: dict[str, list[str]] = {
    "items": ["dataset", "item_id", "title", "description", "brand", "categories", "price", "attributes",
              "image_url", "text_fields", "related", "content_hash", "run_id"],
    "events": ["dataset", "event_id", "user_id", "item_id", "type", "value", "timestamp", "seq", "session_id",
               "query", "review_text", "summary", "split", "extra", "run_id"],
    "judgments": ["dataset", "judgment_id", "query", "item_id", "grade", "content_hash", "run_id"],
    "users": ["dataset", "user_id", "attributes", "content_hash", "run_id"],
}
KEYS = {"items": "item_id", "events": "event_id", "judgments": "judgment_id", "users": "user_id"}


def user_id_forms(user_id: str, salt: str | None = None) -> list[str]:
    """The ids a user can have in the store: as given, and the keyed hash ingest writes when a salt is set."""
    return [user_id] + ([hash_user_id(user_id, salt)] if salt else [])


def names_user(text: str | None, user_id: str) -> bool:
    """Whether `text` holds the id as a whole token (not inside a longer id): raw rejected lines are user data."""
    if not text or not user_id:
        return False
    pattern = r"(?<![A-Za-z0-9_\-])" + re.escape(user_id) + r"(?![A-Za-z0-9_\-])"
    return re.search(pattern, text) is not None


class StoreError(RuntimeError):
    """The store cannot be opened or used (locked by another process, wrong version, ...)."""


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Store:
    """A DuckDB file (or ':memory:') with shopmind's tables. Use as a context manager. `open_store` picks this
    or the PostgreSQL store (data/pgstore.py) from the configured target; both run the same SQL."""

    dialect = "duckdb"
    row_key = "rowid"  # a row's physical address, for deleting rows found by a scan

    def __init__(self, path: str | Path = "shopmind.duckdb", read_only: bool = False) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(self.path, read_only=read_only)
        except (duckdb.IOException, duckdb.ConnectionException) as e:
            raise StoreError(f"cannot open store {self.path}: {e} (is another shopmind process using it?)") from None
        if not read_only:
            self.con.execute(_DDL)
            self.con.execute("INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING", [str(SCHEMA_VERSION)])
        try:
            version = self.con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        except duckdb.CatalogException:
            raise StoreError(f"{self.path} is not a shopmind store (no meta table)") from None
        self._check_version(version)

    def _check_version(self, version: list[tuple]) -> None:
        if not version or int(version[0][0]) != SCHEMA_VERSION:
            found = version[0][0] if version else "none"
            raise StoreError(f"{self.path} has schema version {found}; this shopmind reads {SCHEMA_VERSION}")

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_tables(self, statements: str) -> None:
        """Run CREATE TABLE IF NOT EXISTS statements written with DuckDB's type names (PostgreSQL maps them)."""
        self.con.execute(statements)

    def tables(self) -> set[str]:
        """The store's table names."""
        return {r[0] for r in self.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()").fetchall()}

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    # --- ingest runs -------------------------------------------------------------------------------
    def start_run(self, dataset: str, fmt: str, source: str, files: list[dict[str, Any]]) -> int:
        # A run left 'running' by a crashed process is marked as such before a new one starts.
        self.con.execute("UPDATE ingest_runs SET status = 'interrupted' WHERE dataset = ? AND status = 'running'",
                         [dataset])
        run_id = self.con.execute("SELECT nextval('run_id_seq')").fetchall()[0][0]
        self.con.execute("INSERT INTO ingest_runs (run_id, dataset, format, source, files, started_at, status) "
                         "VALUES (?, ?, ?, ?, ?, ?, 'running')", [run_id, dataset, fmt, source, json.dumps(files), _now()])
        return int(run_id)

    def progress_run(self, run_id: int, rows_read: int, counts: dict[str, Any]) -> None:
        self.con.execute("UPDATE ingest_runs SET chunks = chunks + 1, rows_read = ?, counts = ? WHERE run_id = ?",
                         [rows_read, json.dumps(counts), run_id])

    def finish_run(self, run_id: int, status: str, counts: dict[str, Any], rows_read: int,
                   rejects_file: str | None, error: str | None = None) -> None:
        self.con.execute("UPDATE ingest_runs SET status = ?, finished_at = ?, counts = ?, rows_read = ?, "
                         "rejects_file = ?, error = ? WHERE run_id = ?",
                         [status, _now(), json.dumps(counts), rows_read, rejects_file, error, run_id])

    def runs(self, dataset: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM ingest_runs" + (" WHERE dataset = ?" if dataset else "") + " ORDER BY run_id"
        cur = self.con.execute(sql, [dataset] if dataset else [])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    # --- chunk writes (called inside a transaction) -------------------------------------------------
    def write(self, table: str, rows: pa.Table) -> dict[str, int]:
        """Insert a staged chunk. Events: insert new ids, ignore known ones (idempotent). Other tables:
        upsert by id, comparing content hashes. Returns {'inserted', 'updated', 'unchanged'}."""
        if rows.num_rows == 0:
            return {"inserted": 0, "updated": 0, "unchanged": 0}
        key = KEYS[table]
        cols = ", ".join(COLUMNS[table])
        self.con.register("_stage", rows)
        try:
            if table == "events":
                known = self.con.execute(
                    "SELECT count(*) FROM _stage s WHERE EXISTS (SELECT 1 FROM events t WHERE t.dataset = s.dataset "
                    "AND t.event_id = s.event_id)").fetchall()[0][0]
                self.con.execute(f"INSERT INTO events ({cols}) SELECT {cols} FROM _stage ON CONFLICT DO NOTHING").fetchall()
                return {"inserted": rows.num_rows - known, "updated": 0, "unchanged": known}
            new, changed = self.con.execute(
                f"SELECT count(*) FILTER (WHERE t.{key} IS NULL), "
                f"count(*) FILTER (WHERE t.{key} IS NOT NULL AND t.content_hash <> s.content_hash) "
                f"FROM _stage s LEFT JOIN {table} t ON t.dataset = s.dataset AND t.{key} = s.{key}").fetchall()[0]
            if new or changed:
                updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[table] if c not in ("dataset", key))
                self.con.execute(
                    f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _stage s WHERE NOT EXISTS ("
                    f"SELECT 1 FROM {table} t WHERE t.dataset = s.dataset AND t.{key} = s.{key} "
                    f"AND t.content_hash = s.content_hash) ON CONFLICT (dataset, {key}) DO UPDATE SET {updates}").fetchall()
            return {"inserted": new, "updated": changed, "unchanged": rows.num_rows - new - changed}
        finally:
            self.con.unregister("_stage")

    def write_rejects(self, run_id: int, dataset: str, rejects: list[dict[str, Any]]) -> None:
        if rejects:
            self.con.executemany("INSERT INTO rejects VALUES (?, ?, ?, ?, ?, ?)",
                                 [[run_id, dataset, r["file"], r["line"], r["reason"], r["raw"]] for r in rejects])

    # --- forgetting a user -------------------------------------------------------------------------------
    def user_tables(self) -> list[str]:
        """Every table with a user_id column (events, users, and derived ones such as user_profiles)."""
        return [r[0] for r in self.con.execute(
            "SELECT DISTINCT table_name FROM information_schema.columns WHERE column_name = 'user_id' "
            "AND table_schema = current_schema() AND table_name <> 'rejects' ORDER BY 1").fetchall()]

    def forget_user(self, user_id: str, dataset: str | None = None, salt: str | None = None) -> dict[str, int]:
        """Delete the user's rows (in `dataset`, or every dataset) from every table with a user_id column,
        and the rejects rows whose raw text or reason names the user, in one transaction. `salt`: the
        ingest.user_id_salt, so the keyed hash ingest stored is removed too. Returns rows deleted per table."""
        ids = user_id_forms(user_id, salt)
        where = "user_id = ANY(?)" + (" AND dataset = ?" if dataset else "")
        params: list[Any] = [ids] + ([dataset] if dataset else [])
        counts: dict[str, int] = {}
        with self.transaction():
            for table in self.user_tables():
                counts[table] = self.con.execute(f"DELETE FROM {table} WHERE {where}", params).fetchall()[0][0]
            rowids = set()
            for uid in ids:
                cand = self.con.execute(
                    f"SELECT {self.row_key}, raw, reason FROM rejects WHERE (strpos(raw, ?) > 0 OR strpos(reason, ?) > 0)"
                    + (" AND dataset = ?" if dataset else ""), [uid, uid] + ([dataset] if dataset else [])).fetchall()
                rowids.update(r for r, raw, reason in cand if names_user(raw, uid) or names_user(reason, uid))
            if rowids:
                self._delete_rows("rejects", sorted(rowids))
            counts["rejects"] = len(rowids)
        return counts

    def _delete_rows(self, table: str, keys: list[Any]) -> None:
        self.con.execute(f"DELETE FROM {table} WHERE rowid = ANY(?)", [keys])

    # --- reads -----------------------------------------------------------------------------------
    def datasets(self) -> list[str]:
        rows = self.con.execute(
            "SELECT dataset FROM items UNION SELECT dataset FROM events UNION SELECT dataset FROM judgments "
            "UNION SELECT dataset FROM users UNION SELECT dataset FROM ingest_runs ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    def stats(self, dataset: str) -> dict[str, Any]:
        """Counts that describe one dataset; the field names are stable (see docs/cli.md)."""
        q = self.con.execute
        ev = q("SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id), "
               "count(*) FILTER (WHERE item_id IS NOT NULL) "
               "- count(DISTINCT (user_id, item_id)) FILTER (WHERE item_id IS NOT NULL), min(timestamp), max(timestamp) "
               "FROM events WHERE dataset = ?", [dataset]).fetchall()[0]
        by_type = dict(q("SELECT type, count(*) FROM events WHERE dataset = ? GROUP BY 1 ORDER BY 1",
                         [dataset]).fetchall())
        items, with_title = q("SELECT count(*), count(title) FROM items WHERE dataset = ?", [dataset]).fetchall()[0]
        cold = q("SELECT count(DISTINCT e.item_id) FROM events e WHERE e.dataset = ? AND e.item_id IS NOT NULL "
                 "AND NOT EXISTS (SELECT 1 FROM items i WHERE i.dataset = e.dataset AND i.item_id = e.item_id)",
                 [dataset]).fetchall()[0][0]
        judg, queries = q("SELECT count(*), count(DISTINCT query) FROM judgments WHERE dataset = ?",
                          [dataset]).fetchall()[0]
        users = q("SELECT count(*) FROM users WHERE dataset = ?", [dataset]).fetchall()[0][0]
        rejected = q("SELECT count(*) FROM rejects r JOIN (SELECT max(run_id) AS run_id FROM ingest_runs "
                     "WHERE dataset = ? AND status IN ('completed', 'completed_with_rejects')) last USING (run_id)",
                     [dataset]).fetchall()[0][0]
        n = ev[0] or 0
        density = n / (ev[1] * ev[2]) if ev[1] and ev[2] else 0.0
        return {
            "dataset": dataset,
            "events": n,
            "users": ev[1],
            "interacted_items": ev[2],
            "repeat_user_item_events": max(ev[3] or 0, 0),
            "items": items,
            "items_with_title": with_title,
            "items_without_metadata": cold,
            "user_profiles": users,
            "judgments": judg,
            "queries": queries,
            "event_types": by_type,
            "density": round(density, 6),
            "first_timestamp": ev[4].isoformat() if ev[4] else None,
            "last_timestamp": ev[5].isoformat() if ev[5] else None,
            "rejected_last_run": rejected,
        }

    def table(self, sql: str, params: list[Any] | None = None) -> "Any":
        """Run a read query and return a pandas DataFrame."""
        return self.con.execute(sql, params or []).df()


def open_store(target: Any = None, read_only: bool = False) -> Store:
    """The configured store: `target` is Settings, StoreSettings, a PostgreSQL URL or a DuckDB path.
    Settings choose PostgreSQL when `store.url` (env SHOPMIND_STORE_URL) is set, else the DuckDB file."""
    from .pgstore import is_postgres_url

    if target is None:
        target = "shopmind.duckdb"
    store_cfg = getattr(target, "store", target)  # Settings -> StoreSettings
    if hasattr(store_cfg, "path") and hasattr(store_cfg, "url"):
        target = store_cfg.url or store_cfg.path
    if is_postgres_url(target):
        from .pgstore import PgStore

        return PgStore(str(target), read_only=read_only)
    return Store(target, read_only=read_only)
