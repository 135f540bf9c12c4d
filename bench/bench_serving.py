"""Serving benchmark: `shopmind serve` on a trained artifact in one process, a load generator in another,
over loopback. Measures latency per endpoint at N concurrent clients, sustained throughput, errors, the
server's memory over the run, and event freshness (acknowledged event -> reflected in /recommend).

Traffic: 70 % GET /recommend/{real user}, 20 % GET /search?q={a real item keyword}, 10 % POST /events
(a view by a real user, so sessions change while they are being served). Writes are authenticated.

The client is a minimal HTTP/1.1 keep-alive client on asyncio rather than httpx: on a 2-core machine the
load generator shares the CPU with the server, and httpx spends about ten times more CPU per request.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_serving.py --duration 600
The artifact comes from bench_pipeline.py (bench/.artifacts/amazon-scientific) or `shopmind train`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import numpy as np

from common import RESULTS, command_line, machine, write_results   # same folder


class Conn:
    """One keep-alive HTTP/1.1 connection (enough for this server: Content-Length bodies, no chunking)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"", headers: str = "") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\n{headers}"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        close = False
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.lower() == "content-length":
                length = int(v)
            elif k.lower() == "connection" and v.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length) if length else b""
        if close:
            self.writer.close()
            self.writer = None
        return status, data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    """Resident memory of the server: the process and its children (uvicorn's worker processes)."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.is_file():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


async def _load(port: int, key: str, users: list[str], items: list[str], queries: list[str], clients: int,
                duration: float, server_pid: int, rate: float) -> dict[str, Any]:
    """rate > 0: open loop, `clients` connections together sending `rate` requests/s as Poisson arrivals,
    latency measured from the scheduled send time (a late server is charged for the wait: no coordinated
    omission). rate = 0: closed loop, every client sends its next request as soon as the last one returns."""
    lat: dict[str, list[float]] = {"recommend": [], "search": [], "events": []}
    errors: dict[str, int] = {}
    memory: list[tuple[float, float]] = []
    t_end = time.perf_counter() + duration
    t0 = time.perf_counter()
    auth = f"X-API-Key: {key}\r\n"

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = Conn(port)
        n = 0
        due = time.perf_counter() + (rng.expovariate(rate / clients) if rate > 0 else 0.0)
        while time.perf_counter() < t_end:
            if rate > 0:
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                if due >= t_end:
                    break
            roll = rng.random()
            if roll < 0.7:
                kind, method, path, body = "recommend", "GET", f"/recommend/{quote(rng.choice(users), safe='')}?k=10", b""
            elif roll < 0.9:
                q = quote_plus(rng.choice(queries))
                kind, method, path, body = "search", "GET", f"/search?q={q}&size=10", b""
            else:
                n += 1
                ev = {"event_id": f"bench-{seed}-{n}-{rng.random()}", "user_id": rng.choice(users),
                      "item_id": rng.choice(items), "type": "view"}
                kind, method, path, body = "events", "POST", "/events", json.dumps(ev).encode()
            t = due if rate > 0 else time.perf_counter()
            due += rng.expovariate(rate / clients) if rate > 0 else 0.0
            try:
                status, _ = await conn.request(method, path, body, auth)
            except (OSError, asyncio.IncompleteReadError) as e:
                errors[f"{kind}: {type(e).__name__}"] = errors.get(f"{kind}: {type(e).__name__}", 0) + 1
                conn = Conn(port)
                continue
            lat[kind].append((time.perf_counter() - t) * 1e3)
            if status != 200:
                errors[f"{kind}: HTTP {status}"] = errors.get(f"{kind}: HTTP {status}", 0) + 1

    async def sample_memory() -> None:
        while time.perf_counter() < t_end:
            memory.append((round(time.perf_counter() - t0, 1), round(_rss_mb(server_pid), 1)))
            await asyncio.sleep(5)

    await asyncio.gather(sample_memory(), *(client(s) for s in range(clients)))
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {"clients": clients, "offered_rps": rate or None, "seconds": round(wall, 1), "errors": errors,
                           "memory_mb": memory}
    total = 0
    for kind, values in lat.items():
        a = np.array(values) if values else np.zeros(1)
        total += len(values)
        out[kind] = {"requests": len(values), "p50_ms": round(float(np.percentile(a, 50)), 2),
                     "p95_ms": round(float(np.percentile(a, 95)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2),
                     "mean_ms": round(float(a.mean()), 2)}
    out["throughput_rps"] = round(total / wall, 1)
    return out


async def _freshness(port: int, key: str, items: list[str], probes: int = 200) -> dict[str, Any]:
    """Post one event, then ask for recommendations at once: the reply must count the event."""
    conn = Conn(port)
    delays, stale = [], 0
    for i in range(probes):
        user = f"fresh-{i % 20}"
        _, before = await conn.request("GET", f"/recommend/{user}?k=5", b"", f"X-API-Key: {key}\r\n")
        seen = json.loads(before).get("events_seen", -1)
        ev = json.dumps({"event_id": f"fresh-{i}-{time.time()}", "user_id": user, "item_id": items[i % len(items)],
                         "type": "click"}).encode()
        status, _ = await conn.request("POST", "/events", ev, f"X-API-Key: {key}\r\n")
        t_ack = time.perf_counter()
        _, after = await conn.request("GET", f"/recommend/{user}?k=5", b"", f"X-API-Key: {key}\r\n")
        delays.append((time.perf_counter() - t_ack) * 1e3)
        stale += int(json.loads(after).get("events_seen") != seen + 1)  # an error reply counts as stale
    a = np.array(delays)
    return {"probes": probes, "stale_responses": stale, "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2)}


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    load = result["load"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    kinds = ["recommend", "search", "events"]
    for j, q in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        axes[0].bar(np.arange(3) + (j - 1) * 0.27, [load[k][q] for k in kinds], 0.27, label=q.replace("_ms", ""))
    axes[0].set_xticks(range(3), kinds)
    axes[0].axhline(20, color="#C44E52", linestyle="--", linewidth=1)
    axes[0].axhline(40, color="#4C72B0", linestyle="--", linewidth=1)
    axes[0].set_ylabel("ms")
    axes[0].set_title(f"latency at {load['clients']} clients ({load['throughput_rps']} req/s)")
    axes[0].legend(fontsize=8)
    mem = np.array(load["memory_mb"]) if load["memory_mb"] else np.zeros((1, 2))
    axes[1].plot(mem[:, 0], mem[:, 1])
    axes[1].set_xlabel("seconds")
    axes[1].set_ylabel("server RSS (MB)")
    axes[1].set_title("server memory during the run")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", type=Path, default=Path(__file__).resolve().parent / ".artifacts" / "amazon-scientific",
                   help="artifact folder (bench_pipeline.py writes this one)")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="server worker processes")
    p.add_argument("--rate", type=float, default=320.0, help="offered requests/s (open loop); 0: closed loop")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (the issue asks for 10 minutes)")
    p.add_argument("--warmup", type=float, default=10.0)
    args = p.parse_args(argv)
    if not (args.artifact / "manifest.json").is_file():
        sys.exit(f"{args.artifact}: no artifact; run bench/bench_pipeline.py (or shopmind train --out) first")
    command = command_line("bench_serving.py", argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from shopmind.serving.artifact import load
    from shopmind.serving.auth import KeyStore

    art = load(args.artifact)
    rng = random.Random(0)
    users = sorted(art.histories)
    users = rng.sample(users, min(5000, len(users)))
    items = [str(i) for i in art.catalog.item_ids]
    queries = sorted({k for c in art.cards for k in (c.get("keywords") or [])[:2] if 2 < len(k) < 40})
    queries = rng.sample(queries, min(3000, len(queries))) or ["lab"]
    manifest = art.manifest
    del art
    with tempfile.TemporaryDirectory(prefix="shopmind-serve-") as tmp:
        # The shop's backend in production mode: reads with the private parts (events_seen), and writes.
        key = KeyStore(Path(tmp) / "api_keys.json").create("bench", ["read_private", "write"])
        port = _free_port()
        # One key stands in for a whole shop's backend, so its rate limits are raised far above the load: the
        # buckets still run on every request (their cost is measured), but never refuse one.
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "SHOPMIND_SERVING_STATE_DIR": tmp,
               "SHOPMIND_SERVING_KEY_REQUESTS_PER_S": "1000000", "SHOPMIND_SERVING_KEY_EVENTS_PER_S": "1000000"}
        t_start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "shopmind.cli", "--store", str(Path(tmp) / "unused.duckdb"), "serve",
                                 str(args.artifact), "--port", str(port), "--workers", str(args.workers)],
                                env=env, stderr=subprocess.PIPE)
        try:
            import urllib.request

            while True:
                if proc.poll() is not None:
                    sys.exit(f"server exited: {proc.stderr.read().decode()[-3000:]}")
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.5)
            startup = time.perf_counter() - t_start
            print(f"  serving: server up in {startup:.1f} s; warm-up {args.warmup:.0f} s", file=sys.stderr)
            asyncio.run(_load(port, key, users, items, queries, args.clients, args.warmup, proc.pid, args.rate))
            print(f"  serving: {args.clients} clients for {args.duration:.0f} s", file=sys.stderr)
            load_result = asyncio.run(_load(port, key, users, items, queries, args.clients, args.duration, proc.pid,
                                            args.rate))
            print("  serving: closed loop for 30 s (capacity)", file=sys.stderr)
            capacity = asyncio.run(_load(port, key, users, items, queries, args.clients, 30.0, proc.pid, 0.0))
            health = json.loads(urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/stats", headers={"X-API-Key": key}), timeout=5).read())
            print("  serving: freshness probes", file=sys.stderr)
            fresh = asyncio.run(_freshness(port, key, items))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    mem = np.array(load_result["memory_mb"]) if load_result["memory_mb"] else np.zeros((2, 2))
    half = len(mem) // 2
    result = {"artifact": str(args.artifact), "workers": args.workers, "offered_rps": args.rate,
              "dataset": manifest["dataset"], "items": manifest["items"],
              "users": manifest["users"], "startup_s": round(startup, 1), "load": load_result, "freshness": fresh,
              "capacity": {k: v for k, v in capacity.items() if k != "memory_mb"}, "cache": health.get("cache"),
              "memory": {"first_half_mean_mb": round(float(mem[:half, 1].mean()), 1) if half else None,
                         "second_half_mean_mb": round(float(mem[half:, 1].mean()), 1),
                         "max_mb": round(float(mem[:, 1].max()), 1)},
              "machine": machine(), "command": command,
              "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    L = load_result
    targets = [("/recommend p99 ≤ 20 ms", L["recommend"]["p99_ms"] <= 20), ("/search p99 ≤ 40 ms", L["search"]["p99_ms"] <= 40),
               ("≥ 300 requests/s", L["throughput_rps"] >= 300), ("no errors", not L["errors"]),
               ("freshness ≤ 50 ms, never stale", fresh["max_ms"] <= 50 and fresh["stale_responses"] == 0)]
    md = [f"# Serving {manifest['dataset']}: {L['clients']} concurrent clients for {L['seconds']:.0f} s", "",
          f"`shopmind serve --workers {args.workers}` (uvicorn) and the load generator (another process) on the same "
          f"{result['machine']['cpu_count']}-core machine over loopback. Traffic: 70 % recommend (users drawn "
          f"from {len(users):,} real ones), 20 % search (mined item keywords as queries), 10 % event posts "
          f"(fsynced before acknowledgement). Open loop: {L['clients']} connections offering "
          f"{args.rate:.0f} requests/s as Poisson arrivals, latency from the scheduled send time.", "",
          "| endpoint | requests | p50 ms | p95 ms | p99 ms | mean ms |", "|---|---|---|---|---|---|"]
    for kind in ("recommend", "search", "events"):
        r = L[kind]
        md.append(f"| {kind} | {r['requests']:,} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['mean_ms']} |")
    C = result["capacity"]
    cache = result["cache"] or {}
    lookups = max(1, cache.get("hits", 0) + cache.get("misses", 0))
    md += ["", f"Throughput: **{L['throughput_rps']} requests/s** sustained; errors: {L['errors'] or 'none'}.", "",
           f"Capacity (closed loop, {C['clients']} clients back to back, 30 s): {C['throughput_rps']} requests/s, "
           f"recommend p50 {C['recommend']['p50_ms']} ms / p99 {C['recommend']['p99_ms']} ms. Ranked-pool cache "
           f"over the whole run: {cache.get('hits', 0):,} hits, {cache.get('misses', 0):,} misses "
           f"({cache.get('hits', 0) / lookups:.0%} hits; a user's pool is recomputed after each of their events).", "",
           f"Server memory (RSS): mean {result['memory']['first_half_mean_mb']} MB in the first half of the run, "
           f"{result['memory']['second_half_mean_mb']} MB in the second, max {result['memory']['max_mb']} MB. "
           f"Start-up {result['startup_s']} s.", "",
           f"Freshness ({fresh['probes']} probes: post an event, then recommend at once): the reply counted the "
           f"event in {fresh['probes'] - fresh['stale_responses']}/{fresh['probes']}; time from acknowledgement to "
           f"the reflecting reply p50 {fresh['p50_ms']} ms, p99 {fresh['p99_ms']} ms, max {fresh['max_ms']} ms.", "",
           "Targets: " + "; ".join(f"{name} {'✓' if ok else '✗'}" for name, ok in targets) + ".", "",
           f"{result['timestamp']} on {result['machine']['cpu']}.", "", f"Reproduce: `{command}`", ""]
    stem = f"serving-{manifest['dataset']}"
    write_results(stem, result, "\n".join(md))
    _plot(result, RESULTS / f"{stem}.png")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
