"""Ray benchmark: mining texts/s with 1 vs 2 Ray workers, and Ray Train vs local training, on a real two-node cluster.

The cluster is the tests' one: a head and a second node started with `ray start` on this machine, one CPU each
(shopmind.raylocal). Texts: all item texts of the Scientific catalog. In one run and on the same texts: the
single-process encoder (onnx-int8 with all cores' intra-op threads, and with 1), then `RayEncoder` with 1 and
with 2 actors of 1 ONNX intra-op thread each (so 1 vs 2 workers compares like with like), interleaved over
`--repeats` rounds, median texts/s end to end (a Ray run includes starting its actor pool, as in `mine --ray`)
and the time to the first vectors. Agreement: the lowest per-row cosine to the single-process vectors.
Training: each of `--models` (with the Scientific text vectors) fitted with early stopping on validation,
locally (torch, all cores) and with Ray Train (2 DDP workers, 1 thread each); wall time, the epoch chosen, test
NDCG@10 / Recall@10, each with a 95 % bootstrap interval, and the paired interval of Ray minus local.
`--big N`: also the first N Home Depot product titles, 1 vs 2 workers once, where the same actor start-up is
spread over more work. The load average is recorded before and after: the machine may be shared. Times are
reported, never asserted.

    OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 SHOPMIND_DATA_DIR=../shared/data \\
        .venv/bin/python bench/bench_ray.py [--repeats 3] [--big 20000] [--models twotower] [--epochs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from common import command_line, machine, require_data_dir, scratch_settings, write_results  # same folder

GOAL = 1.6  # the issue's goal: 2 Ray workers >= 1.6x one worker


def load_texts(data_dir: Path) -> list[str]:
    lines = (data_dir / "amazon-scientific" / "Scientific.text").read_text(encoding="utf-8").splitlines()[1:]
    return [ln.split("\t", 1)[1] for ln in lines if "\t" in ln]


def load_titles(data_dir: Path, n: int) -> list[str]:
    """The first n Home Depot product titles (a bigger real catalog, to see the actor start-up amortised)."""
    import csv

    with open(data_dir / "homedepot" / "products.csv", encoding="utf-8", newline="") as f:
        return [row["product_title"] for _, row in zip(range(n), csv.DictReader(f))]


def load() -> float:
    return round(os.getloadavg()[0], 2)


class _FirstProgress:
    """A progress callback that notes when the first vectors came back."""

    def __init__(self) -> None:
        self.t0, self.first, self.first_done = time.perf_counter(), 0.0, 0

    def __call__(self, done: int, total: int) -> None:
        if not self.first:
            self.first, self.first_done = time.perf_counter() - self.t0, done


def encode_runs(texts: list[str], address: str, onnx_dir: Path, repeats: int) -> dict[str, Any]:
    from shopmind.knowledge.encoders import Encoder
    from shopmind.knowledge.ray_encode import RayEncoder

    out: dict[str, Any] = {"texts": len(texts), "load_before": load(), "runs": {}}
    local = {}
    for threads in (os.cpu_count() or 1, 1):
        enc = Encoder(backend="onnx-int8", onnx_dir=onnx_dir, threads=threads)
        enc.encode(texts[:64])  # warm-up: session and tokenizer loaded
        seconds = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            vectors = enc.encode(texts)
            seconds.append(time.perf_counter() - t0)
        local[threads] = vectors
        out["runs"][f"single process, {threads} thread(s)"] = {"seconds": seconds,
                                                               "texts_per_s": len(texts) / statistics.median(seconds)}
        print(f"single process, {threads} threads: {len(texts) / statistics.median(seconds):.0f} texts/s", flush=True)
    base = Encoder(backend="onnx-int8", onnx_dir=onnx_dir)
    base.prepare()
    runs: dict[int, dict[str, list[float]]] = {w: {"seconds": [], "first": [], "steady": []} for w in (1, 2)}
    cosines: dict[int, float] = {}
    for r in range(repeats):
        for workers in (1, 2) if r % 2 == 0 else (2, 1):  # interleaved: a load change hits both alike
            enc = RayEncoder(base, address, workers=workers, threads=1)
            clock = _FirstProgress()
            vectors = enc.encode(texts, clock)
            runs[workers]["seconds"].append(time.perf_counter() - clock.t0)
            runs[workers]["first"].append(clock.first)
            # Without the pool's start-up: the texts after the first vectors over the time after them.
            runs[workers]["steady"].append((len(texts) - clock.first_done) / (runs[workers]["seconds"][-1] - clock.first))
            cosines[workers] = float((vectors * local[os.cpu_count() or 1]).sum(1).min())
            print(f"Ray, {workers} worker(s): {len(texts) / runs[workers]['seconds'][-1]:.0f} texts/s "
                  f"(first vectors after {clock.first:.1f} s)", flush=True)
    for workers, r in runs.items():
        out["runs"][f"Ray, {workers} worker(s) x 1 thread"] = {
            "seconds": r["seconds"], "texts_per_s": len(texts) / statistics.median(r["seconds"]),
            "first_vectors_s": statistics.median(r["first"]), "steady_texts_per_s": statistics.median(r["steady"]),
            "min_cosine_to_single_process": cosines[workers]}
    one, two = (out["runs"][f"Ray, {w} worker(s) x 1 thread"]["texts_per_s"] for w in (1, 2))
    out["speedup_2_vs_1"] = two / one
    steady = {w: statistics.median(r["steady"]) for w, r in runs.items()}
    out["steady_speedup_2_vs_1"] = steady[2] / steady[1]
    out["load_after"] = load()
    return out


def big_runs(texts: list[str], address: str, onnx_dir: Path) -> dict[str, Any]:
    """One pass each, 2 workers then 1, on a bigger catalog: the same start-up over more work."""
    from shopmind.knowledge.encoders import Encoder
    from shopmind.knowledge.ray_encode import RayEncoder

    base = Encoder(backend="onnx-int8", onnx_dir=onnx_dir)
    base.prepare()
    out: dict[str, Any] = {"texts": len(texts), "load_before": load(), "runs": {}}
    for workers in (2, 1):
        clock = _FirstProgress()
        RayEncoder(base, address, workers=workers, threads=1).encode(texts, clock)
        seconds = time.perf_counter() - clock.t0
        out["runs"][workers] = {"seconds": seconds, "texts_per_s": len(texts) / seconds, "first_vectors_s": clock.first}
        print(f"{len(texts):,} titles, Ray, {workers} worker(s): {len(texts) / seconds:.0f} texts/s", flush=True)
    out["speedup_2_vs_1"] = out["runs"][2]["texts_per_s"] / out["runs"][1]["texts_per_s"]
    out["load_after"] = load()
    return out


def train_runs(models: list[str], epochs: int, address: str, settings: Any, onnx_dir: Path) -> dict[str, Any]:
    from shopmind.data.api import ingest_source, open_source
    from shopmind.data.store import Store
    from shopmind.evaluation import metrics as M
    from shopmind.evaluation.protocols import build
    from shopmind.evaluation.runner import evaluate
    from shopmind.knowledge.encoders import Encoder
    from shopmind.models import MODELS
    from shopmind.models.ray_train import fit

    with Store(settings.store.path) as store:
        ingest_source(store, settings, open_source(settings, "amazon-scientific"))
        proto = build(store, "amazon-scientific")
        texts = dict(store.con.execute("SELECT item_id, json_extract_string(text_fields, '$.text') FROM items "
                                       "WHERE dataset = 'amazon-scientific'").fetchall())
    # The text-enhanced models' item vectors, in the protocol's item order.
    vectors = Encoder(backend="onnx-int8", onnx_dir=onnx_dir).encode([texts.get(i) or "" for i in proto.full.item_ids])
    out: dict[str, Any] = {}
    for name in models:
        params = {"epochs": epochs, "seed": 0}
        valid = (proto.valid.histories, proto.valid.targets)
        res: dict[str, Any] = {"load_before": load()}
        t0 = time.perf_counter()
        local = MODELS[name](**params).fit_validated(proto.train, vectors, *valid)
        res["local"] = {"seconds": time.perf_counter() - t0, "epochs_run": len(local.history), **local.tuned}
        print(f"{name} local: {res['local']['seconds']:.0f} s", flush=True)
        t0 = time.perf_counter()
        remote = fit(MODELS[name](**params), proto.train, vectors, valid, address=address, workers=2)
        res["ray"] = {"seconds": time.perf_counter() - t0, "epochs_run": len(remote.history), **remote.tuned,
                      "workers": remote.fit_info["workers"], "nodes": remote.fit_info["nodes"]}
        print(f"{name} Ray Train: {res['ray']['seconds']:.0f} s", flush=True)
        per_user = {}
        for label, model in (("local", local), ("ray", remote)):
            metrics, ranks, _ = evaluate(model, proto.test, proto.mask_history)
            per_user[label] = M.per_user_ndcg(ranks)
            hits = (ranks < 10).astype(float)
            res[label].update({"ndcg@10": metrics["ndcg@10"], "recall@10": metrics["recall@10"],
                               "ndcg@10_ci": _ci(per_user[label]), "recall@10_ci": _ci(hits),
                               "epoch_seconds": float(np.mean([h["seconds"] for h in model.history]))})
        res["paired_ndcg@10_ray_minus_local"] = M.paired_bootstrap(per_user["ray"], per_user["local"])
        res["users"] = len(proto.test.targets)
        res["load_after"] = load()
        out[name] = res
    return out


def _ci(values: np.ndarray, n: int = 2000) -> list[float]:
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, len(values), size=(n, len(values)))].mean(axis=1)
    return [float(x) for x in np.percentile(means, [2.5, 97.5])]


def markdown(doc: dict[str, Any]) -> str:
    enc = doc["encoding"]
    lines = ["# Ray benchmark", "",
             f"{doc['timestamp']} on {doc['machine']['cpu']} ({doc['machine']['cpu_count']} CPUs), Ray {doc['ray']}, "
             f"a two-node cluster on this machine (`ray start --head` + `ray start --address`, 1 CPU each). "
             f"Load average (1 min) before the runs: {enc['load_before']}"
             f"{' (other jobs were running)' if enc['load_before'] > 1.0 else ' (an idle machine)'}; the runs themselves "
             "add about 2.",
             "", f"**Mining (encoding)**: {enc['texts']:,} Scientific item texts, onnx-int8, median of {doc['repeats']}.",
             "", "| run | texts/s | first vectors after (s) | min cosine to single process |", "|---|---|---|---|"]
    for label, r in enc["runs"].items():
        first = f"{r['first_vectors_s']:.1f}" if "first_vectors_s" in r else "–"
        cos = f"{r['min_cosine_to_single_process']:.6f}" if "min_cosine_to_single_process" in r else "–"
        lines.append(f"| {label} | {r['texts_per_s']:.0f} | {first} | {cos} |")
    single = [r["texts_per_s"] for label, r in enc["runs"].items() if label.startswith("single")]
    lines += ["", f"2 Ray workers vs 1: **{enc['speedup_2_vs_1']:.2f}×** end to end (goal ≥ {GOAL}×: "
              f"{'yes' if enc['speedup_2_vs_1'] >= GOAL else 'no'}); {enc['steady_speedup_2_vs_1']:.2f}× after the first "
              "vectors (actor start-up left out). Each actor runs ONNX Runtime with 1 intra-op thread. For scale: one "
              f"process gains {single[0] / single[1]:.2f}× from 1 to {doc['machine']['cpu_count']} intra-op threads on "
              "this machine.", ""]
    big = doc.get("big")
    if big:
        r1, r2 = big["runs"][1], big["runs"][2]
        lines += [f"A bigger catalog, {big['texts']:,} Home Depot product titles, one pass each: 1 worker "
                  f"{r1['texts_per_s']:.0f} texts/s, 2 workers {r2['texts_per_s']:.0f} texts/s: **{big['speedup_2_vs_1']:.2f}×** "
                  f"end to end (first vectors after {r1['first_vectors_s']:.1f} / {r2['first_vectors_s']:.1f} s; load "
                  f"{big['load_before']} → {big['load_after']}).", ""]
    if doc["training"]:
        lines += ["**Training** (amazon-scientific, early stopping on validation NDCG@10; test on "
                  f"{next(iter(doc['training'].values()))['users']:,} users; 95 % bootstrap intervals)", "",
                  "| model | run | wall s | s/epoch | epochs run / chosen | NDCG@10 [CI] | Recall@10 [CI] |",
                  "|---|---|---|---|---|---|---|"]
        for name, res in doc["training"].items():
            for label, title in (("local", "local (torch, all cores)"), ("ray", "Ray Train, 2 DDP workers")):
                r = res[label]
                lines.append(f"| {name} | {title} | {r['seconds']:.0f} | {r['epoch_seconds']:.1f} | {r['epochs_run']} / "
                             f"{r.get('epochs', '–')} | {r['ndcg@10']:.4f} [{r['ndcg@10_ci'][0]:.4f}, "
                             f"{r['ndcg@10_ci'][1]:.4f}] | {r['recall@10']:.4f} [{r['recall@10_ci'][0]:.4f}, "
                             f"{r['recall@10_ci'][1]:.4f}] |")
        lines.append("")
        for name, res in doc["training"].items():
            p = res["paired_ndcg@10_ray_minus_local"]
            lines.append(f"- {name}: Ray − local NDCG@10 {p['diff']:+.4f}, paired 95 % interval [{p['ci_low']:+.4f}, "
                         f"{p['ci_high']:+.4f}] ({'contains 0' if p['ci_low'] <= 0 <= p['ci_high'] else 'excludes 0'}); "
                         f"wall time Ray Train / local {res['ray']['seconds'] / res['local']['seconds']:.2f} "
                         f"(load {res['load_before']} → {res['load_after']}).")
    lines += ["", f"Reproduce: `{doc['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--texts", type=int, default=0, help="Use the first N texts (0: all).")
    p.add_argument("--big", type=int, default=20000, help="Also N Home Depot titles, 1 vs 2 workers once (0: off).")
    p.add_argument("--models", nargs="*", default=["twotower"], help="Neural models for Ray Train vs local.")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--onnx-dir", type=Path, default=None)
    args = p.parse_args(argv)
    data_dir = require_data_dir()
    import ray

    from shopmind.raycluster import connect
    from shopmind.raylocal import LocalRayCluster

    texts = load_texts(data_dir)[: args.texts or None]
    doc: dict[str, Any] = {"machine": machine(), "ray": ray.__version__, "repeats": args.repeats,
                           "command": command_line("bench_ray.py", argv),
                           "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory(prefix="shopmind-bench-ray-") as tmp, LocalRayCluster(nodes=2, cpus=1) as cluster:
        connect(cluster.address)
        cluster.wait_for_nodes()
        onnx_dir = args.onnx_dir or Path(tmp) / "onnx"
        doc["encoding"] = encode_runs(texts, cluster.address, onnx_dir, args.repeats)
        doc["big"] = big_runs(load_titles(data_dir, args.big), cluster.address, onnx_dir) if args.big else None
        settings = scratch_settings(tmp, data_dir)
        doc["training"] = train_runs(args.models, args.epochs, cluster.address, settings, onnx_dir) if args.models else {}
        ray.shutdown()
    md = markdown(doc)
    write_results("ray", doc, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
