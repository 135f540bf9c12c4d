"""The PostgreSQL store against the DuckDB store on real data: the same rows, stats, splits, protocols, mined
knowledge and benchmark metrics; plus what only a server store has to get right (URLs with passwords in errors,
two writers at once, a snapshot to a local file, VACUUM after a forget)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from shopmind.cli import app
from shopmind.data.adapters import open_adapter
from shopmind.data.ingest import Ingestor
from shopmind.data.snapshot import snapshot
from shopmind.data.splits import leave_one_out, temporal_split
from shopmind.data.store import Store, StoreError, open_store
from shopmind.evaluation.holdout import events_frame
from shopmind.evaluation.protocols import build

DATASETS = ("amazon2018-giftcards", "ml-100k")


@pytest.fixture(scope="module")
def both(data_dir: Path, pg_cluster, tmp_path_factory: pytest.TempPathFactory):
    """The same real datasets ingested into a DuckDB file and a PostgreSQL database."""
    duck = tmp_path_factory.mktemp("duck") / "s.duckdb"
    url = pg_cluster.create_database(f"both{os.getpid()}")
    reports = {}
    for name, target in (("duckdb", duck), ("postgres", url)):
        with open_store(target) as store:
            for ds in DATASETS:
                reports[name, ds] = Ingestor(store, ds, chunk_size=20_000).run(open_adapter(data_dir / ds))
    return {"duckdb": duck, "postgres": url, "reports": reports}


def _frame(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reset_index(drop=True).copy()
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = [str(v.tolist() if isinstance(v, np.ndarray) else v) for v in df[c]]
        elif str(df[c].dtype).startswith("datetime"):
            df[c] = pd.to_datetime(df[c]).astype("datetime64[us]")
        elif str(df[c].dtype) in ("int32", "int64", "Int64", "Int32"):
            df[c] = df[c].astype("float64")
    return df


def test_same_counts_stats_and_rows(both) -> None:
    for ds in DATASETS:
        assert both["reports"]["duckdb", ds].counts == both["reports"]["postgres", ds].counts
    with open_store(both["duckdb"], read_only=True) as d, open_store(both["postgres"], read_only=True) as p:
        assert p.dialect == "postgres" and d.dialect == "duckdb"
        assert d.datasets() == p.datasets() == sorted(DATASETS)
        for ds in DATASETS:
            assert d.stats(ds) == p.stats(ds)
        sql = ("SELECT item_id, title, brand, categories, price, attributes FROM items WHERE dataset = ? "
               "ORDER BY item_id")
        a, b = d.table(sql, ["amazon2018-giftcards"]), p.table(sql, ["amazon2018-giftcards"])
        assert len(a) == 1547
        pd.testing.assert_frame_equal(_frame(a), _frame(b))
        assert p.stats("ml-100k")["events"] == 100_000


def test_same_splits_and_protocols(both) -> None:
    with open_store(both["duckdb"], read_only=True) as d, open_store(both["postgres"], read_only=True) as p:
        for ds in DATASETS:
            pd.testing.assert_frame_equal(_frame(leave_one_out(d, ds)), _frame(leave_one_out(p, ds)))
            pd.testing.assert_frame_equal(_frame(events_frame(d, ds)), _frame(events_frame(p, ds)))
        a, b = temporal_split(d, "ml-100k"), temporal_split(p, "ml-100k")
        assert a.attrs == b.attrs
        pd.testing.assert_frame_equal(_frame(a), _frame(b))
        pa_, pb = build(d, "amazon2018-giftcards"), build(p, "amazon2018-giftcards")
        assert list(pa_.full.item_ids) == list(pb.full.item_ids)
        assert np.array_equal(pa_.test.targets, pb.test.targets)
        assert (pa_.train.matrix() != pb.train.matrix()).nnz == 0


def test_same_benchmark_metrics_through_the_cli(both, tmp_path: Path) -> None:
    """`shopmind benchmark` with SHOPMIND_STORE_URL gives the DuckDB store's numbers exactly."""
    import shutil

    copy = tmp_path / "copy.duckdb"
    shutil.copy(both["duckdb"], copy)
    results = {}
    for name, env in (("duckdb", {}), ("postgres", {"SHOPMIND_STORE_URL": both["postgres"]})):
        r = CliRunner().invoke(app, ["--store", str(copy), "benchmark", "-d", "ml-100k", "-m", "pop,itemknn",
                                     "--no-grid", "--out", str(tmp_path / name), "--json"],
                               env={"SHOPMIND_CONFIG": "", **env})
        assert r.exit_code == 0, r.output
        results[name] = {m["model"]: m["test"] for m in json.loads(r.stdout)["results"]}
    assert results["duckdb"] == results["postgres"]
    assert results["postgres"]["itemknn"]["ndcg@10"] > results["postgres"]["pop"]["ndcg@10"] > 0


def test_snapshot_of_a_server_store_is_a_local_duckdb_file(both, tmp_path: Path) -> None:
    with open_store(both["postgres"], read_only=True) as p:
        path = snapshot(p, "amazon2018-giftcards", tmp_path / "snap.duckdb")
        want = p.stats("amazon2018-giftcards")
    with Store(path, read_only=True) as snap:
        assert snap.datasets() == ["amazon2018-giftcards"]
        assert snap.stats("amazon2018-giftcards") == want


def test_bad_urls_are_one_line_errors_without_the_password(pg_cluster) -> None:
    wrong = pg_cluster.url.replace(pg_cluster.password, "not-the-password-123")
    with pytest.raises(StoreError) as e:
        open_store(wrong)
    msg = str(e.value)
    assert "not-the-password-123" not in msg and pg_cluster.password not in msg and "\n" not in msg
    assert "***" in msg and "authentication" in msg
    with pytest.raises(StoreError, match="cannot open store"):
        open_store(f"postgresql://x:secret-pw@127.0.0.1:{pg_cluster.port}/no_such_db")
    r = CliRunner().invoke(app, ["stats"], env={"SHOPMIND_CONFIG": "", "SHOPMIND_STORE_URL": wrong})
    assert r.exit_code != 0 and "not-the-password-123" not in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["stats"], env={"SHOPMIND_CONFIG": "", "SHOPMIND_STORE_URL": "mysql://x"})
    assert r.exit_code != 0 and "Traceback" not in r.output


def _ingest_in_process(url: str, folder: str, name: str, queue) -> None:
    try:
        with open_store(url) as store:
            report = Ingestor(store, name, chunk_size=500).run(open_adapter(Path(folder)))
        queue.put((name, report.counts["event"]["inserted"]))
    except Exception as e:  # reported to the parent
        queue.put((name, repr(e)))


def test_two_processes_write_one_database_at_once(pg_url: str, data_dir: Path) -> None:
    """DuckDB lets one process write a file; on PostgreSQL two ingests (and their table creation) run together."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ingest_in_process, args=(pg_url, str(data_dir / "amazon2018-giftcards"), f"g{i}", queue))
             for i in range(2)]
    for p in procs:
        p.start()
    got = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    assert got == {"g0": 2972, "g1": 2972}
    with open_store(pg_url, read_only=True) as store:
        assert store.stats("g0") == {**store.stats("g1"), "dataset": "g0"}
        with pytest.raises(Exception, match="read-only"):
            store.con.execute("DELETE FROM events")


def test_forget_on_postgres_removes_rows_and_vacuums(pg_url: str, data_dir: Path, settings_for) -> None:
    from shopmind.serving.forget import forget_everywhere

    with open_store(pg_url) as store:
        Ingestor(store, "gc").run(open_adapter(data_dir / "amazon2018-giftcards"))
        user = store.con.execute("SELECT user_id FROM events WHERE dataset = 'gc' GROUP BY 1 ORDER BY count(*) DESC, 1 "
                                 "LIMIT 1").fetchone()[0]
        before = store.stats("gc")["events"]
    settings = settings_for(**{"store.url": pg_url})
    report = forget_everywhere(settings, user, compact=True)
    assert report["store"]["events"] >= 2 and report["store_compacted"] is True
    with open_store(pg_url, read_only=True) as store:
        assert store.con.execute("SELECT count(*) FROM events WHERE user_id = ?", [user]).fetchone()[0] == 0
        assert store.stats("gc")["events"] == before - report["store"]["events"]
