"""The HTTP API end to end (in process) on a real trained artifact: reads, events and their immediate
effect, authentication, bad input, forgetting a user, ads, reload."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from shopmind.config import load_settings
from shopmind.serving.app import create_app
from shopmind.serving.auth import KeyStore
from shopmind.serving.server import keys_path, load_service


@pytest.fixture(scope="module")
def api(served: dict, tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("state")
    settings = load_settings(overrides={"store.path": str(served["store"]), "serving.state_dir": str(state),
                                        "knowledge.onnx_dir": served["env"]["SHOPMIND_KNOWLEDGE_ONNX_DIR"]}, environ={})
    keys = KeyStore(keys_path(settings))
    write, admin = keys.create("writer", "write"), keys.create("admin", "admin")
    private = keys.create("backend", ["read_private"])
    service = load_service(served["artifact"], settings)
    app = create_app(service, keys, settings.serving,
                     loader=lambda path: load_service(path or served["artifact"], settings, attach=False))
    # Reads carry a read_private key (production mode); a request's own headers replace it.
    with TestClient(app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {private}"}) as client:
        yield {"client": client, "service": service, "write": {"X-API-Key": write, "Authorization": ""},
               "admin": {"Authorization": f"Bearer {admin}"}, "app": app, "state": state}


def _user_with_history(api) -> str:
    s = api["service"]
    return max(sorted(s.histories), key=lambda u: len(s.histories[u]))


def test_training_report_is_honest(served: dict) -> None:
    rep = served["report"]
    assert set(rep["results"]) == {"ranker", "blend", "itemknn", "sasrec", "twotower", "pop"}
    assert rep["users"]["test"] > 100 and 0 < rep["ranker"]["target_in_candidates"] <= 1
    manifest = json.loads((served["artifact"] / "manifest.json").read_text())
    assert manifest["dataset"] == "amazon2018-giftcards" and manifest["ranker"]
    assert (served["artifact"] / "evaluation.md").is_file()


def test_health_metrics_and_openapi(api) -> None:
    c = api["client"]
    h = c.get("/health").json()
    assert h["status"] == "ok" and h["items"] > 1000
    c.get("/recommend/nobody")
    m = c.get("/metrics")
    assert m.status_code == 200 and "shopmind_requests_total" in m.text and 'route="/recommend/{user_id}"' in m.text
    assert "/events" in c.get("/openapi.json").json()["paths"]


def test_recommend_for_a_real_user_with_explanations(api) -> None:
    c, s = api["client"], api["service"]
    user = _user_with_history(api)
    r = c.get(f"/recommend/{user}", params={"k": 8})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 8 and body["rec_id"] and body["known_user"]
    seen = {str(s.catalog.item_ids[x]) for x in s.histories[user]}
    ids = [i["item_id"] for i in body["items"]]
    assert len(set(ids)) == 8 and not seen & set(ids)
    kinds = {i["explanation"]["kind"] for i in body["items"]}
    assert kinds <= {"history", "similar_text", "interests", "category", "popular", "explore"}
    for i in body["items"]:
        assert i["explanation"]["text"]
        if i["explanation"]["kind"] == "history":
            assert i["explanation"]["item_id"] in seen
    cold = c.get("/recommend/someone-new", params={"k": 5}).json()
    assert len(cold["items"]) == 5 and not cold["known_user"]


def test_an_event_changes_the_next_recommendation(api) -> None:
    c, s = api["client"], api["service"]
    user = "live-shopper"
    before = c.get(f"/recommend/{user}", params={"k": 10, "explore": False}).json()
    item = str(s.catalog.item_ids[int(np.argmax(s.pipeline.info.popularity))])
    r = c.post("/events", json={"event_id": "live-1", "user_id": user, "item_id": item, "type": "view"},
               headers=api["write"])
    assert r.status_code == 200 and r.json()["accepted"] == 1 and r.json()["durable"]
    after = c.get(f"/recommend/{user}", params={"k": 10, "explore": False}).json()
    assert after["history_size"] == before["history_size"] + 1 and after["events_seen"] == before["events_seen"] + 1
    assert item not in [i["item_id"] for i in after["items"]]
    assert [i["item_id"] for i in after["items"]] != [i["item_id"] for i in before["items"]]
    assert any(i["explanation"]["kind"] in ("history", "similar_text") for i in after["items"])
    again = c.post("/events", json={"event_id": "live-1", "user_id": user, "item_id": item, "type": "view"},
                   headers=api["write"]).json()
    assert again["accepted"] == 0 and again["duplicates"] == 1
    assert c.get(f"/recommend/{user}").json()["history_size"] == after["history_size"]


def test_purchased_items_are_never_recommended(api) -> None:
    c = api["client"]
    user = "buyer"
    first = c.get(f"/recommend/{user}", params={"k": 3, "explore": False, "exclude_seen": False}).json()["items"][0]
    c.post("/events", json={"events": [{"user_id": user, "item_id": first["item_id"], "type": "purchase"}]},
           headers=api["write"])
    ids = [i["item_id"] for i in c.get(f"/recommend/{user}", params={"k": 20, "exclude_seen": False}).json()["items"]]
    assert first["item_id"] not in ids


def test_feedback_reaches_the_bandit(api) -> None:
    c, s = api["client"], api["service"]
    rec = c.get("/recommend/clicker", params={"k": 5}).json()
    item = rec["items"][0]["item_id"]
    r = s.row(item)
    before = (s.explorer.impressions[r], s.explorer.clicks[r])
    c.post("/events", json={"events": [{"user_id": "clicker", "item_id": i["item_id"], "type": "impression",
                                        "rec_id": rec["rec_id"]} for i in rec["items"]]
                            + [{"user_id": "clicker", "item_id": item, "type": "click", "rec_id": rec["rec_id"]}]},
           headers=api["write"])
    assert s.explorer.impressions[r] == before[0] + 1 and s.explorer.clicks[r] == before[1] + 1


@pytest.mark.parametrize("path, params, status", [
    ("/recommend/u", {"k": 0}, 422), ("/recommend/u", {"k": 101}, 422), ("/recommend/u", {"diversity": 2}, 422),
    ("/recommend/u", {"item": "no-such-item"}, 404), ("/search", {"q": "card", "attr": " :x"}, 422),
    ("/search", {}, 422), ("/search", {"q": "x" * 201}, 422), ("/search", {"q": "card", "page": 51}, 422),
    ("/search", {"q": "card", "mode": "magic"}, 422), ("/search", {"q": "card", "attr": "nocolon"}, 422),
    ("/items/no-such-item", {}, 404), ("/items/x/similar", {"method": "psychic"}, 422),
])
def test_bad_reads_get_a_clear_4xx(api, path: str, params: dict, status: int) -> None:
    r = api["client"].get(path, params=params)
    assert r.status_code == status, r.text
    assert "detail" in r.json() and "Traceback" not in r.text


def test_an_empty_price_range_matches_nothing(api) -> None:
    c = api["client"]
    r = c.get("/recommend/u", params={"price_min": 50, "price_max": 10})
    assert r.status_code == 200 and r.json()["items"] == []
    assert c.get("/search", params={"q": "card", "price_min": 50, "price_max": 10}).json()["total"] == 0


def test_writes_need_a_key_and_valid_bodies(api) -> None:
    c = api["client"]
    ok = {"user_id": "u", "item_id": "x", "type": "view"}
    assert c.post("/events", json=ok, headers={"Authorization": ""}).status_code == 401
    assert c.post("/events", json=ok).status_code == 403  # the read key may not write
    assert c.post("/events", json=ok, headers={"X-API-Key": "sm_guess"}).status_code == 401
    assert c.delete("/users/u", headers=api["write"]).status_code == 403  # forgetting needs admin
    for bad in ({"user_id": "u", "type": "view"}, {"user_id": "u", "item_id": "x", "type": "teleport"},
                {"user_id": "", "item_id": "x", "type": "view"}, {"user_id": "u", "item_id": "x", "type": "view",
                                                                  "value": "NaN"},
                {"user_id": "u", "item_id": "x", "type": "view", "surprise": 1}, {"events": []}):
        r = c.post("/events", json=bad, headers=api["write"])
        assert r.status_code == 422, (bad, r.text)
        assert "Traceback" not in r.text
    r = c.post("/events", content=b"{not json", headers={**api["write"], "Content-Type": "application/json"})
    assert r.status_code == 422
    big = {"events": [ok] * 1001}
    assert c.post("/events", json=big, headers=api["write"]).status_code == 413
    huge = b'{"events": [' + b",".join([json.dumps(ok).encode()] * 40_000) + b"]}"
    assert c.post("/events", content=huge, headers={**api["write"], "Content-Type": "application/json"}).status_code == 413


def test_search_with_filters_and_facets(api) -> None:
    c = api["client"]
    r = c.get("/search", params={"q": "starbuks gift card", "size": 5}).json()
    assert r["corrected"] == "starbucks gift card" and r["total"] > 0 and len(r["items"]) == 5
    assert r["facets"]["brand"]
    f = c.get("/search", params={"q": "gift card", "brand": "Starbucks", "price_min": 10, "size": 50}).json()
    assert f["items"] and all(i["brand"] == "Starbucks" and i["price"] >= 10 for i in f["items"])
    user = _user_with_history(api)
    assert c.get("/search", params={"q": "gift card", "user": user}).json()["personalised"]


def test_items_and_similar(api) -> None:
    c, s = api["client"], api["service"]
    item = str(s.catalog.item_ids[int(np.argmax(s.pipeline.info.popularity))])
    card = c.get(f"/items/{item}").json()
    assert card["item_id"] == item and "knowledge" in card and card["popularity"] > 0
    for method in ("pipeline", "covisitation", "text"):
        sim = c.get(f"/items/{item}/similar", params={"k": 5, "method": method}).json()
        assert sim["items"] and item not in [i["item_id"] for i in sim["items"]], method


def test_ads_rank_by_expected_value_and_learn_from_clicks(api) -> None:
    c, s = api["client"], api["service"]
    ads = np.argsort(-s.pipeline.info.popularity)[:3]
    s.is_ad[ads] = True  # mark three catalog items as ads with bids (real ads come from attributes kind/bid)
    s.bids[ads] = [1.0, 2.0, 0.5]
    try:
        rec = c.get("/recommend/ad-viewer", params={"k": 10, "ads": 3}).json()
        ad_ids = [a["item_id"] for a in rec["ads"]]
        assert ad_ids[0] == str(s.catalog.item_ids[ads[1]])  # same prior CTR: the highest bid first
        assert not set(ad_ids) & {i["item_id"] for i in rec["items"]}  # ads only in their own slots
        low = str(s.catalog.item_ids[ads[2]])
        c.post("/events", json={"events": [{"user_id": f"v{i}", "item_id": low, "type": "click",
                                            "rec_id": rec["rec_id"]} for i in range(40)]}, headers=api["write"])
        again = c.get("/recommend/ad-viewer", params={"k": 10, "ads": 3}).json()["ads"]
        assert again[0]["item_id"] == low and again[0]["p_click"] > rec["ads"][0]["p_click"]
    finally:
        s.is_ad[ads] = False


def test_forget_user_and_reload_keep_acknowledged_events(api) -> None:
    c = api["client"]
    user = _user_with_history(api)
    assert c.get(f"/recommend/{user}").json()["history_size"] > 0
    c.post("/events", json={"event_id": "f-1", "user_id": user, "item_id": api["service"].catalog.item_ids[0],
                            "type": "view"}, headers=api["write"])
    r = c.delete(f"/users/{user}", headers=api["admin"])
    assert r.status_code == 200 and r.json()["events_removed_from_log"] >= 1
    assert c.get(f"/recommend/{user}").json()["history_size"] == 0
    assert "f-1" not in (Path(api["state"]) / "amazon2018-giftcards" / "events.jsonl").read_text()
    c.post("/events", json={"event_id": "after-1", "user_id": "keeper", "item_id": api["service"].catalog.item_ids[1],
                            "type": "view"}, headers=api["write"])
    assert c.post("/admin/reload", json={}, headers=api["write"]).status_code == 403
    r = c.post("/admin/reload", json={}, headers=api["admin"])
    assert r.status_code == 200, r.text
    new = api["app"].state.holder.service
    assert new is not api["service"] and new.history("keeper")  # the logged event was replayed
    assert c.get(f"/recommend/{user}").json()["history_size"] == 0  # still forgotten after the reload
    bad = c.post("/admin/reload", json={"artifact": "/no/such/folder"}, headers=api["admin"])
    assert bad.status_code == 400 and api["app"].state.holder.service is new


def test_recommendations_within_the_current_search(api) -> None:
    c = api["client"]
    user = _user_with_history(api)
    found = {i["item_id"] for i in c.get("/search", params={"q": "starbucks", "size": 50}).json()["items"]}
    recs = c.get(f"/recommend/{user}", params={"k": 10, "explore": False, "query": "starbucks"}).json()["items"]
    assert recs and {i["item_id"] for i in recs} <= found
    assert sum("starbucks" in i["title"].lower() for i in recs) >= len(recs) // 2


def test_cached_pools_are_reused_until_the_users_next_event(api) -> None:
    c, s = api["client"], api["app"].state.holder.service  # (a reload above may have replaced the service)
    user = "cache-user"
    c.get(f"/recommend/{user}", params={"explore": False})
    hits = s.cache_stats["hits"]
    first = c.get(f"/recommend/{user}", params={"explore": False}).json()
    assert s.cache_stats["hits"] == hits + 1
    c.post("/events", json={"user_id": user, "item_id": first["items"][0]["item_id"], "type": "view"},
           headers=api["write"])
    misses = s.cache_stats["misses"]
    after = c.get(f"/recommend/{user}", params={"explore": False}).json()
    assert s.cache_stats["misses"] == misses + 1 and after["history_size"] == first["history_size"] + 1
    assert first["items"][0]["item_id"] not in [i["item_id"] for i in after["items"]]
