"""Bad input is rejected row by row with file, line and reason; runs never leave partial writes."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from shopmind.data.adapters import FormatError, Mapping, open_adapter
from shopmind.data.api import open_source
from shopmind.data.ingest import Ingestor
from shopmind.data.store import Store, open_store


def _rejects(report) -> list[dict]:
    return [json.loads(line) for line in Path(report.rejects_file).read_text().splitlines()]


def _ingest(target, tmp_path: Path, path: Path, mapping: Mapping, chunk_size: int = 50_000):
    with open_store(target) as store:
        report = Ingestor(store, "t", chunk_size=chunk_size, rejects_dir=tmp_path / "rej").run(
            open_adapter(path, "generic", mapping=mapping))
        return report, store.stats("t")


def test_csv_bad_rows_rejected_with_line_and_reason(store_at, tmp_path: Path) -> None:
    f = tmp_path / "items.csv"
    f.write_bytes(
        b"item_id,title,price,categories\n"
        b"a1,Drill,19.99,Tools|Power Tools\n"
        b"a2,Saw,not-a-price,Tools\n"           # line 3: wrong type
        b",Nameless,1.0,Tools\n"                 # line 4: missing required id
        b"a3,Hammer,5.0\n"                        # line 5: too few fields
        b"a4,Caf\xe9 table,3.0,Home\n"            # line 6: latin-1 byte in a utf-8 file
        b"a1,Drill again,20.0,Tools\n"            # line 7: duplicate id
        b"a5,\"Multi\nline title\",2.5,Home\n"    # lines 8-9: one quoted record
        b"a6,Negative,-3,Home\n")                 # line 10: out of range
    report, stats = _ingest(store_at(), tmp_path, f, Mapping(kind="items"))
    assert report.status == "completed_with_rejects"
    assert report.counts["item"]["inserted"] == 2 and stats["items"] == 2
    rejects = {r["line"]: r for r in _rejects(report)}
    assert set(rejects) == {3, 4, 5, 6, 7, 10}
    assert "price" in rejects[3]["reason"] and "not-a-price" in rejects[3]["reason"]
    assert "item_id" in rejects[4]["reason"]
    assert "expected 4 fields" in rejects[5]["reason"]
    assert "not valid utf-8" in rejects[6]["reason"] and "latin-1" in rejects[6]["reason"]
    assert "duplicate item_id 'a1'" in rejects[7]["reason"] and "line 2" in rejects[7]["reason"]
    assert "greater than or equal to 0" in rejects[10]["reason"]
    assert all(r["file"] == str(f) for r in rejects.values())


def test_csv_latin1_with_right_encoding_is_accepted(store_at, tmp_path: Path) -> None:
    f = tmp_path / "items.csv"
    f.write_bytes("item_id,title\nb1,Café table 3/4\"\n".encode("latin-1"))
    report, _ = _ingest(store_at(), tmp_path, f, Mapping(kind="items", encoding="latin-1"))
    assert report.rejected == 0
    with open_store(store_at("s"), read_only=True) as store:
        assert store.con.execute("SELECT title FROM items").fetchone()[0] == 'Café table 3/4"'


def test_unknown_encoding_fails_before_any_write(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown encoding .klingon."):
        Mapping(kind="items", encoding="klingon")


def test_jsonl_events_bad_lines(store_at, tmp_path: Path) -> None:
    f = tmp_path / "events.jsonl"
    lines = [
        {"user_id": "u1", "item_id": "i1", "type": "purchase", "value": 2, "timestamp": "2024-05-01T10:00:00Z"},
        "{not json",
        {"user_id": "u1", "type": "click", "timestamp": 1714557600},          # click without an item
        {"user_id": "u2", "item_id": "i2", "type": "teleport"},                # unknown type
        ["a", "list"],
        {"user_id": "u2", "type": "search", "query": "cordless drill"},
        {"user_id": "u3", "item_id": "i3", "type": "view", "timestamp": "yesterday-ish"},
    ]
    f.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    report, stats = _ingest(store_at(), tmp_path, f, Mapping(kind="events"))
    assert stats["events"] == 2 and stats["event_types"] == {"purchase": 1, "search": 1}
    rejects = {r["line"]: r["reason"] for r in _rejects(report)}
    assert set(rejects) == {2, 3, 4, 5, 7}
    assert "invalid JSON" in rejects[2]
    assert "needs an item_id" in rejects[3]
    assert "type" in rejects[4] and "teleport" in rejects[4]
    assert "expected a JSON object" in rejects[5]
    assert "timestamp" in rejects[7]


def test_truncated_gzip_keeps_complete_lines_and_rejects_the_rest(store_at, tmp_path: Path, data_dir: Path) -> None:
    """A real review file cut in the middle: every complete line before the cut is ingested."""
    src = data_dir / "amazon2018-giftcards" / "Gift_Cards_5.json.gz"
    folder = tmp_path / "cut"
    folder.mkdir()
    data = src.read_bytes()
    (folder / "Gift_Cards_5.json.gz").write_bytes(data[: len(data) // 2])
    with gzip.open(src, "rt") as fh:
        total = sum(1 for _ in fh)
    with open_store(store_at("s")) as store:
        report = Ingestor(store, "cut", rejects_dir=tmp_path / "rej").run(open_adapter(folder, "amazon"))
        events = store.stats("cut")["events"]
    rejects = _rejects(report)
    assert any("truncated or corrupt gzip" in r["reason"] for r in rejects)
    assert 0.3 * total < events < total
    assert report.status == "completed_with_rejects"


def test_crash_mid_run_leaves_store_consistent_and_rerun_completes(tmp_path: Path, data_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the third chunk's write: the first two chunks are in, nothing partial; a rerun completes."""
    src = open_adapter(data_dir / "ml-100k")
    calls = {"n": 0}
    original = Store.write

    def failing_write(self, table, rows):
        if table == "events":
            calls["n"] += 1
            if calls["n"] == 3:
                original(self, table, rows)  # the write happens, then the process "dies" before commit
                raise RuntimeError("simulated crash")
        return original(self, table, rows)

    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        monkeypatch.setattr(Store, "write", failing_write)
        with pytest.raises(RuntimeError, match="simulated crash"):
            Ingestor(store, "ml", chunk_size=20_000).run(src)
        monkeypatch.setattr(Store, "write", original)
        n = store.con.execute("SELECT count(*) FROM events WHERE dataset = 'ml'").fetchall()[0][0]
        # Exactly the two committed chunks: 1,682 items + 943 users + 37,375 events; chunk 3 rolled back.
        assert n == 2 * 20_000 - 1_682 - 943
        assert store.stats("ml")["items"] == 1_682
        assert store.runs("ml")[-1]["status"] == "failed"
        report = Ingestor(store, "ml", chunk_size=20_000).run(src)
        assert store.stats("ml")["events"] == 100_000
        assert report.counts["event"]["inserted"] == 100_000 - n
        assert report.counts["event"]["unchanged"] == n


def test_interrupted_run_marked(store_at, tmp_path: Path) -> None:
    with open_store(store_at("s")) as store:
        run = store.start_run("x", "generic", "f", [])
        store.start_run("x", "generic", "f", [])
        assert store.runs("x")[0]["run_id"] == run and store.runs("x")[0]["status"] == "interrupted"


def test_not_a_dataset_path_is_a_clear_error(tmp_path: Path, settings_for) -> None:
    with pytest.raises(FormatError, match="cannot tell the format"):
        open_source(settings_for(), str(tmp_path))
    (tmp_path / "x.bin").write_bytes(b"\x00\x01")
    with pytest.raises(FormatError, match="cannot tell the file format"):
        open_adapter(tmp_path / "x.bin", "generic")


def test_unisrec_broken_history_rejected(store_at, tmp_path: Path, data_dir: Path) -> None:
    """A user whose rows do not chain is rejected as a whole, the others load."""
    folder = tmp_path / "sci"
    shutil.copytree(data_dir / "amazon-scientific", folder)
    (folder / "Scientific.test.inter").chmod(0o644)
    lines = (folder / "Scientific.test.inter").read_text().split("\n")
    user, hist, target = lines[1].split("\t")
    lines[1] = "\t".join([user, "999999 " + hist.split(" ", 1)[1], target])
    (folder / "Scientific.test.inter").write_text("\n".join(lines))
    with open_store(store_at("s")) as store:
        report = Ingestor(store, "sci", rejects_dir=tmp_path / "r").run(open_adapter(folder))
        assert store.stats("sci")["users"] == 8441
    assert any("does not continue" in r["reason"] and r["line"] == 2 for r in _rejects(report))
