"""The log shipper: moves acknowledged events from a dataset's serving event log
(`<state_dir>/<dataset>/events.jsonl`, see eventlog.py) into the store's `events` table, each exactly once.

- Only acknowledged bytes: the shipper reads up to the durable length the server publishes in
  `events.jsonl.commit` (read before and after each read; the smaller wins), so a write not yet fsynced, or a
  torn last line left by a crash, is never shipped. Nothing ships until a server has published that length.
- Never blocks a request: it only opens the log read-only and `pread`s it; it takes no `flock` and writes
  nothing in the state folder. (It holds the store while a pass runs; `ship(follow=True)` opens the store
  for each pass only, so ingest and forget can use it in between.)
- Exactly once, resumable after a crash at any point: every batch (at most `batch_records` records,
  `batch_bytes` bytes, in file order) is inserted in one store transaction together with the checkpoint
  (`ship_checkpoints`: log path, inode, byte offset after the batch, a digest of the bytes before that
  offset, events shipped). Inserts are idempotent by (dataset, event_id) (`ON CONFLICT DO NOTHING`), so a
  batch replayed after a crash, or a whole log rescanned, adds nothing twice.
- A forget rewrites the log (a new inode; the user's events gone, a tombstone record of digests added).
  When the inode, the path or the bytes before the checkpoint offset differ from the checkpoint, the
  shipper rescans the new file from its start (idempotency makes that safe) and records the new inode.
- Forgotten users never stay in the store:
  * events of users in the tombstone registry (`settings.privacy_dir`) are skipped, checked once when the
    batch is read and again inside the batch's transaction, right before its rows are written;
  * after each commit, when the registry changed since the last check (and once per shipper), the rows of
    every tombstoned user are purged from the store (`data.forget.purge_forgotten`): a forget that ran
    while the shipper held the store found it locked ("pending") and relies on that;
  * a forget record in the log (`{"kind": "forget", "user": digest, "event_ids": [digests]}`) deletes
    the shipped events whose id digests it lists (digests under the log's `forget.key`), in the
    transaction of the batch that holds it; applied records are remembered in `ship_forgets`.
- Lag: what the server acknowledged but the store does not have yet: bytes and records (lines) between
  the checkpoint offset and the published durable length of the current log file.

Mapping: event_id, user_id (the keyed hash when ingest.hash_user_ids is on, as ingest writes it), item_id,
type, value, timestamp (`timestamp`, unix seconds, else `received`; naive UTC), session_id, query; seq,
review_text, summary and split NULL; extra {"rec_id", "received"}; run_id an ingest run of format
"serving-log" (status "shipped" when the shipper ends). A logged event without an event_id, or with fields
of the wrong type, is counted as unreadable and skipped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import struct
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from ..config import Settings
from ..data.forget import purge_forgotten
from ..data.schema import hash_user_id
from ..data.store import COLUMNS, Store, StoreError, open_store
from ..data.tombstones import Tombstones
from .eventlog import hmac_digest, parse_line
from .shared import log_url

log = logging.getLogger("shopmind.serving.shipper")

FORMAT = "serving-log"
TAIL = 256  # bytes before the checkpoint offset whose digest identifies the file the offset belongs to
COUNTERS = ("shipped", "duplicates", "skipped_forgotten", "skipped_unreadable", "controls", "forget_records",
            "forgotten_removed", "purged", "batches", "rescans")
_TYPES = {"value": pa.float64(), "seq": pa.int32(), "run_id": pa.int64(), "timestamp": pa.timestamp("us")}


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _utc(seconds: Any) -> datetime | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError("timestamp is not a number")
    return datetime.fromtimestamp(float(seconds), timezone.utc).replace(tzinfo=None)


class Shipper:
    """Ships one dataset's serving event log into `store` (see the module docstring).

    tombstones: the registry of forgotten users (None: only the log's own forget records are honoured).
    salt: ingest's user id salt when the store holds hashed user ids (`data.api.ingest_salt(settings)`).
    batch_records / batch_bytes: the most records / bytes one transaction takes.
    digest: how the log's forget records name event ids (default: the log folder's keyed HMAC, as the server).
    run_id: an ingest run of format "serving-log" to attribute rows to (None: one is started when needed).
    """

    def __init__(self, store: Store, state_dir: str | Path, dataset: str, tombstones: Tombstones | None = None, *,
                 salt: str | None = None, batch_records: int = 5000, batch_bytes: int = 4 << 20,
                 digest: Callable[[str], str] | None = None, run_id: int | None = None,
                 log_name: str = "events.jsonl") -> None:
        if batch_records < 1 or batch_bytes < 1:
            raise ValueError("batch_records and batch_bytes must be positive")
        self.store = store
        self.dataset = dataset
        self.folder = Path(state_dir) / dataset
        self.path = self.folder / log_name
        self.commit_path = self.folder / (log_name + ".commit")
        self.tombstones = tombstones
        self.salt = salt
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self._digest = digest
        self.run_id = run_id
        self._registry_seen: tuple[int, int, int] | None | str = "never"  # registry stat at the last purge
        self.totals: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    # -- the log -------------------------------------------------------------------------------------------
    def committed(self) -> int:
        """The durable length the server published (0 when it has published none)."""
        try:
            with open(self.commit_path, "rb") as f:
                raw = f.read(8)
        except FileNotFoundError:
            return 0
        return struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0

    def _inode(self) -> int | None:
        try:
            return os.stat(self.path).st_ino
        except FileNotFoundError:
            return None

    @staticmethod
    def _tail(fd: int, offset: int) -> str:
        start = max(0, offset - TAIL)
        return hashlib.sha256(os.pread(fd, offset - start, start)).hexdigest()

    def checkpoint(self) -> dict[str, Any] | None:
        cur = self.store.con.execute("SELECT * FROM ship_checkpoints WHERE dataset = ?", [self.dataset])
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row)) if row else None

    def lag(self) -> dict[str, Any]:
        """Acknowledged but not in the store: bytes and records (lines) between the checkpoint and the published
        durable length of the current log file (all of it when the checkpoint belongs to an older file)."""
        committed = self.committed()
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return {"lag_records": 0, "lag_bytes": 0, "offset": 0, "committed": committed, "log_inode": None}
        try:
            st = os.fstat(fd)
            end = min(committed, st.st_size)
            offset = self._resume_offset(fd, st, self.checkpoint()) or 0
            lines, pos = 0, offset
            while pos < end:
                chunk = os.pread(fd, min(8 << 20, end - pos), pos)
                if not chunk:
                    break
                lines += chunk.count(b"\n")
                pos += len(chunk)
            return {"lag_records": lines, "lag_bytes": max(0, end - offset), "offset": offset, "committed": committed,
                    "log_inode": st.st_ino}
        finally:
            os.close(fd)

    def _resume_offset(self, fd: int, st: os.stat_result, ck: dict[str, Any] | None) -> int | None:
        """The checkpoint offset when it belongs to this very file; None when the file must be (re)scanned."""
        if ck is None or ck["log_path"] != str(self.path) or ck["log_inode"] != st.st_ino or ck["log_offset"] > st.st_size:
            return None
        return int(ck["log_offset"]) if self._tail(fd, int(ck["log_offset"])) == ck["tail"] else None

    # -- shipping ------------------------------------------------------------------------------------------
    def ship_once(self, max_records: int | None = None) -> dict[str, Any]:
        """Ship what the server acknowledged (at most `max_records` log records; None: all of it as of now), in
        transactions of at most `batch_records` records. Returns this call's counts (shipped, duplicates,
        skipped_forgotten, skipped_unreadable, controls, forget_records, forgotten_removed, purged, batches,
        rescans) plus lag_records, lag_bytes, offset, committed, log_inode after it."""
        report: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
        self._purge_if_registry_changed(report)  # forgets that found the store locked while we held it
        budget = [max_records if max_records is not None else -1]
        for _ in range(5):  # a rewrite while we read: start again on the new file (a few times at most)
            if self._pass(report, budget):
                break
        report.update(self.lag())
        for k in COUNTERS:
            self.totals[k] += report[k]
        return report

    def _pass(self, report: dict[str, Any], budget: list[int]) -> bool:
        """Ship from the checkpoint on; False when the file was replaced meanwhile (call again)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return True
        try:
            st = os.fstat(fd)
            pos = self._resume_offset(fd, st, self.checkpoint())
            if pos is None:
                pos = 0
                if self.checkpoint() is not None:
                    report["rescans"] += 1
            want = self.batch_bytes
            while budget[0] != 0:
                c1 = self.committed()
                if self._inode() != st.st_ino:
                    return False
                if c1 <= pos:
                    return True
                size = min(want, c1 - pos)
                data = os.pread(fd, size, pos)
                c2 = self.committed()
                if self._inode() != st.st_ino:
                    return False
                if c2 < c1:  # c1 was the length of the file this one replaced: read again
                    continue
                end = data.rfind(b"\n") + 1
                if end == 0:
                    if len(data) == size and size < c1 - pos:
                        want *= 2  # one record longer than batch_bytes
                        continue
                    return True  # no complete line up to the published length (never happens with a server)
                want = self.batch_bytes
                lines, consumed = [], 0
                limit = self.batch_records if budget[0] < 0 else min(self.batch_records, budget[0])
                while consumed < end and len(lines) < limit:
                    nl = data.index(b"\n", consumed)
                    lines.append(data[consumed:nl])
                    consumed = nl + 1
                self._ship_batch(lines, (st.st_ino, pos + consumed, self._tail(fd, pos + consumed)), report)
                pos += consumed
                if budget[0] > 0:
                    budget[0] = max(0, budget[0] - len(lines))
            return True
        finally:
            os.close(fd)

    def _forgotten(self) -> Callable[[str], bool] | None:
        """A predicate on clear user ids: tombstoned in this dataset (as given, or as the store's hashed form)."""
        if self.tombstones is None:
            return None
        match = self.tombstones.matcher(self.dataset)
        if match is None or not self.salt:
            return match
        salt = self.salt
        return lambda uid: match(uid) or match(hash_user_id(uid, salt))

    def _ship_batch(self, lines: list[bytes], position: tuple[int, int, str], report: dict[str, Any]) -> None:
        """Ship these log lines and move the checkpoint to `position` (log inode, offset after them, digest of
        the bytes before it) in one store transaction."""
        inode, new_offset, tail = position
        rows: dict[str, dict[str, Any]] = {}  # event id -> row (first wins)
        users: dict[str, str] = {}  # event id -> clear user id
        forgets: list[tuple[str, dict[str, Any]]] = []
        counts = dict.fromkeys(COUNTERS, 0)
        match = self._forgotten()
        for line in lines:
            if not line.strip():
                continue
            record, _why = parse_line(line, ("user_id", "type"))
            if record is None:
                counts["skipped_unreadable"] += 1
                continue
            kind = record.get("kind")
            if kind == "forget":
                forgets.append((hashlib.sha256(line).hexdigest(), record))
                continue
            if kind is not None:
                counts["controls"] += 1
                continue
            try:
                row = self._row(record)
            except (ValueError, TypeError, OverflowError, OSError):
                counts["skipped_unreadable"] += 1
                continue
            if match is not None and match(record["user_id"]):
                counts["skipped_forgotten"] += 1
                continue
            if row["event_id"] in rows:
                counts["duplicates"] += 1
                continue
            rows[row["event_id"]] = row
            users[row["event_id"]] = record["user_id"]
        if rows and self.run_id is None:
            self.run_id = self.store.start_run(self.dataset, FORMAT, str(self.path), [{"path": str(self.path)}])
        con = self.store.con
        with self.store.transaction():
            # Again, as the last check before the rows are written: a forget may have landed since we read.
            match = self._forgotten()
            if match is not None:
                for eid in [e for e, uid in users.items() if match(uid)]:
                    del rows[eid]
                    counts["skipped_forgotten"] += 1
            if rows:
                for row in rows.values():
                    row["run_id"] = self.run_id
                written = self.store.write("events", self._table(list(rows.values())))
                counts["shipped"] += written["inserted"]
                counts["duplicates"] += written["unchanged"]
            for key, record in forgets:
                counts["forget_records"] += 1
                counts["forgotten_removed"] += self._apply_forget(key, record)
            ck = self.checkpoint()
            shipped = (ck["shipped"] if ck else 0) + counts["shipped"]
            con.execute("INSERT INTO ship_checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dataset) DO UPDATE SET "
                        "log_path = excluded.log_path, log_inode = excluded.log_inode, log_offset = excluded.log_offset, "
                        "tail = excluded.tail, shipped = excluded.shipped, run_id = excluded.run_id, "
                        "updated_at = excluded.updated_at",
                        [self.dataset, str(self.path), inode, new_offset, tail, shipped, self.run_id, _now()])
            if self.run_id is not None:
                done = self.totals["shipped"] + report["shipped"] + counts["shipped"]  # by this shipper
                self.store.progress_run(self.run_id, done, {"event": {"inserted": done}})
        counts["batches"] = 1
        for k, v in counts.items():
            report[k] += v
        self._purge_if_registry_changed(report)

    def _row(self, r: dict[str, Any]) -> dict[str, Any]:
        eid, uid, item = r.get("event_id"), r["user_id"], r.get("item_id")
        if not isinstance(eid, str) or not eid:
            raise ValueError("an event without an event_id")
        for v in (item, r.get("session_id"), r.get("query")):
            if v is not None and not isinstance(v, str):
                raise ValueError("an id or query that is not a string")
        value = r.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError("value is not a number")
        ts = r.get("timestamp")
        extra = {k: r[k] for k in ("rec_id", "received") if r.get(k) is not None}
        return {"dataset": self.dataset, "event_id": eid, "user_id": hash_user_id(uid, self.salt) if self.salt else uid,
                "item_id": item, "type": r["type"], "value": None if value is None else float(value),
                "timestamp": _utc(ts if ts is not None else r.get("received")), "seq": None,
                "session_id": r.get("session_id"), "query": r.get("query"), "review_text": None, "summary": None,
                "split": None, "extra": json.dumps(extra) if extra else None, "run_id": self.run_id}

    @staticmethod
    def _table(rows: list[dict[str, Any]]) -> pa.Table:
        return pa.table({c: pa.array([r[c] for r in rows], type=_TYPES.get(c, pa.string())) for c in COLUMNS["events"]})

    def _apply_forget(self, key: str, record: dict[str, Any]) -> int:
        """Delete the shipped events a forget record of the log lists (by id digest), once per record."""
        con = self.store.con
        if con.execute("SELECT 1 FROM ship_forgets WHERE dataset = ? AND record = ?", [self.dataset, key]).fetchall():
            return 0
        gone = set(record.get("event_ids") or ())
        removed = 0
        if gone:
            if self._digest is None:
                self._digest = self._default_digest()
            ids = [r[0] for r in con.execute(
                "SELECT event_id FROM events WHERE dataset = ? AND run_id IN "
                "(SELECT run_id FROM ingest_runs WHERE dataset = ? AND format = ?)",
                [self.dataset, self.dataset, FORMAT]).fetchall()]
            doomed = [e for e in ids if self._digest(e) in gone]
            if doomed:
                removed = con.execute("DELETE FROM events WHERE dataset = ? AND event_id = ANY(?)",
                                      [self.dataset, doomed]).fetchall()[0][0]
        con.execute("INSERT INTO ship_forgets VALUES (?, ?, ?, ?)", [self.dataset, key, removed, _now()])
        return int(removed)

    def _default_digest(self) -> Callable[[str], str]:
        return hmac_digest(self.folder)

    def _purge_if_registry_changed(self, report: dict[str, Any]) -> None:
        """Purge tombstoned users' rows (every table) when the registry changed since the last purge."""
        if self.tombstones is None:
            return
        try:
            st = os.stat(self.tombstones.path)
            seen: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            seen = None
        if seen == self._registry_seen:
            return
        if seen is not None:
            report["purged"] += sum(purge_forgotten(self.store, self.tombstones, self.dataset).values())
        self._registry_seen = seen

    def finish(self, status: str = "shipped", error: str | None = None) -> None:
        """Close this shipper's ingest run (if it started one)."""
        if self.run_id is not None:
            self.store.finish_run(self.run_id, status, {"event": {"inserted": self.totals["shipped"]}},
                                  self.totals["shipped"], None, error)

    def run(self, every_s: float, stop_event: threading.Event, max_records: int | None = None) -> dict[str, int]:
        """Ship, then wait `every_s` seconds, until `stop_event` is set; returns the totals. Keeps the store open
        (use `ship(follow=True)` to let other processes use the store between passes)."""
        while not stop_event.is_set():
            self.ship_once(max_records)
            if stop_event.wait(every_s):
                break
        return dict(self.totals)


class PgShipper(Shipper):
    """Ships the PostgreSQL serving log (serving/pglog.py) of `dataset` into the store in the same database: the
    checkpoint is the last shipped sequence number (sequence numbers are gapless and commit in order, so
    `seq > checkpoint` is exactly what is not shipped yet). Forget records and the tombstone registry are
    honoured as by the file shipper."""

    def __init__(self, store: Store, url: str, dataset: str, tombstones: Tombstones | None = None, **kwargs: Any) -> None:
        super().__init__(store, ".", dataset, tombstones, **kwargs)
        from .pglog import ensure_schema

        self.url = url
        self.path = f"postgresql:serving_log/{dataset}"  # type: ignore[assignment]  # the checkpoint's log name
        ensure_schema(store.con.conn)

    def _default_digest(self) -> Callable[[str], str]:
        from .pglog import shared_secret

        key = shared_secret(self.url, "forget")
        return lambda v: hmac.new(key, str(v).encode(), hashlib.sha256).hexdigest()

    def committed(self) -> int:
        row = self.store.con.execute("SELECT seq FROM serving_log_head WHERE dataset = ?", [self.dataset]).fetchone()
        return int(row[0]) if row else 0

    def _position(self) -> int:
        ck = self.checkpoint()
        return int(ck["log_offset"]) if ck and ck["log_path"] == str(self.path) else 0

    def lag(self) -> dict[str, Any]:
        pos, head = self._position(), self.committed()
        n, size = self.store.con.execute("SELECT count(*), coalesce(sum(length(record)), 0) FROM serving_log "
                                         "WHERE dataset = ? AND seq > ? AND seq <= ?", [self.dataset, pos, head]).fetchone()
        return {"lag_records": int(n), "lag_bytes": int(size), "offset": pos, "committed": head, "log_inode": 0}

    def _pass(self, report: dict[str, Any], budget: list[int]) -> bool:
        pos = self._position()
        while budget[0] != 0:
            head = self.committed()
            limit = self.batch_records if budget[0] < 0 else min(self.batch_records, budget[0])
            rows = self.store.con.execute("SELECT seq, record FROM serving_log WHERE dataset = ? AND seq > ? "
                                          "AND seq <= ? ORDER BY seq LIMIT ?", [self.dataset, pos, head, limit]).fetchall()
            if not rows:
                return True
            last = int(rows[-1][0])
            self._ship_batch([r[1].encode() for r in rows], (0, last, ""), report)
            pos = last
            if budget[0] > 0:
                budget[0] = max(0, budget[0] - len(rows))
        return True


def ship(settings: Settings, dataset: str, follow: bool = False, every_s: float = 1.0,
         stop: threading.Event | None = None, on_report: Callable[[dict[str, Any]], None] | None = None,
         batch_records: int = 5000) -> dict[str, Any]:
    """Ship `dataset`'s serving event log (settings.state_dir/<dataset>/events.jsonl) into the store
    (settings.store.path), honouring the tombstones in settings.privacy_dir and ingest.hash_user_ids. Once,
    or with `follow` every `every_s` seconds until `stop` is set (or Ctrl-C), opening the store for each pass
    only (a pass that finds it held by another process is reported with "store_busy" and retried).
    on_report gets each pass's report. Returns the totals plus the last lag, offset and the run id."""
    from ..data.api import ingest_salt

    salt = ingest_salt(settings)
    if settings.ingest.hash_user_ids and not salt:
        raise ValueError("ingest.hash_user_ids is on but no ingest.user_id_salt is set (set SHOPMIND_INGEST_USER_ID_SALT)")
    tombstones = Tombstones(settings.privacy_dir)
    stop = stop or threading.Event()
    last: dict[str, Any] = {}
    shipper: Shipper | None = None
    try:
        while True:
            try:
                with open_store(settings) as store:
                    if shipper is None:
                        url = log_url(settings)
                        shipper = PgShipper(store, url, dataset, tombstones, salt=salt, batch_records=batch_records) \
                            if url else Shipper(store, settings.state_dir, dataset, tombstones, salt=salt,
                                                batch_records=batch_records)
                    shipper.store = store  # the same shipper (run, registry state) over each pass's connection
                    report = shipper.ship_once()
                    if not follow:
                        shipper.finish()
            except StoreError as e:
                if not follow:
                    raise
                report = {"store_busy": str(e)}
            last = report
            if on_report is not None:
                on_report(report)
            if not follow or stop.wait(every_s):
                break
    except KeyboardInterrupt:
        pass
    run_id = shipper.run_id if shipper is not None else None
    totals: dict[str, Any] = dict(shipper.totals) if shipper is not None else dict.fromkeys(COUNTERS, 0)
    if follow and shipper is not None and run_id is not None:
        try:
            with open_store(settings) as store:
                shipper.store = store
                shipper.finish()
        except StoreError:
            log.warning("store busy: run %d stays 'running' (marked interrupted by the next run)", run_id)
    totals.update({k: last.get(k) for k in ("lag_records", "lag_bytes", "offset", "committed", "log_inode")})
    log_name = f"postgresql:serving_log/{dataset}" if log_url(settings) \
        else str(Path(settings.state_dir) / dataset / "events.jsonl")
    totals.update(dataset=dataset, run_id=run_id, log=log_name)
    return totals
