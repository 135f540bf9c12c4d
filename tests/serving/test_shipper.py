"""The log shipper moves acknowledged events from the serving event log into the store, each exactly once:
torn or unacknowledged tails never ship, replays add nothing, a kill -9 at any moment loses and doubles
nothing, a forget's rewrite is rescanned, and forgotten users' events never stay in the store."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shopmind
from shopmind.data.schema import hash_user_id
from shopmind.data.store import Store
from shopmind.data.tombstones import Tombstones
from shopmind.serving.eventlog import EventLog
from shopmind.serving.shipper import Shipper, ship

DS = "shop"


def ev(i: int, user: str | None = None, **kw) -> dict:
    return {"event_id": f"e{i}", "user_id": user or f"u{i % 7}", "item_id": f"i{i % 13}", "type": "view",
            "received": 1_700_000_000 + i, **kw}


def write_log(state: Path, records: list[dict]) -> EventLog:
    log = EventLog(state / DS)
    log.append(records)
    return log


def stored(store: Store) -> list[str]:
    return [r[0] for r in store.con.execute("SELECT event_id FROM events WHERE dataset = ? ORDER BY event_id",
                                            [DS]).fetchall()]


def users(store: Store) -> set[str]:
    return {r[0] for r in store.con.execute("SELECT DISTINCT user_id FROM events WHERE dataset = ?", [DS]).fetchall()}


def test_ships_exactly_the_acknowledged_records(tmp_path: Path) -> None:
    folder = tmp_path / "state" / DS
    folder.mkdir(parents=True)
    lines = [
        json.dumps(ev(1, "alice", timestamp=1_650_000_000, value=4, session_id="s1", rec_id="r9")),
        json.dumps({"kind": "reload", "path": "/x"}),
        json.dumps({**ev(2, "bob", type="search", query="red shoes"), "item_id": None}),
        "not json",
        json.dumps({"user_id": "carol", "type": "view", "item_id": "i1"}),
        json.dumps(ev(3, "carol")),
    ]
    acked = "".join(line + "\n" for line in lines).encode()
    unacked = json.dumps(ev(4, "dave")).encode() + b"\n" + json.dumps(ev(5, "erin")).encode()[:20]  # + torn tail
    (folder / "events.jsonl").write_bytes(acked + unacked)
    (folder / "events.jsonl.commit").write_bytes(struct.pack("<Q", len(acked)))
    with Store(tmp_path / "s.duckdb") as store:
        out = Shipper(store, tmp_path / "state", DS, batch_records=2).ship_once()
        assert stored(store) == ["e1", "e2", "e3"]
        assert out["shipped"] == 3 and out["controls"] == 1 and out["skipped_unreadable"] == 2
        assert out["offset"] == len(acked) and out["lag_bytes"] == 0 and out["lag_records"] == 0
        row = store.con.execute("SELECT user_id, item_id, type, value, timestamp, seq, session_id, split, extra, run_id "
                                "FROM events WHERE event_id = 'e1'").fetchall()[0]
        assert row[:4] == ("alice", "i1", "view", 4.0) and row[4].year == 2022 and row[5] is None
        assert row[6] == "s1" and row[7] is None and json.loads(row[8]) == {"rec_id": "r9", "received": 1_700_000_001}
        run = store.runs(DS)[-1]
        assert run["run_id"] == row[9] and run["format"] == "serving-log"
        search = store.con.execute("SELECT item_id, query, timestamp FROM events WHERE event_id = 'e2'").fetchall()[0]
        assert search[0] is None and search[1] == "red shoes" and search[2].year == 2023  # from `received`
        # The server acknowledges e4 (publishes a longer durable length): it ships; the torn tail still does not.
        (folder / "events.jsonl.commit").write_bytes(struct.pack("<Q", len(acked) + unacked.index(b"\n") + 1))
        again = Shipper(store, tmp_path / "state", DS).ship_once()
        assert again["shipped"] == 1 and stored(store) == ["e1", "e2", "e3", "e4"] and again["lag_bytes"] == 0


def test_shipping_twice_or_replaying_adds_nothing(tmp_path: Path) -> None:
    log = write_log(tmp_path / "state", [ev(i) for i in range(500)])
    with Store(tmp_path / "s.duckdb") as store:
        s = Shipper(store, tmp_path / "state", DS, batch_records=64)
        assert s.ship_once()["shipped"] == 500
        second = s.ship_once()
        assert second["shipped"] == 0 and second["batches"] == 0 and second["lag_records"] == 0
        # A crash after the commit but before anything else remembers it: the checkpoint is lost, the batch replays.
        store.con.execute("DELETE FROM ship_checkpoints")
        replay = Shipper(store, tmp_path / "state", DS).ship_once()
        assert replay["shipped"] == 0 and replay["duplicates"] == 500
        log.append([ev(i) for i in range(490, 520)])  # 10 new, 10 the log itself refuses as duplicates
        assert Shipper(store, tmp_path / "state", DS).ship_once(max_records=7)["shipped"] == 7
        assert Shipper(store, tmp_path / "state", DS).ship_once()["shipped"] == 13
        assert stored(store) == sorted(f"e{i}" for i in range(520))
    log.close()


CHILD = """
import sys
from shopmind.data.store import Store
from shopmind.serving.shipper import Shipper
with Store(sys.argv[1]) as store:
    s = Shipper(store, sys.argv[2], "shop", batch_records=int(sys.argv[3]))
    s.ship_once(max_records=int(sys.argv[3]))
    print("go", flush=True)
    s.ship_once()
    print("done", flush=True)
"""


def test_kill_9_mid_batch_then_resume_ships_each_event_once(tmp_path: Path) -> None:
    n = 20_000
    write_log(tmp_path / "state", [ev(i) for i in range(n)]).close()
    src = str(Path(shopmind.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rng = random.Random(14)
    killed_midway = 0
    for attempt, delays in enumerate([(0.0, 0.01), (rng.uniform(0.02, 0.2), rng.uniform(0.02, 0.2)),
                                      (rng.uniform(0.1, 0.5), 0.0)]):
        db = tmp_path / f"s{attempt}.duckdb"
        for delay in delays:  # killed, restarted, killed again, then finished
            child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(tmp_path / "state"), "40"], env=env,
                                     stdout=subprocess.PIPE, text=True)
            assert child.stdout is not None and child.stdout.readline().strip() == "go"
            time.sleep(delay)
            child.send_signal(signal.SIGKILL)
            child.wait(30)
            with Store(db) as store:
                shipped = store.con.execute("SELECT shipped FROM ship_checkpoints").fetchall()[0][0]
                count = store.con.execute("SELECT count(*) FROM events").fetchall()[0][0]
                assert count == shipped  # the checkpoint and the rows it covers committed together
                killed_midway += count < n
        with Store(db) as store:
            out = Shipper(store, tmp_path / "state", DS, batch_records=1000).ship_once()
            assert out["lag_records"] == 0 and out["duplicates"] == 0
            ids = stored(store)
            assert len(ids) == n and set(ids) == {f"e{i}" for i in range(n)}
            statuses = [r["status"] for r in store.runs(DS)]
            assert statuses[:-1] == ["interrupted"] * (len(statuses) - 1)  # the killed shippers' runs
    assert killed_midway >= 4


def test_forget_rewrite_is_rescanned_and_the_user_removed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    log = write_log(state, [ev(i, f"u{i % 3}") for i in range(90)])
    with Store(tmp_path / "s.duckdb") as store:
        s = Shipper(store, state, DS, batch_records=16)
        assert s.ship_once()["shipped"] == 90
        inode = os.stat(state / DS / "events.jsonl").st_ino
        assert log.forget("u1") == 30  # rewrites the log (a new inode) with a tombstone of digests
        log.append([ev(100, "u1"), ev(101, "u2")])  # the user may come back; a new event of theirs is theirs
        out = Shipper(store, state, DS, batch_records=16).ship_once()
        assert out["rescans"] == 1 and out["forget_records"] == 1 and out["forgotten_removed"] == 30
        assert out["shipped"] == 2 and out["duplicates"] == 60
        ids = stored(store)
        assert len(ids) == len(set(ids)) == 62
        assert set(ids) == {f"e{i}" for i in range(90) if i % 3 != 1} | {"e100", "e101"}
        assert store.con.execute("SELECT log_inode FROM ship_checkpoints").fetchall()[0][0] != inode
        # Forgotten before it was ever shipped: never shipped.
        log.forget("u0")
        again = Shipper(store, state, DS).ship_once()
        assert again["shipped"] == 0 and again["forgotten_removed"] == 30 and "u0" not in users(store)
        assert Shipper(store, state, DS).ship_once()["forgotten_removed"] == 0  # applied once
    log.close()


def test_tombstoned_users_are_skipped_also_when_ids_are_hashed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    write_log(state, [ev(i, f"u{i % 4}") for i in range(40)]).close()
    stones = Tombstones(tmp_path / "privacy")
    stones.add("u2", DS)
    stones.add("u3", "another-dataset")
    with Store(tmp_path / "s.duckdb") as store:
        out = Shipper(store, state, DS, stones, salt="pepper").ship_once()
        assert out["shipped"] == 30 and out["skipped_forgotten"] == 10
        assert users(store) == {hash_user_id(u, "pepper") for u in ("u0", "u1", "u3")}


@pytest.mark.parametrize("when", ["transaction", "write"])
def test_a_forget_between_read_and_commit_leaves_nothing_of_the_user(tmp_path: Path, when: str) -> None:
    state = tmp_path / "state"
    write_log(state, [ev(i, f"u{i % 2}") for i in range(20)]).close()
    stones = Tombstones(tmp_path / "privacy")
    with Store(tmp_path / "s.duckdb") as store:
        s = Shipper(store, state, DS, stones, batch_records=100)
        original = getattr(store, when)

        def forget_meanwhile(*a, **kw):  # the batch is read and checked; now a forget lands
            if not stones.is_forgotten("u1", DS):
                stones.add("u1", DS)
            return original(*a, **kw)

        setattr(store, when, forget_meanwhile)
        out = s.ship_once()
        setattr(store, when, original)
        assert users(store) == {"u0"} and len(stored(store)) == 10
        assert out["skipped_forgotten"] + out["purged"] >= 10


def test_ship_and_forget_everywhere_together(tmp_path: Path, settings_for) -> None:
    from shopmind.serving.forget import forget_everywhere

    settings = settings_for()
    log = write_log(settings.state_dir, [ev(i, f"u{i % 3}") for i in range(30)])
    reports: list[dict] = []
    first = ship(settings, DS, on_report=reports.append)
    assert first["shipped"] == 30 and first["lag_records"] == 0 and len(reports) == 1
    log.forget("u1")  # the server's DELETE: its log first, then everything beyond (store, tombstone)
    report = forget_everywhere(settings, "u1", [DS], event_logs=False)
    assert report["store"]["events"] == 10
    log.append([ev(100, "u1"), ev(101, "u2")])  # tombstoned in the registry: u1's new event never ships
    second = ship(settings, DS)
    assert second["shipped"] == 1 and second["skipped_forgotten"] == 1 and second["rescans"] == 1
    with Store(settings.store.path) as store:
        assert users(store) == {"u0", "u2"} and len(stored(store)) == 21
        assert {r["status"] for r in store.runs(DS)} == {"shipped"}
    log.close()


def test_ship_events_command(tmp_path: Path) -> None:
    """`shopmind ship-events DATASET`: one pass, totals as JSON; a second pass ships nothing."""
    import json

    from typer.testing import CliRunner

    from shopmind.cli import app

    store = tmp_path / "s.duckdb"
    log = write_log(Path(str(store) + ".serving"), [ev(i) for i in range(25)])
    runner = CliRunner()
    r = runner.invoke(app, ["--store", str(store), "ship-events", DS, "--json"], env={"SHOPMIND_CONFIG": ""})
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["shipped"] == 25
    again = runner.invoke(app, ["--store", str(store), "ship-events", DS], env={"SHOPMIND_CONFIG": ""})
    assert again.exit_code == 0 and "0 events shipped" in again.stdout and "lag 0 records" in again.stdout
    log.close()
