"""Online evaluation (issue 14): signed attribution tokens as rec_id, the accumulator fed from the shared
event log (identical on every worker, rebuilt on restart and after a forget), its intervals, and
GET /stats/online behind read_private."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from shopmind.serving import online_stats
from shopmind.serving.online import (CODE, EXPLORE, MAX_TOKEN_CHARS, artifact_version, decode_token, encode_token,
                                     item_hash, mean_interval, origins, wilson)
from shopmind.serving.online_stats import OnlineStats

KEY = bytes(range(32))
ITEMS = [f"item-{i}" for i in range(50)]
SRC = [CODE["itemknn"], CODE["sasrec"], CODE["pop"], EXPLORE, CODE["itemknn"]]


def token(items: list[str] = ITEMS[:5], sources: list[int] = SRC, arm: str = "main", served: float = 1_700_000_000,
          version: str = "0badcafe", key: bytes = KEY) -> str:
    return encode_token(key, version, items, sources, arm, served)


def ev(kind: str, item: str, rec: str | None, value: float | None = None) -> dict[str, Any]:
    e = {"user_id": "u", "type": kind, "item_id": item, "rec_id": rec}
    return {**e, "value": value} if value is not None else e


# -- tokens --------------------------------------------------------------------------------------------------------
def test_token_round_trip_and_item_positions() -> None:
    t = token()
    d = decode_token(KEY, t)
    assert d is not None and d.version == "0badcafe" and d.arm == "main" and d.served == 1_700_000_000
    assert d.sources == ("itemknn", "sasrec", "pop", "explore", "itemknn") and d.width == 4
    assert [d.position(i) for i in ITEMS[:5]] == [0, 1, 2, 3, 4] and d.position("not-shown") is None
    assert d.hashes[2] == item_hash("item-2") and len(set(decode_token(KEY, token()).nonce for _ in range(5))) >= 1
    assert token() != token()  # a fresh nonce each time: two lists never share a rec_id
    long = encode_token(KEY, "0badcafe", ITEMS, [CODE["pop"]] * 50, "experiment-b1234", time.time())
    d = decode_token(KEY, long)
    assert len(long) <= 240 < MAX_TOKEN_CHARS and d is not None and len(d.sources) == 50
    assert d.width == 2 and [d.position(i) for i in ITEMS] == list(range(50))
    over = decode_token(KEY, encode_token(KEY, "0badcafe", ITEMS * 2, [1] * 100, "main", 0))
    assert over is not None and len(over.hashes) == 50  # positions past 50 are not in the token
    with pytest.raises(ValueError):
        token(arm="Not An Arm")
    assert artifact_version("2024-01-01T00:00:00+00:00", "a") != artifact_version("2024-01-01T00:00:00+00:00", "b")


def test_tampered_or_foreign_tokens_do_not_decode() -> None:
    t = token()
    flipped = t[:20] + ("A" if t[20] != "A" else "B") + t[21:]
    for bad in (flipped, t[:-1], t + "A", "", "x" * 300, "not base64 at all!", "deadbeef" * 4, t.upper()):
        assert decode_token(KEY, bad) is None, bad
    assert decode_token(bytes(32), t) is None  # another state folder's key


def test_origins_is_the_source_that_ranks_the_row_best() -> None:
    scores = {"pop": np.array([9.0, 8, 7, 6, 5, 4]), "itemknn": np.array([0.0, 1, 2, 3, 4, 5]),
              "sasrec": np.array([-np.inf, 0.5, -np.inf, 0.7, -np.inf, -np.inf])}
    rows = np.array([0, 5, 3, 1, 2])
    # pop ranks 0,5,3,1,2 as 0,5,3,1,2; itemknn as 5,0,2,4,3; sasrec ranks row 3 first, row 1 second.
    assert origins(rows, scores, None, depth=2).tolist() == [CODE["pop"], CODE["itemknn"], CODE["sasrec"],
                                                              CODE["pop"], CODE["pop"]]
    blocked = np.array([True, False, False, False, False, False])  # row 0 gone: pop now ranks row 1 first
    assert origins(np.array([1, 2]), scores, blocked, depth=50).tolist() == [CODE["pop"], CODE["pop"]]
    nothing = {"pop": np.full(6, -np.inf)}
    assert origins(np.array([1]), nothing, None, 5).tolist() == [CODE["ranker"]]


# -- intervals -----------------------------------------------------------------------------------------------------
def test_intervals_on_hand_made_numbers() -> None:
    low, high = wilson(10, 100)  # the textbook Wilson 95 % interval of 10/100
    assert round(low, 4) == 0.0552 and round(high, 4) == 0.1744
    low, high = wilson(0, 10)
    assert low == 0.0 and round(high, 4) == 0.2775
    assert wilson(0, 0) == (0.0, 1.0)
    # values 0, 0, 0, 4: mean 1, sample variance 4, se 1, interval 1 +- 1.96
    low, high = mean_interval(4.0, 16.0, 4)
    assert round(low, 6) == round(1 - 1.96, 6) and round(high, 6) == round(1 + 1.96, 6)


# -- the accumulator -----------------------------------------------------------------------------------------------
def test_counts_dedupe_attribution_and_hit_rate() -> None:
    prices = {"item-1": 20.0}
    stats = OnlineStats(KEY, prices.get)
    a, b = token(), token(arm="exp")
    for rec in (a, b):
        for item in ITEMS[:5]:
            stats.observe(ev("impression", item, rec))
    stats.observe(ev("impression", "item-0", a))  # a second impression of the same item in the same list
    stats.observe(ev("click", "item-1", a))
    stats.observe(ev("click", "item-1", a))  # a double click
    stats.observe(ev("click", "not-shown", a))  # a click on an item not in the list
    stats.observe(ev("purchase", "item-1", a))  # no value: the item's price
    stats.observe(ev("purchase", "item-3", b, value=5.0))  # the explore slot, in arm exp
    stats.observe(ev("add_to_cart", "item-4", b))
    stats.observe(ev("click", "item-2", "forged-" + a[7:]))  # not a valid token: unattributed
    stats.observe(ev("impression", "item-2", None))  # no rec_id at all: not counted
    stats.observe({"user_id": "u", "type": "view", "item_id": "item-2", "rec_id": a})  # a view: not counted
    r = stats.report(k=10)
    o = r["overall"]
    assert (o["impressions"], o["clicks"], o["purchases"], o["add_to_cart"], o["lists"]) == (10, 2, 2, 1, 2)
    assert o["revenue"] == 25.0 and r["unattributed"] == {"click": 1}
    assert o["ctr"]["value"] == 0.2 and o["hit_rate"]["value"] == 1.0  # both lists had a click or purchase
    src = r["by_source"]
    assert src["sasrec"]["clicks"] == 1 and src["sasrec"]["impressions"] == 2 and src["sasrec"]["purchases"] == 1
    assert src["itemknn"]["impressions"] == 4 and src["itemknn"]["clicks"] == 0 and src["itemknn"]["hit_rate"]["value"] == 0
    assert src["explore"]["purchases"] == 1 and src["explore"]["hit_rate"]["value"] == 0.5
    assert sum(m["clicks"] for m in src.values()) == 1  # the click on an unlisted item counts for no source
    assert r["by_arm"]["main"]["clicks"] == 2 and r["by_arm"]["exp"]["clicks"] == 0
    assert r["by_arm"]["exp"]["revenue"] == 5.0 and r["by_version"]["0badcafe"]["impressions"] == 10
    assert r["by_slot"]["explore"]["impressions"] == 2 and r["by_slot"]["rest"]["impressions"] == 8
    # hit rate@k: list a's first hit is at position 1, list b's (explore purchase) at position 3
    assert stats.report(k=1)["overall"]["hit_rate"]["value"] == 0.0
    assert stats.report(k=2)["overall"]["hit_rate"]["value"] == 0.5
    assert stats.report(k=4)["overall"]["hit_rate"]["value"] == 1.0
    low, high = wilson(2, 10)
    assert o["ctr"]["low"] == round(low, 6) and o["ctr"]["high"] == round(high, 6)
    assert stats.gauges() == {"impressions": 10, "clicks": 2, "ctr": {"itemknn": 0.0, "sasrec": 0.5, "pop": 0.0,
                                                                      "explore": 0.0}}


def test_a_hit_within_k_needs_an_impression_within_k() -> None:
    stats = OnlineStats(KEY)
    shown, hidden_top = token(), token()
    for item in ITEMS[:5]:
        stats.observe(ev("impression", item, shown))
    stats.observe(ev("click", "item-1", shown))
    for item in ITEMS[2:5]:  # positions 0 and 1 never came into view, yet item-0 was clicked (a deep link, say)
        stats.observe(ev("impression", item, hidden_top))
    stats.observe(ev("click", "item-0", hidden_top))
    hit = {k: stats.report(k=k)["overall"] for k in (1, 2, 3)}
    assert [(h["lists"], h["hits"]) for h in hit.values()] == [(1, 0), (1, 1), (2, 2)]
    assert hit[2]["hit_rate"]["value"] == 1.0 and hit[1]["hit_rate"]["value"] == 0.0


def test_time_buckets_since_and_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(online_stats, "MINUTE_BUCKETS", 3)
    monkeypatch.setattr(online_stats, "HOUR_BUCKETS", 2)
    monkeypatch.setattr(online_stats, "MAX_RECS", 4)
    stats = OnlineStats(KEY)
    base = 1_700_000_000 // 3600 * 3600
    recs = [token(served=base + 60 * i) for i in range(5)] + [token(served=base - 3600 * h) for h in (1, 2, 3)]
    for rec in recs:
        stats.observe(ev("impression", "item-0", rec))
        stats.observe(ev("click", "item-0", rec))
    r = stats.report()
    assert r["overall"]["impressions"] == 8 and r["overall"]["clicks"] == 8  # the totals keep everything
    widths = [(p["start"], p["width"]) for p in r["series"]]
    assert widths == [(base - 3600, 3600), (base, 3600), (base + 120, 60), (base + 180, 60), (base + 240, 60)]
    counts = [p["all"]["impressions"] for p in r["series"]]
    assert counts == [1, 2, 1, 1, 1]  # minutes 0-1 merged into their hour; hours -2 and -3 fell off the series
    assert r["lists_remembered"] == 4 and r["lists_evicted"] == 4
    # since: the buckets that end after it (the hour bucket of minutes 0-1 still reaches past minute 2)
    late = stats.report(since=base + 150)
    assert late["overall"]["impressions"] == 5 and late["since"] == base + 150
    assert [p["start"] for p in late["series"]] == [base, base + 120, base + 180, base + 240]
    assert stats.report(since=base)["overall"]["impressions"] == 5
    assert stats.report(since=base - 1)["overall"]["impressions"] == 6
    assert stats.report(since=base + 3600)["overall"]["impressions"] == 0


# -- through a real service ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def artifact(served: dict) -> Any:
    from shopmind.serving.artifact import load

    return load(served["artifact"])


def _report(service: Any) -> dict[str, Any]:
    service.sync()
    r = service.online.report(k=10)
    r.pop("lists_remembered")
    return r


def _session(service: Any, user: str, click_at: int = 1, buy_at: int | None = None) -> dict[str, Any]:
    """One list shown to `user`: impressions for every item, a click, maybe a purchase."""
    rec = service.recommend(user, k=8, explore=True)
    items = [i["item_id"] for i in rec["items"]]
    events = [{"user_id": user, "item_id": i, "type": "impression", "rec_id": rec["rec_id"]} for i in items]
    events.append({"user_id": user, "item_id": items[click_at], "type": "click", "rec_id": rec["rec_id"]})
    if buy_at is not None:
        events.append({"user_id": user, "item_id": items[buy_at], "type": "purchase", "rec_id": rec["rec_id"],
                       "value": 12.5})
    service.ingest(events)
    return rec


def test_per_source_attribution_through_a_real_service(artifact: Any, tmp_path: Path) -> None:
    from shopmind.serving.service import Service

    s = Service(artifact, tmp_path / "state")
    user = max(sorted(artifact.histories), key=lambda u: len(artifact.histories[u]))
    history = s.history(user)
    rec = s.recommend(user, k=8, explore=True)
    t = decode_token(s.token_key, rec["rec_id"])
    assert t is not None and t.version == s.artifact_version and t.arm == "main" and abs(t.served - time.time()) < 60
    assert [t.position(i["item_id"]) for i in rec["items"]] == list(range(len(rec["items"])))
    # Check each position's source by brute force: its rank under every source among the items not blocked.
    blocked = s._blocked(user, history, None, True, None)
    ranked = s.pipeline.rank(history, s._user_index(user), k=s.config.pool, blocked=blocked)
    for pos, item in enumerate(rec["items"]):
        if item["explore"]:
            assert t.sources[pos] == "explore"
            continue
        r = s.catalog.index[item["item_id"]]
        ranks = {n: int((np.where(blocked, -np.inf, v) > v[r]).sum()) for n, v in ranked.source_scores.items()
                 if np.isfinite(v[r])}
        best = min(ranks.values())
        assert t.sources[pos] == next(n for n, x in ranks.items() if x == best), (pos, ranks, t.sources)
    assert any(i["explore"] for i in rec["items"]) and len(set(t.sources)) >= 2
    # Events answer the list: attributed to the source at each position.
    s.ingest([{"user_id": user, "item_id": i["item_id"], "type": "impression", "rec_id": rec["rec_id"]}
              for i in rec["items"]] + [{"user_id": user, "item_id": rec["items"][2]["item_id"], "type": "click",
                                         "rec_id": rec["rec_id"]}])
    r = s.online.report(k=10)
    assert r["overall"]["impressions"] == len(rec["items"]) and r["overall"]["clicks"] == 1
    expected: dict[str, int] = {}
    for name in t.sources:
        expected[name] = expected.get(name, 0) + 1
    assert {n: m["impressions"] for n, m in r["by_source"].items()} == expected
    assert r["by_source"][t.sources[2]]["clicks"] == 1 and r["by_version"][s.artifact_version]["lists"] == 1
    s.close()


def test_two_workers_agree_a_restart_rebuilds_and_a_forget_leaves_no_trace(artifact: Any, tmp_path: Path) -> None:
    from shopmind.serving.service import Service

    state = tmp_path / "state"
    a, b = Service(artifact, state), Service(artifact, state)  # two workers on one state folder
    assert a.token_key == b.token_key
    users = sorted(artifact.histories)[:3] + ["brand-new-shopper"]
    doomed = "shopper-to-forget-7f3a"
    for i, u in enumerate(users):
        _session(a if i % 2 else b, u, click_at=i % 3, buy_at=1 if i == 1 else None)
    # b served the list, a receives the events: attribution needs nothing from b
    rec = b.recommend(doomed, k=8)
    a.ingest([{"user_id": doomed, "item_id": i["item_id"], "type": "impression", "rec_id": rec["rec_id"]}
              for i in rec["items"]] + [{"user_id": doomed, "item_id": rec["items"][0]["item_id"], "type": "purchase",
                                         "rec_id": rec["rec_id"], "value": 99.0}])
    a.ingest([{"user_id": "u", "item_id": rec["items"][0]["item_id"], "type": "click", "rec_id": "garbled"}])
    before = _report(a)
    assert before == _report(b)
    assert before["overall"]["impressions"] == 5 * 8 and before["overall"]["clicks"] == 4
    assert before["overall"]["purchases"] == 2 and before["overall"]["revenue"] == 12.5 + 99.0
    assert before["unattributed"] == {"click": 1}
    fresh = Service(artifact, state)  # a restart: the replay rebuilds the same numbers
    assert _report(fresh) == before
    fresh.close()
    # Forgetting a shopper (on worker a): their events stop counting everywhere; no worker keeps their id.
    a.forget(doomed)
    after = _report(a)
    assert after == _report(b) and after["overall"]["impressions"] == 4 * 8 and after["overall"]["revenue"] == 12.5
    assert after["overall"]["purchases"] == 1 and after["overall"]["clicks"] == 4
    fresh = Service(artifact, state)
    assert _report(fresh) == after
    for s in (a, b, fresh):
        with s.online._lock:
            blob = pickle.dumps((s.online.totals, s.online.minutes, s.online.hours, s.online.recs, s.online.unattributed))
        assert doomed.encode() not in blob and users[0].encode() not in blob
        assert rec["rec_id"] not in s.online.recs  # the forgotten shopper's list is gone too
    for s in (a, b, fresh):
        s.close()


# -- the endpoint, the dashboard and /metrics ----------------------------------------------------------------------
def _app(served: dict, state: Path, experiment: float | None = None, **serving: object):
    from shopmind.config import load_settings
    from shopmind.serving import sessions
    from shopmind.serving.app import create_app
    from shopmind.serving.auth import KeyStore
    from shopmind.serving.server import keys_path, load_service

    settings = load_settings(overrides={"store.path": str(served["store"]), "serving.state_dir": str(state),
                                        "knowledge.onnx_dir": served["env"]["SHOPMIND_KNOWLEDGE_ONNX_DIR"],
                                        **{f"serving.{k}": v for k, v in serving.items()}}, environ={})
    keys = KeyStore(keys_path(settings))
    service = load_service(served["artifact"], settings, search=False)
    exp = None if experiment is None else (load_service(served["artifact"], settings, search=False, arm="experiment"),
                                           experiment)
    app = create_app(service, keys, settings.serving, secret=sessions.load_secret(state), experiment=exp)
    return app, keys, service


def test_stats_online_needs_read_private_and_forged_ids_are_accepted(served: dict, tmp_path: Path) -> None:
    app, keys, service = _app(served, tmp_path / "state")
    read = {"X-API-Key": keys.create("reader", ["read"])}
    private = {"X-API-Key": keys.create("private", ["read_private"])}
    write = {"X-API-Key": keys.create("writer", ["write"])}
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/stats/online").status_code == 401
        assert c.get("/stats/online", headers={"X-API-Key": "sm_wrong"}).status_code == 401
        assert c.get("/stats/online", headers=read).status_code == 403
        assert c.get("/stats/online", params={"k": 51}, headers=private).status_code == 422
        empty = c.get("/stats/online", headers=private)
        assert empty.status_code == 200 and empty.json()["overall"]["impressions"] == 0
        rec = c.get("/recommend/api-shopper", params={"k": 6}, headers=read).json()
        assert decode_token(service.token_key, rec["rec_id"]) is not None
        events = [{"user_id": "api-shopper", "item_id": i["item_id"], "type": "impression", "rec_id": rec["rec_id"]}
                  for i in rec["items"]]
        events.append({"user_id": "api-shopper", "item_id": rec["items"][0]["item_id"], "type": "click",
                       "rec_id": rec["rec_id"]})
        forged = rec["rec_id"][:-3] + ("AAA" if not rec["rec_id"].endswith("AAA") else "BBB")
        events.append({"user_id": "api-shopper", "item_id": rec["items"][1]["item_id"], "type": "click",
                       "rec_id": forged})
        events.append({"user_id": "api-shopper", "item_id": rec["items"][1]["item_id"], "type": "click",
                       "rec_id": "x" * MAX_TOKEN_CHARS})
        posted = c.post("/events", json={"events": events}, headers=write)
        assert posted.status_code == 200 and posted.json()["accepted"] == len(events)
        too_long = {**events[0], "rec_id": "x" * (MAX_TOKEN_CHARS + 1)}
        assert c.post("/events", json=too_long, headers=write).status_code == 422
        r = c.get("/stats/online", params={"k": 5, "since": time.time() - 600}, headers=private)
        assert r.status_code == 200
        body = r.json()
        assert body["k"] == 5 and body["overall"]["impressions"] == 6 and body["overall"]["clicks"] == 1
        assert body["unattributed"] == {"click": 2} and body["series"][-1]["all"]["impressions"] == 6
        assert "api-shopper" not in r.text and str(service.state_dir) not in r.text
        later = c.get("/stats/online", params={"since": time.time() + 3600}, headers=private).json()
        assert later["overall"]["impressions"] == 0
        # the dashboard: the online panel for read_private only (production mode)
        assert c.get("/storefront/dashboard", headers=read).json()["online"] is None
        dash = c.get("/storefront/dashboard", headers=private).json()
        assert dash["online"]["overall"]["clicks"] == 1 and dash["trainer"] is None
        metrics = c.get("/metrics", headers=read).text
        assert "shopmind_online_impressions 6.0" in metrics and "shopmind_online_clicks 1.0" in metrics
        source = decode_token(service.token_key, rec["rec_id"]).sources[0]
        assert f'shopmind_online_ctr{{source="{source}"}}' in metrics


def test_the_trainer_status_file_never_breaks_the_dashboard(served: dict, tmp_path: Path) -> None:
    app, keys, service = _app(served, tmp_path / "state")
    read = {"X-API-Key": keys.create("reader", ["read"])}
    path = service.state_dir / "trainer.json"
    status = {"state": "training", "step": "fitting /home/someone/secret/folder", "updated": 1_700_000_000,
              "runs": 3, "promotions": 1, "failures": 1, "lag_records": 42,
              "last": {"finished": 1_700_000_100, "kind": "cheap", "promoted": True, "cases": 900, "seconds": 12.5,
                       "candidate": {"ndcg@10": 0.25, "hit@10": 0.4}, "serving": {"ndcg@10": 0.2, "hit@10": 0.35},
                       "error": None}}
    with TestClient(app, raise_server_exceptions=False) as c:
        path.write_text(json.dumps(status))
        t = c.get("/storefront/dashboard", headers=read).json()["trainer"]
        assert t["state"] == "training" and t["runs"] == 3 and t["last"]["candidate"]["ndcg@10"] == 0.25
        assert "/home/someone" not in t["step"] and "<path>" in t["step"]
        metrics = c.get("/metrics", headers=read).text
        assert "shopmind_trainer_runs 3.0" in metrics and "shopmind_trainer_lag_records 42.0" in metrics
        assert "shopmind_trainer_last_promoted 1.0" in metrics
        assert 'shopmind_trainer_last_metric{metric="ndcg@10",model="candidate"} 0.25' in metrics
        assert 'shopmind_trainer_state{state="training"} 1.0' in metrics
        path.write_text("{}")  # read at most once a second: still the status read just now
        assert c.get("/storefront/dashboard", headers=read).json()["trainer"]["runs"] == 3
        app.state.ctx.trainer.ttl_s = 0
        for broken in ('{"state": "train', "[1, 2]", '{"state": 5, "runs": "many", "last": "yesterday"}', "\x00\xff",
                       "[" * 100_000):
            path.write_text(broken)
            r = c.get("/storefront/dashboard", headers=read)
            assert r.status_code == 200, broken
            t = r.json()["trainer"]
            assert t is not None and (not t["readable"] or (t["state"] is None and t["runs"] is None))
            assert c.get("/metrics", headers=read).status_code == 200


def test_an_experiment_arm_serves_its_share_of_shoppers(served: dict, tmp_path: Path) -> None:
    from shopmind.serving.online import in_share
    from shopmind.serving.server import parse_experiment

    assert parse_experiment("/a/b:0.2") == (Path("/a/b"), 0.2) and parse_experiment("/a/b") == (Path("/a/b"), 0.5)
    assert parse_experiment(None) is None
    with pytest.raises(ValueError):
        parse_experiment("/a/b:1.5")
    app, keys, service = _app(served, tmp_path / "state", experiment=0.3)
    holder = app.state.holder
    exp = holder.experiment
    assert exp is not None and exp.arm == "experiment" and holder.share == 0.3
    read = {"X-API-Key": keys.create("reader", ["read"])}
    private = {"X-API-Key": keys.create("private", ["read_private"])}
    write = {"X-API-Key": keys.create("writer", ["write"])}
    users = [f"arm-shopper-{i}" for i in range(40)]
    shown = {"main": 0, "experiment": 0}
    with TestClient(app, raise_server_exceptions=False) as c:
        for u in users:
            rec = c.get(f"/recommend/{u}", params={"k": 4}, headers=read).json()
            t = decode_token(service.token_key, rec["rec_id"])
            want = "experiment" if in_share(u, 0.3, exp.artifact_version) else "main"
            assert t is not None and t.arm == want and holder.for_user(u) is (exp if want == "experiment" else service)
            again = decode_token(service.token_key, c.get(f"/recommend/{u}", params={"k": 4}, headers=read).json()["rec_id"])
            assert again.arm == want  # the same shopper stays in the same arm
            shown[want] += len(rec["items"])
            events = [{"user_id": u, "item_id": i["item_id"], "type": "impression", "rec_id": rec["rec_id"]}
                      for i in rec["items"]]
            assert c.post("/events", json={"events": events}, headers=write).status_code == 200
        assert 0 < shown["experiment"] < shown["main"]  # 30 % of 40 shoppers, give or take
        body = c.get("/stats/online", headers=private).json()
        assert {a: m["impressions"] for a, m in body["by_arm"].items()} == shown
        assert all(set(p["arms"]) == {"main", "experiment"} for p in body["series"])
        exp.sync()
        assert exp.online.report()["by_arm"] == body["by_arm"]  # the experiment follows the same log
