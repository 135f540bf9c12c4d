"""The durable event log behind `POST /events`: an append-only JSON-lines file, fsynced before any event
in it is acknowledged, idempotent by event id, replayed at start, shared by all server processes.

- Group commit: concurrent writers in a process queue their lines; one of them writes everything queued
  and fsyncs once while the others wait, so a burst of posts costs one fsync, and nobody is answered
  before the bytes holding their events are on disk.
- Several processes (`shopmind serve --workers N`): writes hold an exclusive `flock` on a lock file; a
  writer first reads what other processes appended (so event ids stay unique across processes), then
  appends, fsyncs, and publishes the new durable length in a small side file. Readers pick up other
  processes' records with `catch_up()` without any lock (so a request never waits for someone else's
  fsync): one `stat` and one 8-byte read per request, and only bytes up to the published durable length
  are read. This is how every worker's state follows every acknowledged event.
- A crash can leave a torn last line (the write was cut, so it was never acknowledged); it is cut off at
  start.
- Forgetting a user rewrites the file without their events (temporary file, fsync, rename, fsync of the
  folder) and keeps a tombstone so that their history in the trained artifact stays forgotten; other
  processes see the new file (a new inode) and rebuild their state from it.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence


class EventLogError(RuntimeError):
    """The log could not be written (disk full, permissions): the events were not acknowledged."""


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), default=str).encode() + b"\n"


class EventLog:
    def __init__(self, folder: str | Path, name: str = "events.jsonl") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / name
        self._lockfile = open(self.folder / (name + ".lock"), "a+b")
        # flock is per open file: threads of one process would share (and release) each other's lock, so
        # one thread at a time holds it.
        self._flock_mutex = threading.Lock()
        self._commit = os.open(self.folder / (name + ".commit"), os.O_RDWR | os.O_CREAT, 0o644)
        self._ids: set[str] = set()
        self._forgotten: set[str] = set()
        self._cv = threading.Condition()
        self._read_lock = threading.Lock()
        self._queue: list[bytes] = []
        self._queued = 0  # tickets handed out
        self._durable = 0  # tickets on disk
        self._flushing = False
        self._failed: list[tuple[int, int, str]] = []  # (first, last ticket, reason) of failed batches
        self._dropped: set[str] = set()  # ids found written by another process while in our queue
        self._foreign: list[dict[str, Any]] = []  # other processes' records read while writing, not yet handed out
        self._rotated = False
        self.records = 0
        with self._flock(fcntl.LOCK_EX):
            self._repair()
            self._open()
            self._publish(self._offset)
            for record in self.replay():
                self._index(record)

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
        self._file = open(self.path, "ab", buffering=0)
        st = os.fstat(self._file.fileno())
        self._inode, self._offset = st.st_ino, st.st_size

    def _publish(self, size: int) -> None:
        """The durable length of the log, for lock-free readers (called under LOCK_EX, after fsync)."""
        os.pwrite(self._commit, struct.pack("<Q", size), 0)

    def _committed(self) -> int:
        raw = os.pread(self._commit, 8, 0)
        return struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0

    def _repair(self) -> None:
        """Cut a torn last line (an unacknowledged write interrupted by a crash). Called under LOCK_EX."""
        if not self.path.exists():
            self.path.touch()
            _fsync_dir(self.folder)
            return
        with open(self.path, "rb") as f:
            data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())

    def _index(self, record: dict[str, Any]) -> None:
        if record.get("kind") == "forget":
            self._forgotten.add(record["user_id"])
        elif record.get("event_id"):
            self._ids.add(record["event_id"])
        self.records += 1

    def replay(self) -> Iterator[dict[str, Any]]:
        """Every record in the log, oldest first (events and control records such as forget tombstones)."""
        with open(self.path, "rb") as f:
            for line in f:
                if line.endswith(b"\n") and line.strip():
                    yield json.loads(line)

    @property
    def forgotten(self) -> set[str]:
        return set(self._forgotten)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    # -- following other processes ---------------------------------------------------------------------------
    def _read_new(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Records appended by other processes since our offset, up to `limit` bytes of file (default: all,
        for a caller holding LOCK_EX, when everything in the file is durable)."""
        if os.stat(self.path).st_ino != self._inode:  # rewritten by a forget in another process
            self._file.close()
            self._open()
            self._ids.clear()
            self._forgotten.clear()
            self.records = 0
            for record in self.replay():
                self._index(record)
            self._rotated = True
            self._foreign.clear()
            return []
        size = os.fstat(self._file.fileno()).st_size if limit is None else limit
        if size <= self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read(size - self._offset)
        end = data.rfind(b"\n") + 1
        self._offset += end
        out = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
        for record in out:
            self._index(record)
        return out

    def catch_up(self) -> tuple[list[dict[str, Any]], bool]:
        """(records other processes appended since the last call, whether the whole log was rewritten; then
        the caller must rebuild its state from `replay()`). No lock: reads only up to the published durable
        length. Cheap when nothing changed: one stat and one 8-byte read."""
        with self._read_lock:
            rotated_now = os.stat(self.path).st_ino != self._inode
            committed = self._committed()
            if not rotated_now and committed <= self._offset and not self._foreign and not self._rotated:
                return [], False
            with self._cv:
                new = self._foreign + self._read_new(None if rotated_now else committed)
                self._foreign = []
                rotated, self._rotated = self._rotated, False
            return ([] if rotated else new), rotated

    # -- writing ---------------------------------------------------------------------------------------------
    def append(self, records: Sequence[dict[str, Any]]) -> list[bool]:
        """Write the records durably; returns per record whether it was new (False: a duplicate event id,
        already in the log, earlier in this call, or written meanwhile by another process; not written
        again). Raises EventLogError when the write fails; then none of this call's records were
        acknowledged. Call `catch_up()` afterwards to receive other processes' records read meanwhile."""
        fresh, lines = [], []
        with self._cv:
            for r in records:
                eid = r.get("event_id")
                new = not eid or eid not in self._ids
                fresh.append(new)
                if new:
                    if eid:
                        self._ids.add(eid)
                    lines.append(_encode(r))
            self._queue.extend(lines)
            self._queued += 1
            ticket = self._queued  # duplicates wait too: the original may still be in the queue
            while self._durable < ticket:
                if self._flushing:
                    self._cv.wait()
                    continue
                self._flushing = True
                batch, upto, first = self._queue, self._queued, self._durable + 1
                self._queue = []
                self._cv.release()
                error, written, dropped, others = None, b"", set(), []
                try:
                    with self._flock(fcntl.LOCK_EX):
                        with self._cv:  # others' records first: their ids decide what is a duplicate
                            others = self._read_new()
                        taken = {r.get("event_id") for r in others} - {None}
                        keep = []
                        for line in batch:
                            eid = json.loads(line).get("event_id")
                            if eid in taken:
                                dropped.add(eid)
                            else:
                                keep.append(line)
                        written = b"".join(keep)
                        if written:
                            self._file.write(written)
                            os.fsync(self._file.fileno())
                            self._offset += len(written)
                            self._publish(self._offset)
                except OSError as e:
                    error = f"event log write failed: {e}"
                finally:
                    self._cv.acquire()
                self._flushing = False
                self._foreign.extend(others if not error else [])
                self._dropped |= dropped
                if error:
                    self._failed = [*self._failed[-99:], (first, upto, error)]
                    for line in batch:  # not written: their ids may be retried
                        self._ids.discard(json.loads(line).get("event_id"))
                self._durable = upto
                self._cv.notify_all()
            for first, last, reason in self._failed:
                if first <= ticket <= last:
                    raise EventLogError(reason)
            if self._dropped:
                for i, r in enumerate(records):
                    if fresh[i] and r.get("event_id") in self._dropped:
                        fresh[i] = False
                        self._dropped.discard(r.get("event_id"))
            self.records += sum(fresh)
        return fresh

    def control(self, record: dict[str, Any]) -> None:
        """Append a control record (e.g. a reload for every worker) durably."""
        with self._writer():
            with self._cv:
                self._foreign.extend(self._read_new())
            line = _encode(record)
            self._file.write(line)
            os.fsync(self._file.fileno())
            with self._cv:
                self._offset += len(line)
                self._publish(self._offset)
                self.records += 1

    def forget(self, user_id: str) -> int:
        """Remove every event of the user from the log and add a tombstone; returns how many were removed."""
        with self._writer():
            with self._cv:
                self._foreign.extend(self._read_new())
            kept, removed, gone = [], 0, []
            for record in self.replay():
                if record.get("user_id") == user_id and record.get("kind") is None:
                    removed += 1
                    gone.append(record.get("event_id"))
                elif not (record.get("kind") == "forget" and record.get("user_id") == user_id):
                    kept.append(record)
            kept.append({"kind": "forget", "user_id": user_id})
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                for record in kept:
                    f.write(_encode(record))
                f.flush()
                os.fsync(f.fileno())
            with self._cv:
                self._file.close()
                os.replace(tmp, self.path)
                _fsync_dir(self.folder)
                self._open()
                self._publish(self._offset)
                self._ids.difference_update(gone)
                self._forgotten.add(user_id)
                self._foreign = [r for r in self._foreign if r.get("user_id") != user_id]
                self.records = len(kept)
            return removed

    def close(self) -> None:
        with self._flock_mutex, self._cv:
            self._file.close()
            self._lockfile.close()
            os.close(self._commit)
