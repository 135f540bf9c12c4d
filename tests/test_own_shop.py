"""'Bring your own shop' end to end, through the real CLI (docs/own-shop.md): a shop's own files with its own
column names -> `ingest` with mapping files -> `mine` -> `train` (the default protocol of a dataset the registry
does not know is `time`) -> the served app answers /recommend, /search and accepts events. Then a real dataset
(MovieLens 100K) written out as a shop would export it (renamed columns, Parquet events with unix seconds, no
event type column) goes the same way."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shopmind.cli import app

SECTIONS = {
    "Home > Kitchen": ["Teapot", "Kettle", "Skillet", "Colander", "Whisk"],
    "Garden > Tools": ["Trowel", "Secateurs", "Rake", "Hoe", "Sprinkler"],
    "Sports > Running": ["Sneakers", "Armband", "Headlamp", "Windbreaker", "Bottle"],
    "Office > Paper": ["Notebook", "Planner", "Envelope", "Binder", "Sketchbook"],
}
COLOURS = ["Copper", "Slate", "Ivory", "Crimson"]
PRODUCTS_TOML = """\
kind = "items"
[columns]
item_id = "sku"
title = "name"
description = "details"
brand = "maker"
price = "cost"
categories = "section"
[options]
list_separator = ">"
"""
ORDERS_TOML = """\
kind = "events"
[columns]
user_id = "customer"
item_id = "sku"
type = "action"
timestamp = "when"
[values.type]
viewed = "view"
carted = "add_to_cart"
bought = "purchase"
"""


def write_shop(folder: Path, users: int = 300, seed: int = 7) -> dict[str, list[str]]:
    """products.csv (80 items in 4 sections) and orders.csv (customers with one favourite section each, their
    visits spread over 120 days, ISO timestamps) in the shop's own column names, plus the two mapping files."""
    rng = np.random.default_rng(seed)
    products, by_section = [], {}
    for s, (section, nouns) in enumerate(SECTIONS.items()):
        skus = []
        for n, noun in enumerate(nouns):
            for c, colour in enumerate(COLOURS):
                sku = f"SKU-{s}{n}{c}"
                skus.append(sku)
                products.append({"sku": sku, "name": f"{colour} {noun}", "details": f"A {colour.lower()} "
                                 f"{noun.lower()} for {section.split(' > ')[1].lower()}.", "maker": f"Maker{c}",
                                 "cost": f"{5 + 3 * n + c:.2f}", "section": section, "stock": str(10 + n)})
        by_section[section] = skus
    with open(folder / "products.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(products[0]))
        w.writeheader()
        w.writerows(products)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    sections = list(by_section)
    rows = []
    for u in range(users):
        favourite = by_section[sections[u % len(sections)]]
        # a taste within the section: a preferred order, so that the next item is predictable
        order = list(rng.permutation(favourite))
        for k in range(int(rng.integers(8, 20))):
            sku = order[k % len(order)] if rng.random() < 0.85 else str(rng.choice([p["sku"] for p in products]))
            when = start + timedelta(days=float(rng.uniform(0, 120)))
            action = str(rng.choice(["viewed", "carted", "bought"], p=[0.6, 0.25, 0.15]))
            rows.append({"customer": f"c{u:04d}", "sku": sku, "action": action,
                         "when": when.isoformat(timespec="seconds").replace("+00:00", "Z")})
    rows.sort(key=lambda r: r["when"])
    with open(folder / "orders.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["customer", "sku", "action", "when"])
        w.writeheader()
        w.writerows(rows)
    (folder / "products.toml").write_text(PRODUCTS_TOML)
    (folder / "orders.toml").write_text(ORDERS_TOML)
    return by_section


def cli(store: Path, env: dict[str, str], *args: str) -> dict:
    r = CliRunner().invoke(app, ["--store", str(store), *args, "--json"], env=env)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, onnx_dir: Path) -> dict:
    folder = tmp_path_factory.mktemp("shop")
    sections = write_shop(folder)
    store = folder / "shop.duckdb"
    env = {"SHOPMIND_CONFIG": "", "SHOPMIND_KNOWLEDGE_ONNX_DIR": str(onnx_dir)}
    items = cli(store, env, "ingest", str(folder / "products.csv"), "--mapping", str(folder / "products.toml"),
                "--name", "myshop")
    events = cli(store, env, "ingest", str(folder / "orders.csv"), "--mapping", str(folder / "orders.toml"),
                 "--name", "myshop")
    mined = cli(store, env, "mine", "-d", "myshop")
    report = cli(store, env, "train", "-d", "myshop", "--out", str(folder / "artifact"))
    return {"folder": folder, "store": store, "env": env, "sections": sections, "ingest": [items, events],
            "mine": mined, "report": report}


def test_the_shop_files_are_ingested_whole(shop: dict) -> None:
    items, events = (r["runs"][0] for r in shop["ingest"])
    assert items["counts"]["item"]["inserted"] == 80 and items["rejected"] == 0
    n_orders = sum(1 for _ in open(shop["folder"] / "orders.csv")) - 1
    assert events["counts"]["event"]["inserted"] == n_orders and events["rejected"] == 0
    from shopmind.data.store import Store

    with Store(shop["store"], read_only=True) as s:
        row = s.con.execute("SELECT title, brand, price, categories, attributes FROM items "
                            "WHERE dataset = 'myshop' AND item_id = 'SKU-000'").fetchone()
        types = dict(s.con.execute("SELECT type, count(*) FROM events WHERE dataset = 'myshop' GROUP BY type")
                     .fetchall())
    assert row[:4] == ("Copper Teapot", "Maker0", 5.0, ["Home", "Kitchen"]) and json.loads(row[4]) == {"stock": "10"}
    assert set(types) == {"view", "add_to_cart", "purchase"}
    assert shop["mine"]["reports"][0]["dataset"] == "myshop"


def test_training_defaults_to_the_time_protocol(shop: dict) -> None:
    rep = shop["report"]
    assert rep["protocol"] == "time" and rep["mask_history"]
    assert rep["protocol_note"].startswith("time windows: valid from 2024-")
    assert rep["users"]["test"] == rep["cases"]["test"]["cases"] > 100
    # clustered tastes are learnable: the pipeline is far above popularity on the held-out future
    assert rep["results"]["ranker"]["ndcg@10"] > 2 * rep["results"]["pop"]["ndcg@10"]
    assert (Path(rep["artifact"]) / "evaluation.md").read_text().count("time windows") == 1


@pytest.fixture(scope="module")
def client(shop: dict, tmp_path_factory: pytest.TempPathFactory):
    from shopmind.config import load_settings
    from shopmind.serving.app import create_app
    from shopmind.serving.auth import KeyStore
    from shopmind.serving.server import keys_path, load_service

    settings = load_settings(overrides={"store.path": str(shop["store"]),
                                        "serving.state_dir": str(tmp_path_factory.mktemp("state")),
                                        "knowledge.onnx_dir": shop["env"]["SHOPMIND_KNOWLEDGE_ONNX_DIR"]}, environ={})
    keys = KeyStore(keys_path(settings))
    reader, writer = keys.create("backend", ["read_private"]), keys.create("writer", "write")
    service = load_service(Path(shop["report"]["artifact"]), settings)

    def loader(path: str | None):  # what `shopmind serve` gives the app: reloads follow the trainer's record
        return load_service(Path(path or shop["report"]["artifact"]), settings, attach=False)

    shop["state_dir"] = settings.state_dir
    with TestClient(create_app(service, keys, settings.serving, loader), raise_server_exceptions=False,
                    headers={"Authorization": f"Bearer {reader}"}) as c:
        yield c, {"X-API-Key": writer, "Authorization": ""}


def test_the_served_shop_recommends_searches_and_takes_events(shop: dict, client) -> None:
    c, write = client
    catalog = {sku for skus in shop["sections"].values() for sku in skus}
    r = c.get("/recommend/c0000", params={"k": 5, "explore": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["known_user"] and len(body["items"]) == 5 and {i["item_id"] for i in body["items"]} <= catalog
    kitchen = set(shop["sections"]["Home > Kitchen"])  # c0000's favourite section
    assert len({i["item_id"] for i in body["items"]} & kitchen) >= 3
    found = c.get("/search", params={"q": "teapot", "size": 5}).json()
    assert found["items"] and all("Teapot" in i["title"] for i in found["items"][:4])
    posted = c.post("/events", json={"user_id": "new-customer", "item_id": "SKU-100", "type": "purchase"},
                    headers=write)
    assert posted.status_code == 200 and posted.json()["accepted"] == 1
    after = c.get("/recommend/new-customer", params={"k": 5}).json()
    assert "SKU-100" not in {i["item_id"] for i in after["items"]}


def test_the_shop_keeps_learning_with_the_trainer(shop: dict, client) -> None:
    """New visits posted to the running app reach the store (shipper), a trainer run judges and promotes a
    retrained artifact, and the running app reloads it: the documented loop, end to end."""
    import time

    c, write = client
    before = c.get("/health").json()["artifact_created"]
    rng = np.random.default_rng(1)
    t0 = datetime(2024, 6, 1, tzinfo=timezone.utc).timestamp()  # after every ingested order
    events = []
    for u in range(0, 300, 2):
        section = shop["sections"][list(shop["sections"])[u % 4]]
        for k in range(3):
            events.append({"user_id": f"c{u:04d}", "item_id": str(rng.choice(section)), "type": "view",
                           "timestamp": t0 + 3600 * k + u, "event_id": f"live-{u}-{k}"})
    for i in range(0, len(events), 100):
        r = c.post("/events", json={"events": events[i:i + 100]}, headers=write)
        assert r.status_code == 200 and r.json()["accepted"] == len(events[i:i + 100])
    time.sleep(1.1)  # the next artifact's "created" (whole seconds) must differ from the served one
    env = {**shop["env"], "SHOPMIND_SERVING_STATE_DIR": str(shop["state_dir"])}
    res = cli(shop["store"], env, "trainer", "myshop", "--artifact", shop["report"]["artifact"], "--once", "cheap",
              "--margin", "1", "--min-cases", "20")
    assert res["outcome"] == "promoted", res
    assert res["cases"] >= 20 and 0 <= res["candidate"]["ndcg@10"] <= 1 and 0 <= res["serving"]["ndcg@10"] <= 1
    from shopmind.data.store import Store

    with Store(shop["store"], read_only=True) as s:
        live = s.con.execute("SELECT count(*) FROM events WHERE dataset = 'myshop' AND event_id LIKE 'live-%'").fetchone()
        mine = s.con.execute("SELECT count(*) FROM events WHERE dataset = 'myshop' AND user_id = 'c0000'").fetchone()
    assert live[0] == len(events)
    deadline = time.time() + 60
    while time.time() < deadline and c.get("/health").json()["artifact_created"] == before:
        time.sleep(0.5)
    assert c.get("/health").json()["artifact_created"] != before  # the app reloaded the promoted artifact
    r = c.get("/recommend/c0000", params={"k": 5, "explore": False})
    # c0000's history after the reload: every stored event once (the 3 live ones from the log's replay, not
    # also from the new artifact's base histories)
    assert r.status_code == 200 and r.json()["history_size"] == mine[0]


def test_a_real_dataset_through_the_generic_loader(data_dir: Path, tmp_path: Path, onnx_dir: Path) -> None:
    """MovieLens 100K exported as a shop would: movies.csv (film_id, film_title, genre_list), ratings.parquet
    (viewer, film, stars, rated_at in unix seconds, no event type: a mapping constant)."""
    ml = data_dir / "ml-100k"
    genres = [line.split("|")[0] for line in (ml / "u.genre").read_text().splitlines() if line]
    movies = pd.read_csv(ml / "u.item", sep="|", encoding="latin-1", header=None)
    flags = movies.iloc[:, 5:5 + len(genres)].to_numpy().astype(bool)
    pd.DataFrame({"film_id": movies[0].astype(str), "film_title": movies[1],
                  "genre_list": ["|".join(g for g, on in zip(genres, row) if on) for row in flags]}
                 ).to_csv(tmp_path / "movies.csv", index=False)
    ratings = pd.read_csv(ml / "u.data", sep="\t", header=None, names=["viewer", "film", "stars", "rated_at"])
    ratings.astype({"viewer": str, "film": str}).to_parquet(tmp_path / "ratings.parquet", index=False)
    (tmp_path / "movies.toml").write_text('kind = "items"\n[columns]\nitem_id = "film_id"\ntitle = "film_title"\n'
                                         'categories = "genre_list"\n')
    (tmp_path / "ratings.toml").write_text('kind = "events"\n[columns]\nuser_id = "viewer"\nitem_id = "film"\n'
                                          'value = "stars"\ntimestamp = "rated_at"\n[constants]\ntype = "rating"\n')
    store = tmp_path / "s.duckdb"
    env = {"SHOPMIND_CONFIG": "", "SHOPMIND_KNOWLEDGE_ONNX_DIR": str(onnx_dir)}
    for data, mapping in (("movies.csv", "movies.toml"), ("ratings.parquet", "ratings.toml")):
        run = cli(store, env, "ingest", str(tmp_path / data), "--mapping", str(tmp_path / mapping), "--name", "films")
        assert run["runs"][0]["rejected"] == 0
    rep = cli(store, env, "train", "-d", "films", "--out", str(tmp_path / "artifact"))
    assert rep["protocol"] == "time" and rep["items"] == 1682
    assert rep["cases"]["test"]["cases"] >= 50 and rep["cases"]["test"]["unknown_item"] == 0
    res = rep["results"]
    assert res["ranker"]["ndcg@10"] > 0 and res["ranker"]["recall@50"] > 0.1
    # personalisation beats popularity on the future: the best source by a wide margin
    assert res[rep["best_source"]]["ndcg@10"] > 2 * res["pop"]["ndcg@10"]
