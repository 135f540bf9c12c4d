"""A point-in-time copy of one dataset's rows in a separate DuckDB file, so that long work (the trainer)
reads a consistent store without holding the real one: DuckDB lets one process at a time open a file for
writing, and the shipper, ingest and forget need it while a model trains. From a PostgreSQL store the copy is
a local DuckDB file too (one REPEATABLE READ transaction): training reads it at local speed."""

from __future__ import annotations

from pathlib import Path

from .store import Store


def snapshot(store: Store, dataset: str, path: str | Path, ddl: str = "") -> Path:
    """Copy every table's rows of `dataset` (tables with a `dataset` column; `ingest_runs` rows of it;
    `meta` whole) into a fresh store file at `path` (replaced if present). Open it with `Store(path)`. `ddl`: the
    CREATE TABLE statements of derived tables (knowledge) to copy from a server store too."""
    path = Path(path)
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)
    Store(path).close()  # the schema
    if store.dialect != "duckdb":
        return _snapshot_remote(store, dataset, path, ddl)
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


def _snapshot_remote(store: Store, dataset: str, path: Path, ddl: str) -> Path:
    """Copy a server store's rows of `dataset` into the DuckDB file at `path` (its schema already made)."""
    with Store(path) as snap:
        if ddl:
            snap.create_tables(ddl)
        local = snap.tables()
        with store.transaction():
            store.con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            with_dataset = {r[0] for r in store.con.execute(
                "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND column_name = 'dataset'").fetchall()}
            for name in sorted(with_dataset & local):
                cols = [r[0] for r in snap.con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                    "AND table_schema = current_schema() ORDER BY ordinal_position", [name]).fetchall()]
                quoted = ", ".join(f'"{c}"' for c in cols)
                frame = store.table(f'SELECT {quoted} FROM "{name}" WHERE dataset = ?', [dataset])
                if frame.empty:
                    continue
                snap.con.register("_rows", frame)
                try:
                    snap.con.execute(f'INSERT INTO "{name}" ({quoted}) SELECT {quoted} FROM _rows')
                finally:
                    snap.con.unregister("_rows")
    return path
