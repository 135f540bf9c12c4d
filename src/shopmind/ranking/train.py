"""Offline training of the recommendation pipeline on a dataset of the store, with its honest evaluation.

Sources are fitted on the protocol's train part (early stopping on the validation cases), the ranker is
trained on those validation cases, the sources are refitted on train + valid, and the whole pipeline is
measured once on the test cases against each source alone and the tuned blend. The returned pipeline
(refitted sources + ranker) is what `shopmind train` saves and `shopmind serve` runs.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from ..data.interactions import Interactions
from ..data.store import Store
from ..evaluation import metrics as M
from ..evaluation.protocols import Protocol
from .features import ItemInfo
from .pipeline import RankingPipeline
from .sources import Sources

StepFn = Callable[[str], None]


def item_info(store: Store, dataset: str, data: Interactions, events: pd.DataFrame,
              vectors: np.ndarray | None) -> ItemInfo:
    """ItemInfo for `data`'s items from these (training) events, the catalog's prices and the LM vectors."""
    prices = dict(store.con.execute("SELECT item_id, price FROM items WHERE dataset = ? AND price IS NOT NULL",
                                    [dataset]).fetchall())
    ts = pd.to_datetime(events["timestamp"]) if "timestamp" in events else pd.Series([pd.NaT] * len(events))
    seconds = [None if pd.isna(t) else t.timestamp() for t in ts]
    pairs = list(zip(events["item_id"].astype(str), seconds))
    index = {str(i): r for r, i in enumerate(data.item_ids)}
    return ItemInfo.build(data.item_ids, index, pairs, prices, vectors, data.item_groups)


def train_pipeline(store: Store, dataset: str, protocol: Protocol, vectors: np.ndarray | None,
                   sources: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0,
                   on_step: StepFn | None = None, ray: str | None = None,
                   ray_workers: int = 2) -> tuple[RankingPipeline, dict[str, Any]]:
    """ray: a Ray cluster address; the neural sources then train on Ray Train (ranking/sources.py)."""
    step = on_step or (lambda msg: None)
    frame = protocol.frame
    if frame is None:
        raise ValueError("the protocol carries no events frame (build it with evaluation.protocols.build)")
    t0 = time.perf_counter()
    src = Sources(sources, seed, ray, ray_workers).fit_validated(protocol.train, vectors, protocol.valid.histories,
                                                protocol.valid.targets, protocol.valid.users, on_step=step)
    t1 = time.perf_counter()
    pipe = RankingPipeline(src, item_info(store, dataset, protocol.train, frame[frame["split"] == "train"], vectors))
    ranker_report = pipe.fit_ranker(protocol.valid, protocol.mask_history, seed=seed, on_step=step)
    t2 = time.perf_counter()
    full = RankingPipeline(src.refit(protocol.full, vectors, on_step=step),
                           item_info(store, dataset, protocol.full, frame[frame["split"] != "test"], vectors),
                           ranker=pipe.ranker, per_source=pipe.per_source, depth=pipe.depth, blend=pipe.blend)
    t3 = time.perf_counter()
    step(f"test: ranker, blend and {len(src.names)} sources on {len(protocol.test.targets):,} users")
    results = full.evaluate(protocol.test, protocol.mask_history)
    best_source = max(src.names, key=lambda n: results[n]["ndcg@10"])
    paired = {}
    for name in ("blend", best_source):
        a = M.per_user_ndcg(results["ranker"]["_ranks"])
        b = M.per_user_ndcg(results[name]["_ranks"])
        paired[name] = M.paired_bootstrap(a, b, seed=seed)
    for r in results.values():
        r.pop("_ranks")
    report = {
        "dataset": dataset, "protocol": protocol.name, "mask_history": protocol.mask_history,
        "protocol_note": protocol.note, "cases": protocol.counts,
        "users": {"valid": len(protocol.valid.targets), "test": len(protocol.test.targets)},
        "items": int(full.info.n_items), "sources": src.config, "tuned": {n: m.tuned for n, m in src.models.items()},
        "ranker": ranker_report, "results": results, "best_source": best_source,
        "paired_ndcg@10_ranker_vs": paired,
        "seconds": {"sources": round(t1 - t0, 1), "ranker": round(t2 - t1, 1), "refit": round(t3 - t2, 1),
                    "test": round(time.perf_counter() - t3, 1), "total": round(time.perf_counter() - t0, 1)},
    }
    if ray:  # how each source was trained (Ray Train: workers, nodes, seconds; None: fitted here)
        report["ray"] = {"address": ray, "sources": {n: getattr(m, "fit_info", None) for n, m in src.models.items()},
                         "refit": {n: getattr(m, "fit_info", None) for n, m in full.sources.models.items()}}
    return full, report


def markdown(report: dict[str, Any]) -> str:
    """The evaluation table of a training run."""
    r = report["results"]
    lines = [f"# Recommendation pipeline on {report['dataset']} ({report['protocol']}, "
             f"{report['users']['test']:,} test users, {report['items']:,} items)", "",
             *([f"Protocol: {report['protocol_note']}.", ""] if report.get("protocol_note") else []),
             "| system | Recall@10 | NDCG@10 | Recall@50 | MRR |", "|---|---|---|---|---|"]
    label = {"ranker": "**learned ranker over the candidate union**", "blend": "z-score blend (weights tuned on valid)"}
    for name in ["ranker", "blend", *report["sources"]]:
        m = r[name]
        lines.append(f"| {label.get(name, 'source: ' + name)} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} | "
                     f"{m['recall@50']:.4f} | {m['mrr']:.4f} |")
    rk = report["ranker"]
    lines += ["", f"Candidates: top {50} of each source, {rk['mean_candidates']} per user on average; the test item "
                  f"is among them for {rk['target_in_candidates']:.1%} of validation users. Ranker: LambdaRank, "
                  f"{rk['trees']} trees, trained on {rk['cases']:,} validation users.", "",
              "Paired bootstrap of NDCG@10, ranker minus the other system (95 % interval):", "",
              "| vs | difference | interval |", "|---|---|---|"]
    lines += [f"| {n} | {c['diff']:+.4f} | [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] |"
              for n, c in report["paired_ndcg@10_ranker_vs"].items()]
    lines += ["", "Ranker feature importance (share of gain): " +
              ", ".join(f"{k} {v:.2f}" for k, v in list(rk["importance"].items())[:10]) + ".",
              "", f"Time: {report['seconds']}"]
    return "\n".join(lines) + "\n"
