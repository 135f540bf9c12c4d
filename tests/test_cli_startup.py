"""The command line starts fast: importing it, `--help` and `version` load none of the heavy libraries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import shopmind

HEAVY = ("numpy", "pandas", "duckdb", "pyarrow", "torch", "sklearn", "scipy")
# The modules loaded, listed once Python is about to exit (after the command ran, whatever it exited with).
PROBE = ("import atexit, sys; atexit.register(lambda: print(sorted(m for m in sys.modules if m.split('.')[0] in "
         f"{set(HEAVY)!r}), file=sys.stderr))")


def _env() -> dict[str, str]:
    """This checkout's src first, so the subprocess runs the code under test."""
    src = str(Path(shopmind.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def test_import_loads_no_heavy_module() -> None:
    code = f"import shopmind.cli, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in {set(HEAVY)!r}))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [["version"], ["--help"], ["ingest", "--help"], ["split", "--help"]])
def test_light_commands_load_no_heavy_module(args: list[str]) -> None:
    code = f"{PROBE}; sys.argv = ['shopmind', *{args!r}]; from shopmind.cli import app; app()"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "[]"


def test_help_lists_match_the_code() -> None:
    """--format and --strategy help name the formats and strategies without importing them; they must agree."""
    from shopmind.cli.data import FORMAT_NAMES, STRATEGY_NAMES
    from shopmind.data.adapters import FORMATS
    from shopmind.data.splits import STRATEGIES

    assert FORMAT_NAMES == tuple(sorted(set(FORMATS)))
    assert STRATEGY_NAMES == STRATEGIES
