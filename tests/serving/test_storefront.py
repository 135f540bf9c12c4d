"""The storefront's server side: the page and its assets, shoppers, sessions that may post only their own
shopper's interactions, the dashboard data and its plots (no path tricks)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shopmind.config import load_settings
from shopmind.serving import sessions
from shopmind.serving.app import create_app
from shopmind.serving.auth import KeyStore
from shopmind.serving.server import keys_path, load_service

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store's .benchmarks folder, where `shopmind demo` and `evaluate-search` write on this machine."""
    return tmp_path_factory.mktemp("local-runs")


@pytest.fixture(scope="module")
def shop(served: dict, local_runs: Path, tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("shop-state")
    settings = load_settings(overrides={"store.path": str(served["store"]), "serving.state_dir": str(state),
                                        "knowledge.onnx_dir": served["env"]["SHOPMIND_KNOWLEDGE_ONNX_DIR"],
                                        "serving.mode": "demo"}, environ={})  # the open storefront
    service = load_service(served["artifact"], settings)
    app = create_app(service, KeyStore(keys_path(settings)), settings.serving,
                     secret=sessions.load_secret(state),
                     results={"local": local_runs, "bench": RESULTS})
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, service


def test_page_and_assets_are_served(shop) -> None:
    c, _ = shop
    page = c.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="q"' in page.text and "<label" in page.text and 'lang="en"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert c.get(asset).status_code == 200
    assert c.get("/static/../app.py").status_code == 404


def test_shoppers_are_real_users(shop) -> None:
    c, service = shop
    users = c.get("/storefront/users").json()["users"]
    real = [u for u in users if u["user_id"] != "new-shopper"]
    assert real and all(u["user_id"] in service.histories and u["events"] == len(service.histories[u["user_id"]])
                        for u in real)
    assert real[0]["events"] >= real[-1]["events"]


def test_a_session_posts_only_its_own_shoppers_interactions(shop) -> None:
    c, service = shop
    user = c.get("/storefront/users").json()["users"][0]["user_id"]
    token = c.get("/storefront/session", params={"user": user}).json()["token"]
    item = str(service.catalog.item_ids[0])
    ok = c.post("/events", json={"user_id": user, "item_id": item, "type": "add_to_cart"}, headers={"X-Session": token})
    assert ok.status_code == 200 and ok.json()["accepted"] == 1
    other = c.post("/events", json={"user_id": "someone-else", "item_id": item, "type": "view"},
                   headers={"X-Session": token})
    assert other.status_code == 403
    rating = c.post("/events", json={"user_id": user, "item_id": item, "type": "rating", "value": 5},
                    headers={"X-Session": token})
    assert rating.status_code == 403  # ratings and reviews are not for browser sessions
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert c.post("/events", json={"user_id": user, "item_id": item, "type": "view"},
                  headers={"X-Session": forged}).status_code == 401
    secret = sessions.load_secret(service.state_dir.parent)
    expired, _ = sessions.mint(secret, user, 60, now=time.time() - 3600)
    assert sessions.verify(secret, expired) is None
    assert sessions.verify(secret, "garbage") is None and sessions.verify(secret, None) is None
    assert c.post("/events", json={"user_id": user, "item_id": item, "type": "view"},
                  headers={"X-Session": expired}).status_code == 401


def test_dashboard_has_the_served_evaluation_and_safe_plots(shop) -> None:
    c, _ = shop
    d = c.get("/storefront/dashboard").json()
    assert d["catalog"]["dataset"] == "amazon2018-giftcards"
    first = d["reports"][0]
    assert first["header"][0] == "system" and {r[0] for r in first["rows"]} >= {"ranker", "blend", "itemknn"}
    if (RESULTS / "search-homedepot.png").is_file():
        assert c.get("/storefront/plots/bench/search-homedepot.png").headers["content-type"] == "image/png"
    for bad in ("..%2Fpyproject.toml", "x.txt", "%2Fetc%2Fpasswd.png", "..%2F..%2Fsearch-homedepot.png"):
        assert c.get(f"/storefront/plots/bench/{bad}").status_code in (404, 422)  # not found, or not a plot name
    assert c.get("/storefront/plots/elsewhere/search-homedepot.png").status_code == 422  # unknown source


def test_dashboard_shows_this_machines_runs_before_the_benchmarks(shop, local_runs: Path) -> None:
    c, _ = shop
    if not (RESULTS / "search-homedepot.json").is_file():
        pytest.skip("no committed search benchmark to stand in for a local run")
    before = c.get("/storefront/dashboard").json()["reports"]
    assert not any("measured on this machine" in r["title"] for r in before)
    for name in ("search-homedepot.json", "search-homedepot.png"):  # as `shopmind evaluate-search` writes them
        (local_runs / name).write_bytes((RESULTS / name).read_bytes())
    reports = c.get("/storefront/dashboard").json()["reports"]
    titles = [r["title"] for r in reports]
    local = titles.index(next(t for t in titles if t.startswith("Search") and "measured on this machine" in t))
    assert local < titles.index(next(t for t in titles if t.startswith("Search") and "benchmark" in t))
    assert reports[local]["plot"] == "/storefront/plots/local/search-homedepot.png"
    assert c.get(reports[local]["plot"]).content == (RESULTS / "search-homedepot.png").read_bytes()
    # The steps of the last `shopmind demo` on this machine (written by the demo; shaped here by its writer).
    from shopmind.cli import _write_demo_record

    _write_demo_record(local_runs, [{"dataset": "homedepot", "status": "reused", "seconds": 0.01},
                                    {"step": "train amazon-scientific", "status": "done", "seconds": 149.2}], 151.0)
    demo = next(r for r in c.get("/storefront/dashboard").json()["reports"] if r["title"].startswith("Last"))
    assert demo["rows"] == [["ingest homedepot", "reused", "0.0"], ["train amazon-scientific", "done", "149.2"]]
    assert "151.0 s" in demo["title"]
    # A result file that cannot be read is shown as such and never takes the dashboard down.
    (local_runs / "serving-amazon2018-giftcards.json").write_text('{"load": {"clients": 1}}')
    reports = c.get("/storefront/dashboard").json()["reports"]
    broken = next(r for r in reports if r["title"].startswith("serving-amazon2018-giftcards.json"))
    assert broken["note"].startswith("could not be read: KeyError") and not broken["rows"]


def test_dashboard_counts_events_by_type_in_the_artifact_and_live(shop) -> None:
    c, service = shop

    def counts() -> dict[str, tuple[int, int]]:
        d = c.get("/storefront/dashboard").json()["events"]
        assert d["header"] == ["event type", "in the artifact", "logged since"]
        return {r[0]: (int(r[1].replace(",", "")), int(r[2].replace(",", ""))) for r in d["rows"]}

    before = counts()
    stored = service.artifact.manifest["event_types"]
    assert sum(v[0] for v in before.values()) == service.artifact.manifest["events"] == sum(stored.values()) > 0
    user = "dashboard-shopper"
    token = c.get("/storefront/session", params={"user": user}).json()["token"]
    items = [str(i) for i in service.catalog.item_ids[:3]]
    batch = [{"user_id": user, "item_id": i, "type": "view"} for i in items] + [
        {"user_id": user, "item_id": items[0], "type": "purchase"}]
    assert c.post("/events", json={"events": batch}, headers={"X-Session": token}).json()["accepted"] == 4
    after = counts()
    assert after["view"][1] == before.get("view", (0, 0))[1] + 3
    assert after["purchase"][1] == before.get("purchase", (0, 0))[1] + 1
    assert {k: v[0] for k, v in after.items() if v[0]} == stored  # the artifact's side does not move
    service.forget(user)  # a forgotten shopper's events leave the statistics too
    assert counts().get("view", (0, 0))[1] == before.get("view", (0, 0))[1]
