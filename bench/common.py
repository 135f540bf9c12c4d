"""Helpers every benchmark shares: machine description, data folder, command line, result files."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import duckdb

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")]
    return {"cpu": names[0] if names else platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(), "duckdb": duckdb.__version__}


def require_data_dir() -> Path:
    """SHOPMIND_DATA_DIR, or exit with a message saying how to set it."""
    if not os.environ.get("SHOPMIND_DATA_DIR"):
        sys.exit("SHOPMIND_DATA_DIR is not set: point it at the folder holding the datasets (e.g. ../shared/data)")
    return Path(os.environ["SHOPMIND_DATA_DIR"]).resolve()


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that reproduces this run."""
    return shlex.join([".venv/bin/python", f"bench/{script}", *(sys.argv[1:] if argv is None else argv)])


def write_results(stem: str, doc: dict[str, Any], markdown: str) -> None:
    """bench/results/<stem>.json and .md, each written to a temporary name and renamed."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name, text in [(f"{stem}.json", json.dumps(doc, indent=2, default=str) + "\n"), (f"{stem}.md", markdown)]:
        tmp = RESULTS / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(RESULTS / name)


def scratch_settings(folder: str | Path, data_dir: Path, **overrides: Any) -> Any:
    """Settings for a throw-away store in folder, reading the datasets in data_dir only (no downloads);
    overrides are dotted keys as for load_settings."""
    from shopmind.config import load_settings

    return load_settings(overrides={"store.path": str(Path(folder) / "bench.duckdb"), "data.dir": str(data_dir),
                                    "data.allow_download": False, **overrides})
