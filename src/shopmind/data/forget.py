"""Forgetting a user in the data layer: atomic file rewrites, scrubbing rejects files, and applying the
tombstones to a store (a forget recorded while the store was locked is applied by the next ingest/train).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import IO, Callable, Sequence

import duckdb

from ..fsutil import fsync_dir
from .store import Store, StoreError, names_user
from .tombstones import Tombstones


def replace_file(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Rewrite `path` atomically: `write` fills a temporary file, which is fsynced and renamed over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.forget-{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _reject_names(line: str, ids: Sequence[str]) -> bool:
    try:
        rec = json.loads(line)
        texts = [str(v) for v in rec.values()] if isinstance(rec, dict) else [line]
    except ValueError:
        texts = [line]
    return any(names_user(t, uid) or names_user(line, uid) for t in texts for uid in ids)


def scrub_rejects_files(folder: str | Path, ids: Sequence[str], dataset: str | None = None) -> int:
    """Remove the lines naming any of `ids` from the rejects files (`<dataset>-run<N>.jsonl`) in `folder`;
    returns how many lines went."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    name = re.compile(re.escape(dataset) + r"-run\d+\.jsonl$") if dataset else re.compile(r".*\.jsonl$")
    removed = 0
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not name.match(path.name):
            continue
        lines = path.read_text("utf-8", errors="surrogateescape").splitlines(keepends=True)
        kept = [ln for ln in lines if not any(uid in ln for uid in ids) or not _reject_names(ln, ids)]
        if len(kept) != len(lines):
            removed += len(lines) - len(kept)
            data = "".join(kept).encode("utf-8", errors="surrogateescape")
            replace_file(path, lambda f, data=data: f.write(data))
    return removed


def compact_store(path: str | Path) -> bool:
    """Rewrite the store into a fresh file: DuckDB keeps deleted rows' bytes in free blocks, so a forgotten
    user's id stays readable in the file until it is rebuilt. The copy replaces the store under a read-only
    connection (a shared lock: no writer can open it meanwhile) and only if nobody wrote in between; returns
    whether it was replaced. Raises StoreError when another process holds the store."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.compact-{os.getpid()}")
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)
    try:
        con = duckdb.connect(str(path))
    except (duckdb.IOException, duckdb.ConnectionException) as e:
        raise StoreError(f"cannot open store {path}: {e}") from None
    try:
        con.execute("CHECKPOINT")
        name = con.execute("SELECT current_database()").fetchall()[0][0]
        con.execute("ATTACH '" + str(tmp).replace("'", "''") + "' AS shopmind_compact")
        con.execute(f'COPY FROM DATABASE "{name}" TO shopmind_compact')
        con.execute("DETACH shopmind_compact")
    finally:
        con.close()
    before = os.stat(path)
    try:
        guard = duckdb.connect(str(path), read_only=True)
    except (duckdb.IOException, duckdb.ConnectionException):
        tmp.unlink(missing_ok=True)
        return False
    try:
        after = os.stat(path)
        if (before.st_ino, before.st_size, before.st_mtime_ns) != (after.st_ino, after.st_size, after.st_mtime_ns):
            tmp.unlink(missing_ok=True)
            return False
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, before.st_mode & 0o777)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        guard.close()
    return True


def vacuum_store(url: str) -> bool:
    """PostgreSQL's counterpart of compact_store: VACUUM FULL rewrites every table with a user_id column and
    the rejects, so deleted rows' bytes leave the table files (the server's WAL recycles them at its next
    checkpoints; backups are the operator's to expire, see docs/privacy.md). Returns True when done."""
    from .pgstore import PgStore

    with PgStore(url) as store:
        for table in [*store.user_tables(), "rejects"]:
            store.con.execute(f'VACUUM FULL "{table}"')
    return True


def purge_forgotten(store: Store, tombstones: Tombstones, dataset: str) -> dict[str, int]:
    """Delete the rows of every tombstoned user still in the store for `dataset` (a forget that found the
    store locked). Users are found by the digest of the stored id, so a store of hashed ids (ingest
    .hash_user_ids) is purged as well when the tombstone holds the hashed form too (forget_everywhere
    adds both). Returns rows deleted per table (empty when nothing matched)."""
    wanted = tombstones.digests(dataset)
    if not wanted:
        return {}
    stored: set[str] = set()
    for table in store.user_tables():
        stored.update(r[0] for r in store.con.execute(
            f"SELECT DISTINCT user_id FROM {table} WHERE dataset = ?", [dataset]).fetchall())
    totals: dict[str, int] = {}
    for uid in sorted(u for u in stored if tombstones.digest(u) in wanted):
        for table, n in store.forget_user(uid, dataset).items():
            totals[table] = totals.get(table, 0) + n
    return totals
