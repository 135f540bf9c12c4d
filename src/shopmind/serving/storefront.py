"""The storefront's server side: the shopper list and the dashboard's data (the served artifact's
evaluation and the benchmark results). Shopper sessions are in sessions.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .service import Service

PLOT_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,80}\.png$")


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


SERIES_POINTS = 120  # the dashboard's online plot: the latest buckets


def dashboard(service: Service, folders: dict[str, Path | None], online: bool = False,
              trainer: dict[str, Any] | None = None) -> dict[str, Any]:
    """Catalog and event statistics plus result tables: the served artifact's own evaluation, then the
    result files in each of folders ({"local": the store's .benchmarks, "bench": bench/results}). online:
    whether the caller may see the online evaluation (None in its place otherwise); trainer: the trainer's
    parsed status file (trainer_status), None when there is none."""
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
    return {"catalog": catalog, "events": events, "reports": reports, "online": online_panel(service) if online else None,
            "artifact_version": service.artifact_version, "trainer": trainer}


def online_panel(service: Service, k: int = 10) -> dict[str, Any]:
    """The online evaluation for the dashboard: /stats/online's breakdowns and the latest time buckets."""
    report = service.online.report(None, k)
    report["series"] = report["series"][-SERIES_POINTS:]
    return report


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
    """The demo's steps until the storefront opened, then what its background finisher did since."""
    total = f", {r['seconds']:.1f} s until the storefront" if isinstance(r.get("seconds"), (int, float)) else ""
    rows = [[x["step"], x["status"], "–" if x.get("seconds") is None else f"{x['seconds']:.1f}"]
            for x in r.get("steps", [])]
    rows += [[f"{x['step']} (background)", x["status"], "–" if x.get("seconds") is None else f"{x['seconds']:.1f}"]
             for x in r.get("background", [])]
    return {"title": f"Last `shopmind demo` ({label}{total})", "header": ["step", "status", "seconds"],
            "rows": rows, "note": f"finished {r.get('finished', '')}"}


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
