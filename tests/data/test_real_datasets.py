"""Every registered dataset ingests from the real files and reproduces its published statistics."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from shopmind.data.registry import REGISTRY
from shopmind.data.splits import given_split, leave_one_out, query_split, temporal_split
from shopmind.data.store import Store


@pytest.fixture(scope="module")
def store(demo_run: dict):
    with Store(demo_run["store_path"], read_only=True) as s:
        yield s


@pytest.mark.parametrize("name", list(REGISTRY))
def test_statistics_match_published(demo_run: dict, name: str) -> None:
    stats = {d["dataset"]: d for d in demo_run["datasets"]}
    assert name in stats, f"{name} was not ingested: {demo_run['steps']}"
    got = stats[name]
    for key, value in REGISTRY[name].expected.items():
        assert got[key] == value, f"{name}.{key}: {got[key]} != published {value}"
    assert got["matches_published"] is True


def test_unisrec_sequences_rebuilt_in_order(store: Store, data_dir: Path) -> None:
    """The first user's rebuilt sequence equals the test row's history + target, mapped to raw ids."""
    folder = data_dir / "amazon-scientific"
    items = dict(line.split("\t")[::-1] for line in (folder / "Scientific.item2index").read_text().split("\n") if line)
    users = dict(line.split("\t")[::-1] for line in (folder / "Scientific.user2index").read_text().split("\n") if line)
    row = (folder / "Scientific.test.inter").read_text().split("\n")[1].split("\t")
    expected = [items[i] for i in row[1].split()] + [items[row[2]]]
    got = store.con.execute("SELECT item_id FROM events WHERE dataset = 'amazon-scientific' AND user_id = ? "
                            "ORDER BY seq", [users[row[0]]]).fetchall()
    assert [g[0] for g in got][-len(expected):] == expected
    # The given split marks exactly the valid and test targets.
    split = given_split(store, "amazon-scientific")
    last = split[split.user_id == users[row[0]]]
    assert last.split.tolist()[-2:] == ["valid", "test"]
    assert last.item_id.iloc[-1] == items[row[2]]


def test_unisrec_given_split_is_leave_one_out(store: Store) -> None:
    given = given_split(store, "amazon-scientific").set_index("event_id").split
    loo = leave_one_out(store, "amazon-scientific").set_index("event_id").split
    assert given.sort_index().equals(loo.sort_index())
    assert (given == "test").sum() == 8442


def test_unisrec_item_text_kept_and_split(store: Store) -> None:
    title, brand, text = store.con.execute(
        "SELECT title, brand, text_fields->>'text' FROM items WHERE dataset = 'amazon-scientific' "
        "AND item_id = 'B0000223SI'").fetchone()
    assert title.startswith("PORTER-CABLE 740000801 4 1/2-Inch x 10yd 80 Grit")
    assert brand == "PORTER-CABLE"
    assert "Sanding Rolls" in text


def test_s3rec_leave_one_out_matches_file(store: Store, data_dir: Path) -> None:
    lines = (data_dir / "s3rec-beauty" / "Beauty.txt").read_text().split("\n")
    split = leave_one_out(store, "s3rec-beauty")
    for line in (lines[0], lines[5000], lines[-2]):
        user, *seq = line.split()
        rows = split[split.user_id == user]
        assert rows.item_id.tolist() == seq
        assert rows[rows.split == "test"].item_id.item() == seq[-1]
        assert rows[rows.split == "valid"].item_id.item() == seq[-2]


def test_amazon_metadata_cleaned(store: Store) -> None:
    html_titles = store.con.execute("SELECT count(*) FROM items WHERE dataset LIKE 'amazon2018-%' "
                                    "AND (title LIKE '%<%' OR title LIKE '%/>%' OR description LIKE '%<span%')").fetchone()[0]
    assert html_titles == 0
    price = store.con.execute("SELECT max(price) FROM items WHERE dataset = 'amazon2018-giftcards'").fetchone()[0]
    assert price == 1250.0  # '$1,250.00' in the metadata
    related = store.con.execute("SELECT count(*) FROM items WHERE dataset = 'amazon2018-magazine' "
                                "AND json_array_length(related->'also_buy') > 0").fetchone()[0]
    assert related > 100


def test_amazon_magazine_duplicate_metadata_kept_aside(store: Store) -> None:
    """meta_Magazine_Subscriptions has 3,385 lines for 2,320 asins: the copies are rejected, not dropped."""
    reasons = store.con.execute("SELECT reason FROM rejects WHERE dataset = 'amazon2018-magazine'").fetchall()
    assert len(reasons) == 1065
    assert all("identical copy" in r[0] for r in reasons)


def test_amazon_reviews_fields(store: Store, data_dir: Path) -> None:
    with gzip.open(data_dir / "amazon2018-giftcards" / "Gift_Cards_5.json.gz", "rt") as f:
        first = json.loads(f.readline())
    row = store.con.execute("SELECT value, epoch(timestamp)::BIGINT, review_text, summary FROM events "
                            "WHERE dataset = 'amazon2018-giftcards' AND user_id = ? AND item_id = ?",
                            [first["reviewerID"], first["asin"]]).fetchall()
    assert (first["overall"], first["unixReviewTime"], first["reviewText"], first["summary"]) in row


def test_homedepot_latin1_and_judgments(store: Store) -> None:
    # latin-1 text decodes to real characters (e.g. the degree sign or accented letters), not mojibake.
    n = store.con.execute("SELECT count(*) FROM judgments WHERE dataset = 'homedepot' AND query LIKE '%Ã%'").fetchone()[0]
    assert n == 0
    grades = store.con.execute("SELECT min(grade), max(grade) FROM judgments WHERE dataset = 'homedepot'").fetchone()
    assert grades == (1.0, 3.0)
    title = store.con.execute("SELECT title FROM items WHERE dataset = 'homedepot' AND item_id = '100001'").fetchone()[0]
    assert title == "Simpson Strong-Tie 12-Gauge Angle"


def test_movielens_users_items_ratings(store: Store) -> None:
    item = store.con.execute("SELECT title, attributes->>'genres' FROM items WHERE dataset = 'ml-100k' "
                             "AND item_id = '1'").fetchone()
    assert item == ("Toy Story (1995)", "Animation|Children's|Comedy")
    r = store.con.execute("SELECT value, epoch(timestamp)::BIGINT FROM events WHERE dataset = 'ml-100k' "
                          "AND user_id = '196' AND item_id = '242'").fetchone()
    assert r == (3.0, 881250949)
    age = store.con.execute("SELECT attributes->>'occupation' FROM users WHERE dataset = 'ml-100k' "
                            "AND user_id = '1'").fetchone()[0]
    assert age == "technician"


def test_temporal_split_on_movielens(store: Store) -> None:
    df = temporal_split(store, "ml-100k")
    counts = df.split.value_counts()
    assert abs(counts["test"] - 10_000) < 200 and abs(counts["valid"] - 10_000) < 200
    assert df[df.split == "train"].timestamp.max() < df[df.split == "test"].timestamp.min()


def test_query_split_on_homedepot_is_disjoint_and_fixed(store: Store) -> None:
    a = query_split(store, "homedepot")
    b = query_split(store, "homedepot")
    assert a.split.tolist() == b.split.tolist()
    parts = {p: set(a[a.split == p]["query"].str.lower()) for p in ("train", "valid", "test")}
    assert not parts["train"] & parts["test"] and not parts["train"] & parts["valid"] and not parts["valid"] & parts["test"]
    share = (a.groupby("split")["query"].nunique() / a["query"].nunique()).to_dict()
    assert 0.55 < share["train"] < 0.65 and 0.15 < share["test"] < 0.25


def test_demo_rerun_reuses(demo_run: dict, data_dir: Path, tmp_path: Path) -> None:
    import shutil

    from typer.testing import CliRunner

    from shopmind.cli import app

    copy = tmp_path / "copy.duckdb"  # the module's read-only connection keeps the original open
    shutil.copy(demo_run["store_path"], copy)
    result = CliRunner().invoke(app, ["--store", str(copy), "--data-dir", str(data_dir), "demo", "--no-mine", "--json"])
    assert result.exit_code == 0, result.output
    steps = json.loads(result.stdout)["steps"]
    assert {s["status"] for s in steps} == {"reused"}
    # Without --json the demo ends with its step table: every dataset, reused, and the total.
    table = CliRunner().invoke(app, ["--store", str(copy), "--data-dir", str(data_dir), "demo", "--no-mine"])
    assert table.exit_code == 0, table.output
    rows = [ln for ln in table.stdout.splitlines() if ln.startswith("│ ingest ")]
    assert len(rows) == len(steps) and all("reused" in ln for ln in rows)
    assert "demo steps" in table.stdout and "total" in table.stdout


def test_unisrec_text_parts_with_periods_and_empty_categories(store: Store) -> None:
    """'Mr. Heater' keeps its period in title and brand; 'Title. . Brand.' has no category; all 4,385 split."""
    rows = store.con.execute("SELECT title, brand, text_fields->>'category_text', text_fields->>'text' FROM items "
                             "WHERE dataset = 'amazon-scientific'").fetchall()
    with_cat = [r for r in rows if r[2]]
    assert len(with_cat) == 4251 and all(r[2].startswith("Industrial & Scientific") for r in with_cat)
    empty_cat = [r for r in rows if not r[2]]
    assert len(empty_cat) == 134 and all(". . " in r[3] for r in empty_cat)
    heater = next(r for r in rows if r[0].startswith("Mr. Heater"))
    assert heater[1] == "Mr. Heater"
    assert all(r[3].startswith(r[0]) for r in rows)
