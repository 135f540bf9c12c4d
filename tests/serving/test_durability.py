"""Kill the server with SIGKILL in the middle of a stream of event posts: every acknowledged event must be
there after a restart (in the log and in the restarted server's state)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx

from shopmind.serving.auth import KeyStore
from shopmind.serving.eventlog import EventLog

from live import free_port, start


def test_sigkill_loses_no_acknowledged_event(served: dict, tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = KeyStore(state / "api_keys.json").create("stream", "write")
    reader = {"X-API-Key": KeyStore(state / "api_keys.json").create("reader", "read_private")}
    port = free_port()
    proc = start(served, state, port)
    acked: list[str] = []
    stop = threading.Event()

    def stream(worker: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=5) as client:
            i = 0
            while not stop.is_set():
                ids = [f"w{worker}-{i}-{j}" for j in range(5)]
                batch = {"events": [{"event_id": e, "user_id": f"kill-user-{worker}", "item_id": "B001BKEWF2",
                                     "type": "view"} for e in ids]}
                try:
                    r = client.post("/events", json=batch)
                except httpx.HTTPError:
                    return  # the server died mid-request: that batch was never acknowledged
                if r.status_code == 200:
                    acked.extend(ids)
                i += 1

    workers = [threading.Thread(target=stream, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for w in workers:
        w.join()
    assert len(acked) > 50, "the stream should have been acknowledged many events before the kill"
    logged = {r.get("event_id") for r in EventLog(state / "amazon2018-giftcards").replay()}
    missing = set(acked) - logged
    assert not missing, f"{len(missing)} acknowledged events lost"
    proc = start(served, state, port)
    try:
        for w in range(4):
            mine = sum(1 for e in acked if e.startswith(f"w{w}-"))
            got = httpx.get(f"http://127.0.0.1:{port}/recommend/kill-user-{w}", headers=reader).json()["events_seen"]
            assert got >= mine  # events logged but not acknowledged before the kill may be there too
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_two_workers_share_every_acknowledged_event_and_reloads(served: dict, tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = KeyStore(state / "api_keys.json").create("w", "write")
    admin = KeyStore(state / "api_keys.json").create("a", "admin")
    ah = {"X-API-Key": admin}
    port = free_port()
    proc = start(served, state, port, workers=2)
    try:
        url = f"http://127.0.0.1:{port}"
        pids: set[int] = set()
        with httpx.Client(base_url=url, timeout=10) as c:
            for i in range(30):  # new connections spread over both workers
                with httpx.Client(base_url=url, timeout=10) as fresh:
                    fresh.post("/events", json={"event_id": f"mw-{i}", "user_id": "multi", "item_id": "B001BKEWF2",
                                                "type": "view"}, headers={"X-API-Key": key}).raise_for_status()
                    body = fresh.get("/recommend/multi", headers=ah).json()
                    assert body["events_seen"] == i + 1  # whichever worker answers has seen every event so far
                    pids.add(fresh.get("/admin/status", headers=ah).json()["pid"])
            assert len(pids) == 2, "both workers should have answered"
            dup = c.post("/events", json={"event_id": "mw-0", "user_id": "multi", "item_id": "B001BKEWF2",
                                          "type": "view"}, headers={"X-API-Key": key}).json()
            assert dup["duplicates"] == 1
            assert c.post("/admin/reload", json={}, headers={"X-API-Key": admin}).status_code == 200
            deadline, reloaded = time.time() + 60, set()
            while time.time() < deadline and len(reloaded) < 2:
                with httpx.Client(base_url=url, timeout=10) as fresh:
                    h = fresh.get("/admin/status", headers=ah).json()
                    if h["reloads"] >= 1:
                        reloaded.add(h["pid"])
                time.sleep(0.2)
            assert len(reloaded) == 2, "the reload must reach the other worker too"
            assert c.get("/recommend/multi", headers=ah).json()["events_seen"] == 30
            assert "shopmind_requests_total" in c.get("/metrics", headers=ah).text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
