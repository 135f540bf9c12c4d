"""The serving event log, API keys and secrets on PostgreSQL: the file log's contract (one ordered stream, each
record once, own writes included; duplicates across processes; forget rotates every reader; controls reach the
others), acknowledged means committed (a server killed mid-stream loses no acknowledged event), the shipper
moves the log into the store exactly once, and keys made on one host work on another."""

from __future__ import annotations

import threading
import time

import pytest

from shopmind.data.store import open_store
from shopmind.serving.eventlog import EventLogError
from shopmind.serving.pglog import PgEventLog, shared_secret
from shopmind.serving.pgkeys import PgKeyStore
from shopmind.serving.shipper import PgShipper

DS = "shop"


def ev(i: int, user: str | None = None) -> dict:
    return {"event_id": f"e{i}", "user_id": user or f"u{i % 7}", "item_id": f"i{i % 13}", "type": "view",
            "received": 1_700_000_000 + i}


def drain(log: PgEventLog, want: int, timeout: float = 10.0) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        records, _ = log.catch_up()
        got += records
        time.sleep(0.002)
    return got


@pytest.fixture
def two_logs(pg_url: str):
    a = PgEventLog(pg_url, DS, required=("user_id", "type"))
    b = PgEventLog(pg_url, DS, required=("user_id", "type"))
    assert a.catch_up() == ([], True) and b.catch_up() == ([], True)
    yield a, b
    a.close()
    b.close()


def test_one_ordered_stream_and_duplicates_across_processes(two_logs) -> None:
    a, b = two_logs
    assert a.append([ev(1), ev(1), ev(2)]) == [True, False, True]
    assert b.append([ev(2), ev(3)]) == [False, True]  # b learns of e2 under the head lock, before writing
    seen_a, seen_b = drain(a, 3), drain(b, 3)
    assert [r["event_id"] for r in seen_a] == [r["event_id"] for r in seen_b] == ["e1", "e2", "e3"]
    assert a.catch_up() == ([], False) and "e3" in a and a.records == b.records == 3


def test_concurrent_writers_keep_a_gapless_total_order(pg_url: str) -> None:
    logs = [PgEventLog(pg_url, DS) for _ in range(3)]
    try:
        def post(k: int) -> None:
            for j in range(40):
                logs[k % 3].append([ev(1000 * k + j), ev(1000 * k + j + 500)])

        threads = [threading.Thread(target=post, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        orders = [[r["event_id"] for r in drain(log, 480)] for log in logs]
        assert len(orders[0]) == 480 and len(set(orders[0])) == 480
        assert orders[0] == orders[1] == orders[2]
        with open_store(pg_url) as store:
            seqs = [r[0] for r in store.con.execute("SELECT seq FROM serving_log WHERE dataset = ? ORDER BY seq",
                                                    [DS]).fetchall()]
        assert seqs == list(range(1, 481))
    finally:
        for log in logs:
            log.close()


def test_forget_rotates_every_reader_and_blocks_the_ids(two_logs, pg_url: str) -> None:
    a, b = two_logs
    a.append([ev(i, user="alice" if i % 2 else "bob") for i in range(10)])
    drain(b, 10)
    assert b.forget("alice") == 5
    records, rotated = a.catch_up()
    deadline = time.monotonic() + 5
    while not rotated and time.monotonic() < deadline:
        time.sleep(0.01)
        records, rotated = a.catch_up()
    assert rotated and [r.get("user_id") for r in records if r.get("kind") is None] == ["bob"] * 5
    assert records[-1]["kind"] == "forget" and len(records[-1]["event_ids"]) == 5
    assert a.append([ev(1, user="alice")]) == [False]  # a forgotten event id is a duplicate
    assert a.is_forgotten("alice") and b.is_forgotten("alice")
    with open_store(pg_url) as store:
        text = store.con.execute("SELECT string_agg(record, ' ') FROM serving_log").fetchone()[0]
    assert "alice" not in text


def test_control_records_reach_the_others_only(two_logs) -> None:
    a, b = two_logs
    a.control({"kind": "reload", "artifact": "/x"})
    got = drain(b, 1)
    assert got == [{"kind": "reload", "artifact": "/x"}]
    time.sleep(0.3)
    assert a.catch_up() == ([], False)


def test_a_killed_server_loses_no_acknowledged_event(pg_cluster, pg_url: str) -> None:
    """SIGKILL the PostgreSQL server while two threads post: every append that returned is there after crash
    recovery; the ones in flight raised EventLogError (not acknowledged); posting works again after restart."""
    log = PgEventLog(pg_url, DS)
    acked: list[str] = []
    refused = 0
    stop = threading.Event()
    lock = threading.Lock()

    def post(k: int) -> None:
        nonlocal refused
        j = 0
        while not stop.is_set():
            e = ev(100_000 * k + j)
            j += 1
            try:
                log.append([e])
                with lock:
                    acked.append(e["event_id"])
            except EventLogError:
                with lock:
                    refused += 1
                time.sleep(0.05)

    threads = [threading.Thread(target=post, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    pg_cluster.kill()
    time.sleep(1.0)
    pg_cluster.restart()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    log.close()
    assert refused > 0 and len(acked) > 20
    fresh = PgEventLog(pg_url, DS)
    try:
        stored = {r["event_id"] for r in fresh.replay()}
        assert set(acked) <= stored
        assert fresh.append([ev(999_999)]) == [True]
    finally:
        fresh.close()


def test_shipper_moves_the_log_into_the_store_exactly_once(two_logs, pg_url: str) -> None:
    a, b = two_logs
    a.append([ev(i) for i in range(30)])
    with open_store(pg_url) as store:
        s = PgShipper(store, pg_url, DS, batch_records=7)
        assert s.lag()["lag_records"] == 30
        out = s.ship_once(max_records=10)
        assert out["shipped"] == 10 and out["lag_records"] == 20
        out = PgShipper(store, pg_url, DS, batch_records=7).ship_once()  # resumes from the checkpoint
        assert out["shipped"] == 20 and out["duplicates"] == 0 and out["lag_records"] == 0
        b.forget("u3")
        a.append([ev(100)])
        out = PgShipper(store, pg_url, DS).ship_once()
        assert out["forget_records"] == 1 and out["forgotten_removed"] == 4 and out["shipped"] == 1
        ids = {r[0] for r in store.con.execute("SELECT user_id FROM events WHERE dataset = ?", [DS]).fetchall()}
        assert "u3" not in ids and store.stats(DS)["events"] == 27
        assert PgShipper(store, pg_url, DS).ship_once()["shipped"] == 0


def test_keys_and_secrets_are_shared_between_hosts(pg_url: str) -> None:
    one, two = PgKeyStore(pg_url), PgKeyStore(pg_url)
    try:
        key = one.create("shop-backend", ["write"])
        other = two.create("dash", ["read"])  # made on another host at the same time: both stay
        time.sleep(0.3)
        assert two.check(key, "write") == "shop-backend" and one.check(other, "read") == "dash"
        assert one.revoke("shop-backend")
        time.sleep(0.3)
        assert two.check(key, "write") is None and len(two) == 1
        assert "***" in str(one.path) or "@" not in str(one.path)
    finally:
        one.close()
        two.close()
    assert shared_secret(pg_url, "storefront") == shared_secret(pg_url, "storefront") != shared_secret(pg_url, "x")
