"""The event log (durable, idempotent, torn-tail repair, forgetting) and hashed API keys."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from shopmind.serving.auth import KeyStore, KeyStoreError
from shopmind.serving.eventlog import EventLog


def test_append_is_idempotent_and_survives_reopen(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    assert log.append([{"event_id": "a", "user_id": "u"}, {"event_id": "b", "user_id": "u"},
                       {"event_id": "a", "user_id": "u"}]) == [True, True, False]
    assert log.append([{"event_id": "b", "user_id": "u"}, {"user_id": "v"}]) == [False, True]
    log.close()
    again = EventLog(tmp_path)
    assert [r.get("event_id") for r in again.replay()] == ["a", "b", None]
    assert "a" in again and again.append([{"event_id": "a", "user_id": "u"}]) == [False]


def test_torn_last_line_is_cut(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    log.append([{"event_id": "a", "user_id": "u"}])
    log.close()
    with open(tmp_path / "events.jsonl", "ab") as f:
        f.write(b'{"event_id":"b","user_')  # a crash in the middle of a write
    again = EventLog(tmp_path)
    assert [r["event_id"] for r in again.replay()] == ["a"]
    assert again.append([{"event_id": "b", "user_id": "u"}]) == [True]
    assert (tmp_path / "events.jsonl").read_bytes().count(b"\n") == 2


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    log = EventLog(tmp_path)

    def worker(t: int) -> None:
        for i in range(50):
            log.append([{"event_id": f"{t}-{i}", "user_id": f"u{t}"}])

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [json.loads(line)["event_id"] for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(ids) == 400 and len(set(ids)) == 400


def test_forget_removes_a_users_events_and_keeps_a_tombstone(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    log.append([{"event_id": "1", "user_id": "alice"}, {"event_id": "2", "user_id": "bob"},
                {"event_id": "3", "user_id": "alice"}])
    assert log.forget("alice") == 2
    text = (tmp_path / "events.jsonl").read_text()
    assert '"1"' not in text and '"3"' not in text and "bob" in text
    log.append([{"event_id": "4", "user_id": "alice"}])  # she may come back
    log.close()
    again = EventLog(tmp_path)
    assert again.forgotten == {again.digest("alice")}
    assert [r.get("event_id") for r in again.replay()] == ["2", None, "4"]


def test_keys_are_hashed_scoped_and_revocable(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    w = store.create("ingest-bot", "write")
    a = store.create("ops", "admin")
    stored = (tmp_path / "keys.json").read_text()
    assert w not in stored and a not in stored and "ingest-bot" in stored
    assert (tmp_path / "keys.json").stat().st_mode & 0o077 == 0
    again = KeyStore(tmp_path / "keys.json")
    assert again.check(w, "write") == "ingest-bot" and again.check(w, "admin") is None
    assert again.check(a, "write") == "ops" and again.check(a, "admin") == "ops"
    assert again.check("sm_wrong", "write") is None and again.check(None, "write") is None
    assert again.check("x" * 1000, "write") is None
    with pytest.raises(KeyStoreError):
        again.create("ops", "admin")
    with pytest.raises(KeyStoreError):
        again.create("x", "root")
    assert again.revoke("ingest-bot") and again.check(w, "write") is None


def test_two_processes_share_one_log(tmp_path: Path) -> None:
    a, b = EventLog(tmp_path), EventLog(tmp_path)  # separate lock descriptions: they exclude each other like processes
    assert a.catch_up() == ([], True) and b.catch_up() == ([], True)  # the first call: the whole (empty) log
    assert a.append([{"event_id": "1", "user_id": "u"}]) == [True]
    assert a.catch_up() == ([{"event_id": "1", "user_id": "u"}], False)  # its own record comes back once
    assert b.catch_up() == ([{"event_id": "1", "user_id": "u"}], False)
    assert b.catch_up() == ([], False)
    assert b.append([{"event_id": "1", "user_id": "u"}, {"event_id": "2", "user_id": "v"}]) == [False, True]
    assert a.catch_up() == ([{"event_id": "2", "user_id": "v"}], False)
    # a writer reads what the other appended before writing: an id the other wrote meanwhile is a duplicate
    b.append([{"event_id": "3", "user_id": "w"}])
    assert a.append([{"event_id": "3", "user_id": "w"}, {"event_id": "4", "user_id": "w"}]) == [False, True]
    assert a.catch_up() == ([{"event_id": "3", "user_id": "w"}, {"event_id": "4", "user_id": "w"}], False)
    ids = [json.loads(line)["event_id"] for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert ids == ["1", "2", "3", "4"]
    b.catch_up()
    assert a.forget("v") == 1
    records, rotated = b.catch_up()  # rewritten: the whole log again, to start over from
    assert rotated and [r.get("event_id") for r in records] == ["1", "3", "4", None]
    assert b.forgotten == {b.digest("v")} and "2" not in b and "4" in b
    assert b.append([{"event_id": "5", "user_id": "u"}]) == [True]
    assert a.catch_up()[0][-1] == {"event_id": "5", "user_id": "u"}
