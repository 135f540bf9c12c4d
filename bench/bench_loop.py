"""Replay benchmark of the learning loop: does a shop's model get better as its events come in?

A dataset with timestamps is cut in time: the store keeps the older events (default 80 %), a pipeline is
trained on them with `shopmind train`, and the newer events are streamed in time order through the real
HTTP API of `shopmind serve` (a separate process). Before each streamed event of a user with a history, the
benchmark asks `GET /recommend/{user}` (k=10, no exploration, no diversity re-ranking) and scores where the
event's item is (hit rate@10, NDCG@10). Three variants on the same stream, each on a fresh copy:

  frozen   the artifact as trained; events are not posted (the model never hears of them)
  live     events are posted: the server applies them to the shopper's history at once (sessions)
  trainer  as live, plus `shopmind trainer` in its own process: it ships the events into the store,
           retrains (cheap runs: popularity and item-KNN; full runs: every source and the ranker), judges
           each candidate on the newest events against the served artifact and hot-reloads it when it is
           not worse

It reports the three against each other with paired bootstrap intervals (the same events in the same
order), the trainer's runs (kind, seconds, outcome, gate figures), the retraining latency (from an event's
post to the reload of an artifact trained on it) and the shipper's lag. The stream is paced (--rate events
per second) so that the trainer runs while it plays, as in a shop.

    .venv/bin/python bench/bench_loop.py                         # writes bench/results/loop-<dataset>.*
    .venv/bin/python bench/bench_loop.py --dataset ml-100k --rate 40 --max-events 4000
    .venv/bin/python bench/bench_loop.py --timing amazon-scientific   # retrain times on amazon-scientific only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

VARIANTS = ("frozen", "live", "trainer")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(store: Path, *args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "shopmind.cli", "--store", str(store), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{proc.stderr[-3000:]}")
    return proc


def _log(msg: str) -> None:
    print(f"{datetime.now().strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def prepare(dataset: str, root: Path, share: float, env: dict[str, str], max_events: int | None
            ) -> dict[str, Any]:
    """Ingest, cut the newest `share` of the events off (kept as the stream), mine and train on the rest."""
    from shopmind.data.store import Store

    store = root / "base" / "store.duckdb"
    t0 = time.perf_counter()
    _cli(store, "ingest", dataset, env=env)
    with Store(store) as s:
        ev = s.table("SELECT event_id, user_id, item_id, type, value, timestamp FROM events WHERE dataset = ? "
                     "AND item_id IS NOT NULL AND timestamp IS NOT NULL ORDER BY timestamp, event_id", [dataset])
        if len(ev) < 100:
            raise SystemExit(f"{dataset} has {len(ev)} timestamped events; the replay needs a time order")
        cut = ev["timestamp"].iloc[int(len(ev) * (1 - share))]
        stream = ev[ev["timestamp"] >= cut]
        if max_events:
            stream = stream.iloc[:max_events]
        s.con.execute("DELETE FROM events WHERE dataset = ? AND timestamp >= ?", [dataset, cut])
        kept = s.con.execute("SELECT count(*) FROM events WHERE dataset = ?", [dataset]).fetchone()[0]
    t1 = time.perf_counter()
    _cli(store, "mine", "--dataset", dataset, env=env)
    t2 = time.perf_counter()
    art = root / "base" / "artifact"
    _cli(store, "train", "--dataset", dataset, "--out", str(art), env=env)
    t3 = time.perf_counter()
    records = [{"event_id": str(r.event_id), "user_id": str(r.user_id), "item_id": str(r.item_id),
                "type": str(r.type), "timestamp": r.timestamp.replace(tzinfo=timezone.utc).timestamp(),
                **({"value": float(r.value)} if r.value == r.value and r.value is not None else {})}
               for r in stream.itertuples()]
    return {"store": store, "artifact": art, "stream": records, "cut": str(cut), "kept_events": int(kept),
            "seconds": {"ingest": round(t1 - t0, 1), "mine": round(t2 - t1, 1), "train": round(t3 - t2, 1)}}


def _start_server(store: Path, artifact: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "shopmind.cli", "--store", str(store), "serve", str(artifact),
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("server did not start in 180 s")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _rank(items: list[dict[str, Any]], item: str) -> int:
    for n, it in enumerate(items):
        if it["item_id"] == item:
            return n
    return 10**6


def play(name: str, base: dict[str, Any], root: Path, env: dict[str, str], rate: float, trainer_args: list[str]
         ) -> dict[str, Any]:
    """One variant on a fresh copy of the store and the artifact; returns per-event ranks and the timings."""
    from shopmind.serving.auth import KeyStore

    dataset = base["dataset"]
    folder = root / name
    shutil.copytree(base["artifact"], folder / "artifact")
    shutil.copy(base["store"], folder / "store.duckdb")
    knowledge = Path(str(base["store"]) + ".knowledge")
    if knowledge.is_dir():
        shutil.copytree(knowledge, folder / "store.duckdb.knowledge")
    state = folder / "state"
    state.mkdir()
    key = KeyStore(state / "api_keys.json").create("bench", ["read_private", "write"])
    venv = {**env, "SHOPMIND_SERVING_STATE_DIR": str(state), "SHOPMIND_SERVING_KEY_REQUESTS_PER_S": "1000000",
            "SHOPMIND_SERVING_KEY_EVENTS_PER_S": "1000000", "OMP_WAIT_POLICY": "PASSIVE"}
    port = _free_port()
    server = _start_server(folder / "store.duckdb", folder / "artifact", port, venv)
    trainer = None
    if name == "trainer":
        trainer = subprocess.Popen([sys.executable, "-m", "shopmind.cli", "--store", str(folder / "store.duckdb"),
                                    "trainer", dataset, "--artifact", str(folder / "artifact"), *trainer_args],
                                   env=venv, stdout=subprocess.DEVNULL, stderr=open(folder / "trainer.log", "w"))
    known = set(np.load(folder / "artifact" / "users.npz")["users"].astype(str).tolist())
    ranks, posted, lag = [], [], []
    headers = {"Authorization": f"Bearer {key}"}
    t0 = time.time()
    status_path = state / dataset / "trainer.json"
    last_sample = 0.0
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as http:
            for n, e in enumerate(base["stream"]):
                due = t0 + n / rate
                if due > time.time():
                    time.sleep(due - time.time())
                if e["user_id"] in known:
                    r = http.get(f"/recommend/{e['user_id']}", params={"k": 10, "explore": "false", "diversity": 0})
                    r.raise_for_status()
                    ranks.append(_rank(r.json()["items"], e["item_id"]))
                else:
                    ranks.append(-1)  # no history: not scored (the same events in every variant)
                known.add(e["user_id"])
                if name != "frozen":
                    r = http.post("/events", json=e)
                    r.raise_for_status()
                    posted.append(time.time())
                if trainer is not None and time.time() - last_sample >= 1.0:
                    last_sample = time.time()
                    try:
                        st = json.loads(status_path.read_text())
                        lag.append((last_sample - t0, st.get("lag_records", 0), st.get("pending_events", 0)))
                    except (OSError, ValueError):
                        pass
                if n % 200 == 0:
                    _log(f"{name}: {n:,}/{len(base['stream']):,} events")
    finally:
        status = None
        if trainer is not None:
            _stop(trainer)
            try:
                status = json.loads(status_path.read_text())
            except (OSError, ValueError):
                status = None
        _stop(server)
    return {"ranks": ranks, "posted": posted, "seconds": round(time.time() - t0, 1), "status": status, "lag": lag}


def _metrics(ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hit = (ranks >= 0) & (ranks < 10)
    ndcg = np.where(hit, 1.0 / np.log2(np.clip(ranks, 0, None) + 2), 0.0)
    return hit.astype(float), ndcg


def _paired(a: np.ndarray, b: np.ndarray, seed: int = 0, n: int = 2000) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n, len(a)))
    d = a[idx].mean(1) - b[idx].mean(1)
    lo, hi = np.percentile(d, [2.5, 97.5])
    return {"diff": float(a.mean() - b.mean()), "ci_low": float(lo), "ci_high": float(hi)}


def latency(posted: list[float], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per posted event: seconds until the reload of the first promoted run that started after it (that run
    shipped and trained on it)."""
    promoted = sorted((r.get("data_until", r["started"]), r["finished"]) for r in runs if r.get("outcome") == "promoted")
    waits = []
    for p in posted:
        after = [f for s, f in promoted if s >= p]
        if after:
            waits.append(after[0] - p)
    if not waits:
        return {"events": 0}
    w = np.array(waits)
    return {"events": len(w), "of": len(posted), "median_s": round(float(np.median(w)), 1),
            "p90_s": round(float(np.percentile(w, 90)), 1), "max_s": round(float(w.max()), 1)}


def summarize(dataset: str, base: dict[str, Any], plays: dict[str, dict[str, Any]], args: argparse.Namespace
              ) -> dict[str, Any]:
    scored = np.array(plays[next(iter(plays))]["ranks"]) >= 0
    table = {}
    per = {}
    for name, p in plays.items():
        r = np.array(p["ranks"])[scored]
        hit, ndcg = _metrics(r)
        per[name] = (hit, ndcg)
        table[name] = {"hit@10": round(float(hit.mean()), 4), "ndcg@10": round(float(ndcg.mean()), 4),
                       "seconds": p["seconds"]}
    pairs = {}
    for a, b in (("live", "frozen"), ("trainer", "live"), ("trainer", "frozen")):
        if a in per and b in per:
            pairs[f"{a} - {b}"] = {m: {k: round(v, 4) for k, v in _paired(per[a][i], per[b][i]).items()}
                                   for i, m in enumerate(("hit@10", "ndcg@10"))}
    out: dict[str, Any] = {"dataset": dataset, "stream_events": len(base["stream"]), "scored_events": int(scored.sum()),
                           "cut": base["cut"], "kept_events": base["kept_events"], "rate": args.rate,
                           "trainer_args": args.trainer_args, "prepare_seconds": base["seconds"],
                           "variants": table, "paired": pairs}
    t = plays.get("trainer")
    if t and t["status"]:
        runs = t["status"].get("history", [])
        out["trainer"] = {
            "runs": [{k: r.get(k) for k in ("kind", "outcome", "seconds", "candidate", "serving", "cases", "reason",
                                            "error")} | {"at_s": round(r["started"] - (t["posted"][0] if t["posted"] else 0), 1)}
                     for r in runs],
            "promotions": t["status"].get("promotions"), "failures": t["status"].get("failures"),
            "latency": latency(t["posted"], runs),
            "cheap_seconds": [r["seconds"] for r in runs if r.get("kind") == "cheap" and r.get("outcome") != "deferred"],
            "full_seconds": [r["seconds"] for r in runs if r.get("kind") == "full" and r.get("outcome") != "deferred"],
            "lag_records": {"median": float(np.median([x[1] for x in t["lag"]])) if t["lag"] else None,
                            "max": int(max(x[1] for x in t["lag"])) if t["lag"] else None},
        }
        out["lag_series"] = t["lag"]
    # a running hit rate per variant for the plot
    out["curve"] = {name: np.cumsum(per[name][0]).tolist() for name in per}
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = [f"# The learning loop, replayed on {res['dataset']}", "",
             f"Stream: the newest {res['stream_events']:,} events (from {res['cut']}), in time order at "
             f"{res['rate']} events/s through `shopmind serve`; {res['scored_events']:,} of them by a user with a "
             f"history are scored (`/recommend` k=10 just before the event). The store kept "
             f"{res['kept_events']:,} older events; the artifact was trained on them.", "",
             "| variant | hit rate@10 | NDCG@10 | wall s |", "|---|---|---|---|"]
    for name, m in res["variants"].items():
        lines.append(f"| {name} | {m['hit@10']:.4f} | {m['ndcg@10']:.4f} | {m['seconds']:.0f} |")
    lines += ["", "Paired bootstrap over the same events (95 % interval):", "",
              "| comparison | hit rate@10 | NDCG@10 |", "|---|---|---|"]
    for name, p in res["paired"].items():
        h, n = p["hit@10"], p["ndcg@10"]
        lines.append(f"| {name} | {h['diff']:+.4f} [{h['ci_low']:+.4f}, {h['ci_high']:+.4f}] | "
                     f"{n['diff']:+.4f} [{n['ci_low']:+.4f}, {n['ci_high']:+.4f}] |")
    t = res.get("trainer")
    if t:
        lines += ["", f"Trainer (`shopmind trainer {' '.join(res['trainer_args'])}`): {t['promotions']} promotions, "
                      f"{t['failures']} failures. Retraining latency (event posted → reload of an artifact trained "
                      f"on it): {t['latency']}. Shipper lag (records not yet in the store, sampled each second): "
                      f"median {t['lag_records']['median']}, max {t['lag_records']['max']}.", "",
                  "| at s | kind | outcome | seconds | candidate NDCG@10 | served NDCG@10 | cases |",
                  "|---|---|---|---|---|---|---|"]
        for r in t["runs"]:
            c, s = r.get("candidate") or {}, r.get("serving") or {}
            why = r.get("reason") or r.get("error")
            lines.append(f"| {r['at_s']} | {r['kind']} | {r['outcome']}{f' ({why})' if why else ''} | {r['seconds']} "
                         f"| {c.get('ndcg@10', '')} | {s.get('ndcg@10', '')} | {r.get('cases') or ''} |")
    if res.get("timing"):
        lines += ["", "## Retraining time", "", "| dataset | run | seconds | outcome |", "|---|---|---|---|"]
        for r in res["timing"]:
            lines.append(f"| {r['dataset']} | {r['kind']} | {r['seconds']} | {r['outcome']} |")
    lines += ["", f"{res['date']} on {res['machine']}. Reproduce: `{res['command']}`"]
    return "\n".join(lines) + "\n"


def timing_markdown(res: dict[str, Any]) -> str:
    lines = [f"# Trainer retraining time on {res['timing'][0]['dataset']}", "",
             f"The base artifact is trained with `shopmind train` on everything but the last event of "
             f"{res['timing_users']:,} users; those events are then logged as served events (timestamped now) "
             "and the trainer runs once cheap and once full (each on its own copy), each shipping them, judging "
             "its candidate on the newest half against the served artifact (full catalog, history masked) and "
             "promoting it (`--margin 1`: the gate is computed but passes, so the whole path is timed: fit, "
             "gate, refit on every event, write, load check, swap, reload record).", "",
             "| run | seconds | outcome | candidate NDCG@10 | served NDCG@10 | cases |", "|---|---|---|---|---|---|"]
    for r in res["timing"]:
        c, s = r.get("candidate") or {}, r.get("serving") or {}
        lines.append(f"| {r['kind']} | {r['seconds']} | {r['outcome']} | {c.get('ndcg@10', '')} | "
                     f"{s.get('ndcg@10', '')} | {r.get('cases') or ''} |")
    lines += ["", f"{res['date']} on {res['machine']}. Reproduce: `{res['command']}`"]
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    for name, cum in res["curve"].items():
        cum = np.array(cum)
        x = np.arange(1, len(cum) + 1)
        ax.plot(x, cum / x, label=name)
    ax.set_xlabel("scored events, in stream order")
    ax.set_ylabel("hit rate@10 so far")
    ax.set_title(f"{res['dataset']}: replayed stream")
    ax.legend()
    ax = axes[1]
    names = list(res["variants"])
    vals = [res["variants"][n]["ndcg@10"] for n in names]
    ax.bar(names, vals, color=["#999", "#69c", "#2a7"][:len(names)])
    ax.set_ylabel("NDCG@10 on the stream")
    t = res.get("trainer")
    if t:
        ax.set_title(f"trainer: {t['promotions']} promotions; latency median {t['latency'].get('median_s')} s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def timing(dataset: str, root: Path, env: dict[str, str], users: int) -> list[dict[str, Any]]:
    """Retrain times on a dataset without timestamps (amazon-scientific): train on everything but the last
    event of `users` users, post those events through the serving log (timestamped now), then one cheap
    and one full trainer run, each gated against the served artifact."""
    from shopmind.data.store import Store
    from shopmind.serving.eventlog import EventLog

    store = root / "timing" / "store.duckdb"
    _cli(store, "ingest", dataset, env=env)
    with Store(store) as s:
        last = s.table("SELECT * FROM (SELECT event_id, user_id, item_id, type, row_number() OVER (PARTITION BY "
                       "user_id ORDER BY seq DESC NULLS LAST, event_id DESC) AS k FROM events WHERE dataset = ? AND "
                       "item_id IS NOT NULL) WHERE k = 1 ORDER BY user_id", [dataset])
        last = last.sample(min(users, len(last)), random_state=0)
        s.con.execute("DELETE FROM events WHERE dataset = ? AND event_id IN (SELECT unnest(?))",
                      [dataset, last["event_id"].astype(str).tolist()])
    art = root / "timing" / "artifact"
    _log(f"timing: training the base artifact on {dataset}")
    t0 = time.perf_counter()
    _cli(store, "train", "--dataset", dataset, "--out", str(art), env=env)
    base_s = time.perf_counter() - t0
    state = root / "timing" / "state"
    elog = EventLog(state / dataset, required=("user_id", "type"))
    now = time.time()
    elog.append([{"event_id": f"t-{r.event_id}", "user_id": str(r.user_id), "item_id": str(r.item_id),
                  "type": str(r.type), "timestamp": now + i * 0.01, "received": now}
                 for i, r in enumerate(last.itertuples())])
    elog.close()
    out = [{"dataset": dataset, "kind": "shopmind train (base)", "seconds": round(base_s, 1), "outcome": "-"}]
    for kind in ("cheap", "full"):  # each on its own copy: a promotion would leave the other nothing new
        _log(f"timing: trainer --once {kind}")
        copy = root / f"timing-{kind}"
        shutil.copytree(root / "timing", copy)
        kenv = {**env, "SHOPMIND_SERVING_STATE_DIR": str(copy / "state")}
        # --margin 1: the gate is computed and logged but always passes, so the whole promote path is timed
        proc = _cli(copy / "store.duckdb", "trainer", dataset, "--artifact", str(copy / "artifact"), "--once", kind,
                    "--margin", "1", "--json", env=kenv, check=False)
        r = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {"seconds": None,
                                                                               "outcome": proc.stderr[-300:]}
        out.append({"dataset": dataset, "kind": f"trainer {kind}", "seconds": r.get("seconds"),
                    "outcome": r.get("outcome"), "candidate": r.get("candidate"), "serving": r.get("serving"),
                    "cases": r.get("cases")})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="amazon2018-allbeauty")
    ap.add_argument("--share", type=float, default=0.2, help="Newest share of the events streamed.")
    ap.add_argument("--rate", type=float, default=4.0, help="Streamed events per second.")
    ap.add_argument("--max-events", type=int, default=None)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--trainer-args", default="--every-events 50 --every-minutes 1 --full-every-minutes 3 --every 2",
                    help="Arguments for `shopmind trainer`.")
    ap.add_argument("--timing", default="amazon-scientific", help="Also time the trainer's runs on this dataset "
                    "('' to skip).")
    ap.add_argument("--timing-users", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--keep", action="store_true", help="Keep the temporary folder.")
    args = ap.parse_args(argv)
    args.trainer_args = args.trainer_args.split()
    data = os.environ.get("SHOPMIND_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    env = {**os.environ, "SHOPMIND_DATA_DIR": data, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": str(ROOT / "src")}
    root = Path(tempfile.mkdtemp(prefix="shopmind-loop-"))
    try:
        res: dict[str, Any] = {}
        if args.variants:
            _log(f"preparing {args.dataset} in {root}")
            base = prepare(args.dataset, root, args.share, env, args.max_events)
            base["dataset"] = args.dataset
            _log(f"stream of {len(base['stream']):,} events; base trained in {base['seconds']}")
            plays = {}
            for name in args.variants.split(","):
                _log(f"variant {name}")
                plays[name] = play(name, base, root, env, args.rate, args.trainer_args)
            res = summarize(args.dataset, base, plays, args)
        if args.timing:
            res["timing"] = timing(args.timing, root, env, args.timing_users)
            res["timing_users"] = args.timing_users
        res.update(date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                   command="python bench/bench_loop.py " + " ".join(argv if argv is not None else sys.argv[1:]))
        args.out.mkdir(parents=True, exist_ok=True)
        name = f"loop-{args.dataset}" if args.variants else f"loop-timing-{args.timing}"
        (args.out / f"{name}.json").write_text(json.dumps(res, indent=1, default=str))
        if "variants" in res:
            (args.out / f"{name}.md").write_text(markdown(res))
            plot(res, args.out / f"{name}.png")
            print(markdown(res))
        else:
            (args.out / f"{name}.md").write_text(timing_markdown(res))
            print(timing_markdown(res))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            _log(f"kept {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
