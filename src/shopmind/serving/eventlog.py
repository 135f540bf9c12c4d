"""The durable event log behind `POST /events`: an append-only JSON-lines file, fsynced before any event
in it is acknowledged, idempotent by event id, replayed at start, shared by all server processes.

- Group commit: concurrent writers in a process queue their lines; one of them writes everything queued
  and fsyncs once while the others wait, so a burst of posts costs one fsync, and nobody is answered
  before the bytes holding their events are on disk.
- Several processes (`shopmind serve --workers N`): writes hold an exclusive `flock` on a lock file; a
  writer first reads what other processes appended (so event ids stay unique across processes), then
  appends, fsyncs, and publishes the new durable length in a small side file. Readers pick up new records
  with `catch_up()` without any lock (so a request never waits for someone else's fsync): one `stat` and
  one 8-byte read per request, and only bytes up to the published durable length are read.
- One ordered stream: `catch_up()` hands out every record of the file exactly once and in file order, this
  process's own writes included (they are queued for it when written). After a rewrite of the file (a
  forget, here or in another process) and right after opening, it hands out the whole file instead, with
  `rotated=True`: the caller starts again from its base state and applies that. So a consumer that applies
  only what `catch_up()` returns applies every logged record exactly once.
- A crash can leave a torn last line (the write was cut, so it was never acknowledged); it is cut off at
  start. Any other unreadable record (not JSON, not an object, an event without its required fields) is
  moved at start to a quarantine file next to the log (`events.jsonl.quarantine`: JSON lines with the byte
  offset, line number, the raw bytes in base64 and the reason), logged at ERROR, and counted
  (`quarantined`); the rest is replayed. Unreadable records another process appended are skipped
  (`skipped`) and quarantined at the next start.
- Forgetting a user rewrites the file without their events (temporary file, fsync, rename, fsync of the
  folder) and keeps a tombstone holding only digests (keyed HMACs) of the user id and of the removed event
  ids: their history in the trained artifact stays forgotten, a forgotten event id posted again is a
  duplicate, and no clear id of theirs is left in the folder. Other processes see the new file (a new
  inode) and start again from it.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import logging
import os
import struct
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..fsutil import fsync_dir, secret_key

log = logging.getLogger("shopmind.serving.eventlog")

KEY_FILE = "forget.key"


class EventLogError(RuntimeError):
    """The log could not be written (disk full, permissions): the events were not acknowledged."""


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), default=str).encode() + b"\n"


def hmac_digest(folder: str | Path) -> Callable[[str], str]:
    """HMAC-SHA256 (hex) under a random key kept in `folder/forget.key` (created once, owner-only; two
    processes starting together agree on one key)."""
    key = secret_key(Path(folder) / KEY_FILE)

    def digest(value: str) -> str:
        return hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()

    return digest


def parse_line(line: bytes, required: Sequence[str]) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) for a readable record, else (None, why not)."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        return None, f"not JSON: {e}"
    if not isinstance(record, dict):
        return None, f"not a JSON object but a {type(record).__name__}"
    kind = record.get("kind")
    if kind is None:
        missing = [f for f in required if not isinstance(record.get(f), str) or not record.get(f)]
        if missing:
            return None, f"an event without {', '.join(missing)}"
        if "event_id" in record and not isinstance(record["event_id"], str):
            return None, "an event whose event_id is not a string"
    elif kind == "forget":
        legacy = isinstance(record.get("user_id"), str)
        ids = record.get("event_ids", [])
        if not legacy and not (isinstance(record.get("user"), str) and isinstance(ids, list)
                               and all(isinstance(i, str) for i in ids)):
            return None, "a forget record without user digest and event id digests"
    elif not isinstance(kind, str):
        return None, "a record whose kind is not a string"
    return record, None


class EventLog:
    """The shared, durable event log of one dataset's serving state folder.

    digest: maps a user or event id to the digest that forget tombstones hold (default: HMAC-SHA256 under
    a random key in `folder/forget.key`); every process sharing the folder must use the same one.
    required: fields an event (a record without "kind") must carry as non-empty strings; an event
    without them is quarantined at start and skipped when read from another process.
    Attributes: `records` (records in the file), `quarantined` (records in the quarantine file),
    `skipped` (unreadable records of other processes skipped since start), `digest`.
    """

    def __init__(self, folder: str | Path, name: str = "events.jsonl", digest: Callable[[str], str] | None = None,
                 required: Sequence[str] = ("user_id",)) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / name
        self.quarantine_path = self.folder / (name + ".quarantine")
        self.digest: Callable[[str], str] = digest or hmac_digest(self.folder)
        self.required = tuple(required)
        self._lockfile = open(self.folder / (name + ".lock"), "a+b")
        # flock is per open file: threads of one process would share (and release) each other's lock, so
        # one thread at a time holds it.
        self._flock_mutex = threading.Lock()
        self._commit = os.open(self.folder / (name + ".commit"), os.O_RDWR | os.O_CREAT, 0o644)
        self._ids: set[str] = set()  # event ids in the file (up to our offset)
        self._inflight: set[str] = set()  # event ids queued or being written by this process
        self._forgotten: set[str] = set()  # digests of forgotten users
        self._forgotten_ids: set[str] = set()  # digests of event ids removed by a forget
        self._controls: set[bytes] = set()  # control records (not forgets) already handed out or replayed
        self._cv = threading.Condition()
        self._read_lock = threading.Lock()
        self._queue: list[tuple[str | None, dict[str, Any], bytes]] = []
        self._queued = 0  # tickets handed out
        self._durable = 0  # tickets on disk
        self._flushing = False
        self._failed: list[tuple[int, int, str]] = []  # (first, last ticket, reason) of failed batches
        self._dropped: set[str] = set()  # ids found written by another process while in our queue
        self._pending: list[dict[str, Any]] = []  # records read or written, in file order, not yet handed out
        self._rotated = True  # the first catch_up hands out the whole file
        self._rotated_once = False  # control records in the file at start are history; in later rewrites, news
        self.records = 0
        self.skipped = 0
        self.quarantined = 0
        with self._flock(fcntl.LOCK_EX):
            self._repair()
            self._open()
            self._publish(self._offset)
            self._load()
        self.quarantined = self._count_quarantined()

    # -- files and locks -----------------------------------------------------------------------------------
    @contextmanager
    def _flock(self, mode: int) -> Iterator[None]:
        with self._flock_mutex:
            fcntl.flock(self._lockfile.fileno(), mode)
            try:
                yield
            finally:
                fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_UN)

    @contextmanager
    def _writer(self) -> Iterator[None]:
        """Exclusive writing outside group commit (control records, rewrites): waits for queued events."""
        with self._cv:
            while self._flushing or self._queue:
                self._cv.wait(0.01)
            self._flushing = True
        try:
            with self._flock(fcntl.LOCK_EX):
                yield
        finally:
            with self._cv:
                self._flushing = False
                self._cv.notify_all()

    def _open(self) -> None:
        self._file = open(self.path, "a+b", buffering=0)  # appends, and preads of this very inode
        st = os.fstat(self._file.fileno())
        self._inode, self._offset = st.st_ino, st.st_size

    def _publish(self, size: int) -> None:
        """The durable length of the log, for lock-free readers (called under LOCK_EX, after fsync)."""
        os.pwrite(self._commit, struct.pack("<Q", size), 0)

    def _committed(self) -> int:
        raw = os.pread(self._commit, 8, 0)
        return struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0

    def _rewrite(self, lines: Sequence[bytes]) -> None:
        """Replace the log by these lines atomically (temp file, fsync, rename, fsync of the folder) and
        reopen it. Called under LOCK_EX."""
        tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(b"".join(lines))
            f.flush()
            os.fsync(f.fileno())
        if hasattr(self, "_file"):
            self._file.close()
        os.replace(tmp, self.path)
        fsync_dir(self.folder)
        self._open()
        self._publish(self._offset)

    def _repair(self) -> None:
        """Cut a torn last line (an unacknowledged write interrupted by a crash). Called under LOCK_EX."""
        if not self.path.exists():
            self.path.touch()
            fsync_dir(self.folder)
            return
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            f.seek(max(0, size - 1))
            if size == 0 or f.read(1) == b"\n":
                return
            f.seek(0)
            data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            log.warning("event log %s: cut a torn last line at byte %d (%d bytes, never acknowledged)",
                        self.path, end, len(data) - end)
            with open(self.path, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())

    def _lines(self, data: bytes) -> Iterator[tuple[int, int, bytes]]:
        """(byte offset, line number from 1, line without its newline) of every complete line."""
        offset, number = 0, 0
        while True:
            end = data.find(b"\n", offset)
            if end < 0:
                return
            number += 1
            yield offset, number, data[offset:end]
            offset = end + 1

    def _load(self) -> None:
        """Read the whole file at start (under LOCK_EX): quarantine unreadable records and rewrite old-style
        tombstones (clear user ids) as digests, then index everything and queue it as the first replay."""
        data = os.pread(self._file.fileno(), self._offset, 0)
        records: list[dict[str, Any]] = []
        out: list[bytes] = []
        bad: list[dict[str, Any]] = []
        changed = False
        for offset, number, line in self._lines(data):
            if not line.strip():
                changed = True
                continue
            record, reason = parse_line(line, self.required)
            if record is None:
                log.error("event log %s, line %d (byte %d): unreadable record moved to %s: %s",
                          self.path, number, offset, self.quarantine_path.name, reason)
                bad.append({"offset": offset, "line": number, "raw": base64.b64encode(line).decode(),
                            "reason": reason})
                changed = True
                continue
            if record.get("kind") == "forget" and "user_id" in record:  # an old-style tombstone
                record = {"kind": "forget", "user": self.digest(record["user_id"]), "event_ids": []}
                out.append(_encode(record))
                changed = True
            else:
                out.append(line + b"\n")
            records.append(record)
        if bad:
            self._quarantine(bad)
        if changed:
            self._rewrite(out)
        self._reset(records)

    def _quarantine(self, entries: Sequence[dict[str, Any]]) -> None:
        created = not self.quarantine_path.exists()
        fd = os.open(self.quarantine_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, b"".join(_encode(e) for e in entries))
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.folder)

    def _count_quarantined(self) -> int:
        try:
            with open(self.quarantine_path, "rb") as f:
                return sum(1 for line in f if line.strip())
        except FileNotFoundError:
            return 0

    def _reset(self, records: list[dict[str, Any]]) -> None:
        """Index a whole file's records and queue them as a full replay (caller holds LOCK_EX or is __init__)."""
        self._ids, self._forgotten, self._forgotten_ids = set(), set(), set()
        replay = []
        for record in records:
            self._index(record)
            kind = record.get("kind")
            if kind is not None and kind != "forget":
                line = _encode(record)
                if line in self._controls:
                    continue  # handed out (or written here) before this rewrite: not news
                if not self._rotated_once:
                    self._controls.add(line)
                    continue  # in the log when we opened it: history, not news
            replay.append(record)
        self._pending = replay
        self._rotated = True
        self.records = len(records)

    def _index(self, record: dict[str, Any]) -> None:
        kind = record.get("kind")
        if kind == "forget":
            self._forgotten.add(record["user"])
            self._forgotten_ids.update(record.get("event_ids", ()))
        elif kind is None and record.get("event_id"):
            self._ids.add(record["event_id"])

    def replay(self) -> Iterator[dict[str, Any]]:
        """Every readable record in the log, oldest first (events and control records such as forget
        tombstones). For tools and tests; a server follows the log with `catch_up()`."""
        with open(self.path, "rb") as f:
            for line in f:
                if line.endswith(b"\n") and line.strip():
                    record, _ = parse_line(line, self.required)
                    if record is not None:
                        yield record

    @property
    def forgotten(self) -> set[str]:
        """Digests of the forgotten users."""
        return set(self._forgotten)

    def is_forgotten(self, user_id: str) -> bool:
        return self.digest(user_id) in self._forgotten

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    # -- following the file ------------------------------------------------------------------------------------
    def _read_new(self, limit: int | None = None) -> None:
        """Queue the records appended since our offset, up to `limit` bytes of file (None: all of it, for a
        caller holding LOCK_EX, when everything in the file is durable; then a rewritten file is noticed
        and loaded whole). Called under self._cv."""
        if limit is None and os.stat(self.path).st_ino != self._inode:  # rewritten by a forget elsewhere
            self._file.close()
            self._open()
            self._rotated_once = True
            self._reset(self._parsed(os.pread(self._file.fileno(), self._offset, 0), 0))
            return
        size = os.fstat(self._file.fileno()).st_size
        size = size if limit is None else min(size, limit)
        if size <= self._offset:
            return
        data = os.pread(self._file.fileno(), size - self._offset, self._offset)
        end = data.rfind(b"\n") + 1
        start = self._offset
        self._offset += end
        for record in self._parsed(data[:end], start):
            self._index(record)
            self._pending.append(record)
            self.records += 1

    def _parsed(self, data: bytes, base: int) -> list[dict[str, Any]]:
        """The readable records of complete lines; unreadable ones are skipped, counted and logged (they are
        quarantined at the next start)."""
        out = []
        for offset, _, line in self._lines(data):
            if not line.strip():
                continue
            record, reason = parse_line(line, self.required)
            if record is None:
                self.skipped += 1
                log.error("event log %s, byte %d: skipped an unreadable record (%s); it is quarantined at the "
                          "next start", self.path, base + offset, reason)
                continue
            out.append(record)
        return out

    def catch_up(self) -> tuple[list[dict[str, Any]], bool]:
        """(records not handed out yet, in file order, whether they are the whole log). This process's own
        writes come back here too. rotated=True (the first call, and after a forget rewrote the file): the
        records are every record in the log; the caller starts again from its base state and applies them.
        Lock-free in the common case: reads only up to the published durable length; one stat and one
        8-byte read when nothing changed."""
        with self._read_lock:
            rotated_now = os.stat(self.path).st_ino != self._inode
            if rotated_now:  # load the new file under the lock, when everything in it is durable
                with self._flock(fcntl.LOCK_EX), self._cv:
                    self._read_new()
            else:
                committed = self._committed()
                with self._cv:
                    if committed > self._offset:
                        self._read_new(committed)
            with self._cv:
                records, rotated = self._pending, self._rotated
                self._pending, self._rotated = [], False
                for record in records:
                    if record.get("kind") not in (None, "forget"):  # handed out: not news after a rewrite
                        self._controls.add(_encode(record))
            return records, rotated

    # -- writing ---------------------------------------------------------------------------------------------
    def _known(self, eid: str) -> bool:
        """Whether an event id is already taken: in the file, or forgotten (its digest is in a tombstone)."""
        return eid in self._ids or (bool(self._forgotten_ids) and self.digest(eid) in self._forgotten_ids)

    def append(self, records: Sequence[dict[str, Any]]) -> list[bool]:
        """Write the records durably; returns per record whether it was new (False: a duplicate event id,
        already in the log, earlier in this call, written meanwhile by another process, or forgotten; not
        written again). Raises EventLogError when the write fails; then none of this call's records were
        acknowledged. The written records come back, in file order, from `catch_up()`."""
        fresh = []
        with self._cv:
            for r in records:
                eid = r.get("event_id")
                new = not eid or not (eid in self._inflight or self._known(eid))
                fresh.append(new)
                if new:
                    if eid:
                        self._inflight.add(eid)
                    self._queue.append((eid, r, _encode(r)))
            self._queued += 1
            ticket = self._queued  # duplicates wait too: the original may still be in the queue
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

    def _flush(self) -> None:
        """Write everything queued with one fsync (called under self._cv, which it releases meanwhile)."""
        self._flushing = True
        batch, upto, first = self._queue, self._queued, self._durable + 1
        self._queue = []
        self._cv.release()
        error, keep = None, []
        try:
            with self._flock(fcntl.LOCK_EX):
                with self._cv:  # others' records first: they decide what is a duplicate
                    self._read_new()
                    for eid, record, line in batch:
                        if eid and self._known(eid):
                            self._dropped.add(eid)
                        else:
                            keep.append((eid, record, line))
                    start = self._offset
                written = b"".join(line for _, _, line in keep)
                if written:
                    try:
                        os.write(self._file.fileno(), written)  # O_APPEND: at the end, which is `start`
                        os.fsync(self._file.fileno())
                    except OSError:
                        try:  # leave no unacknowledged bytes behind for the next writer to follow
                            os.ftruncate(self._file.fileno(), start)
                        except OSError:
                            pass
                        raise
                    with self._cv:
                        self._offset = start + len(written)
                        self._publish(self._offset)
                        for _eid, record, _ in keep:
                            self._index(record)
                            self._pending.append(record)
                        self.records += len(keep)
        except OSError as e:
            error = f"event log write failed: {e}"
        finally:
            self._cv.acquire()
        for eid, _, _ in batch:
            self._inflight.discard(eid)
        self._flushing = False
        if error:
            self._failed = [*self._failed[-99:], (first, upto, error)]
        self._durable = upto
        self._cv.notify_all()

    def control(self, record: dict[str, Any]) -> None:
        """Append a control record (e.g. a reload for every worker) durably."""
        with self._writer():
            line = _encode(record)
            with self._cv:
                self._read_new()
                start = self._offset
            os.write(self._file.fileno(), line)
            os.fsync(self._file.fileno())
            with self._cv:
                self._offset = start + len(line)
                self._publish(self._offset)
                self._controls.add(line)  # not handed back to this process: it is the one that acted on it
                self.records += 1

    def forget(self, user_id: str) -> int:
        """Remove every event of the user from the log and keep a tombstone of digests (the user's, and the
        removed event ids'); returns how many events were removed. Quarantined records that hold the clear
        user id are removed from the quarantine file too. The next `catch_up()` hands out the whole new log
        (rotated, the tombstone last), in this process as in every other."""
        user = self.digest(user_id)
        with self._writer():
            with self._cv:
                self._read_new()  # every other process's record, and a rewrite by another process
            data = os.pread(self._file.fileno(), self._offset, 0)
            kept: list[bytes] = []
            gone: set[str] = set()
            bad: list[dict[str, Any]] = []
            removed = 0
            for offset, number, line in self._lines(data):
                if not line.strip():
                    continue
                record, reason = parse_line(line, self.required)
                if record is None:  # another process's unreadable record (skipped when read): quarantine it now
                    log.error("event log %s, line %d (byte %d): unreadable record moved to %s: %s",
                              self.path, number, offset, self.quarantine_path.name, reason)
                    bad.append({"offset": offset, "line": number, "raw": base64.b64encode(line).decode(),
                                "reason": reason})
                    continue
                kind = record.get("kind")
                if kind is None and record.get("user_id") == user_id:
                    removed += 1
                    if record.get("event_id"):
                        gone.add(self.digest(record["event_id"]))
                elif kind == "forget" and record.get("user") == user:
                    gone.update(record.get("event_ids", ()))  # forgotten before: one tombstone per user
                else:
                    kept.append(line + b"\n")
            tombstone = {"kind": "forget", "user": user, "event_ids": sorted(gone)}
            kept.append(_encode(tombstone))
            if bad:
                self._quarantine(bad)
            with self._cv:
                self._rewrite(kept)
                # This process starts again from the new file too, as every other process does: the next
                # catch_up() hands out the whole log (rotated), so what a consumer derived from the removed
                # events (counts without user ids, say) is rebuilt without them here as well.
                self._rotated_once = True
                self._reset(self._parsed(b"".join(kept), 0))
            self._scrub_quarantine(user_id)
            return removed

    def _scrub_quarantine(self, user_id: str) -> None:
        """Drop quarantined records whose raw bytes hold the clear user id (called under LOCK_EX)."""
        if not self.quarantine_path.exists():
            return
        needles = {user_id.encode(), json.dumps(user_id)[1:-1].encode()}
        kept, dropped = [], 0
        with open(self.quarantine_path, "rb") as f:
            for line in f:
                try:
                    raw = base64.b64decode(json.loads(line)["raw"])
                except (ValueError, KeyError, TypeError):
                    raw = line
                if any(n in raw for n in needles):
                    dropped += 1
                else:
                    kept.append(line if line.endswith(b"\n") else line + b"\n")
        if dropped:
            tmp = self.quarantine_path.with_name(self.quarantine_path.name + f".tmp{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(b"".join(kept))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.quarantine_path)
            fsync_dir(self.folder)
        self.quarantined = len(kept)

    def close(self) -> None:
        with self._flock_mutex, self._cv:
            self._file.close()
            self._lockfile.close()
            os.close(self._commit)
