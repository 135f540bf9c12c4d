"""Recommendation pipeline benchmark: candidate sources + learned ranker vs each source alone and vs a tuned
blend, on the test users of one run; then the accuracy cost of MMR diversity at several weights.

Ingests the dataset into a fresh temporary store, mines its item embeddings, trains the pipeline
(`ranking.train.train_pipeline`: sources on train with early stopping on valid, ranker on the valid
cases, sources refitted on train + valid, one test) and saves the artifact to bench/.artifacts/<dataset>
for bench_serving.py. Writes bench/results/pipeline-<dataset>.{json,md,png}.

    OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 SHOPMIND_DATA_DIR=../shared/data .venv/bin/python bench/bench_pipeline.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from common import RESULTS, command_line, machine, require_data_dir, scratch_settings, write_results  # same folder
from shopmind.data.api import ingest_source, open_source
from shopmind.data.store import Store
from shopmind.evaluation import protocols
from shopmind.knowledge.mine import Miner, item_vectors_for
from shopmind.ranking.diversity import intra_list_similarity
from shopmind.ranking.rerank import RerankConfig, rerank
from shopmind.ranking.train import markdown, train_pipeline
from shopmind.serving import artifact

ARTIFACTS = Path(__file__).resolve().parent / ".artifacts"


def _log(msg: str) -> None:
    print(f"  pipeline: {msg}", file=sys.stderr, flush=True)


def diversity_sweep(pipe, cases, mask_history: bool, weights=(0.0, 0.1, 0.2, 0.3, 0.5), users: int = 2000,
                    seed: int = 0) -> list[dict[str, float]]:
    """NDCG@10, Recall@10 and intra-list similarity of the top 10 after MMR at each weight (same users)."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(cases.targets), min(users, len(cases.targets)), replace=False)
    vectors = pipe.info.vectors
    ranked = []
    for i in pick:
        h, t = cases.histories[i], int(cases.targets[i])
        blocked = None
        if mask_history and len(h):
            blocked = np.zeros(pipe.info.n_items, bool)
            blocked[np.setdiff1d(h, [t])] = True
        ranked.append((pipe.rank(h, int(cases.users[i]), k=50, blocked=blocked), t))
    out = []
    for w in weights:
        ndcg, hit, ils = [], [], []
        for r, t in ranked:
            slots = rerank(r.rows, r.scores, 10, vectors, None, None, RerankConfig(diversity=w, explore=False, pool=50))
            top = [s.row for s in slots]
            pos = top.index(t) if t in top else None
            ndcg.append(1 / np.log2(pos + 2) if pos is not None else 0.0)
            hit.append(pos is not None)
            ils.append(intra_list_similarity(vectors[top]) if vectors.shape[1] else 0.0)
        out.append({"diversity": w, "ndcg@10": round(float(np.mean(ndcg)), 4), "recall@10": round(float(np.mean(hit)), 4),
                    "ils@10": round(float(np.mean(ils)), 4)})
    return out


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    res = result["report"]["results"]
    names = ["ranker", "blend", *result["report"]["sources"]]
    vals = [res[n]["ndcg@10"] for n in names]
    axes[0].bar(names, vals, color=["#C44E52", "#4C72B0"] + ["#8C8C8C"] * (len(names) - 2))
    for x, v in enumerate(vals):
        axes[0].text(x, v, f"{v:.4f}", ha="center", va="bottom", fontsize=8)
    axes[0].set_title(f"NDCG@10 on {result['report']['users']['test']:,} test users")
    sweep = result["diversity"]
    axes[1].plot([s["ils@10"] for s in sweep], [s["ndcg@10"] for s in sweep], marker="o")
    for s in sweep:
        axes[1].annotate(f"λ={s['diversity']}", (s["ils@10"], s["ndcg@10"]), fontsize=8, xytext=(4, 4),
                         textcoords="offset points")
    axes[1].set_xlabel("intra-list similarity of the top 10 (lower = more diverse)")
    axes[1].set_ylabel("NDCG@10")
    axes[1].set_title("MMR: accuracy vs diversity")
    fig.suptitle(f"Recommendation pipeline on {result['dataset']}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="amazon-scientific")
    args = p.parse_args(argv)
    data_dir = require_data_dir()
    command = command_line("bench_pipeline.py", argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="shopmind-bench-") as tmp:
        settings = scratch_settings(tmp, data_dir)
        with Store(settings.store.path) as store:
            _log("ingest and mine")
            ingest_source(store, settings, open_source(settings, args.dataset))
            Miner(store, settings.knowledge, settings.knowledge_dir, onnx_dir=settings.onnx_dir).run(args.dataset)
            proto = protocols.build(store, args.dataset)
            vectors = item_vectors_for(settings.knowledge_dir / args.dataset, proto.full.item_ids)
            pipe, report = train_pipeline(store, args.dataset, proto, vectors, on_step=_log)
            _log("diversity sweep")
            sweep = diversity_sweep(pipe, proto.test, proto.mask_history)
            report["encoder"] = {"model": settings.knowledge.model, "max_length": settings.knowledge.max_length}
            path = artifact.save(ARTIFACTS / args.dataset, pipe, store, args.dataset, report, encoder=report["encoder"])
    result = {"dataset": args.dataset, "report": report, "diversity": sweep, "artifact": str(path),
              "machine": machine(), "command": command, "seconds_total": round(time.perf_counter() - t0, 1),
              "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    md = markdown(report)
    md += ("\n## Diversity (MMR over the ranker's top 50, same 2,000 test users)\n\n"
           "| MMR weight | NDCG@10 | Recall@10 | intra-list similarity@10 |\n|---|---|---|---|\n" +
           "".join(f"| {s['diversity']} | {s['ndcg@10']} | {s['recall@10']} | {s['ils@10']} |\n" for s in sweep) +
           f"\n{result['timestamp']} on {result['machine']['cpu']} ({result['machine']['cpu_count']} CPUs); whole run "
           f"{result['seconds_total']:.0f} s (ingest, mining, training, test).\n\nReproduce: `{command}`\n")
    stem = f"pipeline-{args.dataset}"
    write_results(stem, result, md)
    _plot(result, RESULTS / f"{stem}.png")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
