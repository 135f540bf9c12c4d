"""Ingest: validate an adapter's records, derive ids, and write them to the store chunk by chunk.

Guarantees: each chunk is one transaction (a crash leaves the store consistent; a rerun completes the
ingest); re-running the same input adds nothing (events have stable ids, other records are upserted by
id and content hash); every unusable row is kept aside in a rejects file with file, line and reason.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
from pydantic import ValidationError

from .adapters.base import Adapter, EmptyInputError
from .readers import Meter, Reject, Row, clip, file_sizes
from .schema import RECORD_MODELS, Event, Item, Judgment, User, hash_user_id, stable_hash
from .store import COLUMNS, Store

TABLE_OF = {"item": "items", "event": "events", "judgment": "judgments", "user": "users"}
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")

ProgressFn = Callable[[int, int, int], None]  # (bytes done, bytes total, rows read)


@dataclass
class IngestReport:
    """The outcome of one ingest run. Field names are stable: they are the `--json` output."""

    run_id: int
    dataset: str
    format: str
    source: str
    status: str
    rows_read: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    rejected: int = 0
    rejects_file: str | None = None
    forgotten: int = 0  # rows of forgotten users (tombstones) skipped: neither written nor kept as rejects
    seconds: float = 0.0
    rows_per_second: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_dataset_name(name: str) -> str:
    if not _DATASET_NAME.match(name):
        raise ValueError(f"invalid dataset name {name!r}: use letters, digits, '_', '.', '-' (max 64)")
    return name


def describe_validation_error(e: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in e.errors()[:limit]:
        loc = ".".join(str(x) for x in err["loc"]) or "record"
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {repr(got)[:80]})"
        parts.append(f"{loc}: {err['msg']}{shown}")
    more = len(e.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


class _Chunk:
    """Column buffers for one transaction."""

    def __init__(self) -> None:
        self.cols: dict[str, dict[str, list[Any]]] = {t: {c: [] for c in COLUMNS[t]} for t in COLUMNS}
        self.rejects: list[dict[str, Any]] = []
        self.size = 0

    def add(self, table: str, values: dict[str, Any]) -> None:
        cols = self.cols[table]
        for c, v in values.items():
            cols[c].append(v)
        self.size += 1


_JSON_COLS = {"attributes", "text_fields", "related", "extra"}
_TYPES = {"price": pa.float64(), "value": pa.float64(), "grade": pa.float64(), "seq": pa.int32(),
          "run_id": pa.int64(), "timestamp": pa.timestamp("us"), "categories": pa.list_(pa.string())}


def _arrow(cols: dict[str, list[Any]]) -> pa.Table:
    return pa.table({c: pa.array(v, type=_TYPES.get(c, pa.string())) for c, v in cols.items()})


class Ingestor:
    """Streams one adapter into the store under a dataset name."""

    def __init__(self, store: Store, dataset: str, *, chunk_size: int = 50_000, rejects_dir: Path | None = None,
                 user_id_salt: str | None = None, progress: ProgressFn | None = None,
                 forgotten: Callable[[str], bool] | None = None, allow_empty: bool = False) -> None:
        self.store = store
        self.allow_empty = allow_empty  # an input with no record at all is an error unless this is set
        self.dataset = check_dataset_name(dataset)
        self.chunk_size = chunk_size
        self.rejects_dir = Path(rejects_dir) if rejects_dir else None
        self.salt = user_id_salt
        self.progress = progress
        self.forgotten = forgotten  # tombstoned user ids (clear or as stored): their rows are skipped
        self.skipped = 0

    def run(self, adapter: Adapter, source: str | None = None, files: list[dict[str, Any]] | None = None) -> IngestReport:
        """Ingest everything the adapter yields. `files` (path, bytes, sha256) is recorded with the run."""
        paths = adapter.files()
        adapter.check()  # whole-file problems (a missing column) stop here, before the run is recorded
        meta = files or [{"path": str(p), "bytes": p.stat().st_size} for p in paths]
        run_id = self.store.start_run(self.dataset, adapter.format, source or str(adapter.path), meta)
        report = IngestReport(run_id, self.dataset, adapter.format, source or str(adapter.path), "running")
        counts: dict[str, Counter[str]] = {}
        rejects_path = None
        if self.rejects_dir is not None:
            self.rejects_dir.mkdir(parents=True, exist_ok=True)
            rejects_path = self.rejects_dir / f"{self.dataset}-run{run_id}.jsonl"
        meter = Meter(total=file_sizes(paths))
        seen: dict[str, dict[str, tuple[str, int, str]]] = {k: {} for k in RECORD_MODELS}
        occurrences: Counter[str] = Counter()
        chunk = _Chunk()
        t0 = time.perf_counter()
        rows_read = 0

        def reject(r: Reject, kind: str | None = None) -> None:
            chunk.rejects.append(r.to_json())
            counts.setdefault(kind or "unparsed", Counter())["rejected"] += 1

        def flush() -> None:
            nonlocal chunk
            with self.store.transaction():
                for table, cols in chunk.cols.items():
                    if cols["dataset"]:
                        for k, v in self.store.write(table, _arrow(cols)).items():
                            counts.setdefault(table.rstrip("s"), Counter())[k] += v
                self.store.write_rejects(run_id, self.dataset, chunk.rejects)
                self.store.progress_run(run_id, rows_read, self._counts(counts))
            if rejects_path is not None and chunk.rejects:
                with open(rejects_path, "a", encoding="utf-8") as f:
                    for r in chunk.rejects:
                        f.write(json.dumps(r, ensure_ascii=False) + "\n")
            chunk = _Chunk()

        status, error = "failed", None
        try:
            for rec in adapter.records(meter):
                rows_read += 1
                if isinstance(rec, Reject):
                    reject(rec)
                else:
                    self._accept(rec, chunk, seen, occurrences, reject, run_id)
                if chunk.size + len(chunk.rejects) >= self.chunk_size:
                    flush()
                if self.progress is not None and rows_read % 4096 == 0:
                    self.progress(meter.done, meter.total, rows_read)
            if rows_read == 0 and not self.allow_empty:
                raise EmptyInputError(f"{source or adapter.path}: no records to ingest (empty, or only a header or "
                                      "blank lines); pass --allow-empty to accept an empty input")
            flush()
            status = "completed_with_rejects" if any(c["rejected"] for c in counts.values()) else "completed"
        except KeyboardInterrupt:
            status, error = "interrupted", "interrupted by the user"
            raise
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            if self.progress is not None:
                self.progress(meter.total, meter.total, rows_read)
            report.seconds = round(time.perf_counter() - t0, 3)
            report.status, report.rows_read = status, rows_read
            report.counts = self._counts(counts)
            report.rejected = sum(c.get("rejected", 0) for c in report.counts.values())
            report.forgotten = self.skipped
            report.rows_per_second = round(rows_read / report.seconds, 1) if report.seconds else 0.0
            report.rejects_file = str(rejects_path) if rejects_path and report.rejected else None
            self.store.finish_run(run_id, status, report.counts, rows_read, report.rejects_file, error)
        return report

    @staticmethod
    def _counts(counts: dict[str, Counter[str]]) -> dict[str, dict[str, int]]:
        keys = ("inserted", "updated", "unchanged", "rejected")
        return {kind: {k: int(c.get(k, 0)) for k in keys} for kind, c in sorted(counts.items())}

    def _accept(self, row: Row, chunk: _Chunk, seen: dict[str, dict[str, tuple[str, int, str]]],
                occurrences: Counter[str], reject: Callable[[Reject, str | None], None], run_id: int) -> None:
        kind = row.kind
        if self._is_forgotten(row.data.get("user_id") if kind in ("event", "user") else None):
            return
        model = RECORD_MODELS[kind]
        try:
            rec = model.model_validate(row.data)
        except ValidationError as e:
            reject(Reject(row.file, row.line, describe_validation_error(e), clip(json.dumps(row.data, default=str))),
                   kind)
            return
        if self.salt and isinstance(rec, (Event, User)):
            rec.user_id = hash_user_id(rec.user_id, self.salt)
            if self._is_forgotten(rec.user_id):
                return
        ds = self.dataset
        if isinstance(rec, Event):
            key = rec.event_id
            if key is None:
                # Derived id: content plus the occurrence number of that content in this input, so
                # identical rows published twice stay two events and a rerun maps them to the same ids.
                base = stable_hash(rec.user_id, rec.item_id, rec.type.value, rec.value, rec.timestamp, rec.seq,
                                   rec.session_id, rec.query, rec.summary, rec.review_text)
                n = occurrences[base]
                occurrences[base] = n + 1
                key = base if n == 0 else stable_hash(base, n)
            elif self._duplicate(seen["event"], key, row, "", kind, reject):
                return
            chunk.add("events", {
                "dataset": ds, "event_id": key, "user_id": rec.user_id, "item_id": rec.item_id, "type": rec.type.value,
                "value": rec.value, "timestamp": rec.timestamp, "seq": rec.seq, "session_id": rec.session_id,
                "query": rec.query, "review_text": rec.review_text, "summary": rec.summary, "split": rec.split,
                "extra": json.dumps(rec.extra, ensure_ascii=False, default=str) if rec.extra else None,
                "run_id": run_id})
            return
        digest = stable_hash(rec.model_dump_json().encode("utf-8"), size=16)
        if isinstance(rec, Item):
            if self._duplicate(seen[kind], rec.item_id, row, digest, kind, reject):
                return
            chunk.add("items", {
                "dataset": ds, "item_id": rec.item_id, "title": rec.title, "description": rec.description,
                "brand": rec.brand, "categories": rec.categories, "price": rec.price,
                "attributes": json.dumps(rec.attributes, ensure_ascii=False),
                "image_url": rec.image_url, "text_fields": json.dumps(rec.text_fields, ensure_ascii=False),
                "related": json.dumps(rec.related, ensure_ascii=False), "content_hash": digest, "run_id": run_id})
        elif isinstance(rec, Judgment):
            jid = rec.judgment_id or stable_hash(rec.query, rec.item_id)
            if self._duplicate(seen[kind], jid, row, digest, kind, reject):
                return
            chunk.add("judgments", {"dataset": ds, "judgment_id": jid, "query": rec.query, "item_id": rec.item_id,
                                    "grade": rec.grade, "content_hash": digest, "run_id": run_id})
        elif isinstance(rec, User):
            if self._duplicate(seen[kind], rec.user_id, row, digest, kind, reject):
                return
            chunk.add("users", {"dataset": ds, "user_id": rec.user_id,
                                "attributes": json.dumps(rec.attributes, ensure_ascii=False),
                                "content_hash": digest, "run_id": run_id})

    def _is_forgotten(self, user_id: Any) -> bool:
        """Whether a row's user is tombstoned (then it is counted and dropped, its raw text kept nowhere)."""
        if self.forgotten is None or user_id is None or not self.forgotten(str(user_id)):
            return False
        self.skipped += 1
        return True

    @staticmethod
    def _duplicate(seen: dict[str, tuple[str, int, str]], key: str, row: Row, digest: str, kind: str,
                   reject: Callable[[Reject, str | None], None]) -> bool:
        """Within one input an id may appear once; later rows with the same id are rejected (first wins)."""
        first = seen.get(key)
        if first is None:
            seen[key] = (row.file, row.line, digest)
            return False
        same = "an identical copy of" if first[2] == digest and digest else "a conflicting duplicate of"
        reject(Reject(row.file, row.line, f"duplicate {kind}_id {key!r}: {same} {Path(first[0]).name} line {first[1]}",
                      clip(json.dumps(row.data, default=str))), kind)
        return True
