"""Generic CSV / JSONL / Parquet with column mappings, value maps and streaming in chunks."""

from __future__ import annotations

import json
from datetime import timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopmind.data.adapters import FormatError, Mapping, open_adapter
from shopmind.data.ingest import Ingestor
from shopmind.data.store import open_store


def test_mapping_toml_with_value_map_and_ms_timestamps(store_at, tmp_path: Path) -> None:
    (tmp_path / "map.toml").write_text('''
kind = "events"
[columns]
user_id = "visitorid"
item_id = "itemid"
type = "event"
[values.type]
addtocart = "add_to_cart"
transaction = "purchase"
[options]
timestamp_unit = "ms"
''')
    f = tmp_path / "events.csv"
    f.write_text("timestamp,visitorid,event,itemid,transactionid\n"
                 "1433221332117,257597,view,355908,\n"
                 "1433224214164,992329,addtocart,248676,\n"
                 "1433221999827,111016,transaction,318965,4000\n")
    mapping = Mapping.from_toml(tmp_path / "map.toml")
    with open_store(store_at("s")) as store:
        report = Ingestor(store, "rr").run(open_adapter(f, "csv", mapping=mapping))
        assert report.rejected == 0
        rows = store.con.execute("SELECT type, timestamp, extra FROM events ORDER BY timestamp").fetchall()
    rows = [(t, round(ts.replace(tzinfo=timezone.utc).timestamp() * 1000), json.loads(x or "{}").get("transactionid"))
            for t, ts, x in rows]
    assert rows == [("view", 1433221332117, None), ("purchase", 1433221999827, "4000"),
                    ("add_to_cart", 1433224214164, None)]


def test_items_unmapped_columns_become_attributes(store_at, tmp_path: Path) -> None:
    f = tmp_path / "catalog.jsonl"
    f.write_text(json.dumps({"sku": 17, "name": "Cordless Drill 18V", "cat": "Tools|Power Tools|Drills",
                             "colour": "yellow", "price": "89.5"}) + "\n")
    mapping = Mapping(kind="items", columns={"item_id": "sku", "title": "name", "categories": "cat"})
    with open_store(store_at("s")) as store:
        Ingestor(store, "cat").run(open_adapter(f, mapping=mapping))
        row = store.con.execute("SELECT item_id, title, categories, price, attributes FROM items").fetchall()
    assert [(*r[:4], json.loads(r[4])["colour"]) for r in row] == [
        ("17", "Cordless Drill 18V", ["Tools", "Power Tools", "Drills"], 89.5, "yellow")]


def test_parquet_streams_in_chunks(store_at, tmp_path: Path) -> None:
    n = 25_000
    table = pa.table({"user_id": [f"u{i % 700}" for i in range(n)], "item_id": [f"i{i % 900}" for i in range(n)],
                      "type": ["click"] * n, "timestamp": pa.array([1_700_000_000 + i for i in range(n)], pa.int64())})
    pq.write_table(table, tmp_path / "clicks.parquet", row_group_size=4_000)
    with open_store(store_at("s")) as store:
        report = Ingestor(store, "pq", chunk_size=3_000).run(open_adapter(tmp_path / "clicks.parquet"))
        assert report.counts["event"]["inserted"] == n
        assert store.runs("pq")[-1]["chunks"] == 9  # ceil(25,000 / 3,000)
        assert store.stats("pq")["users"] == 700


def test_given_event_ids_deduplicated(store_at, tmp_path: Path) -> None:
    f = tmp_path / "e.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in [
        {"event_id": "e1", "user_id": "u", "item_id": "i", "type": "view"},
        {"event_id": "e1", "user_id": "u", "item_id": "j", "type": "view"},
        {"event_id": "e2", "user_id": "u", "item_id": "j", "type": "view"}]))
    with open_store(store_at("s")) as store:
        report = Ingestor(store, "e").run(open_adapter(f))
        assert report.counts["event"] == {"inserted": 2, "updated": 0, "unchanged": 0, "rejected": 1}


def test_mapping_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="unknown events field"):
        Mapping(kind="events", columns={"usr": "user"})
    with pytest.raises(FormatError, match="unknown kind"):
        Mapping(kind="orders")
    (tmp_path / "bad.toml").write_text("kind = 'events'\n[colums]\nuser_id='x'\n")
    with pytest.raises(FormatError, match="unknown keys"):
        Mapping.from_toml(tmp_path / "bad.toml")


def test_a_mapping_makes_a_file_generic_whatever_its_name(tmp_path: Path) -> None:
    """A shop's products.csv is not Home Depot's products.csv: with a mapping the format is generic."""
    f = tmp_path / "products.csv"
    f.write_text("sku,name\nA1,Copper Teapot\n")
    mapping = Mapping(kind="items", columns={"item_id": "sku", "title": "name"})
    assert open_adapter(f, mapping=mapping).format == "generic"
    assert open_adapter(f).format == "homedepot"  # without a mapping, detection as before
    with pytest.raises(FormatError, match="a column mapping .* is for generic files; --format amazon"):
        open_adapter(tmp_path, "amazon", mapping=mapping)


def test_mapping_constants_fill_a_field_the_file_lacks(store_at, tmp_path: Path) -> None:
    (tmp_path / "ratings.toml").write_text('kind = "events"\n[columns]\nuser_id = "viewer"\nitem_id = "film"\n'
                                          '[constants]\ntype = "rating"\n')
    f = tmp_path / "ratings.csv"
    f.write_text("viewer,film,stars\nv1,f1,4\nv2,f1,5\n")
    mapping = Mapping.from_toml(tmp_path / "ratings.toml")
    with open_store(store_at("s")) as store:
        report = Ingestor(store, "films").run(open_adapter(f, mapping=mapping))
        assert report.rejected == 0
        assert store.con.execute("SELECT DISTINCT type FROM events").fetchall() == [("rating",)]
    with pytest.raises(FormatError, match="both mapped to a column and given a constant"):
        Mapping(kind="events", columns={"type": "action"}, constants={"type": "view"})
    with pytest.raises(FormatError, match="unknown events field"):
        Mapping(kind="events", constants={"colour": "red"})
