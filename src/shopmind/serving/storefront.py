"""The storefront's server side: shopper sessions that let a browser post events for one shopper, the
shopper list, and the dashboard's data (the served artifact's evaluation and the benchmark results).

A browser cannot hold an API key (anyone could read it from the page), so `GET /storefront/session?user=U`
returns a token signed with a server secret (HMAC-SHA256) that allows posting events for U only, for a few
hours. The secret lives in the state folder, so every worker process accepts every worker's tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from .service import Service

SESSION_TTL = 6 * 3600
PLOT_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,80}\.png$")


def load_secret(state_dir: Path) -> bytes:
    """The storefront secret (created once, owner-only)."""
    path = Path(state_dir) / "storefront.secret"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # atomic create-if-absent: two workers starting together agree on one secret
        except FileExistsError:
            pass
        tmp.unlink()
    return bytes.fromhex(path.read_text().strip())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def session_token(secret: bytes, user: str, now: float | None = None) -> str:
    payload = json.dumps({"u": user, "exp": int((now or time.time()) + SESSION_TTL)}, separators=(",", ":")).encode()
    sig = hmac.new(secret, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(sig)}"


def session_user(secret: bytes, token: str | None, now: float | None = None) -> str | None:
    """The shopper a valid, unexpired token was issued for; None otherwise."""
    if not token or len(token) > 1000 or "." not in token:
        return None
    body, _, sig = token.partition(".")
    try:
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        given = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
        claims = json.loads(payload)
    except (ValueError, json.JSONDecodeError):
        return None
    if not hmac.compare_digest(hmac.new(secret, payload, hashlib.sha256).digest(), given):
        return None
    if not isinstance(claims, dict) or claims.get("exp", 0) < (now or time.time()):
        return None
    return str(claims.get("u"))


def shoppers(service: Service, n: int = 12) -> list[dict[str, Any]]:
    """Real shoppers to pick from: those with the longest histories (deterministic), plus a new shopper."""
    users = sorted(service.histories, key=lambda u: (-len(service.histories[u]), u))[:n]
    out = [{"user_id": u, "label": f"{u} ({len(service.histories[u])} items)", "events": len(service.histories[u])}
           for u in users]
    return out + [{"user_id": "new-shopper", "label": "A new shopper (no history)", "events": 0}]


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


# Where the dashboard's result files come from: the runs made on this machine (`shopmind demo`,
# `evaluate-search`, `benchmark` write into the store's .benchmarks folder) and the committed benchmarks.
SOURCES = {"local": "measured on this machine", "bench": "benchmark"}


def dashboard(service: Service, folders: dict[str, Path | None]) -> dict[str, Any]:
    """Catalog and event statistics plus result tables: the served artifact's own evaluation, then the
    result files in each of folders ({"local": the store's .benchmarks, "bench": bench/results})."""
    art = service.artifact
    m = art.manifest
    catalog = {"dataset": m["dataset"], "items": f"{m['items']:,}", "users in the artifact": f"{m['users']:,}",
               "events in the artifact": f"{m['events']:,}", "events logged since": f"{service.log.records:,}"
               if service.log else "0", "artifact created": m.get("created", "")}
    stored, live = m.get("event_types") or {}, dict(service.type_counts)
    kinds = sorted(set(stored) | set(live), key=lambda k: (-stored.get(k, 0) - live.get(k, 0), k))
    events = {"header": ["event type", "in the artifact", "logged since"],
              "rows": [[k, f"{stored.get(k, 0):,}", f"{live.get(k, 0):,}"] for k in kinds]}
    reports: list[dict[str, Any]] = []
    ev = art.folder / "evaluation.json"
    if ev.is_file():
        r = json.loads(ev.read_text())
        reports.append({"title": f"Recommendation pipeline on {r['dataset']} ({r['users']['test']:,} test users, "
                                 "served artifact)",
                        "header": ["system", "Recall@10", "NDCG@10", "Recall@50"],
                        "rows": [[n, _fmt(v["recall@10"]), _fmt(v["ndcg@10"]), _fmt(v["recall@50"])]
                                 for n, v in r["results"].items()], "note": "learned ranker vs each candidate source",
                        "plot": None})
    for source, folder in folders.items():
        if folder is not None and Path(folder).is_dir():
            reports += _reports(Path(folder), source, m["dataset"])
    return {"catalog": catalog, "events": events, "reports": reports}


def _reports(folder: Path, source: str, dataset: str) -> list[dict[str, Any]]:
    """The demo, recommender, search and serving result files in one folder, as dashboard tables. A file
    that cannot be read shows as such; it never takes the dashboard down."""
    label, out = SOURCES[source], []
    builders = [(f"recommenders-{dataset}.json", _recommenders), ("search-homedepot.json", _search),
                (f"serving-{dataset}.json", _serving)]
    if source == "local":  # the demo's own step record exists only where the demo ran
        builders.insert(0, ("demo-steps.json", _demo_steps))
    for name, build in builders:
        path = folder / name
        if not path.is_file():
            continue
        try:
            report = build(json.loads(path.read_text()), label, dataset)
            report["plot"] = _plot(folder, source, name.replace(".json", ".png"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            report = {"title": f"{name} ({label})", "header": [], "rows": [],
                      "note": f"could not be read: {type(e).__name__}: {e}", "plot": None}
        out.append(report)
    return out


def _demo_steps(r: dict[str, Any], label: str, dataset: str) -> dict[str, Any]:
    return {"title": f"Last `shopmind demo` ({label}, {r['seconds']:.1f} s in all)",
            "header": ["step", "status", "seconds"],
            "rows": [[x["step"], x["status"], "–" if x.get("seconds") is None else f"{x['seconds']:.1f}"]
                     for x in r["steps"]], "note": f"finished {r.get('finished', '')}"}


def _recommenders(r: dict[str, Any], label: str, dataset: str) -> dict[str, Any]:
    rows = [[x["model"], _fmt(x["test"]["recall@10"]), _fmt(x["test"]["ndcg@10"]), _fmt(x["test"]["recall@50"])]
            for x in r["results"]]
    rows += [[f"{name} (published)", _fmt(v.get("recall@10", "")), _fmt(v.get("ndcg@10", "")),
              _fmt(v.get("recall@50", ""))] for name, v in (r.get("published") or {}).items()]
    return {"title": f"Recommenders on {dataset} ({label})", "rows": rows,
            "header": ["model", "Recall@10", "NDCG@10", "Recall@50"], "note": r.get("command", "")}


def _search(r: dict[str, Any], label: str, dataset: str) -> dict[str, Any]:
    return {"title": f"Search on Home Depot ({r['queries']['test']:,} unseen queries, {label})",
            "header": ["system", "NDCG@10", "Recall@100", "re-rank lift"],
            "rows": [[n, _fmt(v["ndcg@10"]), _fmt(v["recall@100"]), _fmt(v["rerank_lift"])]
                     for n, v in r["results"].items()], "note": r.get("command", "")}


def _serving(r: dict[str, Any], label: str, dataset: str) -> dict[str, Any]:
    load = r["load"]
    return {"title": f"Serving load test ({load['clients']} clients, {load['throughput_rps']} requests/s, {label})",
            "header": ["endpoint", "p50 ms", "p95 ms", "p99 ms"],
            "rows": [[k, load[k]["p50_ms"], load[k]["p95_ms"], load[k]["p99_ms"]]
                     for k in ("recommend", "search", "events")], "note": r.get("command", "")}


def _plot(folder: Path, source: str, name: str) -> str | None:
    return f"/storefront/plots/{source}/{name}" if (folder / name).is_file() else None


def plot_path(folders: dict[str, Path | None], source: str, name: str) -> Path | None:
    """A result plot by source and file name (no paths: only names like search-homedepot.png)."""
    folder = folders.get(source)
    if folder is None or not PLOT_NAME.match(name):
        return None
    path = Path(folder) / name
    return path if path.is_file() else None
