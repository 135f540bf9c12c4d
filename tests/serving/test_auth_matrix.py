"""Every route x every kind of caller, in production mode (the default of `shopmind serve`): no key, a wrong
key, a revoked key, keys of each scope, the shopper's own session and another shopper's session. Also the
demo mode's open storefront, private parts of recommendations, sessions minted by the backend, and rate
limits with 429 and Retry-After (issue 13, findings 1 and 2)."""

from __future__ import annotations

from pathlib import Path
import numpy as np
import pytest
from fastapi.testclient import TestClient

from shopmind.config import load_settings
from shopmind.serving import sessions
from shopmind.serving.app import create_app
from shopmind.serving.auth import KeyStore
from shopmind.serving.server import keys_path, load_service

USER, OTHER = "matrix-shopper", "someone-else"


def _app(served: dict, state: Path, **serving: object):
    settings = load_settings(overrides={"store.path": str(served["store"]), "serving.state_dir": str(state),
                                        "knowledge.onnx_dir": served["env"]["SHOPMIND_KNOWLEDGE_ONNX_DIR"],
                                        **{f"serving.{k}": v for k, v in serving.items()}}, environ={})
    keys = KeyStore(keys_path(settings))
    service = load_service(served["artifact"], settings)
    app = create_app(service, keys, settings.serving, secret=sessions.load_secret(state),
                     loader=lambda path: load_service(path or served["artifact"], settings, attach=False))
    return app, keys, service


@pytest.fixture(scope="module")
def prod(served: dict, tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("matrix-state")
    app, keys, service = _app(served, state)
    creds: dict[str, dict[str, str]] = {"none": {}, "wrong": {"X-API-Key": "sm_" + "x" * 43}}
    for name, scopes in {"read": ["read"], "read_private": ["read_private"], "write": ["write"],
                         "session_key": ["session"], "admin": ["admin"], "revoked": ["admin"]}.items():
        creds[name] = {"Authorization": f"Bearer {keys.create(name, scopes)}"}
    keys.revoke("revoked")
    with TestClient(app, raise_server_exceptions=False) as c:
        for who, user in (("own", USER), ("other", OTHER)):
            r = c.post("/sessions", json={"user_id": user}, headers=creds["session_key"])
            assert r.status_code == 200, r.text
            creds[who] = {"X-Session": r.json()["token"]}
        yield c, creds, service, keys


READERS = {"read", "read_private", "admin", "own", "other"}
PRIVATE = {"read_private", "admin", "own"}


def _routes(service) -> list[tuple[str, str, str, dict | None, set[str]]]:
    """(name, method, path, json body, callers allowed); everyone else gets 401 (no valid credential) or 403."""
    item = str(service.catalog.item_ids[int(np.argmax(service.pipeline.info.popularity))])
    event = {"user_id": USER, "item_id": item, "type": "view"}
    return [
        ("metrics", "GET", "/metrics", None, READERS),
        ("stats", "GET", "/stats", None, READERS),
        ("online stats", "GET", "/stats/online", None, {"read_private", "admin"}),
        ("search", "GET", "/search?q=gift+card", None, READERS),
        ("personal search", "GET", f"/search?q=gift+card&user={USER}", None, PRIVATE),
        ("recommend", "GET", f"/recommend/{USER}", None, READERS - {"other"}),
        ("item", "GET", f"/items/{item}", None, READERS),
        ("similar", "GET", f"/items/{item}/similar", None, READERS),
        ("events", "POST", "/events", event, {"write", "admin", "own"}),
        ("mint session", "POST", "/sessions", {"user_id": USER}, {"session_key", "admin"}),
        ("forget", "DELETE", "/users/matrix-forgotten", None, {"admin"}),
        ("status", "GET", "/admin/status", None, {"admin"}),
        ("shoppers", "GET", "/storefront/users", None, {"read_private", "admin"}),
        ("dashboard", "GET", "/storefront/dashboard", None, READERS),
    ]


CALLERS = ["none", "wrong", "revoked", "read", "read_private", "write", "session_key", "admin", "own", "other"]


def test_every_route_for_every_caller(prod) -> None:
    c, creds, service, _ = prod
    failures = []
    for name, method, path, body, allowed in _routes(service):
        for who in CALLERS:
            r = c.request(method, path, json=body, headers=creds[who])
            want = "ok" if who in allowed else (401 if who in ("none", "wrong", "revoked") else 403)
            got = "ok" if r.status_code < 400 else r.status_code
            if got != want:
                failures.append(f"{name} as {who}: {r.status_code} {r.text[:120]} (want {want})")
            if r.status_code >= 400:
                assert set(r.json()) <= {"detail", "errors", "request_id"} and r.json()["detail"]
            if r.status_code == 401:
                assert r.headers.get("www-authenticate") == "Bearer"
    assert not failures, "\n".join(failures)


def test_reload_is_for_admins_only(prod) -> None:
    c, creds, _, _ = prod
    for who in CALLERS:
        if who != "admin":
            assert c.post("/admin/reload", json={}, headers=creds[who]).status_code in (401, 403), who
    assert c.post("/admin/reload", json={"artifact": "../../etc"}, headers=creds["admin"]).status_code == 400
    assert c.post("/admin/reload", json={}, headers=creds["admin"]).status_code == 200


def test_private_parts_only_for_the_shopper_or_read_private(prod) -> None:
    c, creds, service, _ = prod
    user = max(sorted(service.histories), key=lambda u: len(service.histories[u]))
    token = c.post("/sessions", json={"user_id": user}, headers=creds["admin"]).json()["token"]
    seen = {}
    for who, headers in (("read", creds["read"]), ("read_private", creds["read_private"]),
                         ("own", {"X-Session": token})):
        body = c.get(f"/recommend/{user}", headers=headers).json()
        seen[who] = body
        assert body["items"]
    assert not seen["read"]["private"] and "history_size" not in seen["read"] and "known_user" not in seen["read"]
    assert all("explanation" not in i for i in seen["read"]["items"])
    for who in ("read_private", "own"):
        assert seen[who]["private"] and seen[who]["known_user"] and seen[who]["history_size"] > 0
        assert all(i["explanation"]["text"] for i in seen[who]["items"])
    assert c.get(f"/recommend/{user}", headers=creds["own"]).status_code == 403  # another shopper's session


def test_health_shows_no_internals(prod) -> None:
    c, creds, service, _ = prod
    h = c.get("/health")
    assert h.status_code == 200 and h.json()["mode"] == "production"
    text = h.text
    assert "pid" not in h.json() and str(service.artifact.folder) not in text and "/" not in h.json()["dataset"]
    stats = c.get("/stats", headers=creds["read"]).json()
    assert "pid" not in stats and "artifact" not in stats
    status = c.get("/admin/status", headers=creds["admin"]).json()
    assert status["pid"] > 0 and status["artifact"] == str(service.artifact.folder)


def test_sessions_are_minted_by_the_backend_and_end_with_its_key(prod) -> None:
    c, creds, service, keys = prod
    assert c.get("/storefront/session", params={"user": USER}).status_code == 404  # no open minting in production
    assert c.post("/sessions", json={"user_id": USER}).status_code == 401
    assert c.post("/sessions", json={"user_id": USER, "ttl_s": 10}, headers=creds["admin"]).status_code == 422
    long = c.post("/sessions", json={"user_id": USER, "ttl_s": 10**7}, headers=creds["admin"]).json()
    assert long["expires_in"] == 3600  # capped at serving.session_ttl_s
    temp = keys.create("temp-backend", ["session"])
    token = c.post("/sessions", json={"user_id": USER}, headers={"X-API-Key": temp}).json()["token"]
    assert c.get(f"/recommend/{USER}", headers={"X-Session": token}).status_code == 200
    keys.revoke("temp-backend")
    r = c.get(f"/recommend/{USER}", headers={"X-Session": token})
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    # A demo session (no minting key) is worthless on a production server.
    demo, _ = sessions.mint(sessions.load_secret(service.state_dir.parent), USER, 600)
    assert c.get(f"/recommend/{USER}", headers={"X-Session": demo}).status_code == 401


def test_key_rotation_with_and_without_grace(prod) -> None:
    c, _, _, keys = prod
    old = keys.create("rotating", ["read"])
    new = keys.rotate("rotating", grace_s=60)
    for k in (old, new):
        assert c.get("/stats", headers={"X-API-Key": k}).status_code == 200
    newer = keys.rotate("rotating", grace_s=0)
    assert c.get("/stats", headers={"X-API-Key": newer}).status_code == 200
    for k in (old, new):
        assert c.get("/stats", headers={"X-API-Key": k}).status_code == 401
    assert "rotating" in [e["name"] for e in keys.names()] and "sm_" not in Path(keys.path).read_text()


def test_demo_mode_is_the_open_storefront(served: dict, tmp_path: Path) -> None:
    app, _, service = _app(served, tmp_path, mode="demo")
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/health").json()["mode"] == "demo"
        users = c.get("/storefront/users").json()["users"]
        user = users[0]["user_id"]
        anon = c.get(f"/recommend/{user}").json()
        assert not anon["private"] and "history_size" not in anon  # still no history for strangers
        token = c.get("/storefront/session", params={"user": user}).json()["token"]
        mine = c.get(f"/recommend/{user}", headers={"X-Session": token}).json()
        assert mine["private"] and mine["history_size"] > 0
        item = str(service.catalog.item_ids[0])
        assert c.post("/events", json={"user_id": user, "item_id": item, "type": "view"}).status_code == 401
        assert c.post("/events", json={"user_id": user, "item_id": item, "type": "view"},
                      headers={"X-Session": token}).status_code == 200


def test_rate_limits_answer_429_with_retry_after(served: dict, tmp_path: Path) -> None:
    app, keys, _ = _app(served, tmp_path, session_requests_per_s=1, session_events_per_s=2, key_requests_per_s=2,
                         burst_s=3)
    backend = {"X-API-Key": keys.create("backend", ["session", "read"])}
    with TestClient(app, raise_server_exceptions=False) as c:
        codes = [c.get("/stats", headers=backend).status_code for _ in range(8)]
        assert codes[:4] == [200] * 4 and 429 in codes  # a burst of 2/s x 3 s, then refused
        token = None
        while token is None:  # the key's bucket refills at 2/s
            r = c.post("/sessions", json={"user_id": USER}, headers=backend)
            token = r.json()["token"] if r.status_code == 200 else None
        s = {"X-Session": token}
        statuses = [c.get(f"/recommend/{USER}", headers=s) for _ in range(5)]
        refused = next(r for r in statuses if r.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1 and "too many requests" in refused.json()["detail"]
        # Events draw from their own bucket, by count: 6 fit (2/s x 3 s), the next batch does not.
        app.state.ctx.limits["session"].rate = 0  # requests unlimited from here, to isolate the events bucket
        item = "B001BKEWF2"
        batch = {"events": [{"user_id": USER, "item_id": item, "type": "view"}] * 6}
        assert c.post("/events", json=batch, headers=s).status_code == 200
        over = c.post("/events", json=batch, headers=s)
        assert over.status_code == 429 and "too many events" in over.json()["detail"]
        assert int(over.headers["retry-after"]) >= 1


def test_guessing_keys_is_rate_limited_by_address(served: dict, tmp_path: Path) -> None:
    app, _, _ = _app(served, tmp_path, anonymous_requests_per_s=2, burst_s=2)
    with TestClient(app, raise_server_exceptions=False) as c:
        codes = [c.get("/stats", headers={"X-API-Key": f"sm_guess{i}"}).status_code for i in range(8)]
        assert codes[:4] == [401] * 4 and codes[-1] == 429


def test_demo_mode_listens_on_loopback_only(settings_for) -> None:
    from shopmind.serving.server import check_mode

    demo = settings_for(**{"serving.mode": "demo"})
    check_mode(demo, "127.0.0.1")
    with pytest.raises(ValueError, match="loopback"):
        check_mode(demo, "0.0.0.0")
    check_mode(settings_for(**{"serving.mode": "demo", "serving.demo_public": True}), "0.0.0.0")
    check_mode(settings_for(), "0.0.0.0")  # production may listen anywhere
