"""`shopmind mine` end to end on real data: cards, profiles, graph, caching, and a semantic sanity check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from shopmind.cli import app
from shopmind.config import load_settings
from shopmind.data.api import ingest_source, open_source
from shopmind.data.store import Store
from shopmind.knowledge.encoders import Encoder
from shopmind.knowledge.mine import Miner, MiningError


@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, onnx_dir: Path):
    tmp = tmp_path_factory.mktemp("mine")
    settings = load_settings(overrides={"store.path": tmp / "s.duckdb", "data.dir": data_dir, "data.allow_download": False,
                                        "knowledge.dir": tmp / "knowledge", "knowledge.onnx_dir": onnx_dir}, environ={})
    with Store(settings.store.path) as store:
        for name in ("amazon2018-giftcards", "amazon-scientific"):
            ingest_source(store, settings, open_source(settings, name))
        encoder = Encoder(backend="auto", onnx_dir=onnx_dir)
        reports = {name: Miner(store, settings.knowledge, settings.knowledge_dir, encoder=encoder).run(name)
                   for name in ("amazon2018-giftcards", "amazon-scientific")}
    return settings, reports


def test_gift_card_knowledge(mined) -> None:
    settings, reports = mined
    r = reports["amazon2018-giftcards"]
    assert r.counts["knowledge_cards"] == 1547 and r.counts["user_profiles"] == 458
    assert r.encoder["backend"] == "onnx-int8" and r.encoder["agreement"] >= 0.99
    with Store(settings.store.path, read_only=True) as store:
        card = json.loads(store.con.execute("SELECT card FROM knowledge_cards WHERE dataset = 'amazon2018-giftcards' "
                                            "AND item_id = 'B00AR51Y5I'").fetchall()[0][0])
        assert card["title"] == "Starbucks Gift Card" and card["rating"]["count"] == 94
        assert 4.9 < card["rating"]["mean"] <= 5 and sum(card["rating"]["histogram"].values()) == 94
        assert card["positive_aspects"] and len(card["keywords"]) == 5 and card["price"] == 25.0
        assert card["price_band"] in ("budget", "mid", "premium")
        # also_buy edges: exactly the in-catalog targets of the metadata.
        expected = store.con.execute("""
            WITH rel AS (SELECT item_id, unnest(from_json(related->'also_buy', '["VARCHAR"]')) AS dst
                         FROM items WHERE dataset = 'amazon2018-giftcards')
            SELECT count(DISTINCT (rel.item_id, dst)) FROM rel JOIN items i ON i.dataset = 'amazon2018-giftcards'
            AND i.item_id = rel.dst WHERE rel.dst <> rel.item_id""").fetchall()[0][0]
        got = store.con.execute("SELECT count(*) FROM item_edges WHERE dataset = 'amazon2018-giftcards' "
                                "AND kind = 'also_buy'").fetchall()[0][0]
        assert got == expected > 0
        vec, kw, interests = store.con.execute(
            "SELECT vector, keywords, interests FROM user_profiles WHERE dataset = 'amazon2018-giftcards' "
            "ORDER BY events DESC LIMIT 1").fetchall()[0]
        assert abs(np.linalg.norm(vec) - 1) < 1e-4 and json.loads(interests)
        assert len(kw) == 5 and len(set(kw)) == 5


def test_scientific_graph_and_semantics(mined) -> None:
    settings, reports = mined
    r = reports["amazon-scientific"]
    with Store(settings.store.path, read_only=True) as store:
        pairs = store.con.execute("""
            SELECT count(DISTINCT (prev, item_id)) FROM (
              SELECT item_id, lag(item_id) OVER (PARTITION BY user_id ORDER BY seq) AS prev
              FROM events WHERE dataset = 'amazon-scientific') WHERE prev IS NOT NULL AND prev <> item_id""").fetchall()[0][0]
        cats = dict(store.con.execute("SELECT item_id, text_fields->>'category_text' FROM items "
                                      "WHERE dataset = 'amazon-scientific'").fetchall())
    assert r.counts["edges_next"] == pairs
    folder = Path(r.artifacts)
    vectors = np.load(folder / "item_vectors.npy")
    ids = json.loads((folder / "ids.json").read_text())["items"]
    labels = np.array([cats.get(i) or "" for i in ids])
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1)
    nn = sims.argmax(1)
    has = labels != ""
    same = (labels[nn] == labels)[has].mean()
    _, counts = np.unique(labels[has], return_counts=True)
    chance = ((counts / counts.sum()) ** 2).sum()
    assert same > 0.4 and same > 5 * chance, (same, chance)


def test_rerun_encodes_nothing_and_changed_item_alone(mined, onnx_dir: Path) -> None:
    settings, _ = mined
    with Store(settings.store.path) as store:
        encoder = Encoder(backend="auto", onnx_dir=onnx_dir)
        again = Miner(store, settings.knowledge, settings.knowledge_dir, encoder=encoder).run("amazon2018-giftcards")
        assert again.counts["items_encoded"] == 0
        store.con.execute("UPDATE items SET title = title || ' (new design)' WHERE dataset = 'amazon2018-giftcards' "
                          "AND item_id = 'B00AR51Y5I'")
        changed = Miner(store, settings.knowledge, settings.knowledge_dir, encoder=encoder).run("amazon2018-giftcards")
        assert changed.counts["items_encoded"] == 1


def test_cli_mine_json_and_errors(mined, onnx_dir: Path) -> None:
    settings, _ = mined
    env = {"SHOPMIND_KNOWLEDGE_ONNX_DIR": str(onnx_dir), "SHOPMIND_KNOWLEDGE_DIR": str(settings.knowledge_dir),
           "SHOPMIND_CONFIG": ""}
    r = CliRunner().invoke(app, ["--store", str(settings.store.path), "mine", "-d", "amazon2018-giftcards", "--json"],
                           env=env)
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)["reports"][0]
    assert set(report) == {"dataset", "seconds", "steps", "counts", "encoder", "artifacts", "examples", "neighbours"}
    assert report["counts"]["items_encoded"] == 0 and report["examples"][0]["positive_aspects"]
    bad = CliRunner().invoke(app, ["--store", str(settings.store.path), "mine", "-d", "nope"], env=env)
    assert bad.exit_code == 2 and "not in the store" in bad.stderr
    with pytest.raises(MiningError, match="no items or events"):
        with Store(settings.store.path) as store:
            Miner(store, settings.knowledge, settings.knowledge_dir).run("empty-dataset")
