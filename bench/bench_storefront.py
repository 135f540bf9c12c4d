"""Storefront page-load benchmark: `shopmind serve` on the bench artifact, Debian's Chromium (headless,
through Playwright) loading the storefront in fresh browser contexts (empty cache each time).

Measures, per load: the browser's DOMContentLoaded and load events, and the time until the first
recommendation card is on screen (the page's own API calls included). Writes bench/results/storefront.{json,md}.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_storefront.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from common import command_line, machine, write_results   # same folder

ARTIFACT = Path(__file__).resolve().parent / ".artifacts" / "amazon-scientific"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", type=Path, default=ARTIFACT)
    p.add_argument("--loads", type=int, default=10)
    p.add_argument("--port", type=int, default=8765)
    args = p.parse_args(argv)
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("chromium is not installed (make browser)")
    if not (args.artifact / "manifest.json").is_file():
        sys.exit(f"{args.artifact}: no artifact; run bench/bench_pipeline.py first")
    from playwright.sync_api import sync_playwright

    command = command_line("bench_storefront.py", argv)
    with tempfile.TemporaryDirectory(prefix="shopmind-store-") as tmp:
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "SHOPMIND_SERVING_STATE_DIR": tmp}
        proc = subprocess.Popen([sys.executable, "-m", "shopmind.cli", "--store", str(Path(tmp) / "unused.duckdb"),
                                 "serve", str(args.artifact), "--port", str(args.port), "--mode", "demo"], env=env,
                                stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{args.port}/"
        try:
            while True:
                if proc.poll() is not None:
                    sys.exit(proc.stderr.read().decode()[-2000:])
                try:
                    urllib.request.urlopen(url + "health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.5)
            rows = []
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                for i in range(args.loads + 1):  # the first load warms the server's caches and is not counted
                    context = browser.new_context()
                    page = context.new_page()
                    t0 = time.perf_counter()
                    page.goto(url)
                    page.wait_for_selector("#recs .card", timeout=30_000)
                    first_card = (time.perf_counter() - t0) * 1e3
                    timing = page.evaluate("(() => { const n = performance.getEntriesByType('navigation')[0];"
                                           " return {dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd}; })()")
                    if i:
                        rows.append({"dom_content_loaded_ms": timing["dcl"], "load_ms": timing["load"],
                                     "first_recommendations_ms": first_card})
                    context.close()
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    summary = {k: {"median": round(float(np.median([r[k] for r in rows])), 1),
                   "max": round(float(np.max([r[k] for r in rows])), 1)} for k in rows[0]}
    result = {"loads": rows, "summary": summary, "artifact": str(args.artifact), "machine": machine(),
              "command": command, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    ok = summary["first_recommendations_ms"]["max"] <= 1000
    md = ["# Storefront first page load", "",
          f"{args.loads} loads in fresh headless Chromium contexts (empty cache) against `shopmind serve` on the "
          f"{result['machine']['cpu_count']}-core machine, same host.", "",
          "| measure | median ms | max ms |", "|---|---|---|"]
    labels = {"dom_content_loaded_ms": "DOMContentLoaded", "load_ms": "load event",
              "first_recommendations_ms": "first recommendations on screen"}
    md += [f"| {labels[k]} | {v['median']} | {v['max']} |" for k, v in summary.items()]
    md += ["", f"Target (first page load under 1 s): {'met' if ok else 'not met'} (every load, recommendations "
               "included).", "", f"{result['timestamp']} on {result['machine']['cpu']}.", "",
           f"Reproduce: `{command}`", ""]
    write_results("storefront", result, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
