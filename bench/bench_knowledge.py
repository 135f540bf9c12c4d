"""Knowledge benchmark: mining speed and quality sanity checks of the embeddings on real data.

(a) amazon-scientific and homedepot are ingested into a fresh temporary store; `Miner.run("amazon-scientific")`
is timed end to end (cold: ONNX graphs are built in the temp folder unless `--onnx-dir` holds them), with the
report's per-step times. (b) Scientific leaf categories: for each item with a category text, the share of its
k nearest neighbours (cosine over the Miner's item_vectors.npy) with the same category text, at k=10 and k=1,
against k random other items (seeded) and the rate expected from the category distribution; the same for
title-only embeddings, since the Miner's item text contains the category words. (c) Home Depot: queries and
judged product titles embedded with Encoder(backend auto); over all (relevant grade >= 2.5, irrelevant
grade <= 1.5) title pairs of a query, the share where the relevant title is closer to the query, next to
word-set Jaccard (ties count half). (d) UserProfile.update: 20 timed batches of 500 updates.
Results: stdout and bench/results/knowledge.json + knowledge.md. Wall times are reported, never asserted.

    OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 SHOPMIND_DATA_DIR=../shared/data \\
        .venv/bin/python bench/bench_knowledge.py [--seed 0] [--onnx-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from common import command_line, machine, require_data_dir, scratch_settings, write_results  # same folder
from shopmind.config import KnowledgeSettings
from shopmind.data.api import ingest_source, open_source
from shopmind.data.store import Store
from shopmind.knowledge.encoders import Encoder
from shopmind.knowledge.mine import Miner
from shopmind.knowledge.profiles import UserProfile

MINE_TARGET_S, UPDATE_TARGET_US = 120.0, 1000.0
SCI, HD = "amazon-scientific", "homedepot"


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)


def same_category(vectors: np.ndarray, codes: np.ndarray, k: int, rng: np.random.Generator) -> dict[str, float]:
    """Share of the k nearest (cosine, self excluded) / k random other items that share the item's category."""
    v = unit(vectors)
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    n = len(codes)
    rand = np.stack([rng.choice(n - 1, k, replace=False) for _ in range(n)])
    rand += rand >= np.arange(n)[:, None]  # skip the item itself
    return {f"knn@{k}": float((codes[top] == codes[:, None]).mean()), "knn@1": float((codes[sims.argmax(1)] == codes).mean()),
            f"random@{k}": float((codes[rand] == codes[:, None]).mean())}


def category_test(store: Store, folder: Path, enc: Encoder, k: int, seed: int) -> dict[str, Any]:
    vectors = np.load(folder / "item_vectors.npy")
    ids = json.loads((folder / "ids.json").read_text())["items"]
    meta = {i: (c, t) for i, c, t in store.con.execute(
        "SELECT item_id, text_fields->>'category_text', title FROM items WHERE dataset = ?", [SCI]).fetchall()}
    rows = [r for r, i in enumerate(ids) if meta.get(i, (None,))[0] and np.any(vectors[r])]
    _, codes = np.unique([meta[ids[r]][0] for r in rows], return_inverse=True)
    counts = np.bincount(codes)
    n = len(rows)
    t0 = time.perf_counter()
    titles = enc.encode([meta[ids[r]][1] or "" for r in rows])
    return {"items": n, "categories": int(len(counts)), "k": k, "seed": seed,
            "expected_random": float((counts * (counts - 1)).sum() / (n * (n - 1))),
            "item_text": same_category(vectors[rows], codes, k, np.random.default_rng(seed)),
            "title_only": same_category(titles, codes, k, np.random.default_rng(seed)),
            "title_encode_seconds": round(time.perf_counter() - t0, 2)}


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def pair_share(rel: np.ndarray, irr: np.ndarray) -> float:
    """Sum over (relevant, irrelevant) pairs of 1 if the relevant scores higher, 1/2 on a tie."""
    return float((rel[:, None] > irr[None, :]).sum() + 0.5 * (rel[:, None] == irr[None, :]).sum())


def homedepot_pairs(store: Store, cfg: KnowledgeSettings, onnx_dir: Path) -> dict[str, Any]:
    j = store.table("SELECT j.query, j.item_id, j.grade, i.title FROM judgments j JOIN items i "
                    "ON i.dataset = j.dataset AND i.item_id = j.item_id WHERE j.dataset = ? AND i.title IS NOT NULL", [HD])
    titles = sorted(set(j["title"]))
    queries = sorted(set(j["query"]))
    enc = Encoder(cfg.model, "auto", cfg.batch_size, cfg.max_length, cfg.min_agreement, onnx_dir=onnx_dir)
    t0 = time.perf_counter()
    tv = dict(zip(titles, enc.encode(titles)))
    t1 = time.perf_counter()
    qv = dict(zip(queries, enc.encode(queries)))
    t2 = time.perf_counter()
    dense = lexical = pairs = 0.0
    n_queries = 0
    for query, grp in j.groupby("query", sort=False):
        rel, irr = grp[grp["grade"] >= 2.5]["title"].tolist(), grp[grp["grade"] <= 1.5]["title"].tolist()
        if not rel or not irr:
            continue
        n_queries += 1
        pairs += len(rel) * len(irr)
        cos = {t: float(tv[t] @ qv[query]) for t in rel + irr}
        dense += pair_share(np.array([cos[t] for t in rel]), np.array([cos[t] for t in irr]))
        qw = words(str(query))
        jac = {t: len(qw & words(t)) / max(len(qw | words(t)), 1) for t in rel + irr}
        lexical += pair_share(np.array([jac[t] for t in rel]), np.array([jac[t] for t in irr]))
    return {"judgments": len(j), "titles_encoded": len(titles), "queries_encoded": len(queries),
            "encoder": enc.describe(), "title_encode_seconds": round(t1 - t0, 2), "query_encode_seconds": round(t2 - t1, 2),
            "queries": n_queries, "pairs": int(pairs), "dense_share": dense / pairs, "jaccard_share": lexical / pairs}


def profile_updates(seed: int, batches: int = 20, size: int = 500, dim: int = 384) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n = batches * size
    vecs = unit(rng.standard_normal((n, dim)).astype(np.float32))
    kws = [[f"kw{x}" for x in row] for row in rng.integers(0, 2000, (n, 5))]
    cats = [[f"cat{x}" for x in row] for row in rng.integers(0, 100, (n, 2))]
    times = (1.7e9 + np.cumsum(rng.uniform(0, 3600, n))).tolist()
    profile = UserProfile(dim=dim, half_life=30 * 86400)
    per_update = []
    for b in range(batches):
        t0 = time.perf_counter()
        for i in range(b * size, (b + 1) * size):
            profile.update(vecs[i], 1.0, times[i], kws[i], cats[i])
        per_update.append((time.perf_counter() - t0) / size * 1e6)
    return {"updates": n, "batches": batches, "batch_size": size, "mean_us": float(np.mean(per_update)),
            "p99_us": float(np.percentile(per_update, 99)), "max_us": float(max(per_update))}


def markdown(d: dict[str, Any]) -> str:
    m, c, h, p = d["mining"], d["categories"], d["homedepot"], d["profile"]
    ok = lambda b: "yes" if b else "NO"  # noqa: E731
    lines = [f"**Mining** {SCI}: {m['wall_seconds']:.1f} s end to end (report: {m['report_seconds']:.1f} s; "
             f"target < {MINE_TARGET_S:.0f} s: {ok(m['wall_seconds'] < MINE_TARGET_S)}; "
             f"{'given ONNX dir' if m['onnx_dir_given'] else 'cold: embeddings include the ONNX build'}), encoder backend "
             f"{m['encoder'].get('backend')} (agreement {m['encoder'].get('agreement')}); ingest "
             + ", ".join(f"{k} {v:.1f} s" for k, v in d["ingest_seconds"].items()) + ".", "",
             "| step | seconds |", "|---|---|", *[f"| {k} | {v:.2f} |" for k, v in m["steps"].items()], "",
             f"**Scientific leaf categories** ({c['items']:,} items with a category, {c['categories']} categories, seed "
             f"{c['seed']}; expected same-category rate at random {c['expected_random']:.2%}):", "",
             f"| vectors | top-{c['k']} same | top-1 same | {c['k']} random same |", "|---|---|---|---|"]
    knn, rand = f"knn@{c['k']}", f"random@{c['k']}"
    for name, key in (("Miner item vectors (text includes the category)", "item_text"), ("titles only", "title_only")):
        r = c[key]
        lines.append(f"| {name} | {r[knn]:.2%} | {r['knn@1']:.2%} | {r[rand]:.2%} |")
    lines += ["", f"**Home Depot pairs**: {h['queries']:,} queries, {h['pairs']:,} (relevant ≥ 2.5, irrelevant ≤ 1.5) "
              f"pairs; encoder {h['encoder']['backend']} (agreement {h['encoder']['agreement']}), "
              f"{h['titles_encoded']:,} titles in {h['title_encode_seconds']:.1f} s, {h['queries_encoded']:,} queries in "
              f"{h['query_encode_seconds']:.1f} s.", "", "| scorer | share of pairs ordered right (ties ½) |", "|---|---|",
              f"| dense cosine(query, title) | {h['dense_share']:.2%} |", f"| word-set Jaccard | {h['jaccard_share']:.2%} |",
              "", f"**UserProfile.update** (dim 384, 5 keywords, 2 categories): mean {p['mean_us']:.1f} µs, p99 of "
              f"{p['batches']} batches of {p['batch_size']} {p['p99_us']:.1f} µs (target well under "
              f"{UPDATE_TARGET_US:.0f} µs: {ok(p['p99_us'] < UPDATE_TARGET_US)})."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0, help="numpy seed for the random baselines and profile data")
    p.add_argument("--k", type=int, default=10, help="neighbours per item in the category test")
    p.add_argument("--onnx-dir", type=Path, default=None, help="reuse ONNX graphs here (default: built cold in a temp dir)")
    args = p.parse_args(argv)
    data_dir = require_data_dir()
    command = command_line("bench_knowledge.py", argv)
    doc: dict[str, Any] = {"ingest_seconds": {}}
    with tempfile.TemporaryDirectory(prefix="shopmind-bench-") as tmp:
        settings = scratch_settings(tmp, data_dir, **{"knowledge.dir": str(Path(tmp) / "knowledge"),
                                                      "knowledge.onnx_dir": str(args.onnx_dir or Path(tmp) / "onnx")})
        with Store(settings.store.path) as store:
            for name in (SCI, HD):
                print(f"ingesting {name} ...", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                ingest_source(store, settings, open_source(settings, name))
                doc["ingest_seconds"][name] = round(time.perf_counter() - t0, 2)
            print(f"mining {SCI} ...", file=sys.stderr, flush=True)
            miner = Miner(store, settings.knowledge, settings.knowledge_dir)  # its encoder builds in settings.onnx_dir
            t0 = time.perf_counter()
            report = miner.run(SCI)
            doc["mining"] = {"wall_seconds": round(time.perf_counter() - t0, 2), "report_seconds": report.seconds,
                             "steps": report.steps, "counts": report.counts, "encoder": report.encoder,
                             "onnx_dir": str(settings.onnx_dir), "onnx_dir_given": args.onnx_dir is not None}
            print("category test ...", file=sys.stderr, flush=True)
            doc["categories"] = category_test(store, Path(report.artifacts), miner.encoder, args.k, args.seed)
            print("home depot pairs ...", file=sys.stderr, flush=True)
            doc["homedepot"] = homedepot_pairs(store, settings.knowledge, settings.onnx_dir)
    doc["profile"] = profile_updates(args.seed)
    info, stamp, md = machine(), datetime.now(timezone.utc).isoformat(timespec="seconds"), markdown(doc)
    print(md)
    head = f"# Knowledge benchmark\n\n{stamp} on {info['cpu']} ({info['cpu_count']} CPUs), Python {info['python']}.\n\n"
    write_results("knowledge", {"machine": info, "timestamp": stamp, "command": command, **doc},
                  head + md + f"\n\nReproduce: `make bench` or `{command}`\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
