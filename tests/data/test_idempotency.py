"""Re-running an ingest adds nothing; changed items are updated in place; counts say what happened."""

from __future__ import annotations

import csv
from pathlib import Path

from shopmind.data.adapters import open_adapter
from shopmind.data.ingest import Ingestor
from shopmind.data.schema import hash_user_id
from shopmind.data.store import open_store


def test_reingest_real_file_adds_nothing(store_at, tmp_path: Path, data_dir: Path) -> None:
    with open_store(store_at("s")) as store:
        first = Ingestor(store, "beauty", chunk_size=30_000).run(open_adapter(data_dir / "s3rec-beauty"))
        second = Ingestor(store, "beauty", chunk_size=30_000).run(open_adapter(data_dir / "s3rec-beauty"))
        assert first.counts["event"]["inserted"] == 198_502
        assert second.counts["event"] == {"inserted": 0, "updated": 0, "unchanged": 198_502, "rejected": 0}
        assert second.counts["item"] == {"inserted": 0, "updated": 0, "unchanged": 12_101, "rejected": 0}
        assert store.stats("beauty")["events"] == 198_502


def test_duplicate_rows_as_published_stay_distinct_events(store_at, tmp_path: Path, data_dir: Path) -> None:
    """All_Beauty has 1,027 byte-identical review lines; they are distinct events and stay so on rerun."""
    with open_store(store_at("s")) as store:
        for _ in range(2):
            Ingestor(store, "ab").run(open_adapter(data_dir / "amazon2018-allbeauty"))
        assert store.stats("ab")["events"] == 5_269


def test_changed_item_is_updated_new_item_inserted(store_at, tmp_path: Path, data_dir: Path) -> None:
    folder = tmp_path / "hd"
    folder.mkdir()
    rows = list(csv.reader(open(data_dir / "homedepot" / "products.csv", encoding="utf-8")))[:1001]
    with open(folder / "products.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    with open_store(store_at("s")) as store:
        Ingestor(store, "hd").run(open_adapter(folder, "homedepot"))
        rows[1][1] = rows[1][1] + " (new version)"
        rows.append(["999999", "A brand new product"])
        with open(folder / "products.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)
        report = Ingestor(store, "hd").run(open_adapter(folder, "homedepot"))
        assert report.counts["item"] == {"inserted": 1, "updated": 1, "unchanged": 999, "rejected": 0}
        title = store.con.execute("SELECT title FROM items WHERE dataset = 'hd' AND item_id = ?",
                                  [rows[1][0]]).fetchall()[0][0]
        assert title.endswith("(new version)")
        assert store.stats("hd")["items"] == 1001


def test_user_ids_hashed_with_salt(store_at, tmp_path: Path, data_dir: Path) -> None:
    with open_store(store_at("s")) as store:
        Ingestor(store, "ml", user_id_salt="s3cret").run(open_adapter(data_dir / "ml-100k"))
        users = {r[0] for r in store.con.execute("SELECT DISTINCT user_id FROM events WHERE dataset = 'ml'").fetchall()}
        profiles = {r[0] for r in store.con.execute("SELECT user_id FROM users WHERE dataset = 'ml'").fetchall()}
    assert len(users) == 943 and users == profiles
    assert "196" not in users and hash_user_id("196", "s3cret") in users
    assert hash_user_id("196", "other") not in users
    assert all(len(u) == 32 for u in users)
