"""Fuzzing the readers with real files: whatever the corruption, every physical record is accounted for.

Bases (from SHOPMIND_DATA_DIR): a slice of Home Depot's `train.dev.csv` as published (latin-1, quoted titles
with "" escapes), an events CSV written with csv.writer from real Gift Cards reviews (review texts with
legitimate multi-line quoted fields), and the same reviews as JSONL. Hypothesis inserts stray quotes, deletes
and inserts bytes, cuts lines and the file, adds invalid UTF-8 and duplicates lines, then the file goes
through the real reader and the real ingest.

What "accounted for" means, precisely. A physical line is a run of bytes ended by b"\\n" (or the end of the
file), numbered from 1 as the rejects file numbers them. A record covers its first line plus, for an accepted
CSV row, one more line per newline inside its field values (the lines of a quoted multi-line field); a reject
covers its own line only. Then: (1) no line is covered twice; (2) every non-header line that no record covers
is blank (whitespace only); (3) the ingest's rows_read equals the number of records (rows plus rejects) and
inserted + updated + unchanged + rejected over all kinds equals rows_read. For JSONL every record is one line,
so the non-blank lines are exactly the lines of the rows and rejects. Nothing can vanish inside a reject.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopmind.data import readers
from shopmind.data.adapters import Mapping, open_adapter
from shopmind.data.ingest import Ingestor
from shopmind.data.readers import Reject, iter_csv, iter_jsonl
from shopmind.data.store import Store

pytestmark = pytest.mark.realdata

_REVIEWS = slice(300, 440)  # 140 Gift Cards reviews, five of them with multi-line texts, one with quotes


@lru_cache(maxsize=None)
def _bases(data_dir: Path) -> dict[str, tuple[bytes, Mapping]]:
    reviews = [json.loads(x) for x in gzip.open(data_dir / "amazon2018-giftcards" / "Gift_Cards_5.json.gz", "rt")]
    reviews = reviews[_REVIEWS]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["user_id", "item_id", "type", "value", "summary", "review_text"])
    for r in reviews:
        w.writerow([r["reviewerID"], r["asin"], "review", r["overall"], r.get("summary", ""), r.get("reviewText", "")])
    assert any("\n" in (r.get("reviewText") or "") for r in reviews)
    jsonl = "".join(json.dumps({**r, "type": "review"}) + "\n" for r in reviews)
    homedepot = b"".join((data_dir / "homedepot" / "train.dev.csv").read_bytes().splitlines(keepends=True)[:150])
    review_map = {"user_id": "reviewerID", "item_id": "asin", "value": "overall", "review_text": "reviewText"}
    return {
        "reviews.csv": (buf.getvalue().encode("utf-8"), Mapping(kind="events")),
        "homedepot.csv": (homedepot, Mapping(kind="judgments", encoding="latin-1", columns={
            "judgment_id": "id", "item_id": "product_uid", "query": "search_term", "grade": "relevance"})),
        "reviews.jsonl": (jsonl.encode("utf-8"), Mapping(kind="events", columns=review_map)),
    }


_JUNK = st.sampled_from([b'"', b'""', b',"', b'",', b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\r", b"\n",
                         b",", b"\t", b"   ", b"x", b'"\n"'])
_EDIT = st.tuples(st.sampled_from(["insert", "delete", "cut_line", "duplicate", "quote_field"]),
                  st.floats(0, 1, exclude_max=True), st.floats(0, 1, exclude_max=True), _JUNK,
                  st.integers(1, 40))


def _corrupt(data: bytes, edits: list[tuple[str, float, float, bytes, int]], truncate: float | None) -> bytes:
    """Apply the edits to the lines after the header (the header stays readable), then maybe cut the file."""
    header, _, body = data.partition(b"\n")
    lines = body.splitlines(keepends=True)
    for op, where, at, junk, n in edits:
        if not lines:
            break
        i = int(where * len(lines))
        line = lines[i]
        pos = int(at * (len(line) + 1))
        if op == "insert":
            lines[i] = line[:pos] + junk + line[pos:]
        elif op == "delete":
            lines[i] = line[:pos] + line[pos + n:]  # may delete the newline: two lines become one
        elif op == "cut_line":
            lines[i] = line[:pos] + b"\n"
        elif op == "duplicate":
            lines.insert(i, line)
        elif op == "quote_field":  # a quote at the start of a field opens a quoted field that may never close
            commas = [k + 1 for k, c in enumerate(line) if c == ord(",")] or [0]
            k = commas[int(at * len(commas))]
            lines[i] = line[:k] + b'"' + line[k:]
    out = header + b"\n" + b"".join(lines)
    if truncate is not None:
        out = out[: len(header) + 1 + int(truncate * (len(out) - len(header) - 1))]
    return out


def _physical_lines(data: bytes) -> list[bytes]:
    """Lines as the reader numbers them: split on b"\\n" only (a lone b"\\r" does not end a line)."""
    parts = data.split(b"\n")
    return [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _blank(line: bytes, encoding: str) -> bool:
    try:
        return not line.decode(encoding).strip()
    except UnicodeDecodeError:
        return False


def _check_csv_accounting(path: Path, data: bytes, mapping: Mapping) -> int:
    """Spans of rows and rejects from the real reader: disjoint, and covering every non-blank line."""
    lines = _physical_lines(data)
    covered: dict[int, str] = {1: "header"}
    records = 0
    for item in iter_csv(path, mapping.encoding, mapping.delimiter):
        records += 1
        if isinstance(item, Reject):
            assert item.line is not None
            span = [item.line]
        else:
            start, row = item
            span = list(range(start, start + sum(v.count("\n") for v in row.values()) + 1))
        for n in span:
            assert n not in covered, f"line {n} read twice ({covered[n]} and {item})"
            covered[n] = "reject" if isinstance(item, Reject) else "row"
    assert max(covered) <= len(lines)
    lost = [n for n in range(1, len(lines) + 1) if n not in covered and not _blank(lines[n - 1], mapping.encoding)]
    assert not lost, f"lines read by no record: {[(n, lines[n - 1][:80]) for n in lost]}"
    return records


def _check_jsonl_accounting(path: Path, data: bytes, mapping: Mapping) -> int:
    lines = _physical_lines(data)
    seen = [item.line if isinstance(item, Reject) else item[0] for item in iter_jsonl(path, mapping.encoding)]
    assert seen == [n for n in range(1, len(lines) + 1) if not _blank(lines[n - 1], mapping.encoding)]
    return len(seen)


def _check_ingest(path: Path, mapping: Mapping, records: int) -> None:
    with Store(path.parent / "s.duckdb") as store:
        report = Ingestor(store, "fuzz", rejects_dir=path.parent / "rej", allow_empty=True).run(
            open_adapter(path, "generic", mapping=mapping))
    assert report.rows_read == records
    assert sum(sum(c.values()) for c in report.counts.values()) == report.rows_read
    written = sum(1 for _ in open(report.rejects_file, encoding="utf-8")) if report.rejects_file else 0
    assert written == report.rejected


@pytest.mark.parametrize("base", ["reviews.csv", "homedepot.csv", "reviews.jsonl"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(edits=st.lists(_EDIT, min_size=1, max_size=8), truncate=st.none() | st.floats(0.5, 1),
       bound=st.sampled_from([4, readers.MAX_RECORD_LINES]))
def test_every_physical_record_is_accounted_for(data_dir: Path, base: str, edits: list, truncate: float | None,
                                                bound: int) -> None:
    raw, mapping = _bases(data_dir)[base]
    data = _corrupt(raw, edits, truncate)
    saved = readers.MAX_RECORD_LINES
    readers.MAX_RECORD_LINES = bound  # also exercise the line bound, not only the end of the file
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / base
            path.write_bytes(data)
            check = _check_jsonl_accounting if base.endswith(".jsonl") else _check_csv_accounting
            records = check(path, data, mapping)
            _check_ingest(path, mapping, records)
    finally:
        readers.MAX_RECORD_LINES = saved


def test_uncorrupted_bases_load_whole(data_dir: Path, tmp_path: Path) -> None:
    """The control: untouched, every base loads without a reject (multi-line reviews are one row each)."""
    for name, (raw, mapping) in _bases(data_dir).items():
        path = tmp_path / name
        path.write_bytes(raw)
        with Store(tmp_path / f"{name}.duckdb") as store:
            report = Ingestor(store, "base").run(open_adapter(path, "generic", mapping=mapping))
        assert report.rejected == 0, name
        assert report.rows_read == (149 if name == "homedepot.csv" else 140), name
