"""Shared fixtures: the real datasets folder and a store with every dataset ingested once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """SHOPMIND_DATA_DIR. Missing in CI is an error (the real-data tests must run there); elsewhere a skip."""
    value = os.environ.get("SHOPMIND_DATA_DIR")
    if not value or not Path(value, "DATASETS.md").is_file():
        if os.environ.get("CI"):
            pytest.fail("SHOPMIND_DATA_DIR must point at the real datasets in CI (see Makefile)")
        pytest.skip("SHOPMIND_DATA_DIR not set: real-data tests skipped")
    return Path(value)


@pytest.fixture(scope="session")
def demo_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`shopmind demo --json` on every real dataset, into a fresh store; returns its JSON and the store path."""
    from typer.testing import CliRunner

    from shopmind.cli import app

    store = tmp_path_factory.mktemp("demo") / "shop.duckdb"
    result = CliRunner().invoke(app, ["--store", str(store), "--data-dir", str(data_dir), "demo", "--no-mine", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    payload["store_path"] = store
    return payload


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX build folder per test session (exporting the model takes seconds)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture
def settings_for(tmp_path: Path):
    """Settings with a temporary store and rejects dir (and the real data dir when set)."""
    from shopmind.config import load_settings

    def make(**overrides):
        base = {"store.path": tmp_path / "store.duckdb", "data.dir": os.environ.get("SHOPMIND_DATA_DIR") or None,
                "data.allow_download": False}
        base.update(overrides)
        return load_settings(overrides=base, environ={})

    return make


@pytest.fixture(scope="session")
def served(demo_run: dict, onnx_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A trained artifact on a real catalog (Amazon gift cards: 1.5k items, timestamps and prices), built
    once per session with `shopmind train`, for the serving, storefront and browser tests."""
    import shutil

    from typer.testing import CliRunner

    from shopmind.cli import app

    tmp = tmp_path_factory.mktemp("serving")
    store = tmp / "s.duckdb"
    shutil.copy(demo_run["store_path"], store)
    env = {"SHOPMIND_CONFIG": "", "SHOPMIND_KNOWLEDGE_ONNX_DIR": str(onnx_dir)}
    r = CliRunner().invoke(app, ["--store", str(store), "train", "-d", "amazon2018-giftcards", "--out",
                                 str(tmp / "artifact"), "--json"], env=env)
    assert r.exit_code == 0, r.output
    return {"store": store, "artifact": tmp / "artifact", "report": json.loads(r.stdout), "env": env, "tmp": tmp}


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A throwaway PostgreSQL cluster (initdb + pg_ctl, Debian's postgresql package) for this test process,
    stopped and removed after. Without the server binaries: a failure in CI (make test installs them), a skip
    with the reason elsewhere."""
    from shopmind.data.pglocal import LocalCluster, PostgresUnavailable

    try:
        cluster = LocalCluster()
    except PostgresUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL must be installed in CI: {e}")
        pytest.skip(f"PostgreSQL tests skipped: {e}")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("psycopg must be installed in CI (pip install -e '.[postgres]')")
        pytest.skip("PostgreSQL tests skipped: psycopg is not installed (pip install -e '.[postgres]')")
    cluster.start()
    yield cluster
    cluster.close()


_DB_COUNTER = iter(range(1, 1_000_000))


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """A fresh, empty database on the session's cluster."""
    return pg_cluster.create_database(f"t{os.getpid()}_{next(_DB_COUNTER)}")


@pytest.fixture(params=["duckdb", "postgres"])
def backend(request) -> str:
    """Each test that takes it runs once per store backend."""
    return request.param


@pytest.fixture
def store_at(backend: str, tmp_path: Path, request):
    """`store_at(name="s")`: a store target of this test's backend (a DuckDB path, or a fresh PostgreSQL
    database's URL); the same name gives the same target. Open it with `open_store(target)`."""
    targets: dict[str, object] = {}

    def make(name: str = "s"):
        if name not in targets:
            if backend == "duckdb":
                targets[name] = tmp_path / f"{name}.duckdb"
            else:
                cluster = request.getfixturevalue("pg_cluster")
                targets[name] = cluster.create_database(f"t{os.getpid()}_{next(_DB_COUNTER)}")
        return targets[name]

    return make


@pytest.fixture
def backend_settings(settings_for, store_at):
    """settings_for on this test's backend: store.url set for PostgreSQL (store.path still names the local
    folders: knowledge, serving state, privacy)."""

    def make(**overrides):
        target = store_at()
        if isinstance(target, str):
            overrides.setdefault("store.url", target)
        return settings_for(**overrides)

    return make
