"""Ingest throughput benchmark: wall time of `ingest_source` on the real datasets in SHOPMIND_DATA_DIR.

Each measured run ingests into a fresh DuckDB store in a temporary folder; right after it the same files
are ingested again into that store (the idempotent path: nothing inserted) and timed too. Results go to
stdout and to bench/results/ingest.json + ingest.md. Wall times are reported, never asserted.

    SHOPMIND_DATA_DIR=../shared/data .venv/bin/python bench/bench_ingest.py [--datasets ...] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


from common import command_line, machine, require_data_dir, scratch_settings, write_results  # same folder
from shopmind.config import load_settings
from shopmind.data.api import ingest_source, open_source
from shopmind.data.ingest import IngestReport
from shopmind.data.store import Store

DEFAULT_DATASETS = ["s3rec-beauty", "homedepot", "ml-100k", "amazon-scientific"]
TARGET = ("s3rec-beauty", 10.0)  # the target: ~200k events ingested in under 10 s


def _accepted(report: IngestReport, kind: str) -> int:
    c = report.counts.get(kind, {})
    return c.get("inserted", 0) + c.get("updated", 0) + c.get("unchanged", 0)


def run_once(data_dir: Path, dataset: str, chunk_size: int | None) -> tuple[IngestReport, float, float, Any]:
    """A fresh-store ingest, then the same files again into that store: the skip check (force=False) and a
    full re-ingest (force=True, nothing inserted). Returns (report, seconds, skip seconds, re-ingest s or error)."""
    with tempfile.TemporaryDirectory(prefix="shopmind-bench-") as tmp:
        settings = scratch_settings(tmp, data_dir, **{"ingest.rejects_dir": str(Path(tmp) / "rejects"),
                                                      "ingest.chunk_size": chunk_size})
        with Store(settings.store.path) as store:
            source = open_source(settings, dataset)
            t0 = time.perf_counter()
            report = ingest_source(store, settings, source)
            seconds, t0 = time.perf_counter() - t0, time.perf_counter()
            skipped = ingest_source(store, settings, source, force=False)
            skip, t0 = time.perf_counter() - t0, time.perf_counter()
            try:
                again = ingest_source(store, settings, source, force=True)
                rerun: Any = time.perf_counter() - t0
            except Exception as e:  # reported in the table, not fatal: the first ingest was measured
                again, rerun = None, f"{type(e).__name__}: {str(e)[:100]}"
    assert report is not None and skipped is None, "fresh ingest must report; identical re-run must be skipped"
    if moved := sum(c.get("inserted", 0) + c.get("updated", 0) for c in again.counts.values()) if again else 0:
        print(f"warning: {dataset}: re-ingest inserted/updated {moved} rows (expected 0)", file=sys.stderr)
    return report, seconds, skip, rerun


def bench(data_dir: Path, dataset: str, repeats: int, chunk_size: int | None) -> dict[str, Any]:
    runs = [run_once(data_dir, dataset, chunk_size) for _ in range(repeats)]
    report = runs[0][0]
    median = statistics.median(r[1] for r in runs)
    events = _accepted(report, "event")
    reruns = [r[3] for r in runs if isinstance(r[3], float)]
    return {
        "dataset": dataset, "rows_read": report.rows_read, "events": events, "rejected": report.rejected,
        "median_seconds": round(median, 3), "rows_per_second": round(report.rows_read / median, 1),
        "events_per_second": round(events / median, 1) if events else None,
        "skip_seconds": round(statistics.median(r[2] for r in runs), 3),
        "reingest_seconds": round(statistics.median(reruns), 3) if len(reruns) == len(runs) else None,
        "reingest_error": next((r[3] for r in runs if isinstance(r[3], str)), None), "repeats": repeats,
        "all_seconds": [round(r[1], 3) for r in runs],
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = ["dataset", "rows read", "events", "median s", "rows/s", "events/s", "re-ingest s", "skip s", "runs (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        eps = f"{r['events_per_second']:,.0f}" if r["events_per_second"] else "-"
        rei = f"{r['reingest_seconds']:.2f}" if r["reingest_seconds"] is not None else "FAILED (see below)"
        lines.append(f"| {r['dataset']} | {r['rows_read']:,} | {r['events']:,} | {r['median_seconds']:.2f} | "
                     f"{r['rows_per_second']:,.0f} | {eps} | {rei} | {r['skip_seconds']:.2f} | "
                     f"{', '.join(f'{s:.2f}' for s in r['all_seconds'])} |")
    errors = [f"- {r['dataset']} re-ingest failed: {r['reingest_error']}" for r in rows if r["reingest_error"]]
    return "\n".join(lines + ([""] + errors if errors else []))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=DEFAULT_DATASETS, help="registered dataset names")
    p.add_argument("--repeats", type=int, default=3, help="measured runs per dataset (median reported)")
    p.add_argument("--chunk-size", type=int, default=None, help="rows per transaction (default: settings)")
    args = p.parse_args(argv)
    data_dir = require_data_dir()
    if args.repeats < 1:
        sys.exit("--repeats must be >= 1")
    chunk_size = args.chunk_size or load_settings().ingest.chunk_size
    command = command_line("bench_ingest.py", argv)

    rows = []
    for name in args.datasets:
        print(f"benchmarking {name} ({args.repeats} runs) ...", file=sys.stderr, flush=True)
        rows.append(bench(data_dir, name, args.repeats, chunk_size))
    md = table(rows)
    target = next((r for r in rows if r["dataset"] == TARGET[0]), None)
    verdict = ""
    if target is not None:
        ok = "yes" if target["median_seconds"] < TARGET[1] else "NO"
        verdict = (f"200k-events check: {target['dataset']} ingests {target['events']:,} events in "
                   f"{target['median_seconds']:.2f} s (median) -> under {TARGET[1]:.0f} s: {ok}")
    info = machine()
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print(md + ("\n\n" + verdict if verdict else ""))

    doc = {"machine": info, "timestamp": stamp, "command": command, "chunk_size": chunk_size,
           "target": {"dataset": TARGET[0], "max_seconds": TARGET[1],
                      "met": None if target is None else target["median_seconds"] < TARGET[1]},
           "results": rows}
    write_results("ingest", doc, f"# Ingest benchmark\n\n{stamp} on {info['cpu']} ({info['cpu_count']} CPUs), "
                                 f"Python {info['python']}, DuckDB {info['duckdb']}, chunk size {chunk_size:,}."
                                 f"\n\n{md}\n\n{verdict}\n\nReproduce: `make bench` or `{command}`\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
