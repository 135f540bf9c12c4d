"""Probe: the cost of one ingest chunk written into the DuckDB events table as the table grows.

Writes `--chunks` chunks of `--chunk` events (random 24-hex-digit event ids, as ingest derives them) through
`Store.write("events", ...)`, each in its own transaction as `Ingestor` does, and prints, every 10 chunks, the
wall and CPU milliseconds of (a) the duplicate-count query `Store.write` runs first (EXISTS against the table)
and (b) the whole `Store.write` (count + INSERT ... ON CONFLICT DO NOTHING). No validation, no file reading:
only the part of ingest whose cost depends on the table's size. bench_scale.py found ingest rows/s falling
as the events table grows; this isolates where.

    .venv/bin/python bench/probe_store_write.py [--chunks 120] [--chunk 50000]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from shopmind.data.ingest import _arrow  # noqa: E402
from shopmind.data.store import COLUMNS, open_store  # noqa: E402

EXISTS = ("SELECT count(*) FROM _stage s WHERE EXISTS (SELECT 1 FROM events t WHERE t.dataset = s.dataset "
          "AND t.event_id = s.event_id)")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=120)
    p.add_argument("--chunk", type=int, default=50_000)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    n = args.chunk
    rows = []
    with tempfile.TemporaryDirectory(prefix="shopmind-probe-") as tmp, open_store(Path(tmp) / "p.duckdb") as st:
        for c in range(args.chunks):
            cols: dict[str, list] = {k: [None] * n for k in COLUMNS["events"]}
            cols.update(dataset=["shop"] * n, event_id=[f"{x:024x}" for x in rng.integers(0, 2**62, n)],
                        user_id=[f"u{x:08d}" for x in rng.integers(0, 10**7, n)],
                        item_id=[f"i{x:07d}" for x in rng.integers(0, 10**6, n)], type=["rating"] * n, value=[5.0] * n,
                        run_id=[1] * n)
            table = _arrow(cols)
            st.con.register("_stage", table)
            t0, c0 = time.perf_counter(), _cpu()
            st.con.execute(EXISTS).fetchall()
            t1, c1 = time.perf_counter(), _cpu()
            st.con.unregister("_stage")
            with st.transaction():
                st.write("events", table)
            t2, c2 = time.perf_counter(), _cpu()
            if c % 10 == 0 or c == args.chunks - 1:
                row = {"rows_before": c * n, "exists_ms": round(1e3 * (t1 - t0), 1), "exists_cpu_ms": round(1e3 * (c1 - c0), 1),
                       "write_ms": round(1e3 * (t2 - t1), 1), "write_cpu_ms": round(1e3 * (c2 - c1), 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
