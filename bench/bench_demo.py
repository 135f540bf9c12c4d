"""`make demo` on a fresh clone, timed: install, then the first demo (ingest, mine, a quick train, serve)
until the storefront answers and until its background finisher has hot-reloaded the full pipeline and
evaluated search, then a second demo that must reuse everything.

The clone is the committed HEAD of this repository in a temporary folder, with its own store and its own
ONNX cache (so the encoder export is cold, as on a new machine); the datasets come from SHOPMIND_DATA_DIR
and pip may use its wheel cache. Each step's time is what the demo itself recorded (demo-steps.json in the
store's .benchmarks folder). Writes bench/results/demo.{json,md}.

    SHOPMIND_DATA_DIR=../shared/data .venv/bin/python bench/bench_demo.py
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from common import command_line, machine, require_data_dir, write_results   # same folder

ROOT = Path(__file__).resolve().parents[1]


def _wait_ready(proc: subprocess.Popen, url: str, log: Path, limit_s: float) -> float:
    """Seconds until GET url answers 200 (the storefront is up), or exit with the log's tail."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        if proc.poll() is not None:
            sys.exit(f"make demo ended with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            time.sleep(0.5)
    sys.exit(f"the storefront did not answer within {limit_s:.0f} s:\n{log.read_text()[-3000:]}")


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _wait_full(clone: Path, port: int, t0: float, limit_s: float = 3600) -> dict:
    """Seconds (from the start of make demo) until the storefront serves the full pipeline (the background
    finisher's artifact, hot-reloaded), and until the finisher is done."""
    manifest = clone / "shopmind.duckdb.artifacts" / "amazon-scientific" / "manifest.json"
    log = clone / "shopmind.duckdb.benchmarks" / "demo-finish.log"
    full_s = done_s = None
    while time.perf_counter() - t0 < limit_s and (full_s is None or done_s is None):
        if full_s is None:
            try:
                m = json.loads(manifest.read_text())
                served = _get(f"http://127.0.0.1:{port}/health").get("artifact_created")
                if {"sasrec", "twotower"} <= set(m.get("sources", [])) and served == m.get("created"):
                    full_s = time.perf_counter() - t0
            except (OSError, ValueError):
                pass
        if done_s is None and log.is_file() and "demo finished in the background" in log.read_text():
            done_s = time.perf_counter() - t0
        time.sleep(2)
    return {"until_full_pipeline_s": round(full_s, 1) if full_s else None,
            "until_background_done_s": round(done_s, 1) if done_s else None}


def _demo(clone: Path, env: dict[str, str], port: int, log: Path, wait_full: bool = False) -> dict:
    """One `make demo` until its storefront answers (and, with wait_full, until the background finisher has
    swapped in the full pipeline and finished); then Ctrl-C (SIGINT to its process group)."""
    with log.open("w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(["make", "demo", f"DEMO_PORT={port}"], cwd=clone, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        full: dict = {}
        try:
            ready = _wait_ready(proc, f"http://127.0.0.1:{port}/", log, limit_s=3600)
            dashboard = _get(f"http://127.0.0.1:{port}/storefront/dashboard")
            if wait_full:
                full = _wait_full(clone, port, t0)
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    record = json.loads((clone / "shopmind.duckdb.benchmarks" / "demo-steps.json").read_text())
    return {"until_storefront_s": round(ready, 1), "demo": record, "dataset_served": dashboard["catalog"]["dataset"],
            **full}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8766)
    args = p.parse_args(argv)
    data = require_data_dir()
    command = command_line("bench_demo.py", argv)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="shopmind-demo-") as tmp:
        clone = Path(tmp) / "shopmind"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPMIND_", "VIRTUAL_ENV"))}
        env.update(SHOPMIND_DATA_DIR=str(data), SHOPMIND_KNOWLEDGE_ONNX_DIR=str(Path(tmp) / "onnx"))
        t0 = time.perf_counter()
        install = subprocess.run(["make", "install"], cwd=clone, env=env, capture_output=True, text=True)
        if install.returncode:
            sys.exit(f"make install failed:\n{install.stdout[-2000:]}\n{install.stderr[-2000:]}")
        install_s = time.perf_counter() - t0
        print(f"make install: {install_s:.1f} s", flush=True)
        first = _demo(clone, env, args.port, Path(tmp) / "demo-1.log", wait_full=True)
        print(f"first make demo: storefront after {first['until_storefront_s']} s", flush=True)
        second = _demo(clone, env, args.port, Path(tmp) / "demo-2.log")
        print(f"second make demo: storefront after {second['until_storefront_s']} s", flush=True)
    reused = all(s["status"] in ("reused", "unchanged") for s in second["demo"]["steps"])
    result = {"commit": head, "install_s": round(install_s, 1), "first": first, "second": second,
              "second_reuses_everything": reused, "machine": machine(), "command": command,
              "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    total = install_s + first["until_storefront_s"]
    md = ["# `make demo` on a fresh clone", "",
          f"Commit {head}, cloned into a temporary folder (own store, cold ONNX export; datasets from "
          "SHOPMIND_DATA_DIR, pip's wheel cache allowed). Times are wall-clock seconds on the "
          f"{result['machine']['cpu_count']}-core machine; the step times are the demo's own record.", "",
          "| step | first run s | second run s |", "|---|---|---|",
          f"| make install | {install_s:.1f} | (done) |"]
    again = {s["step"]: s for s in second["demo"]["steps"]}
    fmt = lambda s: ("reused" if s["status"] in ("reused", "unchanged") else  # noqa: E731
                     f"{s['seconds']:.1f}" if s.get("seconds") is not None else s["status"])
    for s in first["demo"]["steps"]:
        md.append(f"| {s['step']} | {fmt(s)} | {fmt(again[s['step']]) if s['step'] in again else '–'} |")
    md += [f"| demo steps in all | {first['demo']['seconds']:.1f} | {second['demo']['seconds']:.1f} |",
           f"| until the storefront answers (make demo) | {first['until_storefront_s']} | "
           f"{second['until_storefront_s']} |",
           f"| **clean clone to storefront** | **{total:.1f}** | **{second['until_storefront_s']}** |",
           f"| make demo until the full pipeline is served (hot-reloaded) | {first.get('until_full_pipeline_s')} | "
           "(served) |",
           f"| make demo until the background finisher is done | {first.get('until_background_done_s')} | (done) |",
           "", "Background steps (first run): " + ", ".join(
               f"{b['step']} {b['status']} {b.get('seconds')} s" for b in first["demo"].get("background", [])) + ".",
           "",
           f"Second run reuses every step: {'yes' if reused else 'no'}. Served: {first['dataset_served']}.", "",
           f"{result['timestamp']} on {result['machine']['cpu']}.", "", f"Reproduce: `{command}`", ""]
    write_results("demo", result, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
