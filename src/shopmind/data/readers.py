"""Streaming file readers that keep line numbers and turn bad input into rejects instead of crashes.

Every reader yields `(line, value)` pairs or `Reject`s. Lines are read as bytes and decoded one at a
time, so a single undecodable line is rejected rather than failing the file; gzip is detected by its
magic bytes, and a truncated gzip stream becomes one reject at the point where the data ends.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

MAX_RAW = 500  # characters of a rejected line kept in the rejects file
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(slots=True)
class Row:
    """A parsed record on its way to validation: kind is item, event, judgment or user."""

    kind: str
    file: str
    line: int
    data: dict[str, Any]


@dataclass(slots=True)
class Reject:
    """A record that cannot be used, with where it came from and why."""

    file: str
    line: int | None
    reason: str
    raw: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "reason": self.reason, "raw": self.raw}


Record = Row | Reject


@dataclass
class Meter:
    """Bytes consumed so far across the files of one ingest (drives progress bars)."""

    total: int = 0
    done: int = 0
    _base: int = field(default=0, repr=False)

    def start_file(self) -> None:
        self._base = self.done

    def at(self, pos: int) -> None:
        self.done = self._base + pos


def check_encoding(encoding: str) -> str:
    """Return the canonical codec name, or raise ValueError naming the unknown encoding."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r} (try utf-8 or latin-1)") from None


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def clip(text: str | bytes | None) -> str | None:
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    text = text.rstrip("\r\n")
    return text if len(text) <= MAX_RAW else text[:MAX_RAW] + "…"


def iter_lines(path: Path, encoding: str = "utf-8", meter: Meter | None = None) -> Iterator[tuple[int, str] | Reject]:
    """Decoded lines with 1-based numbers (line endings kept). Bad bytes or a truncated gzip -> Reject."""
    encoding = check_encoding(encoding)
    name = str(path)
    raw = open(path, "rb")
    gz = raw.read(2) == _GZIP_MAGIC
    raw.seek(0)
    stream: IO[bytes] = gzip.GzipFile(fileobj=raw) if gz else raw
    if meter is not None:
        meter.start_file()
    n = 0
    try:
        while True:
            try:
                b = stream.readline()
            except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
                yield Reject(name, n + 1, f"truncated or corrupt gzip stream after line {n}: {e}")
                return
            if not b:
                return
            n += 1
            if meter is not None and n % 512 == 0:
                meter.at(raw.tell())
            try:
                text = b.decode(encoding)
            except UnicodeDecodeError as e:
                yield Reject(name, n, f"not valid {encoding} ({e.reason} at byte {e.start}); "
                                      "pass the file's encoding, e.g. --encoding latin-1", clip(b))
                continue
            if n == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield n, text
    finally:
        if meter is not None:
            meter.at(path.stat().st_size)
        stream.close()
        raw.close()


def iter_csv(path: Path, encoding: str = "utf-8", delimiter: str = ",", meter: Meter | None = None,
             fieldnames: list[str] | None = None) -> Iterator[tuple[int, dict[str, str]] | Reject]:
    """CSV rows as dicts keyed by the header (or `fieldnames`), with the line each record starts on."""
    name = str(path)
    pending: list[Reject] = []
    state = {"line": 0, "start": 0, "fresh": True}

    def lines() -> Iterator[str]:
        for item in iter_lines(path, encoding, meter):
            if isinstance(item, Reject):
                pending.append(item)
                continue
            state["line"] = item[0]
            if state["fresh"]:  # first physical line of the next record
                state["start"], state["fresh"] = item[0], False
            yield item[1]

    reader = csv.reader(lines(), delimiter=delimiter)
    header = fieldnames
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            pending.append(Reject(name, state["start"], f"malformed CSV: {e}"))
            cells = None
        state["fresh"] = True
        yield from pending
        pending.clear()
        if cells is None:
            continue
        start = state["start"]
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        if header is None:
            header = [c.strip() for c in cells]
            if len(set(header)) != len(header):
                yield Reject(name, start, f"duplicate column names in header: {header}")
                return
            continue
        if len(cells) != len(header):
            yield Reject(name, start, f"expected {len(header)} fields as in the header, got {len(cells)}",
                         clip(delimiter.join(cells)))
            continue
        yield start, dict(zip(header, cells))
    yield from pending


def iter_jsonl(path: Path, encoding: str = "utf-8", meter: Meter | None = None,
               literal_fallback: bool = False) -> Iterator[tuple[int, dict[str, Any]] | Reject]:
    """One JSON object per line. `literal_fallback` also accepts Python dict literals (Amazon 2014)."""
    import ast

    name = str(path)
    for item in iter_lines(path, encoding, meter):
        if isinstance(item, Reject):
            yield item
            continue
        n, text = item
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            obj = None
            if literal_fallback and text.lstrip().startswith("{"):
                try:
                    obj = ast.literal_eval(text.strip())
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    obj = None
            if obj is None:
                yield Reject(name, n, f"invalid JSON: {e.msg} at column {e.colno}", clip(text))
                continue
        if not isinstance(obj, dict):
            yield Reject(name, n, f"expected a JSON object, got {type(obj).__name__}", clip(text))
            continue
        yield n, obj


def iter_parquet(path: Path, meter: Meter | None = None,
                 batch_size: int = 65_536) -> Iterator[tuple[int, dict[str, Any]] | Reject]:
    """Parquet rows (row number as the line), read batch by batch so large files stream."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        yield Reject(str(path), None, f"cannot read Parquet file: {e}")
        return
    size = path.stat().st_size
    rows_total = max(pf.metadata.num_rows, 1)
    if meter is not None:
        meter.start_file()
    n = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_size):
            for rec in batch.to_pylist():
                n += 1
                yield n, rec
            if meter is not None:
                meter.at(int(size * n / rows_total))
    except Exception as e:
        yield Reject(str(path), n + 1, f"corrupt Parquet data after row {n}: {e}")


def iter_delimited(path: Path, sep: str, encoding: str = "utf-8", meter: Meter | None = None,
                   min_fields: int = 1) -> Iterator[tuple[int, list[str]] | Reject]:
    """Lines split on a plain separator (no quoting), e.g. MovieLens' u.data and u.item."""
    for item in iter_lines(path, encoding, meter):
        if isinstance(item, Reject):
            yield item
            continue
        n, text = item
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        parts = text.split(sep)
        if len(parts) < min_fields:
            yield Reject(str(path), n, f"expected at least {min_fields} fields separated by {sep!r}, got {len(parts)}",
                         clip(text))
            continue
        yield n, parts


def file_sizes(paths: Iterable[Path]) -> int:
    return sum(p.stat().st_size for p in paths)
