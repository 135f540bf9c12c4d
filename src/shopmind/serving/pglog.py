"""The serving event log on PostgreSQL, for API processes on several hosts: the same contract as the file log
(eventlog.py: `append`, `catch_up`, `control`, `forget`, `replay`), kept in the store's database.

- Acknowledged only after COMMIT with synchronous_commit on: a post that got 2xx is on the server's disk.
- One ordered stream. A writer locks the dataset's head row (`serving_log_head`, SELECT … FOR UPDATE), numbers
  its rows after the head's sequence number and moves the head in the same transaction. So sequence numbers are
  gapless and commit in order: a reader that saw head N has every row up to N, and reads `seq > last` exactly
  once. The lock is held for one insert: group commit (one transaction for every post queued in the process
  meanwhile) keeps that short under load.
- Following: every process LISTENs on `shopmind_log` (a NOTIFY in each writing transaction wakes it); `catch_up`
  asks the database only when woken or when `poll_s` passed (the fallback if a notification is lost), so a request
  in a quiet shop costs no round trip. The rows it hands out include this process's own writes, as the file log.
- Duplicates: a writer first reads, under the head lock, every row other processes committed since it last
  looked, so an event id taken anywhere, or forgotten, is known before it writes; a unique index on (dataset,
  event_id) is the last guard.
- Forget: one transaction deletes the user's events and their older tombstone, appends a tombstone of digests
  (the user's and the removed event ids', keyed HMAC under a key kept in `serving_secrets`) and bumps the
  head's epoch; every process sees the new epoch and replays the whole log (`rotated=True`), as after a file
  rewrite. A plain VACUUM afterwards lets the server reuse the dead rows' space.
- A lost connection (a restarted server): the post in flight is not acknowledged (503), and the next call
  reconnects. A commit whose answer was lost may have landed: the client's retry with the same event id is then
  a duplicate, never a second event.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from typing import Any, Callable, Iterator, Sequence

from .eventlog import EventLogError, _encode, parse_line

log = logging.getLogger("shopmind.serving.pglog")

CHANNEL = "shopmind_log"
DDL = """
CREATE TABLE IF NOT EXISTS serving_log (
    dataset TEXT COLLATE "C" NOT NULL, seq BIGINT NOT NULL, event_id TEXT COLLATE "C", kind TEXT,
    user_id TEXT COLLATE "C", record TEXT NOT NULL, written_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, seq));
CREATE UNIQUE INDEX IF NOT EXISTS serving_log_event ON serving_log (dataset, event_id);
CREATE INDEX IF NOT EXISTS serving_log_user ON serving_log (dataset, user_id);
CREATE TABLE IF NOT EXISTS serving_log_head (
    dataset TEXT COLLATE "C" PRIMARY KEY, seq BIGINT NOT NULL DEFAULT 0, epoch BIGINT NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS serving_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS serving_state (name TEXT PRIMARY KEY, value TEXT NOT NULL, version BIGINT NOT NULL);
"""
_DDL_LOCK = 0x5E0_1D  # the store's advisory lock key for DDL (data/pgstore.py)


def redact_url(url: str) -> str:
    from ..data.pgstore import redact

    return redact(url)


def connect(url: str) -> Any:
    import psycopg

    conn = psycopg.connect(url, autocommit=True, connect_timeout=5, application_name="shopmind-serving")
    conn.execute("SET synchronous_commit = on")
    return conn


def ensure_schema(conn: Any) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_DDL_LOCK])
        conn.execute(DDL)


def shared_secret(url_or_conn: Any, name: str) -> bytes:
    """32 random bytes named `name`, created once in `serving_secrets` and the same for every process and host
    (the file log keeps them in the state folder; hosts without a shared disk share them here)."""
    own = isinstance(url_or_conn, str)
    conn = connect(url_or_conn) if own else url_or_conn
    try:
        ensure_schema(conn)
        conn.execute("INSERT INTO serving_secrets VALUES (%s, %s) ON CONFLICT DO NOTHING", [name, secrets.token_hex(32)])
        return bytes.fromhex(conn.execute("SELECT value FROM serving_secrets WHERE name = %s", [name]).fetchone()[0])
    finally:
        if own:
            conn.close()


def logged_datasets(url: str) -> list[str]:
    """The datasets with a serving log in this database."""
    conn = connect(url)
    try:
        ensure_schema(conn)
        return [r[0] for r in conn.execute("SELECT dataset FROM serving_log_head ORDER BY 1")]
    finally:
        conn.close()


class PgEventLog:
    """One dataset's serving event log in PostgreSQL (see the module docstring).

    digest: maps a user or event id to the digest forget tombstones hold (default: HMAC-SHA256 under the shared
    secret "forget"). required: fields an event must carry as non-empty strings (others are skipped, counted).
    poll_s: the longest a process goes without asking the database when no notification woke it.
    """

    def __init__(self, url: str, dataset: str, digest: Callable[[str], str] | None = None,
                 required: Sequence[str] = ("user_id",), poll_s: float = 0.25) -> None:
        self.url, self.dataset, self.required, self.poll_s = url, dataset, tuple(required), poll_s
        self.path = f"postgresql:serving_log/{dataset}"  # for messages (no credentials)
        try:
            self._conn = connect(url)
            ensure_schema(self._conn)
            self._conn.execute("INSERT INTO serving_log_head (dataset) VALUES (%s) ON CONFLICT DO NOTHING", [dataset])
            if digest is None:
                key = shared_secret(self._conn, "forget")
                digest = lambda v: hmac.new(key, str(v).encode(), hashlib.sha256).hexdigest()  # noqa: E731
        except Exception as e:
            raise EventLogError(f"cannot open the event log in PostgreSQL: {str(e).strip().splitlines()[0]}") from None
        self.digest: Callable[[str], str] = digest
        self._db = threading.Lock()  # one statement at a time on the connection
        self._read_lock = threading.Lock()
        self._cv = threading.Condition()
        self._seq = 0  # the highest sequence number indexed
        self._epoch = -1
        self._ids: set[str] = set()
        self._forgotten: set[str] = set()
        self._forgotten_ids: set[str] = set()
        self._own_controls: set[int] = set()
        self._pending: list[dict[str, Any]] = []
        self._rotated = True
        self._started = False
        self._queue: list[tuple[str | None, dict[str, Any]]] = []
        self._inflight: set[str] = set()
        self._queued = self._durable = 0
        self._flushing = False
        self._failed: list[tuple[int, int, str]] = []
        self._dropped: set[str] = set()
        self.records = self.skipped = self.quarantined = 0
        self._woken = threading.Event()
        self._last_poll = 0.0
        self._failing = False
        self._closed = threading.Event()
        with self._db:
            self._reload(self._head()[1])
        self._started = True
        self._listener = threading.Thread(target=self._listen, name=f"pglog-listen-{dataset}", daemon=True)
        self._listener.start()

    # -- the database -----------------------------------------------------------------------------------------
    def _reconnect(self) -> None:
        try:
            self._conn.close()
        except Exception:  # noqa: BLE001 - it is gone either way
            pass
        self._conn = connect(self.url)

    def _ensure(self) -> None:
        if self._conn.closed or self._conn.broken:
            self._reconnect()

    def _head(self, lock: bool = False) -> tuple[int, int]:
        row = self._conn.execute("SELECT seq, epoch FROM serving_log_head WHERE dataset = %s"
                                 + (" FOR UPDATE" if lock else ""), [self.dataset]).fetchone()
        return int(row[0]), int(row[1])

    def _rows(self, after: int, upto: int) -> Iterator[tuple[int, str]]:
        cur = self._conn.execute("SELECT seq, record FROM serving_log WHERE dataset = %s AND seq > %s AND seq <= %s "
                                 "ORDER BY seq", [self.dataset, after, upto])
        yield from cur

    def _parse(self, seq: int, text: str) -> dict[str, Any] | None:
        record, reason = parse_line(text.encode(), self.required)
        if record is None:
            self.skipped += 1
            log.error("event log %s, seq %d: skipped an unreadable record (%s)", self.path, seq, reason)
        return record

    def _reload(self, epoch: int) -> None:
        """Index the whole log and queue it as a full replay (rotated). Control records are news only when
        they are newer than what this process handed out and not its own."""
        head, _ = self._head()
        seen = self._seq
        self._ids, self._forgotten, self._forgotten_ids = set(), set(), set()
        replay, count = [], 0
        for seq, text in self._rows(0, head):
            record = self._parse(seq, text)
            if record is None:
                continue
            count += 1
            self._index(record)
            kind = record.get("kind")
            if kind not in (None, "forget") and (not self._started or seq <= seen or seq in self._own_controls):
                continue
            replay.append(record)
        self._pending, self._rotated, self._seq, self._epoch, self.records = replay, True, head, epoch, count

    def _read_new(self, head: int, epoch: int) -> None:
        """Queue what others committed since we looked (the caller holds self._db)."""
        if epoch != self._epoch:
            self._reload(epoch)
            return
        if head <= self._seq:
            return
        for seq, text in self._rows(self._seq, head):
            record = self._parse(seq, text)
            if record is not None:
                self._index(record)
                if seq not in self._own_controls:
                    self._pending.append(record)
                self.records += 1
        self._seq = head

    def _index(self, record: dict[str, Any]) -> None:
        kind = record.get("kind")
        if kind == "forget":
            self._forgotten.add(record["user"])
            self._forgotten_ids.update(record.get("event_ids", ()))
        elif kind is None and record.get("event_id"):
            self._ids.add(record["event_id"])

    def _listen(self) -> None:
        """Wake `catch_up` on every NOTIFY; reconnect after a lost connection (polling covers the gap)."""
        import psycopg

        while not self._closed.is_set():
            try:
                conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                       application_name="shopmind-listen")
            except psycopg.Error:
                self._closed.wait(1.0)
                continue
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                self._woken.set()  # anything may have happened while we were not listening
                while not self._closed.is_set():
                    for note in conn.notifies(timeout=0.5):
                        if note.payload == self.dataset:
                            self._woken.set()
            except psycopg.Error:
                self._closed.wait(0.2)
            finally:
                conn.close()

    # -- the file log's interface -----------------------------------------------------------------------------
    def replay(self) -> Iterator[dict[str, Any]]:
        with self._db:
            self._ensure()
            rows = list(self._rows(0, self._head()[0]))
        for _seq, text in rows:
            record, _ = parse_line(text.encode(), self.required)
            if record is not None:
                yield record

    @property
    def forgotten(self) -> set[str]:
        return set(self._forgotten)

    def is_forgotten(self, user_id: str) -> bool:
        return self.digest(user_id) in self._forgotten

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def catch_up(self) -> tuple[list[dict[str, Any]], bool]:
        """(records not handed out yet, in log order, whether they are the whole log); see eventlog.EventLog."""
        with self._read_lock:
            now = time.monotonic()
            if self._woken.is_set() or now - self._last_poll >= self.poll_s:
                self._woken.clear()
                self._last_poll = now
                try:
                    with self._db, self._cv:
                        self._ensure()
                        self._read_new(*self._head())
                    if self._failing:
                        log.warning("event log %s: the database answers again", self.path)
                        self._failing = False
                except Exception as e:  # noqa: BLE001 - a read that fails is retried at the next poll
                    if not self._failing:  # once per outage, not once per request
                        log.error("event log %s: cannot read new events (%s); serving what is known", self.path,
                                  str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
                    self._failing = True
            with self._cv:
                records, rotated = self._pending, self._rotated
                self._pending, self._rotated = [], False
            return records, rotated

    def _known(self, eid: str) -> bool:
        return eid in self._ids or (bool(self._forgotten_ids) and self.digest(eid) in self._forgotten_ids)

    def append(self, records: Sequence[dict[str, Any]]) -> list[bool]:
        """Commit the records; per record whether it was new. Raises EventLogError when nothing was acknowledged."""
        fresh = []
        with self._cv:
            for r in records:
                eid = r.get("event_id")
                new = not eid or not (eid in self._inflight or self._known(eid))
                fresh.append(new)
                if new:
                    if eid:
                        self._inflight.add(eid)
                    self._queue.append((eid, r))
            self._queued += 1
            ticket = self._queued
            while self._durable < ticket:
                if self._flushing:
                    self._cv.wait()
                    continue
                self._flush()
            for first, last, reason in self._failed:
                if first <= ticket <= last:
                    raise EventLogError(reason)
            if self._dropped:
                for i, r in enumerate(records):
                    if fresh[i] and r.get("event_id") in self._dropped:
                        fresh[i] = False
                        self._dropped.discard(r.get("event_id"))
        return fresh

    def _write(self, batch: list[tuple[str | None, dict[str, Any]]], control: bool = False) -> list[int]:
        """One transaction: lock the head, read others' rows, drop known ids, insert, move the head, notify.
        Returns the sequence numbers written. Caller holds self._db (and not self._cv)."""
        self._ensure()
        conn = self._conn
        with conn.transaction():
            head, epoch = self._head(lock=True)
            with self._cv:
                self._read_new(head, epoch)
                keep = []
                for eid, record in batch:
                    if eid and self._known(eid):
                        self._dropped.add(eid)
                    else:
                        keep.append((eid, record))
            if not keep:
                return []
            seqs = list(range(head + 1, head + 1 + len(keep)))
            rows = [(self.dataset, s, eid, r.get("kind"), r.get("user_id") if r.get("kind") is None else None,
                     _encode(r)[:-1].decode()) for s, (eid, r) in zip(seqs, keep)]
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO serving_log (dataset, seq, event_id, kind, user_id, record) "
                                "VALUES (%s, %s, %s, %s, %s, %s)", rows)
            conn.execute("UPDATE serving_log_head SET seq = %s WHERE dataset = %s", [seqs[-1], self.dataset])
            conn.execute("SELECT pg_notify(%s, %s)", [CHANNEL, self.dataset])
        # Committed (synchronous commit): acknowledged. Index and queue in log order.
        with self._cv:
            for s, (_eid, record) in zip(seqs, keep):
                self._index(record)
                if control:
                    self._own_controls.add(s)
                else:
                    self._pending.append(record)
            self._seq = seqs[-1]
            self.records += len(keep)
        return seqs

    def _flush(self) -> None:
        """Write everything queued in one transaction (called under self._cv, which it releases meanwhile)."""
        self._flushing = True
        batch, upto, first = self._queue, self._queued, self._durable + 1
        self._queue = []
        self._cv.release()
        error = None
        try:
            with self._db:
                self._write(batch)
        except Exception as e:  # noqa: BLE001 - a failed commit is a refused post, never a crash
            error = f"event log write failed: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
            log.error("%s (%s)", error, self.path)
            try:
                with self._db:
                    self._reconnect()
            except Exception:  # noqa: BLE001 - retried at the next write
                pass
        finally:
            self._cv.acquire()
        for eid, _ in batch:
            self._inflight.discard(eid)
        self._flushing = False
        if error:
            self._failed = [*self._failed[-99:], (first, upto, error)]
        self._durable = upto
        self._cv.notify_all()

    def control(self, record: dict[str, Any]) -> None:
        """Append a control record (a reload for every worker on every host); not handed back to this process."""
        try:
            with self._db:
                self._write([(None, record)], control=True)
        except Exception as e:  # noqa: BLE001
            raise EventLogError(f"event log write failed: {str(e).strip().splitlines()[0]}") from None

    def forget(self, user_id: str) -> int:
        """Remove the user's events, keep a tombstone of digests, bump the epoch; returns events removed."""
        user = self.digest(user_id)
        with self._db:
            self._ensure()
            conn = self._conn
            with conn.transaction():
                head, epoch = self._head(lock=True)
                gone: set[str] = set()
                removed = 0
                for (eid,) in conn.execute(
                        "SELECT event_id FROM serving_log WHERE dataset = %s AND kind IS NULL AND user_id = %s",
                        [self.dataset, user_id]):
                    removed += 1
                    if eid:
                        gone.add(self.digest(eid))
                for (text,) in conn.execute("SELECT record FROM serving_log WHERE dataset = %s AND kind = 'forget' "
                                            "AND user_id = %s", [self.dataset, user]):
                    gone.update(json.loads(text).get("event_ids", ()))
                conn.execute("DELETE FROM serving_log WHERE dataset = %s AND ((kind IS NULL AND user_id = %s) OR "
                             "(kind = 'forget' AND user_id = %s))", [self.dataset, user_id, user])
                tombstone = {"kind": "forget", "user": user, "event_ids": sorted(gone)}
                conn.execute("INSERT INTO serving_log (dataset, seq, event_id, kind, user_id, record) "
                             "VALUES (%s, %s, NULL, 'forget', %s, %s)",
                             [self.dataset, head + 1, user, _encode(tombstone)[:-1].decode()])
                conn.execute("UPDATE serving_log_head SET seq = %s, epoch = %s WHERE dataset = %s",
                             [head + 1, epoch + 1, self.dataset])
                conn.execute("SELECT pg_notify(%s, %s)", [CHANNEL, self.dataset])
            with self._cv:
                self._reload(epoch + 1)
            try:
                conn.execute("VACUUM serving_log")
            except Exception:  # noqa: BLE001 - autovacuum does it later
                pass
        return removed

    def trainer_status(self) -> str | None:
        """The status JSON the dataset's trainer last wrote (serving_state "trainer:<dataset>"), wherever it runs."""
        with self._db:
            self._ensure()
            row = self._conn.execute("SELECT value FROM serving_state WHERE name = %s",
                                     [f"trainer:{self.dataset}"]).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        self._closed.set()
        with self._db:
            self._conn.close()
        self._listener.join(timeout=2)
