"""The trainer role on a real served artifact (Amazon gift cards): it ships, retrains, gates, promotes with a
reload record, and a failure anywhere leaves the served artifact as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from shopmind.config import load_settings
from shopmind.data.store import Store
from shopmind.serving import artifact as A
from shopmind.serving.eventlog import EventLog
from shopmind.serving.trainer import Trainer, TrainerConfig

DATASET = "amazon2018-giftcards"


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def shop(served: dict, tmp_path: Path) -> dict:
    """A copy of the served store, artifact and mined knowledge, with settings pointing at them."""
    store = tmp_path / "s.duckdb"
    shutil.copy(served["store"], store)
    knowledge = Path(str(served["store"]) + ".knowledge")
    shutil.copytree(knowledge, Path(str(store) + ".knowledge"))
    art = tmp_path / "artifact"
    shutil.copytree(served["artifact"], art)
    settings = load_settings(overrides={"store.path": store, "serving.state_dir": tmp_path / "state",
                                        "knowledge.onnx_dir": served["env"]["SHOPMIND_KNOWLEDGE_ONNX_DIR"]},
                             environ={})
    return {"settings": settings, "artifact": art, "store": store, "served_artifact": served["artifact"]}


def _post_new_events(settings, n: int = 600, seed: int = 0) -> list[dict]:
    """Real events of the dataset moved to the future: taken out of the store and logged again after the
    newest stored one, as a server would log them (acknowledged and published)."""
    with Store(settings.store.path) as s:
        ev = s.table("SELECT event_id, user_id, item_id FROM events WHERE dataset = ? AND item_id IS NOT NULL",
                     [DATASET])
        newest = s.con.execute("SELECT max(timestamp) FROM events WHERE dataset = ?", [DATASET]).fetchone()[0]
        rng = np.random.default_rng(seed)
        pick = ev.iloc[rng.choice(len(ev), n, replace=False)]
        s.con.execute("DELETE FROM events WHERE dataset = ? AND event_id IN (SELECT unnest(?))",
                      [DATASET, pick["event_id"].astype(str).tolist()])
    t0 = newest.timestamp() + 86400
    records = [{"event_id": f"new-{seed}-{k}", "user_id": str(r.user_id), "item_id": str(r.item_id), "type": "view",
                "timestamp": t0 + k * 60.0, "received": time.time()} for k, r in enumerate(pick.itertuples())]
    log = EventLog(settings.state_dir / DATASET, required=("user_id", "type"))
    try:
        log.append(records)
    finally:
        log.close()
    return records


def _reloads(settings) -> list[dict]:
    text = (settings.state_dir / DATASET / "events.jsonl").read_text()
    return [r for r in map(json.loads, text.splitlines()) if r.get("kind") == "reload"]


def test_cheap_run_ships_judges_and_promotes_with_a_reload_record(shop):
    settings, art = shop["settings"], shop["artifact"]
    before = json.loads((art / "manifest.json").read_text())
    posted = _post_new_events(settings)
    t = Trainer(settings, DATASET, art, TrainerConfig(gate="point", margin=1.0, min_cases=5, every_s=3600))
    result = t.tick()  # ships, sees 600 new events: fewer than every_events (1000), and not an hour yet
    assert result is None and t.status.pending_events == len(posted)
    t.config.every_events = 100
    result = t.tick()
    assert result["kind"] == "cheap" and result["outcome"] == "promoted", result
    assert result["cases"] >= 5 and 0 <= result["candidate"]["ndcg@10"] <= 1 and "ci_low" in result["difference"]
    after = json.loads((art / "manifest.json").read_text())
    assert after["trainer"]["kind"] == "cheap" and after["created"] >= before["created"]
    assert after["through"]["newest"] == pytest.approx(posted[-1]["timestamp"], abs=1)
    assert _reloads(settings)[-1]["artifact"] == str(art.resolve())
    status = json.loads((settings.state_dir / DATASET / "trainer.json").read_text())
    assert status["promotions"] == 1 and status["last"]["outcome"] == "promoted" and status["state"] == "idle"
    # the promoted artifact loads, and its base histories leave the shipped events to the log's replay
    loaded = A.load(art)
    n_base = sum(len(h) for h in loaded.histories.values())
    with Store(settings.store.path) as s:
        shipped = s.con.execute("SELECT count(*) FROM events WHERE dataset = ? AND event_id LIKE 'new-%'",
                                [DATASET]).fetchone()[0]
    assert shipped == len(posted)
    assert n_base == before["events"] - len(posted)  # the moved events come from the log only
    # the refitted popularity source counts every stored interaction, the shipped ones too, rescaled to the
    # total the kept ranker was trained on
    old_pop = A.load(shop["served_artifact"]).pipeline.sources.models["pop"].popularity
    new_pop = loaded.pipeline.sources.models["pop"].popularity
    assert new_pop.sum() == pytest.approx(old_pop.sum(), rel=1e-6)
    with Store(settings.store.path) as s:
        counts = dict(s.con.execute("SELECT item_id, count(*) FROM events WHERE dataset = ? AND item_id IS NOT NULL "
                                    "GROUP BY item_id", [DATASET]).fetchall())
    expect = np.array([counts.get(str(i), 0) for i in loaded.item_ids], np.float64)
    np.testing.assert_allclose(new_pop / new_pop.sum(), expect / expect.sum(), rtol=1e-6)
    # nothing new since: no run; new events count from the promoted artifact's data on
    assert t.tick() is None
    more = _post_new_events(settings, n=150, seed=2)
    again = t.tick()
    assert again is not None and again["kind"] == "cheap" and t.status.pending_events == len(more)


def test_a_worse_candidate_is_rejected_and_the_served_artifact_kept(shop, monkeypatch):
    settings, art = shop["settings"], shop["artifact"]
    _post_new_events(settings)
    digest = _digest(art)
    t = Trainer(settings, DATASET, art, TrainerConfig(every_events=1, min_cases=5))

    def worse(store, frame, served):  # the served pipeline without its ranker, on popularity alone
        p = served.pipeline
        from shopmind.ranking.pipeline import RankingPipeline

        return RankingPipeline(p.sources, p.info, None, blend={"pop": 1.0}, per_source=p.per_source, depth=p.depth)

    monkeypatch.setattr(t, "_fit_cheap", worse)
    result = t.tick()
    assert result["outcome"] == "rejected", result
    assert result["candidate"]["ndcg@10"] < result["serving"]["ndcg@10"]
    assert _digest(art) == digest and not _reloads(settings)
    assert json.loads((settings.state_dir / DATASET / "trainer.json").read_text())["promotions"] == 0


@pytest.mark.parametrize("where", ["fit", "save", "load"])
def test_a_failed_training_leaves_the_served_artifact_untouched(shop, monkeypatch, where):
    settings, art = shop["settings"], shop["artifact"]
    _post_new_events(settings)
    digest = _digest(art)
    t = Trainer(settings, DATASET, art, TrainerConfig(every_events=1, gate="off"))
    if where == "fit":
        monkeypatch.setattr(t, "_fit_cheap", lambda *a: (_ for _ in ()).throw(MemoryError("out of memory")))
    elif where == "save":
        real = A.save

        def half_written(folder, *a, **k):
            real(folder, *a, **k)
            (Path(folder) / "ranker.txt").write_text("garbage")  # a candidate that does not load
        monkeypatch.setattr(A, "save", half_written)
    else:
        monkeypatch.setattr(A, "forget_tombstoned", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    result = t.tick()
    assert result["outcome"] == "failed" and result["error"], result
    assert "\n" not in result["error"]
    status = json.loads((settings.state_dir / DATASET / "trainer.json").read_text())
    assert status["state"] == "failed" and status["failures"] == 1
    if where != "load":  # (forget_tombstoned runs after the swap: the new artifact is in place and loads)
        assert _digest(art) == digest
        assert not _reloads(settings)
    assert t.tick() is None  # after a failure the trainer waits (every_s, at most 5 minutes) before retrying
    A.load(art)  # whatever happened, the served folder is a complete artifact
    leftovers = [p.name for p in art.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers


def test_full_run_retrains_every_source_and_is_gated(shop):
    settings, art = shop["settings"], shop["artifact"]
    _post_new_events(settings, n=800, seed=1)
    t = Trainer(settings, DATASET, art, TrainerConfig(min_cases=5, margin=1.0))
    result = t.run_once("full", ship=True)
    assert result["outcome"] == "promoted", result
    assert result["holdout"]["cases"] == result["cases"] >= 5
    m = json.loads((art / "manifest.json").read_text())
    assert m["trainer"]["kind"] == "full" and m["trainer"]["full_at"] == m["trainer"]["at"]
    assert set(m["sources"]) == set(json.loads((shop["artifact"] / "sources" / "sources.json").read_text())["config"])
    ev = json.loads((art / "evaluation.json").read_text())
    assert ev["protocol"] == "recent" and ev["users"]["test"] == result["cases"]
    A.load(art)


def test_a_promotion_killed_between_its_renames_is_undone_at_start(shop):
    """kill -9 after `folder -> .old` and before `candidate -> folder`: no served folder. The next trainer puts
    the old one back and removes the killed run's temporary folder."""
    settings, art = shop["settings"], shop["artifact"]
    digest = _digest(art)
    aside = art.with_name(f".{art.name}.old-1234")
    art.rename(aside)
    work = art.parent / f".trainer-{DATASET}-x1y2"
    (work / "candidate").mkdir(parents=True)
    t = Trainer(settings, DATASET, art)
    assert _digest(art) == digest and not aside.exists() and not work.exists()
    A.load(art)
    with pytest.raises(ValueError, match="another trainer is running"):  # one trainer per state folder
        Trainer(settings, DATASET, art)
    t.close()
    Trainer(settings, DATASET, art).close()


def test_the_trainer_on_postgres(shop, pg_url: str) -> None:
    """The DuckDB store copied into PostgreSQL (`shopmind copy-store`), events posted to the PostgreSQL log:
    the trainer ships them by sequence number, trains on a local snapshot, promotes and logs the reload in the
    database; a second trainer for the dataset is refused while the first holds the database lock."""
    from typer.testing import CliRunner

    from shopmind.cli import app
    from shopmind.data.store import open_store
    from shopmind.serving.pglog import PgEventLog

    settings = shop["settings"]
    r = CliRunner().invoke(app, ["--store", str(shop["store"]), "copy-store", "-d", DATASET, "--json"],
                           env={"SHOPMIND_CONFIG": "", "SHOPMIND_STORE_URL": pg_url})
    assert r.exit_code == 0, r.output
    copied = json.loads(r.stdout)["copied"]
    with Store(shop["store"], read_only=True) as s:
        for table in ("events", "items", "knowledge_cards", "user_profiles"):
            want = s.con.execute(f"SELECT count(*) FROM {table} WHERE dataset = ?", [DATASET]).fetchone()[0]
            assert copied.get(table, 0) == want and want > 0, table
    again = CliRunner().invoke(app, ["--store", str(shop["store"]), "copy-store", "-d", DATASET, "--json"],
                               env={"SHOPMIND_CONFIG": "", "SHOPMIND_STORE_URL": pg_url})
    assert again.exit_code == 0, again.output  # a second copy adds nothing
    pg = settings.model_copy(update={"store": settings.store.model_copy(update={"url": pg_url})})
    with open_store(pg) as store:
        assert store.stats(DATASET)["events"] == copied["events"]
        ev = store.table("SELECT event_id, user_id, item_id FROM events WHERE dataset = ? AND item_id IS NOT NULL "
                         "ORDER BY event_id", [DATASET])
        newest = store.con.execute("SELECT max(timestamp) FROM events WHERE dataset = ?", [DATASET]).fetchone()[0]
        pick = ev.iloc[np.random.default_rng(0).choice(len(ev), 300, replace=False)]
        store.con.execute("DELETE FROM events WHERE dataset = ? AND event_id = ANY(?)",
                          [DATASET, pick["event_id"].astype(str).tolist()])
    records = [{"event_id": f"pg-{k}", "user_id": str(row.user_id), "item_id": str(row.item_id), "type": "view",
                "timestamp": newest.timestamp() + 86400 + k * 60.0, "received": time.time()}
               for k, row in enumerate(pick.itertuples())]
    log = PgEventLog(pg_url, DATASET, required=("user_id", "type"))
    try:
        log.append(records)
        t = Trainer(pg, DATASET, shop["artifact"], TrainerConfig(gate="off", min_cases=5, every_events=100))
        try:
            with pytest.raises(ValueError, match="another trainer"):
                Trainer(pg.model_copy(update={"serving": pg.serving.model_copy(
                    update={"state_dir": shop["store"].parent / "other-host"})}), DATASET, shop["artifact"])
            result = t.tick()
        finally:
            t.close()
        assert result is not None and result["outcome"] == "promoted", result
        with open_store(pg) as store:
            assert store.con.execute("SELECT count(*) FROM events WHERE event_id LIKE 'pg-%'").fetchone()[0] == 300
        reloads = [r for r in log.replay() if r.get("kind") == "reload"]
        assert reloads and reloads[-1]["artifact"] == str(shop["artifact"].resolve())
        # an API process on another host (no trainer.json in its state folder) reads the status from the database
        from shopmind.serving.trainer_status import TrainerStatus

        status = TrainerStatus().read(shop["store"].parent / "elsewhere", log)
        assert status is not None and status["promotions"] == 1 and status["last"]["outcome"] == "promoted"
    finally:
        log.close()
