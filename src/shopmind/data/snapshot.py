"""A point-in-time copy of one dataset's rows in a separate DuckDB file, so that long work (the trainer)
reads a consistent store without holding the real one: DuckDB lets one process at a time open a file for
writing, and the shipper, ingest and forget need it while a model trains."""

from __future__ import annotations

from pathlib import Path

from .store import Store


def snapshot(store: Store, dataset: str, path: str | Path) -> Path:
    """Copy every table's rows of `dataset` (tables with a `dataset` column; `ingest_runs` rows of it;
    `meta` whole) into a fresh store file at `path` (replaced if present). Open it with `Store(path)`."""
    path = Path(path)
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)
    Store(path).close()  # the schema
    con = store.con
    tables = con.execute("SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
                         "AND table_schema = 'main' AND table_type = 'BASE TABLE'").fetchall()
    with_dataset = {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.columns WHERE table_catalog = current_database() "
        "AND table_schema = 'main' AND column_name = 'dataset'").fetchall()}
    con.execute("ATTACH ? AS snap", [str(path)])
    try:
        con.execute("BEGIN TRANSACTION")  # one consistent read of every table
        try:
            for (name,) in tables:
                if name == "meta":
                    continue
                if name in with_dataset:
                    where = " WHERE dataset = ?"
                else:
                    continue
                con.execute(f'DROP TABLE IF EXISTS snap."{name}"')
                con.execute(f'CREATE TABLE snap."{name}" AS SELECT * FROM main."{name}"{where}', [dataset])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.execute("DETACH snap")
    return path
