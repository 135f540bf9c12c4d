"""The event log under damage and under concurrency (issue 13): a corrupt record is quarantined instead of
stopping the server; forgetting leaves only digests and refuses the forgotten event ids; two workers apply
every event exactly once while users are forgotten."""

from __future__ import annotations

import base64
import json
import multiprocessing
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from shopmind.serving.eventlog import EventLog

BAD_LINES = [
    b'{"event_id":"bad1","user_id":"u","type":"view","note":"a\x01b"}',  # an invalid control character
    b'{"event_id":"bad2","user_id":"u","ty',  # truncated JSON (with its newline: not a torn tail)
    b'["an", "array"]',
    b"\x00\xff\xfe binary \x9c garbage",
    b'{"event_id":"bad5","type":"view"}',  # an event without user_id
]


def _event(i: int, user: str = "u") -> dict[str, Any]:
    return {"event_id": f"e{i}", "user_id": user, "type": "view"}


def _write_corrupt_log(folder: Path) -> list[int]:
    """A log with good records around every bad line; returns the bad lines' byte offsets."""
    folder.mkdir(parents=True, exist_ok=True)
    data, offsets = b"", []
    for i, bad in enumerate(BAD_LINES):
        data += json.dumps(_event(i)).encode() + b"\n"
        offsets.append(len(data))
        data += bad + b"\n"
    data += json.dumps(_event(99)).encode() + b"\n"
    (folder / "events.jsonl").write_bytes(data)
    return offsets


def test_corrupt_lines_are_quarantined_and_the_rest_replayed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    offsets = _write_corrupt_log(tmp_path)
    with caplog.at_level("ERROR", logger="shopmind.serving.eventlog"):
        log = EventLog(tmp_path, required=("user_id", "type"))
    assert log.quarantined == len(BAD_LINES)
    records, rotated = log.catch_up()
    assert rotated and [r["event_id"] for r in records] == [f"e{i}" for i in range(len(BAD_LINES))] + ["e99"]
    assert [r["event_id"] for r in log.replay()] == [r["event_id"] for r in records]
    quarantined = [json.loads(line) for line in (tmp_path / "events.jsonl.quarantine").read_text().splitlines()]
    assert [base64.b64decode(q["raw"]) for q in quarantined] == BAD_LINES
    assert [q["offset"] for q in quarantined] == offsets
    assert [q["line"] for q in quarantined] == [2, 4, 6, 8, 10]
    assert all(q["reason"] for q in quarantined)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == len(BAD_LINES) and all(str(tmp_path / "events.jsonl") in m for m in errors)
    assert "line 2 " in errors[0] and "line 10 " in errors[-1]
    assert log.append([_event(100)]) == [True] and log.append([_event(3)]) == [False]
    log.close()
    again = EventLog(tmp_path, required=("user_id", "type"))  # a second open finds nothing more to quarantine
    assert again.quarantined == len(BAD_LINES)
    assert len((tmp_path / "events.jsonl.quarantine").read_text().splitlines()) == len(BAD_LINES)
    assert len(list(again.replay())) == len(BAD_LINES) + 2


def test_torn_tail_is_cut_not_quarantined(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    log.append([_event(1)])
    log.close()
    with open(tmp_path / "events.jsonl", "ab") as f:
        f.write(b'{"event_id":"e2","user_\x01')
    again = EventLog(tmp_path)
    assert again.quarantined == 0 and not (tmp_path / "events.jsonl.quarantine").exists()
    assert [r["event_id"] for r in again.replay()] == ["e1"]


def test_unreadable_records_of_another_process_are_skipped(tmp_path: Path) -> None:
    a, b = EventLog(tmp_path), EventLog(tmp_path)
    a.catch_up(), b.catch_up()
    a.append([_event(1)])
    with open(tmp_path / "events.jsonl", "ab") as f:  # as if another process wrote garbage
        f.write(b"\x00garbage\n")
    a.append([_event(2)])  # a reads the garbage under the lock before writing: skipped, not raised
    assert a.skipped == 1
    assert [r["event_id"] for r in b.catch_up()[0]] == ["e1", "e2"] and b.skipped == 1
    assert b.append([_event(3)]) == [True]
    for log in (a, b):
        log.close()
    again = EventLog(tmp_path)
    assert again.quarantined == 1 and [r["event_id"] for r in again.replay()] == ["e1", "e2", "e3"]


def test_forget_keeps_only_digests_and_refuses_forgotten_event_ids(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    log.append([{"event_id": "alice-secret-1", "user_id": "alice-clear", "type": "view"},
                {"event_id": "bob-1", "user_id": "bob", "type": "view"},
                {"event_id": "alice-secret-2", "user_id": "alice-clear", "type": "view"}])
    with open(tmp_path / "events.jsonl", "ab") as f:  # a corrupt record naming her, quarantined at the next open
        f.write(b'{"event_id":"alice-secret-3","user_id":"alice-clear","type":"vi\x01ew"}\n')
    log.close()
    log = EventLog(tmp_path)
    assert log.quarantined == 1
    assert log.forget("alice-clear") == 2
    tomb = [r for r in log.replay() if r.get("kind") == "forget"]
    assert tomb == [{"kind": "forget", "user": log.digest("alice-clear"),
                     "event_ids": sorted([log.digest("alice-secret-1"), log.digest("alice-secret-2")])}]
    assert log.forgotten == {log.digest("alice-clear")} and log.is_forgotten("alice-clear")
    assert log.append([{"event_id": "alice-secret-1", "user_id": "alice-clear", "type": "view"},
                       {"event_id": "alice-new", "user_id": "alice-clear", "type": "view"}]) == [False, True]
    assert log.forget("alice-clear") == 1  # forgotten again: one tombstone holding every forgotten id
    log.close()
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        for secret in (b"alice-clear", b"alice-secret", b"alice-new"):
            assert secret not in data, f"{secret!r} left in {path.name}"
    again = EventLog(tmp_path)
    assert [r for r in again.replay() if r.get("kind") == "forget"][0]["event_ids"] == sorted(
        again.digest(e) for e in ("alice-secret-1", "alice-secret-2", "alice-new"))
    assert again.append([{"event_id": "alice-new", "user_id": "x", "type": "view"}]) == [False]
    assert again.quarantined == 0  # the quarantined record that named her went with her
    assert (tmp_path / "forget.key").stat().st_mode & 0o077 == 0


def test_old_tombstones_are_rewritten_as_digests(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_text('{"event_id":"1","user_id":"bob","type":"view"}\n'
                                           '{"kind":"forget","user_id":"carol-clear"}\n')
    log = EventLog(tmp_path, digest=lambda s: "h:" + s[::-1])
    assert log.forgotten == {"h:raelc-lorac"}
    assert b"carol-clear" not in (tmp_path / "events.jsonl").read_bytes()


# -- two workers --------------------------------------------------------------------------------------------
def _follower(folder: str, worker: int, n: int, done: Any, go: Any, out: Any) -> None:
    """A worker process: appends events for a few users while following the log like a service does (a plain
    per-user counter, reset on a rewrite); reports what it accepted and what it counted."""
    log = EventLog(folder, required=("user_id", "type"))
    counts: Counter[str] = Counter()

    def sync() -> None:
        records, rotated = log.catch_up()
        if rotated:
            counts.clear()
        for r in records:
            if r.get("kind") is None:
                counts[r["user_id"]] += 1
            elif r.get("kind") == "forget":
                for user in [u for u in counts if log.digest(u) == r["user"]]:
                    del counts[user]

    accepted = 0
    for i in range(n):
        batch = [{"event_id": f"p{worker}-{i}-{j}", "user_id": f"user{(i + j) % 6}", "type": "view"} for j in range(3)]
        accepted += sum(log.append(batch))
        sync()
    done.put(accepted)
    go.wait(60)
    sync()
    out.put((worker, dict(counts)))
    log.close()


def _log_counts(folder: Path) -> Counter[str]:
    return Counter(r["user_id"] for r in EventLog(folder).replay() if r.get("kind") is None)


def test_two_processes_follow_every_record_once_while_users_are_forgotten(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    done, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_follower, args=(str(tmp_path), w, 150, done, go, out)) for w in range(2)]
    for p in procs:
        p.start()
    parent = EventLog(tmp_path)
    removed, accepted = 0, []
    deadline = time.time() + 60
    while len(accepted) < 2 and time.time() < deadline:
        removed += parent.forget(f"user{len(accepted) % 6}")  # forget while they write
        time.sleep(0.05)
        while not done.empty():
            accepted.append(done.get())
    accepted += [done.get(timeout=60) for _ in range(2 - len(accepted))]
    go.set()
    reports = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    logged = _log_counts(tmp_path)
    assert removed > 0 and sum(logged.values()) == sum(accepted) - removed
    for w in range(2):
        assert reports[w] == dict(logged), f"worker {w} counted other than the log holds"


@pytest.fixture(scope="module")
def artifact(served: dict) -> Any:
    from shopmind.serving.artifact import load

    return load(served["artifact"])


def _live(service: Any) -> dict[str, Counter[str]]:
    return {u: c for u, c in service.event_counts.items() if sum(c.values())}


def test_two_services_apply_every_event_exactly_once_while_users_are_forgotten(artifact: Any, tmp_path: Path) -> None:
    from shopmind.serving.service import Service

    state = tmp_path / "state"
    a, b = Service(artifact, state), Service(artifact, state)
    items = [str(i) for i in artifact.catalog.item_ids[:20]]
    old_user = sorted(artifact.histories)[0]  # also an artifact user: their trained history goes too
    doomed = [old_user] + [f"doomed-{i}" for i in range(7)]
    for u in doomed:
        a.ingest([{"event_id": f"{u}-{j}", "user_id": u, "item_id": items[j], "type": "view"} for j in range(3)])
    accepted, lock = [24], threading.Lock()

    def writer(service: Service, t: int) -> None:
        for i in range(50):
            batch = [{"event_id": f"{t}-{i}-{j}", "user_id": f"live{(t + j) % 5}", "item_id": items[(i + j) % 20],
                      "type": "purchase" if j == 2 else "view"} for j in range(3)]
            new = sum(service.ingest(batch))
            with lock:
                accepted[0] += new

    def forgetter() -> None:
        for k, u in enumerate(doomed):
            (a if k % 2 else b).forget(u)
            time.sleep(0.03)

    threads = [threading.Thread(target=writer, args=(s, t)) for t, s in enumerate([a, b, a, b])]
    threads.append(threading.Thread(target=forgetter))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b.ingest([{"event_id": "last", "user_id": "live0", "item_id": items[0], "type": "view"}])  # after the last forget
    accepted[0] += 1
    a.sync(), b.sync()
    fresh = Service(artifact, state)
    total = sum(sum(c.values()) for c in fresh.event_counts.values())
    assert total == accepted[0] - 3 * len(doomed)
    for s in (a, b):
        assert _live(s) == _live(fresh)
        assert s.histories == fresh.histories and s.purchases == fresh.purchases
        assert s.type_counts == fresh.type_counts
        assert not any(u in s.histories or u in s.event_counts for u in doomed)
    # a forgotten event id posted again is a duplicate, on either worker
    assert a.ingest([{"event_id": "doomed-1-0", "user_id": "doomed-1", "item_id": items[0], "type": "view"}]) == [False]
    for s in (a, b, fresh):
        s.close()


def test_a_forget_purges_the_cache_and_a_pool_in_the_making(artifact: Any, tmp_path: Path) -> None:
    from shopmind.serving.service import Service

    s = Service(artifact, tmp_path / "state")
    user = sorted(artifact.histories)[0]
    s.recommend(user, k=5, explore=False)
    assert any(k[0] == user for k in s.cache)
    original = s._ranked

    def slow(*args: Any, **kwargs: Any) -> Any:  # the forget lands while the pool is being computed
        s.forget(user)
        return original(*args, **kwargs)

    s.ingest([{"user_id": user, "item_id": str(artifact.catalog.item_ids[0]), "type": "view"}])  # a new version
    s._ranked = slow  # type: ignore[method-assign]
    s.recommend(user, k=5, explore=False)
    s._ranked = original  # type: ignore[method-assign]
    assert not any(k[0] == user for k in s.cache) and user not in s.versions
    assert user not in s.histories and user not in s.event_counts
    assert s.recommend(user, k=5, explore=False)["history_size"] == 0
    s.close()


def test_control_records_reach_every_process_once_across_a_rewrite(tmp_path: Path) -> None:
    a, b = EventLog(tmp_path), EventLog(tmp_path)
    a.control({"kind": "reload", "artifact": None, "at": 1.0})
    b.catch_up()
    a.control({"kind": "reload", "artifact": None, "at": 2.0})  # b reads it while writing, then a rewrite
    b.append([_event(1)])
    a.forget("somebody")
    records, rotated = b.catch_up()
    assert rotated and [r.get("at") for r in records if r.get("kind") == "reload"] == [2.0]
    assert a.catch_up()[0][-1]["kind"] == "forget"  # a wrote both reloads: they are not handed back to it
    a.control({"kind": "reload", "artifact": None, "at": 3.0})
    a.forget("somebody-else")
    assert [r.get("at") for r in b.catch_up()[0] if r.get("kind") == "reload"] == [3.0]
    c = EventLog(tmp_path)  # a process started later: the reloads before it are history
    assert not [r for r in c.catch_up()[0] if r.get("kind") == "reload"]
