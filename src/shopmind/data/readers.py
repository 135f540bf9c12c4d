"""Streaming file readers that keep line numbers and turn bad input into rejects instead of crashes.

Every reader yields `(line, value)` pairs or `Reject`s. Lines are read as bytes and decoded one at a
time, so a single undecodable line is rejected rather than failing the file; gzip is detected by its
magic bytes, and a truncated gzip stream becomes one reject at the point where the data ends. Encodings
that are not ASCII-compatible (UTF-16, UTF-32) are decoded incrementally instead; a byte-order mark that
contradicts the encoding asked for stops the file with an error naming the encoding to pass.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import json
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from ..errors import ShopmindError

# Characters of a rejected record kept in the rejects file; longer text is cut and ends with "…".
MAX_RAW = 10_000
# Physical lines one quoted CSV record may span. A record still inside quotes after this many lines (or
# at the end of the file) is an unclosed quote: its first line is rejected and reading resumes on the next.
MAX_RECORD_LINES = 1_000
_GZIP_MAGIC = b"\x1f\x8b"
# Byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32", "UTF-32 LE"), (codecs.BOM_UTF32_BE, "utf-32", "UTF-32 BE"),
         (codecs.BOM_UTF8, "utf-8", "UTF-8"), (codecs.BOM_UTF16_LE, "utf-16", "UTF-16 LE"),
         (codecs.BOM_UTF16_BE, "utf-16", "UTF-16 BE"))
_BAD = "\udfff"  # stands for undecodable bytes on the incremental path (a lone surrogate never decodes)
codecs.register_error("shopmind-mark", lambda e: (_BAD, e.end))  # type: ignore[arg-type, return-value]


class UnreadableFileError(ShopmindError, ValueError):
    """A whole file cannot be read as asked (wrong encoding for its byte-order mark, unreadable header)."""


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


def ascii_compatible(encoding: str) -> bool:
    """Whether `encoding` writes ASCII as single bytes (so lines can be split on b"\\n" before decoding)."""
    probe = "\n\r,;\t\"az09"
    try:
        return probe.encode(encoding) == probe.encode("ascii")
    except UnicodeError:
        return False


def _family(encoding: str) -> str:
    return "utf-32" if encoding.startswith("utf-32") else "utf-16" if encoding.startswith("utf-16") else encoding


def _check_head(name: str, head: bytes, encoding: str) -> str:
    """The encoding to decode with, given the file's first bytes; UnreadableFileError when they contradict it."""
    for bom, family, label in _BOMS:
        if head.startswith(bom):
            if family == "utf-8":
                if encoding not in ("utf-8", "utf-8-sig"):
                    raise UnreadableFileError(f"{name} starts with a UTF-8 byte-order mark, so it is not {encoding}; "
                                              "pass --encoding utf-8")
                return encoding
            if _family(encoding) != family:
                raise UnreadableFileError(f"{name} starts with a {label} byte-order mark, so it is not {encoding}; "
                                          f"pass --encoding {family}")
            return family  # the BOM tells the byte order; the codec reads and drops it
    if ascii_compatible(encoding) and len(head) >= 4:
        even, odd = head[0::2].count(0), head[1::2].count(0)
        if (even == 0) != (odd == 0) and max(even, odd) * 2 >= len(head) // 2:
            order = "le" if odd else "be"
            raise UnreadableFileError(f"{name} looks like UTF-16 without a byte-order mark (every other byte is 0), "
                                      f"not {encoding}; pass --encoding utf-16-{order}")
    return encoding


def iter_lines(path: Path, encoding: str = "utf-8", meter: Meter | None = None) -> Iterator[tuple[int, str] | Reject]:
    """Decoded lines with 1-based numbers (line endings kept). Bad bytes or a truncated gzip -> Reject.

    Raises UnreadableFileError when a byte-order mark (or a UTF-16 byte pattern) contradicts `encoding`."""
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
        try:
            head = stream.peek(64)[:64]  # type: ignore[attr-defined]
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
            yield Reject(name, 1, f"truncated or corrupt gzip stream after line 0: {e}")
            return
        encoding = _check_head(name, head, encoding)
        if not ascii_compatible(encoding):
            yield from _iter_decoded(name, raw, stream, encoding, meter)
            return
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


def _iter_decoded(name: str, raw: IO[bytes], stream: IO[bytes], encoding: str,
                  meter: Meter | None) -> Iterator[tuple[int, str] | Reject]:
    """Lines of a file in an encoding that is not ASCII-compatible (UTF-16/32), decoded incrementally.

    Splitting bytes on b"\\n" would cut UTF-16 characters in half, so the text is decoded first and split
    on "\\n" after; a line holding undecodable bytes is rejected on its own, the rest still load."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="shopmind-mark")
    n, buf, done = 0, "", False
    while not done:
        try:
            chunk = stream.read(1 << 16)
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
            yield Reject(name, n + 1, f"truncated or corrupt gzip stream after line {n}: {e}")
            return
        done = not chunk
        buf += decoder.decode(chunk, final=done)
        parts = buf.split("\n")
        buf = parts.pop()  # the text after the last newline: the start of the next line
        lines = [part + "\n" for part in parts]
        if done and buf:
            lines.append(buf)  # a last line without a newline
        for text in lines:
            n += 1
            if n == 1 and text.startswith("\ufeff"):
                text = text[1:]
            if _BAD in text:
                yield Reject(name, n, f"not valid {encoding}; pass the file's encoding, e.g. --encoding utf-16",
                             clip(text.replace(_BAD, "\ufffd")))
                continue
            yield n, text
        if meter is not None:
            meter.at(raw.tell())


class _RecordFailed(Exception):
    """Raised from inside the line feed to stop csv.reader on the current record."""

    def __init__(self, reason: str, reject: Reject | None = None) -> None:
        super().__init__(reason)
        self.reason, self.reject = reason, reject


def _csv_records(path: Path, encoding: str, delimiter: str, meter: Meter | None,
                 width: list[int]) -> Iterator[tuple[int, str, list[str]] | Reject]:
    """CSV records as (first line, raw text, cells), each failed record a Reject on its first line only.

    The stdlib csv module parses the fields; only the resynchronisation is written here, because csv.reader
    has no way back: once a stray quote opens a field it reads on (to the end of the file) and returns
    everything as one record. So the lines go through a feed that counts the lines of the current record
    and stops the reader with an exception when the record runs past MAX_RECORD_LINES, reaches the end of
    the file inside quotes, or meets an undecodable line. The record's first line is then rejected and the
    lines after it are parsed again from a fresh reader. `width` holds the header's field count once known:
    a record spanning several lines with another field count is treated as a broken quote in the same way.
    """
    name = str(path)
    source = iter_lines(path, encoding, meter)
    replay: deque[tuple[int, str] | Reject] = deque()  # lines to read again after a failed record
    taken: list[tuple[int, str]] = []  # the physical lines of the record being parsed

    def feed() -> Iterator[str]:
        while True:
            if len(taken) >= MAX_RECORD_LINES:
                raise _RecordFailed(f"unclosed quote: the record is still inside quotes after {MAX_RECORD_LINES} "
                                    "lines")
            item = replay.popleft() if replay else next(source, None)
            if item is None:
                if taken:
                    raise _RecordFailed("unclosed quote: the file ends inside a quoted field")
                return
            if isinstance(item, Reject):
                raise _RecordFailed(f"line {item.line} inside the record cannot be read ({item.reason})", item)
            taken.append(item)
            yield item[1]

    try:
        while True:
            reader = csv.reader(feed(), delimiter=delimiter)
            try:
                for cells in reader:
                    first, text = taken[0]
                    if len(taken) > 1:
                        text = "".join(t for _, t in taken)
                        if width and len(cells) != width[0]:
                            raise _RecordFailed(f"a quoted field runs over {len(taken)} lines and gives {len(cells)} "
                                                f"fields instead of {width[0]}: probably an unclosed quote")
                    taken.clear()
                    yield first, text, cells
                return
            except (_RecordFailed, csv.Error) as e:
                bad = e.reject if isinstance(e, _RecordFailed) else None
                if not taken:  # an undecodable line where a record would start: it is its own reject
                    assert bad is not None
                    yield bad
                    continue
                reason = e.reason if isinstance(e, _RecordFailed) else f"malformed CSV: {e}"
                (first, text), rest = taken[0], taken[1:]
                taken.clear()
                replay.extendleft(reversed([*rest, *([bad] if bad else [])]))
                if rest:
                    reason += f"; only line {first} is rejected, reading resumes on line {first + 1}"
                yield Reject(name, first, reason, clip(text))
    finally:
        source.close()  # type: ignore[attr-defined]


def iter_csv(path: Path, encoding: str = "utf-8", delimiter: str = ",", meter: Meter | None = None,
             fieldnames: list[str] | None = None,
             header_out: list[str] | None = None) -> Iterator[tuple[int, dict[str, str]] | Reject]:
    """CSV rows as dicts keyed by the header (or `fieldnames`), with the line each record starts on.

    Every non-blank record is a row or a Reject; a broken record costs that record alone (see _csv_records).
    `header_out`, when given, receives the header as soon as it is read. A header that cannot be read or
    repeats a column name raises UnreadableFileError (no row of the file could be trusted)."""
    name = str(path)
    header = fieldnames
    width: list[int] = [len(header)] if header else []
    if header is not None and header_out is not None:
        header_out[:] = header
    for item in _csv_records(path, encoding, delimiter, meter, width):
        if isinstance(item, Reject):
            if header is None:
                raise UnreadableFileError(f"{name}: cannot read the CSV header on line {item.line}: {item.reason}")
            yield item
            continue
        start, text, cells = item
        if not text.strip():
            continue  # a blank line
        if header is None:
            header = [c.strip() for c in cells]
            if len(set(header)) != len(header):
                dup = sorted({c for c in header if header.count(c) > 1})
                raise UnreadableFileError(f"{name}: duplicate column names in the header: {', '.join(dup)}")
            width.append(len(header))
            if header_out is not None:
                header_out[:] = header
            continue
        if len(cells) != len(header):
            yield Reject(name, start, f"expected {len(header)} fields as in the header, got {len(cells)}", clip(text))
            continue
        yield start, dict(zip(header, cells))


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
