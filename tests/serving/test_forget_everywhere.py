"""`shopmind forget USER`: after it, no file next to the store, no artifact and no store table holds the
user's id (clear or hashed), and re-ingesting the same source then training does not bring them back."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import duckdb
import numpy as np
import pytest
from typer.testing import CliRunner

from shopmind.cli import app

DATASET = "amazon2018-giftcards"
runner = CliRunner()


def _holds(data: bytes, raw: list[bytes]) -> bool:
    """Does the data hold a needle: as it is, or inside a zip (npz) member, compressed or not?"""
    if any(n in data for n in raw):
        return True
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return any(_holds(z.read(name), raw) for name in z.namelist())
    return False


def _file_traces(root: Path, needles: list[str]) -> list[str]:
    """Files (binary-safe) under `root`, or `root` itself, that contain any of the needles in UTF-8, UTF-16 or
    UTF-32 (numpy stores strings as UTF-32), also inside npz/zip members."""
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    raw = [n.encode(enc) for n in needles for enc in ("utf-8", "utf-16-le", "utf-32-le")]
    return [str(p) for p in files if _holds(p.read_bytes(), raw)]


def _table_traces(store: Path, needles: list[str]) -> list[str]:
    """table.column pairs of the store whose text (VARCHAR, JSON, VARCHAR[]) contains any of the needles."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        cols = con.execute("SELECT table_name, column_name FROM information_schema.columns "
                           "WHERE data_type IN ('VARCHAR', 'JSON', 'VARCHAR[]')").fetchall()
        return [f"{t}.{c}" for t, c in cols for n in needles
                if con.execute(f'SELECT count(*) FROM "{t}" WHERE contains(CAST("{c}" AS VARCHAR), ?)', [n]).fetchall()[0][0]]
    finally:
        con.close()


def _quoted(store: Path, served, reviews: list[str]) -> list[str]:
    """Knowledge-card snippets (store and artifact) that quote one of these reviews."""
    con = duckdb.connect(str(store), read_only=True)
    cards = [json.loads(c) for (c,) in con.execute("SELECT card FROM knowledge_cards").fetchall()] + served.cards
    con.close()
    snippets = [a["snippet"] for c in cards for k in ("positive_aspects", "negative_aspects") for a in c.get(k) or []]
    return [s for s in snippets if s and any(s.rstrip("…").strip() in r for r in reviews)]


def _traces(store: Path, needles: list[str]) -> list[str]:
    siblings = [p for p in store.parent.iterdir() if p.name.startswith(store.name)]
    return [t for p in siblings for t in _file_traces(p, needles)] + _table_traces(store, needles)


@pytest.fixture
def shop(served: dict, tmp_path: Path) -> dict:
    """A private copy of the served store, its knowledge folder and artifact, in the default layout."""
    store = tmp_path / "s.duckdb"
    shutil.copy(served["store"], store)
    knowledge = Path(str(served["store"]) + ".knowledge")
    assert (knowledge / DATASET / "ids.json").is_file()
    shutil.copytree(knowledge, Path(str(store) + ".knowledge"))
    artifact = Path(str(store) + ".artifacts") / DATASET
    shutil.copytree(served["artifact"], artifact)
    return {"store": store, "artifact": artifact, "env": served["env"]}


def test_forget_leaves_no_trace_and_survives_reingest_and_train(shop: dict, data_dir: Path) -> None:
    from shopmind.serving.artifact import load

    store, env = shop["store"], shop["env"]
    con = duckdb.connect(str(store), read_only=True)
    user, n_events = con.execute("SELECT user_id, count(*) FROM events WHERE dataset = ? GROUP BY 1 "
                                 "ORDER BY 2 DESC, 1 LIMIT 1", [DATASET]).fetchall()[0]
    reviews = [t for r in con.execute("SELECT review_text, summary FROM events WHERE user_id = ?", [user]).fetchall()
               for t in r if t]
    con.close()
    assert n_events >= 3 and reviews
    before = load(shop["artifact"])
    assert user in before.histories and _quoted(store, before, reviews)  # their reviews are quoted in cards
    assert user in json.loads((Path(str(store) + ".knowledge") / DATASET / "ids.json").read_text())["users"]
    seen = _traces(store, [user])  # the check below can see the id where it is, numpy's UTF-32 included
    assert any(t.endswith("users.npz") for t in seen) and any(t.endswith("ids.json") for t in seen), seen

    r = runner.invoke(app, ["--store", str(store), "forget", user, "--json"], env=env)
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["store"]["events"] == n_events and report["store"]["user_profiles"] == 1
    assert report["store"]["knowledge_cards"] > 0
    assert report["store_compacted"] and report["artifacts"] == {str(shop["artifact"]): True}
    assert report["knowledge"][DATASET] == {"users_tfidf.npz": 1, "ids.json": 1}
    assert user not in r.stdout
    assert _traces(store, [user]) == []
    served = load(shop["artifact"])  # still loads, and recommends, without the user
    assert user not in served.histories and served.manifest["users"] == len(served.histories)
    assert served.pipeline.sources.data.user_index(user) is None
    assert _quoted(store, served, reviews) == []

    r = runner.invoke(app, ["--store", str(store), "--data-dir", str(data_dir), "ingest", DATASET, "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["runs"][0]["forgotten"] == n_events
    r = runner.invoke(app, ["--store", str(store), "train", "-d", DATASET, "--json"], env=env)
    assert r.exit_code == 0, r.output
    retrained = load(shop["artifact"])
    assert user not in retrained.histories and len(retrained.histories) == len(served.histories)
    assert _traces(store, [user]) == []
    assert _table_traces(store, [user]) == []


def test_forget_without_a_user_is_a_user_error(tmp_path: Path) -> None:
    r = runner.invoke(app, ["--store", str(tmp_path / "s.duckdb"), "forget", " "], env={"SHOPMIND_CONFIG": ""})
    assert r.exit_code == 2 and "error" in r.output


EVENTS = """user_id,item_id,type,timestamp
alice-7,i1,view,2021-01-01
alice-7,i2,purchase,2021-01-02
bob,i1,view,2021-01-01
alice-7,i3,nonsense,2021-01-03
bob,i2,view,2021-01-04
"""


def test_hashed_ids_and_a_locked_store(tmp_path: Path) -> None:
    """ingest.hash_user_ids: the store holds HMAC(salt, id); forgetting by the clear id removes it, its
    rejected raw line (clear text) too, and a forget that finds the store locked is applied by the next ingest."""
    from shopmind.config import load_settings
    from shopmind.data.api import ingest_source, open_source
    from shopmind.data.schema import hash_user_id
    from shopmind.data.store import Store
    from shopmind.data.tombstones import Tombstones
    from shopmind.serving.forget import forget_everywhere

    (tmp_path / "ev.csv").write_text(EVENTS)
    settings = load_settings(overrides={"store.path": tmp_path / "s.duckdb", "ingest.hash_user_ids": True,
                                        "ingest.user_id_salt": "pepper"}, environ={})

    def ingest() -> dict:
        with Store(settings.store.path) as store:
            report = ingest_source(store, settings, open_source(settings, str(tmp_path / "ev.csv"), "csv",
                                                                 mapping=_events_mapping()))
            assert report is not None
            return report.to_json()

    first = ingest()
    assert not settings.privacy_dir.exists()  # nobody forgotten: the registry is not even created
    assert first["rejected"] == 1 and first["forgotten"] == 0
    hashed = {u: hash_user_id(u, "pepper") for u in ("alice-7", "bob")}
    assert _table_traces(settings.store.path, [hashed["alice-7"]]) and _file_traces(settings.rejects_dir, ["alice-7"])

    report = forget_everywhere(settings, "alice-7")
    assert report["store"]["events"] == 2 and report["store"]["rejects"] == 1 and report["rejects_files"] == 1
    assert _traces(settings.store.path, ["alice-7", hashed["alice-7"]]) == []
    assert _table_traces(settings.store.path, [hashed["bob"]])  # others stay
    again = ingest()
    assert again["forgotten"] == 3 and again["rejected"] == 0
    assert _traces(settings.store.path, ["alice-7", hashed["alice-7"]]) == []

    # bob, forgotten while another process holds the store: "pending", then purged by the next ingest.
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
                               "print('ready', flush=True); sys.stdin.read()", str(settings.store.path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        pending = forget_everywhere(settings, "bob")
        assert pending["store"] == "pending" and not pending["store_compacted"]
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert _table_traces(settings.store.path, [hashed["bob"]])
    ingest()
    assert _table_traces(settings.store.path, [hashed["bob"]]) == []
    assert "bob" in Tombstones(settings.privacy_dir) and "carol" not in Tombstones(settings.privacy_dir)
    tomb = settings.privacy_dir
    assert os.stat(tomb / "tombstones.key").st_mode & 0o777 == 0o600
    assert _file_traces(tomb, ["alice-7", "bob", hashed["bob"]]) == []
    assert np.all([len(json.loads(line)["user"]) == 64 for line in (tomb / "tombstones.jsonl").read_text().splitlines()])


def _events_mapping():
    from shopmind.data.adapters import Mapping

    return Mapping(kind="events")


def test_delete_through_the_api_reaches_log_store_knowledge_and_artifact(shop: dict) -> None:
    """Finding 4 through the server: DELETE /users/{id} on a production server built as `shopmind serve`
    builds it; afterwards no byte next to the store (event log and its tombstone included) and no table
    holds the id, and a deleted event id posted again is refused."""
    from fastapi.testclient import TestClient

    from shopmind.config import load_settings
    from shopmind.serving.auth import KeyStore
    from shopmind.serving.server import _build_app, keys_path

    store = shop["store"]
    settings = load_settings(overrides={"store.path": str(store), "knowledge.onnx_dir":
                                        shop["env"]["SHOPMIND_KNOWLEDGE_ONNX_DIR"]}, environ={})
    admin = {"X-API-Key": KeyStore(keys_path(settings)).create("admin", ["admin"])}
    con = duckdb.connect(str(store), read_only=True)
    user, item = con.execute("SELECT user_id, any_value(item_id) FROM events WHERE dataset = ? GROUP BY 1 "
                             "ORDER BY count(*) DESC, 1 LIMIT 1", [DATASET]).fetchall()[0]
    con.close()
    app = _build_app(shop["artifact"], settings)
    with TestClient(app, raise_server_exceptions=False, headers=admin) as c:
        posted = c.post("/events", json={"events": [{"event_id": f"live-{i}", "user_id": user, "item_id": item,
                                                     "type": "view"} for i in range(3)]})
        assert posted.json()["accepted"] == 3
        assert c.get(f"/recommend/{user}").json()["history_size"] > 3
        r = c.delete(f"/users/{user}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["events_removed_from_log"] == 3 and body["store"]["events"] > 0 and body["artifacts"] >= 1
        assert c.get(f"/recommend/{user}").json()["history_size"] == 0
        again = c.post("/events", json={"event_id": "live-0", "user_id": "someone", "item_id": item, "type": "view"})
        assert again.json() == {**again.json(), "accepted": 0, "duplicates": 1}  # a forgotten event id stays used
        assert not _traces(store, [user, "live-1"]), _traces(store, [user, "live-1"])
    app.state.holder.service.close()
