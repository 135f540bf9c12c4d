"""CLI start-up: wall-clock median of 10 runs of `shopmind version` and `shopmind --help` (issue 14's goal: ≤ 0.3 s).

Each run is a fresh `python -m shopmind.cli` subprocess with PYTHONPATH at this checkout's src (so the code of this
checkout runs, not an installed copy). With --baseline REF the same is measured for the src folder of git commit
REF (exported to a temporary folder), for a before/after. Python's own start-up and `import typer` are measured too,
as the floor no CLI can go under. Writes bench/results/cli-startup.{json,md}.

    .venv/bin/python bench/bench_cli_startup.py [--runs 10] [--baseline REF]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from common import command_line, machine, write_results  # same folder

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 0.3
COMMANDS = {"version": ["-m", "shopmind.cli", "version"], "--help": ["-m", "shopmind.cli", "--help"],
            "python (floor)": ["-c", "pass"], "import typer (floor)": ["-c", "import typer"]}


def _time(args: list[str], src: Path, runs: int) -> dict[str, float]:
    """Median and best wall-clock seconds of `python ARGS`, after one untimed warm-up run."""
    env = {**os.environ, "PYTHONPATH": str(src), "COLUMNS": "120"}
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        if i:  # the first run warms the file cache
            times.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(times), 3), "best_s": round(min(times), 3)}


def _export_src(ref: str, folder: Path) -> Path:
    """The src folder of commit ref, extracted under folder."""
    tar = subprocess.run(["git", "archive", ref, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(folder, filter="data")
    return folder / "src"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--baseline", metavar="REF", help="Also measure the CLI of this git commit.")
    a = ap.parse_args(argv)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True).stdout)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {f"this checkout ({head}{', with uncommitted changes' if dirty else ''})": ROOT / "src"}
        if a.baseline:
            trees[f"baseline {a.baseline}"] = _export_src(a.baseline, Path(tmp))
        results = {}
        for label, src in trees.items():
            cmds = COMMANDS if label.startswith("this") else {k: v for k, v in COMMANDS.items() if "floor" not in k}
            results[label] = {name: _time(args, src, a.runs) for name, args in cmds.items()}
            for name, r in results[label].items():
                print(f"{label:45} {name:22} median {r['median_s']:.3f} s  best {r['best_s']:.3f} s")
    doc = {"goal_s": GOAL_S, "runs": a.runs, "results": results, "machine": machine(),
           "command": command_line("bench_cli_startup.py", argv), "finished": datetime.now(timezone.utc).isoformat()}
    lines = ["# CLI start-up", "", f"Wall clock of a fresh `python -m shopmind.cli` process, median (best) of {a.runs} runs "
             f"after a warm-up; goal ≤ {GOAL_S} s (issue 14). The floors are Python alone and `import typer`.", "",
             "| code | command | median s | best s |", "|---|---|---:|---:|"]
    for label, cmds in results.items():
        lines += [f"| {label} | `{name}` | {r['median_s']:.3f} | {r['best_s']:.3f} |" for name, r in cmds.items()]
    m = doc["machine"]
    lines += ["", "`version` takes longer than `--help`: to run a command, Typer (0.29) validates the global options "
              "through pydantic, which it imports then; `--help` exits before that."]
    lines += ["", f"Machine: {m['cpu']}, {m['cpu_count']} cores, Python {m['python']}.", "",
              f"Reproduce: `{doc['command']}`", ""]
    write_results("cli-startup", doc, "\n".join(lines))


if __name__ == "__main__":
    main()
