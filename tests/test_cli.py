"""The command line: --json output with stable fields, clear errors (exit 2, no traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopmind.cli import app

runner = CliRunner()

RUN_FIELDS = {"run_id", "dataset", "format", "source", "status", "rows_read", "counts", "rejected", "rejects_file",
              "forgotten", "seconds", "rows_per_second"}
STATS_FIELDS = {"dataset", "events", "users", "interacted_items", "repeat_user_item_events", "items",
                "items_with_title", "items_without_metadata", "user_profiles", "judgments", "queries",
                "event_types", "density", "first_timestamp", "last_timestamp", "rejected_last_run", "expected",
                "matches_published"}


def _cli(store: Path, *args: str):
    return runner.invoke(app, ["--store", str(store), *args], env={"SHOPMIND_CONFIG": ""})


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    f = tmp_path / "events.csv"
    f.write_text("user,item,kind,when\nu1,i1,purchase,2024-01-02T03:04:05\nu2,i1,view,2024-01-03T00:00:00\n"
                 "u2,,view,2024-01-03T00:00:00\n")
    return f


def test_ingest_generic_csv_json_and_stats(tmp_path: Path, csv_file: Path) -> None:
    store = tmp_path / "s.duckdb"
    r = _cli(store, "ingest", str(csv_file), "--format", "csv", "--kind", "events", "--map", "user_id=user",
             "--map", "item_id=item", "--map", "type=kind", "--map", "timestamp=when", "--json")
    assert r.exit_code == 0, r.output
    run = json.loads(r.stdout)["runs"][0]
    assert set(run) == RUN_FIELDS
    assert run["dataset"] == "events" and run["counts"]["event"]["inserted"] == 2 and run["rejected"] == 1
    assert Path(run["rejects_file"]).is_file()
    s = _cli(store, "stats", "--json")
    assert s.exit_code == 0, s.output
    stats = json.loads(s.stdout)["datasets"][0]
    assert set(stats) == STATS_FIELDS
    assert stats["users"] == 2 and stats["event_types"] == {"purchase": 1, "view": 1}
    # Plain output is a table.
    assert "events" in _cli(store, "stats").stdout


@pytest.mark.parametrize("args,message", [
    (["ingest", "/no/such/path"], "neither a registered dataset"),
    (["ingest", "{csv}", "--format", "csv", "--encoding", "klingon"], "unknown encoding"),
    (["ingest", "{csv}", "--format", "csv", "--map", "user_id"], "--map expects field=column"),
    (["ingest", "{csv}", "--name", "bad name!"], "invalid dataset name"),
    (["stats"], "no store at"),
    (["split", "x", "--strategy", "random"], "unknown split strategy"),
    (["fetch", "nope"], "unknown dataset"),
])
def test_errors_are_one_line_exit_2(tmp_path: Path, csv_file: Path, args: list[str], message: str) -> None:
    store = tmp_path / "missing.duckdb" if args[0] == "stats" else tmp_path / "s.duckdb"
    if args[0] == "split":
        _cli(store, "ingest", str(csv_file), "--format", "csv", "--map", "user_id=user", "--map", "item_id=item",
             "--map", "type=kind")
    r = _cli(store, *[a.replace("{csv}", str(csv_file)) for a in args])
    assert r.exit_code == 2, r.output
    assert message in r.stderr
    assert "Traceback" not in r.output


def test_config_and_datasets_json(tmp_path: Path, data_dir: Path) -> None:
    r = runner.invoke(app, ["--store", str(tmp_path / "x.duckdb"), "--data-dir", str(data_dir), "config", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["data"]["dir"] == str(data_dir)
    r = runner.invoke(app, ["--data-dir", str(data_dir), "datasets", "--json"])
    rows = {d["name"]: d for d in json.loads(r.stdout)["datasets"]}
    assert set(rows) == {"amazon-scientific", "s3rec-beauty", "homedepot", "amazon2018-magazine",
                         "amazon2018-giftcards", "amazon2018-allbeauty", "ml-100k"}
    assert all(d["local_path"] for d in rows.values())
    assert rows["homedepot"]["downloadable"] is False
    r = runner.invoke(app, ["--data-dir", str(data_dir), "fetch", "ml-100k", "--json"])
    assert r.exit_code == 0 and set(json.loads(r.stdout)["datasets"][0]["files"].values()) == {"ok"}


def test_ingest_by_path_with_format_and_split(tmp_path: Path, data_dir: Path) -> None:
    store = tmp_path / "s.duckdb"
    r = _cli(store, "ingest", str(data_dir / "s3rec-beauty"), "--format", "s3rec", "--name", "beauty", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["runs"][0]["counts"]["event"]["inserted"] == 198_502
    out = tmp_path / "split.parquet"
    r = _cli(store, "split", "beauty", "--strategy", "leave_one_out", "--output", str(out), "--json")
    parts = json.loads(r.stdout)["parts"]
    assert parts["test"] == {"rows": 22_363, "users": 22_363, "items": parts["test"]["items"]}
    assert out.is_file()


def test_console_script_runs(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("shopmind")
    r = subprocess.run([str(exe), "--store", str(tmp_path / "s.duckdb"), "config", "--json"], capture_output=True,
                       text=True, env={**os.environ, "SHOPMIND_CONFIG": ""}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["store"]["path"] == str(tmp_path / "s.duckdb")


def test_progress_goes_to_a_log_as_plain_lines(tmp_path, data_dir) -> None:
    """Output to a file or a pipe (no terminal): progress comes as timestamped plain lines, not nothing."""
    import subprocess
    import sys

    env = {**__import__("os").environ, "SHOPMIND_CONFIG": "", "SHOPMIND_PROGRESS_EVERY": "1"}
    r = subprocess.run([sys.executable, "-m", "shopmind.cli", "--store", str(tmp_path / "s.duckdb"), "--data-dir",
                        str(data_dir), "ingest", "homedepot"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("[")]
    assert any("ingest homedepot: started" in ln for ln in lines)
    assert any("ingest homedepot: finished" in ln and "rows" in ln for ln in lines)
    assert all("\x1b[" not in ln for ln in lines)  # no terminal escapes in a log
