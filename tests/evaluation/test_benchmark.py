"""The published protocols on the real files, and a tiny benchmark end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from shopmind.cli import app
from shopmind.data.store import Store
from shopmind.evaluation.protocols import build


@pytest.fixture(scope="module")
def store(demo_run: dict):
    with Store(demo_run["store_path"], read_only=True) as s:
        yield s


def test_unisrec_protocol_matches_the_files(store: Store, data_dir: Path) -> None:
    p = build(store, "amazon-scientific")
    assert p.name == "unisrec" and not p.mask_history
    assert len(p.valid.targets) == len(p.test.targets) == 8442 and p.full.n_items == 4385
    # Test histories are the .test.inter histories (last 50), extended by older items the file cut off.
    lines = (data_dir / "amazon-scientific" / "Scientific.test.inter").read_text().split("\n")[1:]
    items = dict(line.split("\t")[::-1] for line in (data_dir / "amazon-scientific" / "Scientific.item2index")
                 .read_text().split("\n") if line)
    users = dict(line.split("\t")[::-1] for line in (data_dir / "amazon-scientific" / "Scientific.user2index")
                 .read_text().split("\n") if line)
    for line in lines[:200:37]:
        u, hist, target = line.split("\t")
        row = int(np.flatnonzero(p.test.users == p.full.user_index(users[u]))[0])
        got = [p.full.item_ids[i] for i in p.test.histories[row]]
        assert got[-len(hist.split()):] == [items[i] for i in hist.split()]
        assert p.full.item_ids[p.test.targets[row]] == items[target]
    # Validation never sees the valid or test items in its history.
    assert sum(len(h) for h in p.valid.histories) == p.train.matrix().sum() == 59427 - 2 * 8442


def test_s3rec_protocol_masks_history(store: Store) -> None:
    p = build(store, "s3rec-beauty")
    assert p.name == "s3rec" and p.mask_history and len(p.test.targets) == 22363


def test_benchmark_cli_tiny(store: Store, demo_run: dict, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy.duckdb"  # the module's read-only connection keeps the original open
    shutil.copy(demo_run["store_path"], copy)
    r = CliRunner().invoke(app, ["--store", str(copy), "benchmark", "-d", "amazon-scientific", "-m", "pop,itemknn",
                                 "--no-grid", "--out", str(tmp_path / "out"), "--json"], env={"SHOPMIND_CONFIG": ""})
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    by = {m["model"]: m for m in res["results"]}
    assert by["itemknn"]["test"]["ndcg@10"] > 3 * by["pop"]["test"]["ndcg@10"]
    assert 0.01 < by["pop"]["test"]["ndcg@10"] < 0.03
    assert set(res["published"]) == {"VQ-Rec", "MISSRec"}
    assert res["paired_ndcg@10_vs_reference"]["pop"]["ci_high"] < 0
    for f in res["files"].values():
        assert Path(f).is_file()
    bad = CliRunner().invoke(app, ["--store", str(copy), "benchmark", "-d", "amazon-scientific", "-m", "nope"])
    assert bad.exit_code == 2 and "unknown model" in bad.stderr
