"""Copy a store into another (the embedded DuckDB file into PostgreSQL when a shop outgrows one host): every
table, or the rows of some datasets, in one transaction per table, rows already there kept (ON CONFLICT DO
NOTHING on tables with a key), so a copy interrupted and run again completes."""

from __future__ import annotations

from typing import Callable, Sequence

import pyarrow as pa

from .store import Store

BATCH = 100_000


def copy_store(src: Store, dst: Store, datasets: Sequence[str] | None = None, ddl: str = "",
               progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Copy `src`'s rows (of `datasets`, or all) into `dst`. `ddl`: CREATE TABLE statements of derived tables
    (knowledge) to create in `dst` first. Returns rows copied per table."""
    if ddl:
        dst.create_tables(ddl)
    theirs = dst.tables()
    cols_of = {}
    for (table, column) in src.con.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "ORDER BY table_name, ordinal_position").fetchall():
        cols_of.setdefault(table, []).append(column)
    copied: dict[str, int] = {}
    for table in sorted(set(cols_of) & theirs):
        if table == "meta":
            continue
        cols = cols_of[table]
        where, params = "", []
        if datasets is not None:
            if "dataset" not in cols:
                continue
            where, params = " WHERE dataset = ANY(?)", [list(datasets)]
        quoted = ", ".join(f'"{c}"' for c in cols)
        frame = src.table(f'SELECT {quoted} FROM "{table}"{where}', params)
        if frame.empty:
            continue
        keyless = table in ("rejects", "item_edges")  # no key to skip known rows by: replace them instead
        conflict = "" if keyless else " ON CONFLICT DO NOTHING"
        with dst.transaction():
            if keyless:
                dst.con.execute(f'DELETE FROM "{table}" WHERE dataset = ANY(?)',
                                [sorted(set(frame["dataset"].astype(str)))])
            for start in range(0, len(frame), BATCH):
                part = pa.Table.from_pandas(frame.iloc[start:start + BATCH], preserve_index=False)
                dst.con.register("_copy", part)
                try:
                    dst.con.execute(f'INSERT INTO "{table}" ({quoted}) SELECT {quoted} FROM _copy{conflict}')
                finally:
                    dst.con.unregister("_copy")
                if progress is not None:
                    progress(table, min(start + BATCH, len(frame)))
        copied[table] = len(frame)
    if "ingest_runs" in copied and dst.dialect == "postgres":  # new ingest runs number after the copied ones
        top = dst.con.execute("SELECT coalesce(max(run_id), 0) FROM ingest_runs").fetchone()[0]
        dst.con.execute("SELECT setval('run_id_seq', ?)", [max(int(top), 1)])
    return copied
