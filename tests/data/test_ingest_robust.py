"""Ingest never loses a row silently (issue 13): broken quotes, empty inputs, missing columns, UTF-16/32."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from shopmind.cli import app
from shopmind.data import readers
from shopmind.data.adapters import Mapping, open_adapter
from shopmind.data.adapters.base import EmptyInputError, MissingColumnError
from shopmind.data.ingest import Ingestor
from shopmind.data.readers import UnreadableFileError, iter_csv
from shopmind.data.store import Store

runner = CliRunner()


def _cli(store: Path, *args: str):
    return runner.invoke(app, ["--store", str(store), *args], env={"SHOPMIND_CONFIG": ""})


def _ingest(tmp_path: Path, path: Path, mapping: Mapping, **kw):
    with Store(tmp_path / "s.duckdb") as store:
        report = Ingestor(store, "t", rejects_dir=tmp_path / "rej", **kw).run(open_adapter(path, "generic", mapping=mapping))
        return report, store.stats("t")


def _rejects(report) -> list[dict]:
    if not report.rejects_file:
        return []
    return [json.loads(line) for line in Path(report.rejects_file).read_text().splitlines()]


def _assert_one_line_error(r, *needles: str) -> None:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _events_csv(n_lines: int, broken: dict[int, str] | None = None) -> str:
    """An events CSV of n_lines physical lines (header included); `broken` replaces given lines."""
    lines = ["user_id,item_id,type"] + [f"u{i},i{i},view" for i in range(2, n_lines + 1)]
    for line, text in (broken or {}).items():
        lines[line - 1] = text
    return "\n".join(lines) + "\n"


def _store_is_empty(store_path: Path, dataset: str) -> None:
    with Store(store_path, read_only=True) as store:
        assert store.runs(dataset) == []
        for table in ("events", "items", "rejects"):
            assert store.con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0


# 1. A broken quote costs that record alone ---------------------------------------------------------------------


def test_unclosed_quote_rejects_its_own_line_and_keeps_the_rest(tmp_path: Path) -> None:
    """Before: rows_read=500, one reject whose raw text swallowed lines 502-600. After: 599 = 598 rows + 1 reject."""
    f = tmp_path / "ev.csv"
    f.write_text(_events_csv(600, {501: 'u501,"i501,view'}))
    report, stats = _ingest(tmp_path, f, Mapping(kind="events"))
    assert report.rows_read == 599 and report.rejected == 1
    assert stats["events"] == 598
    (rej,) = _rejects(report)
    assert rej["line"] == 501 and "unclosed quote" in rej["reason"] and "line 502" in rej["reason"]
    assert rej["raw"] == 'u501,"i501,view'


def test_unclosed_quote_bounded_by_max_record_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stray quote closed by another 30 lines later would make one 3-field record of 31 lines; the bound cuts it."""
    monkeypatch.setattr(readers, "MAX_RECORD_LINES", 10)
    f = tmp_path / "ev.csv"
    f.write_text(_events_csv(100, {3: 'u3,"i3,view', 33: 'u33,i33",view'}))
    out = list(iter_csv(f))
    rejects = [r for r in out if isinstance(r, readers.Reject)]
    assert [r.line for r in rejects] == [3]
    assert "after 10 lines" in rejects[0].reason
    rows = [r for r in out if not isinstance(r, readers.Reject)]
    assert len(rows) == 98 and rows[30] == (33, {"user_id": "u33", "item_id": 'i33"', "type": "view"})


def test_quote_closing_lines_later_with_wrong_field_count_resyncs(tmp_path: Path) -> None:
    """Within the bound, a multi-line record with another field count than the header is a broken quote too."""
    f = tmp_path / "ev.csv"
    f.write_text(_events_csv(40, {5: 'u5,"i5,view', 9: 'u9,i9,"view'}))
    out = list(iter_csv(f))
    assert [r.line for r in out if isinstance(r, readers.Reject)] == [5, 9]
    assert len(out) == 39  # every data line: 37 rows + 2 rejects


def test_legit_multiline_quoted_field_is_still_one_row(tmp_path: Path) -> None:
    f = tmp_path / "items.csv"
    f.write_text('item_id,title,description\na1,Drill,"Line one\nline two, with a comma\n\nline four"\na2,Saw,plain\n')
    rows = list(iter_csv(f))
    assert rows == [(2, {"item_id": "a1", "title": "Drill", "description": "Line one\nline two, with a comma\n\nline four"}),
                    (6, {"item_id": "a2", "title": "Saw", "description": "plain"})]


def test_undecodable_line_inside_a_quoted_record(tmp_path: Path) -> None:
    """A bad byte in a continuation line: the record's first line and the bad line are rejected, others re-read."""
    f = tmp_path / "items.csv"
    f.write_bytes(b'item_id,title\na1,"two\nlines"\na2,"caf\xe9\nmore"\na3,ok\n')
    out = list(iter_csv(f))
    assert [(r.line, "not valid utf-8" in r.reason) for r in out if isinstance(r, readers.Reject)] == [
        (4, True), (5, False)]
    assert [r[0] for r in out if not isinstance(r, readers.Reject)] == [2, 6]


def test_reject_raw_text_kept_whole_up_to_max_raw(tmp_path: Path) -> None:
    long_title, huge_title = "x" * 5_000, "y" * (readers.MAX_RAW + 50)
    f = tmp_path / "ev.csv"
    f.write_text(_events_csv(6, {3: f'u3,"{long_title},view', 5: f"u5,{huge_title}"}))
    rejects = {r.line: r for r in iter_csv(f) if isinstance(r, readers.Reject)}
    assert rejects[3].raw == f'u3,"{long_title},view'
    assert rejects[5].raw is not None and len(rejects[5].raw) == readers.MAX_RAW + 1 and rejects[5].raw.endswith("…")


def test_unclosed_quote_in_real_homedepot_products_via_cli(tmp_path: Path, data_dir: Path) -> None:
    """2,000 real products with a quote opened and never closed on line 1,201: one reject, 1,998 items."""
    lines = (data_dir / "homedepot" / "products.csv").read_text("utf-8").splitlines(keepends=True)[:2001]
    uid, title = lines[1200].rstrip("\n").split(",", 1)
    lines[1200] = f'{uid},"{title.replace(chr(34), "")}\n'
    f = tmp_path / "products_slice.csv"
    f.write_text("".join(lines), "utf-8")
    r = _cli(tmp_path / "s.duckdb", "ingest", str(f), "--kind", "items", "--map", "item_id=product_uid",
             "--map", "title=product_title", "--json")
    assert r.exit_code == 0, r.output
    run = json.loads(r.stdout)["runs"][0]
    assert run["rows_read"] == 2000 and run["rejected"] == 1 and run["counts"]["item"]["inserted"] == 1999
    (rej,) = [json.loads(x) for x in Path(run["rejects_file"]).read_text().splitlines()]
    assert rej["line"] == 1201 and rej["raw"].startswith(f'{uid},"')


# 2. Empty input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"user_id,item_id,type\n", b"\n\n  \n", b"user_id,item_id,type\n\n\n"],
                         ids=["zero-bytes", "header-only", "blank-lines", "header-and-blanks"])
def test_empty_input_is_an_error_unless_allowed(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "ev.csv"
    f.write_bytes(content)
    store = tmp_path / "s.duckdb"
    r = _cli(store, "ingest", str(f), "--kind", "events")
    _assert_one_line_error(r, "no records to ingest", "--allow-empty", str(f))
    ok = _cli(store, "ingest", str(f), "--kind", "events", "--allow-empty", "--json")
    assert ok.exit_code == 0, ok.output
    run = json.loads(ok.stdout)["runs"][0]
    assert run["status"] == "completed" and run["rows_read"] == 0


def test_empty_jsonl_and_api_level(tmp_path: Path) -> None:
    f = tmp_path / "ev.jsonl"
    f.write_text("\n\n")
    with pytest.raises(EmptyInputError, match="no records"):
        _ingest(tmp_path, f, Mapping(kind="events"))
    with Store(tmp_path / "s.duckdb", read_only=True) as store:
        (run,) = store.runs("t")
        assert run["status"] == "failed" and "no records" in run["error"]
    report, _ = _ingest(tmp_path, f, Mapping(kind="events"), allow_empty=True)
    assert report.status == "completed" and report.rows_read == 0


# 3. Missing required columns ----------------------------------------------------------------------------------


def test_missing_item_id_column_is_one_error_and_writes_nothing(tmp_path: Path) -> None:
    """Before: one reject per row and exit 0. After: exit 2, one line naming the column, empty store."""
    f = tmp_path / "ev.csv"
    f.write_text("user_id,product,type\nu1,p1,view\nu2,p2,view\n")
    store = tmp_path / "s.duckdb"
    r = _cli(store, "ingest", str(f), "--kind", "events")
    _assert_one_line_error(r, "missing required column 'item_id'", "columns found: user_id, product, type")
    _store_is_empty(store, "ev")


def test_missing_column_uses_the_mapping_names(tmp_path: Path) -> None:
    f = tmp_path / "ev.csv"
    f.write_text("visitor,itemid,event\nv1,p1,view\n")
    r = _cli(tmp_path / "s.duckdb", "ingest", str(f), "--kind", "events", "--map", "user_id=visitorid",
             "--map", "item_id=itemid", "--map", "type=event")
    _assert_one_line_error(r, "'visitorid' (for user_id)", "columns found: visitor, itemid, event")
    assert "itemid' (for item_id)" not in r.stderr


def test_missing_user_id_and_items_without_item_id(tmp_path: Path) -> None:
    f = tmp_path / "ev.csv"
    f.write_text("item_id,type\ni1,view\n")
    with pytest.raises(MissingColumnError, match="'user_id'"):
        _ingest(tmp_path, f, Mapping(kind="events"))
    g = tmp_path / "items.csv"
    g.write_text("sku,title\ns1,Drill\n")
    with pytest.raises(MissingColumnError, match="'item_id'.*columns found: sku, title"):
        _ingest(tmp_path, g, Mapping(kind="items"))
    _store_is_empty(tmp_path / "s.duckdb", "t")


def test_search_events_need_no_item_id_column(tmp_path: Path) -> None:
    f = tmp_path / "ev.csv"
    f.write_text("user_id,type,query\nu1,search,cordless drill\nu2,view,\n")
    report, stats = _ingest(tmp_path, f, Mapping(kind="events"))
    assert stats["events"] == 1 and report.rejected == 1  # the view has no item: a row-level reject, as before
    g = tmp_path / "ev2.csv"
    g.write_text("user_id,type,what\nu1,search,drill\n")
    with pytest.raises(MissingColumnError, match="'item_id' \\(or 'query', for search events\\)"):
        _ingest(tmp_path, g, Mapping(kind="events"))


def test_missing_column_in_second_file_of_a_folder_writes_nothing(tmp_path: Path) -> None:
    """The header check runs on every file before the run starts, so the first file's rows are not committed."""
    folder = tmp_path / "events"
    folder.mkdir()
    (folder / "a.csv").write_text(_events_csv(50))
    (folder / "b.csv").write_text("user_id,sku,type\nu1,s1,view\n")
    store = tmp_path / "s.duckdb"
    r = _cli(store, "ingest", str(folder), "--format", "csv", "--kind", "events", "--chunk-size", "10")
    _assert_one_line_error(r, "b.csv", "'item_id'")
    _store_is_empty(store, "events")


def test_parquet_missing_column(tmp_path: Path) -> None:
    f = tmp_path / "items.parquet"
    pq.write_table(pa.table({"sku": ["a", "b"], "title": ["x", "y"]}), f)
    with pytest.raises(MissingColumnError, match="'item_id'"):
        _ingest(tmp_path, f, Mapping(kind="items"))


# 4. Byte-order marks, UTF-16 and UTF-32 -------------------------------------------------------------------------

_TEXT = 'user_id,item_id,type,note\nu1,i1,view,Café\nu2,i2,purchase,"two\nlines"\nu3,i3,view,日本\n'


@pytest.mark.parametrize("codec,label,flag", [
    ("utf-16-le", "UTF-16 LE", "utf-16"), ("utf-16-be", "UTF-16 BE", "utf-16"),
    ("utf-32-le", "UTF-32 LE", "utf-32"), ("utf-32-be", "UTF-32 BE", "utf-32")])
def test_utf16_utf32_with_bom_detected_and_read(tmp_path: Path, codec: str, label: str, flag: str) -> None:
    """Before: every row rejected. After: a one-line error naming --encoding, and that encoding reads all rows."""
    f = tmp_path / "ev.csv"
    f.write_bytes("\ufeff".encode(codec) + _TEXT.encode(codec))
    store = tmp_path / "s.duckdb"
    r = _cli(store, "ingest", str(f), "--kind", "events")
    _assert_one_line_error(r, f"{label} byte-order mark", f"--encoding {flag}")
    _store_is_empty(store, "ev")
    ok = _cli(store, "ingest", str(f), "--kind", "events", "--encoding", flag, "--json")
    assert ok.exit_code == 0, ok.output
    run = json.loads(ok.stdout)["runs"][0]
    assert run["rows_read"] == 3 and run["rejected"] == 0
    with Store(store, read_only=True) as s:
        notes = [x[0] for x in s.con.execute("SELECT extra->>'note' FROM events ORDER BY user_id").fetchall()]
    assert notes == ["Café", "two\nlines", "日本"]


def test_utf16_line_numbers_and_per_line_rejects(tmp_path: Path) -> None:
    """Incremental decoding keeps line numbers; a lone surrogate is a reject of its own line only."""
    good = _TEXT.encode("utf-16-le")
    bad = "u4,i4,view,".encode("utf-16-le") + b"\x00\xd8" + "x\n".encode("utf-16-le")  # unpaired high surrogate
    f = tmp_path / "ev.csv"
    f.write_bytes(codecs.BOM_UTF16_LE + good + bad + "u5,i5,view,ok\n".encode("utf-16-le"))
    out = list(iter_csv(f, "utf-16"))
    assert [r[0] for r in out if not isinstance(r, readers.Reject)] == [2, 3, 5, 7]
    (rej,) = [r for r in out if isinstance(r, readers.Reject)]
    assert rej.line == 6 and "not valid utf-16" in rej.reason and rej.raw is not None and "\ufffd" in rej.raw


def test_utf16_without_bom_and_utf8_bom(tmp_path: Path) -> None:
    f = tmp_path / "ev.csv"
    f.write_bytes(_TEXT.encode("utf-16-le"))
    with pytest.raises(UnreadableFileError, match="--encoding utf-16-le"):
        list(iter_csv(f))
    assert len(list(iter_csv(f, "utf-16-le"))) == 3
    g = tmp_path / "bom8.csv"
    g.write_bytes(b"\xef\xbb\xbf" + _TEXT.encode("utf-8"))
    rows = list(iter_csv(g))
    assert len(rows) == 3 and "user_id" in rows[0][1]  # type: ignore[operator]
    with pytest.raises(UnreadableFileError, match="UTF-8 byte-order mark.*--encoding utf-8"):
        list(iter_csv(g, "latin-1"))


def test_utf16_jsonl(tmp_path: Path) -> None:
    f = tmp_path / "ev.jsonl"
    lines = [json.dumps({"user_id": f"u{i}", "item_id": "i1", "type": "view"}) for i in range(3)]
    f.write_bytes(("\n".join(lines) + "\n").encode("utf-16"))
    report, stats = _ingest(tmp_path, f, Mapping(kind="events", encoding="utf-16"))
    assert report.rejected == 0 and stats["events"] == 3


def test_real_homedepot_products_in_utf16(tmp_path: Path, data_dir: Path) -> None:
    text = "".join((data_dir / "homedepot" / "products.csv").read_text("utf-8").splitlines(keepends=True)[:3001])
    f = tmp_path / "products.csv"
    f.write_bytes(text.encode("utf-16"))
    base = ["ingest", str(f), "--format", "csv", "--kind", "items", "--map", "item_id=product_uid",
            "--map", "title=product_title"]
    _assert_one_line_error(_cli(tmp_path / "s.duckdb", *base), "--encoding utf-16")
    r = _cli(tmp_path / "s.duckdb", *base, "--encoding", "utf-16", "--json")
    assert r.exit_code == 0, r.output
    run = json.loads(r.stdout)["runs"][0]
    assert run["rows_read"] == 3000 and run["rejected"] == 0 and run["counts"]["item"]["inserted"] == 3000
