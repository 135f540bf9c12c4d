"""A trained artifact on a real catalog (Amazon gift cards: 1.5k items, timestamps and prices) for the API
tests, built once per session with `shopmind train`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopmind.cli import app


@pytest.fixture(scope="session")
def served(demo_run: dict, onnx_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("serving")
    store = tmp / "s.duckdb"
    shutil.copy(demo_run["store_path"], store)
    env = {"SHOPMIND_CONFIG": "", "SHOPMIND_KNOWLEDGE_ONNX_DIR": str(onnx_dir)}
    r = CliRunner().invoke(app, ["--store", str(store), "train", "-d", "amazon2018-giftcards", "--out",
                                 str(tmp / "artifact"), "--json"], env=env)
    assert r.exit_code == 0, r.output
    return {"store": store, "artifact": tmp / "artifact", "report": json.loads(r.stdout), "env": env, "tmp": tmp}
