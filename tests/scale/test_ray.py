"""Ray for the heavy batch work, on a real two-node Ray cluster started with the `ray` CLI (a head, and a second
node joined with `ray start --address`, one CPU each): `mine --ray` gives the single-process vectors and tables,
Ray Train gives a two-tower model whose test NDCG@10 is within the paired bootstrap interval of the local one,
and `benchmark --ray` (grids as Ray Tune trials) selects what the hand-written grid selects.

Without Ray: a failure in CI (make test installs the scale extra), a skip elsewhere. No wall-clock asserts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import shopmind
from shopmind.cli import app

GIFT = "amazon2018-giftcards"
SCIENTIFIC = "amazon-scientific"


def _need_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("Ray must be installed in CI (pip install -e '.[scale]')")
        pytest.skip("Ray tests skipped: Ray is not installed (pip install 'shopmind[scale]')")


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node, each started with `ray start` (own process group, own temp folder), joined by
    this test process as a driver; stopped after, and every process of theirs checked gone."""
    _need_ray()
    import ray

    from shopmind.raycluster import connect
    from shopmind.raylocal import LocalRayCluster

    c = LocalRayCluster(nodes=2, cpus=1, object_store_memory=200_000_000)
    try:
        c.start()
        connect(c.address)
        c.wait_for_nodes()
        yield c
    finally:
        ray.shutdown()
        members = c.members()
        c.stop()
        assert not LocalRayCluster._left(members), "Ray processes left running"


@pytest.fixture(scope="module")
def stores(data_dir: Path, tmp_path_factory: pytest.TempPathFactory, onnx_dir: Path):
    """The gift cards and Scientific datasets ingested once into a DuckDB store."""
    from shopmind.config import load_settings
    from shopmind.data.api import ingest_source, open_source
    from shopmind.data.store import Store

    tmp = tmp_path_factory.mktemp("ray")
    settings = load_settings(overrides={"store.path": tmp / "base.duckdb", "data.dir": data_dir,
                                        "data.allow_download": False, "knowledge.onnx_dir": onnx_dir}, environ={})
    with Store(settings.store.path) as store:
        for name in (GIFT, SCIENTIFIC):
            ingest_source(store, settings, open_source(settings, name))
    return tmp, settings


def _cli_env(onnx_dir: Path) -> dict[str, str]:
    """This checkout's src first, so the subprocess (a second driver) runs the code under test."""
    src = str(Path(shopmind.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            "SHOPMIND_CONFIG": "", "SHOPMIND_KNOWLEDGE_ONNX_DIR": str(onnx_dir), "HF_HUB_OFFLINE": "1"}


def test_two_alive_nodes(cluster) -> None:
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 2 and len({n["NodeID"] for n in nodes}) == 2
    assert [n["Resources"]["CPU"] for n in nodes] == [1.0, 1.0]


def test_missing_ray_and_bad_address_are_one_line_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         onnx_dir: Path) -> None:
    from shopmind.raycluster import RayUnavailable, connect, require_ray

    for address, message in (("127.0.0.1:1", "no Ray cluster answers at 127.0.0.1:1"), ("nowhere", "bad Ray address")):
        r = subprocess.run([sys.executable, "-m", "shopmind", "--store", str(tmp_path / "s.duckdb"), "mine", "-d", GIFT,
                            "--ray", address], capture_output=True, text=True, env=_cli_env(onnx_dir), timeout=120)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(RayUnavailable, match=r"pip install 'shopmind\[scale\]'"):
        require_ray()
    with pytest.raises(RayUnavailable, match="not installed"):
        connect("auto")
    r = CliRunner().invoke(app, ["--store", str(tmp_path / "s.duckdb"), "benchmark", "-d", GIFT, "--ray", "auto"])
    assert r.exit_code == 2 and "pip install 'shopmind[scale]'" in r.output


def test_cli_start_up_does_not_import_ray() -> None:
    code = ("import sys, shopmind.cli, shopmind.knowledge.mine, shopmind.evaluation.runner, shopmind.ranking.sources; "
            "print('ray' in sys.modules)")
    src = str(Path(shopmind.__file__).resolve().parents[1])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": src})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def _rows(store, table: str, order: str) -> list[tuple]:
    return store.con.execute(f"SELECT * EXCLUDE (dataset) FROM {table} WHERE dataset = ? ORDER BY {order}", [GIFT]).fetchall()


@pytest.fixture(scope="module")
def mined(cluster, stores, onnx_dir: Path) -> dict:
    """The gift cards mined twice from the same store: by the Miner in this process, and by `shopmind mine --ray
    HOST:PORT` in a separate driver process (its store keeps the knowledge, for the `train --ray` test)."""
    from shopmind.data.store import Store
    from shopmind.knowledge.mine import Miner

    tmp, settings = stores
    local_db, ray_db = tmp / "mine-local.duckdb", tmp / "mine-ray.duckdb"
    shutil.copy(settings.store.path, local_db)
    shutil.copy(settings.store.path, ray_db)
    with Store(local_db) as store:
        local = Miner(store, settings.knowledge, tmp / "knowledge-local", onnx_dir=onnx_dir).run(GIFT).to_json()
    r = subprocess.run([sys.executable, "-m", "shopmind", "--store", str(ray_db), "mine", "-d", GIFT, "--ray",
                        cluster.address, "--json"], capture_output=True, text=True, env=_cli_env(onnx_dir), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"local": local, "ray": json.loads(r.stdout)["reports"][0], "local_db": local_db, "ray_db": ray_db}


def test_mine_on_ray_matches_single_process(mined) -> None:
    from shopmind.data.store import Store

    local, remote, local_db, ray_db = mined["local"], mined["ray"], mined["local_db"], mined["ray_db"]
    assert remote["counts"] == local["counts"] and local["counts"]["texts_encoded"] > 1500
    ray_run = remote["encoder"]["ray"]
    # Every text was encoded by the Ray actors, but a leftover of one model call (encoded in the driver, as is).
    assert ray_run["workers"] == 2 and ray_run["texts"] > 1300 and ray_run["texts_per_s"] > 0
    assert ray_run["texts"] + ray_run.get("local_texts", 0) == remote["counts"]["texts_encoded"]
    assert {k: remote["encoder"][k] for k in ("model", "backend", "max_length")} == \
        {k: local["encoder"][k] for k in ("model", "backend", "max_length")}

    a_dir, b_dir = Path(local["artifacts"]), Path(remote["artifacts"])
    assert json.loads((a_dir / "ids.json").read_text()) == json.loads((b_dir / "ids.json").read_text())
    a, b = np.load(a_dir / "item_vectors.npy"), np.load(b_dir / "item_vectors.npy")
    has = np.linalg.norm(a, axis=1) > 0
    assert has.sum() > 1400 and np.array_equal(has, np.linalg.norm(b, axis=1) > 0)
    cos = (a[has] * b[has]).sum(1) / np.linalg.norm(a[has], axis=1) / np.linalg.norm(b[has], axis=1)
    assert cos.min() >= 0.999, f"lowest per-row cosine {cos.min():.6f}"

    with Store(local_db, read_only=True) as x, Store(ray_db, read_only=True) as y:
        for table, order in (("item_texts", "item_id"), ("knowledge_cards", "item_id"), ("item_keywords", "item_id"),
                             ("item_edges", "src, dst, kind"), ("taxonomy", "ALL")):
            assert _rows(x, table, order) == _rows(y, table, order), table
        query = "SELECT * EXCLUDE (dataset, vector) FROM user_profiles WHERE dataset = ? ORDER BY user_id"
        assert x.con.execute(query, [GIFT]).fetchall() == y.con.execute(query, [GIFT]).fetchall()
        cache = "SELECT model, text_hash, vector FROM embedding_cache ORDER BY model, text_hash"
        ca, cb = x.con.execute(cache).fetchall(), y.con.execute(cache).fetchall()
        assert [r[:2] for r in ca] == [r[:2] for r in cb] and len(ca) > 1500  # same keys: one shared cache
        va = np.stack([np.frombuffer(r[2], np.float32) for r in ca])
        vb = np.stack([np.frombuffer(r[2], np.float32) for r in cb])
        assert ((va * vb).sum(1) / np.linalg.norm(va, axis=1) / np.linalg.norm(vb, axis=1)).min() >= 0.999


def test_train_cli_on_ray_serves_like_a_local_artifact(cluster, mined, tmp_path: Path) -> None:
    """`shopmind train --ray` on the Ray-mined gift cards: the two-tower source (with the LM text vectors) trains
    on Ray Train, early-stops on validation (60 epochs at most), and the saved artifact loads and recommends."""
    from shopmind.models import TwoTower
    from shopmind.serving import artifact

    r = CliRunner().invoke(app, ["--store", str(mined["ray_db"]), "train", "-d", GIFT, "--sources", "itemknn,twotower,pop",
                                 "--ray", cluster.address, "--out", str(tmp_path / "art"), "--json"],
                           env={"SHOPMIND_CONFIG": ""})
    assert r.exit_code == 0, r.output[-3000:]
    report = json.loads(r.stdout)
    for stage in ("sources", "refit"):
        info = report["ray"][stage]
        assert info["itemknn"] is None and info["pop"] is None  # fitted in the driver
        assert info["twotower"]["workers"] == 2 and info["twotower"]["nodes"] == 2
    assert 1 <= report["tuned"]["twotower"]["epochs"] < 60
    assert report["results"]["twotower"]["ndcg@10"] > report["results"]["pop"]["ndcg@10"]
    art = artifact.load(tmp_path / "art")
    tower = art.pipeline.sources.models["twotower"]
    assert isinstance(tower, TwoTower) and tower._net.text is not None  # the text projection came back too
    assert tower.recommend([str(tower.data.item_ids[0])], k=5)


def test_ray_train_two_tower_within_the_local_interval(cluster, stores, tmp_path: Path) -> None:
    """Two-tower (ID only: no mining needed) on the 8,442 Scientific users, 2 DDP workers on 2 nodes against one
    process, with early stopping on validation in both. Not bit-equal (per-worker loss means, float order), so the
    tolerance is statistical: the 95 % paired bootstrap interval of the per-user test NDCG@10 difference must
    contain 0."""
    from shopmind.data.store import Store
    from shopmind.evaluation import metrics as M
    from shopmind.evaluation.protocols import build
    from shopmind.evaluation.runner import evaluate
    from shopmind.models import TwoTowerID
    from shopmind.models.ray_train import fit

    _, settings = stores
    with Store(settings.store.path, read_only=True) as store:
        proto = build(store, SCIENTIFIC)
    params = {"epochs": 6, "eval_every": 2, "patience": 4, "seed": 0}
    valid = (proto.valid.histories, proto.valid.targets)
    local = TwoTowerID(**params).fit_validated(proto.train, None, *valid)
    remote = fit(TwoTowerID(**params), proto.train, None, valid, address=cluster.address, workers=2)

    assert remote.fit_info["workers"] == 2 and remote.fit_info["nodes"] == 2
    assert [h["epoch"] for h in remote.history] == [h["epoch"] for h in local.history]
    assert remote.tuned["epochs"] in (2, 4, 6) and all("valid_ndcg@10" in h for h in remote.history[1::2])
    best_local = max(h.get("valid_ndcg@10", 0) for h in local.history)
    best_remote = max(h.get("valid_ndcg@10", 0) for h in remote.history)
    assert best_remote > 0.5 * best_local > 0

    a, ranks_local, _ = evaluate(local, proto.test, proto.mask_history)
    b, ranks_remote, _ = evaluate(remote, proto.test, proto.mask_history)
    paired = M.paired_bootstrap(M.per_user_ndcg(ranks_remote), M.per_user_ndcg(ranks_local))
    assert paired["ci_low"] <= 0 <= paired["ci_high"], (a["ndcg@10"], b["ndcg@10"], paired)

    # The Ray-trained model is an ordinary fitted model: it saves, loads and scores the same.
    remote.save(tmp_path / "m")
    again = TwoTowerID.load(tmp_path / "m")
    some = proto.test.histories[:200]
    assert np.array_equal(again.score(some), remote.score(some))
    assert again.recommend([str(proto.full.item_ids[0])], k=5)


def test_benchmark_ray_tune_selects_like_the_hand_written_grid(cluster, stores) -> None:
    """`shopmind benchmark --ray` (pop-cat: 3 settings, item-KNN: 12, as Ray Tune trials) against runner.run in
    this process: the same validation metrics for every setting, the same selection, the same test metrics."""
    from shopmind.data.store import Store
    from shopmind.evaluation import runner
    from shopmind.evaluation.protocols import build

    tmp, settings = stores
    with Store(settings.store.path, read_only=True) as store:
        proto = build(store, GIFT)
    local = runner.run(proto, ["pop-cat", "itemknn"], cold_share=0)
    r = CliRunner().invoke(app, ["--store", str(settings.store.path), "benchmark", "-d", GIFT, "-m", "pop-cat,itemknn",
                                 "--cold-share", "0", "--ray", cluster.address, "--out", str(tmp / "bench"), "--json"],
                           env={"SHOPMIND_CONFIG": ""})
    assert r.exit_code == 0, r.output[-3000:]
    remote = json.loads(r.stdout)
    assert remote["ray"]["address"] == cluster.address
    for a, b in zip(local["results"], remote["results"], strict=True):
        assert a["model"] == b["model"] and len(a["grid"]) == len(b["grid"]) == len(runner._grid(a["model"], True))
        assert a["grid"] == b["grid"] and a["params"] == b["params"]
        assert a["valid"] == b["valid"] and a["test"] == b["test"]
