"""Search evaluation on graded judgments: tune and train on training queries, report on unseen ones.

The judgments are split by query (seeded hash, 60 / 20 / 20, no query in two parts; `data.splits`).
BM25's k1 and b and the fusion weight are tuned on the training queries, the LambdaRank ranker is trained
on them with early stopping on the validation queries, and every system is measured once on the test
queries: retrieval over the whole catalog (NDCG@10, Recall@100 of grade >= 2.5) and re-ranking of each
query's judged items (NDCG@10 and the lift over a random order), with paired bootstrap intervals against
the tuned BM25.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..data.splits import assign_query_parts, query_split
from ..data.store import Store
from ..search import metrics as SM
from ..search.engine import Judgments, SearchEngine
from . import metrics as M
from . import report

SYSTEMS = ("bm25", "dense", "rrf", "hybrid", "ltr-text", "ltr")
FINETUNED = ("dense-ft", "hybrid-ft", "ltr-ft")  # the same after fine-tuning the encoder on training queries
StepFn = Callable[[str], None]


def read_judgments(path: str | Path) -> pd.DataFrame:
    """A judgments file: Home Depot's format (search_term, product_uid, relevance; latin-1) or a generic CSV
    with columns query, item_id, grade."""
    path = Path(path)
    head = pd.read_csv(path, nrows=0, encoding="latin-1").columns
    if {"search_term", "product_uid", "relevance"} <= set(head):
        df = pd.read_csv(path, encoding="latin-1", usecols=["search_term", "product_uid", "relevance"])
        df = df.rename(columns={"search_term": "query", "product_uid": "item_id", "relevance": "grade"})
    elif {"query", "item_id", "grade"} <= set(head):
        df = pd.read_csv(path, usecols=["query", "item_id", "grade"])
    else:
        raise ValueError(f"{path}: expected columns query,item_id,grade (or Home Depot's search_term,"
                         f"product_uid,relevance); found {', '.join(head)}")
    df["item_id"] = df["item_id"].astype(str)
    df["query"] = df["query"].astype(str)
    return df.dropna()


def _parts(df: pd.DataFrame, known: set[str]) -> dict[str, dict[str, dict[str, float]]]:
    df = df[df["item_id"].isin(known)]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for part in ("train", "valid", "test"):
        rows = df[df["split"] == part]
        out[part] = {q: dict(zip(g["item_id"], g["grade"].astype(float))) for q, g in rows.groupby("query", sort=True)}
    return out


def split_judgments(store: Store, engine: SearchEngine, dataset: str, judgments: pd.DataFrame | None = None
                    ) -> tuple[pd.DataFrame, dict[str, dict[str, dict[str, float]]]]:
    """(judgment rows with their part, {part: {query: {item id: grade}}}) for items in the engine's catalog."""
    df = assign_query_parts(judgments) if judgments is not None else query_split(store, dataset)
    return df, _parts(df, set(engine.catalog.item_ids))


def evaluate_systems(engine: SearchEngine, systems: dict[str, Callable[[], None]], queries: Judgments
                     ) -> dict[str, dict[str, Any]]:
    """Retrieval and re-ranking measures of several systems on the same queries. `systems`: name -> a
    function that configures the engine for it (mode, ranker). Each query's candidates are retrieved once
    (the pool, and the pool plus the judged items for re-ranking) and shared by all systems."""
    per: dict[str, dict[str, list]] = {name: {"ndcg": [], "recall": [], "rerank": []} for name in systems}
    random = []
    for q, grades in queries.items():
        corrected, terms = engine.understand(q)
        items = sorted(grades)
        rows = np.array([engine.catalog.index[i] for i in items], np.int64)
        pool = engine.candidates(corrected, None, terms)
        full = engine.candidates(corrected, None, terms, extra_rows=rows)
        pos = np.searchsorted(full.rows, rows)
        random.append(SM.random_ndcg(grades))
        for name, configure in systems.items():
            mode = configure()
            ranked = engine.rank_candidates(corrected, terms, pool, mode, 100)
            per[name]["ndcg"].append(SM.ndcg(ranked, grades))
            per[name]["recall"].append(SM.recall(ranked, grades))
            if mode == "bm25":
                s = full.lexical.astype(np.float64)  # unmatched judged items score 0 instead of being dropped
            elif mode == "dense":
                s = full.dense.astype(np.float64)
            else:
                s = np.asarray(engine.order(corrected, terms, full, mode), np.float64)
            scores = s[pos]
            order = [items[i] for i in np.lexsort((np.arange(len(items)), -scores))]
            per[name]["rerank"].append(SM.ndcg(order, grades))
    rnd, _ = SM.summarize(random)
    out = {}
    for name, p in per.items():
        ndcg, n_ndcg = SM.summarize(p["ndcg"])
        recall, n_recall = SM.summarize(p["recall"])
        rerank, _ = SM.summarize(p["rerank"])
        out[name] = {"ndcg@10": ndcg, "recall@100": recall, "rerank_ndcg@10": rerank, "rerank_random": rnd,
                     "rerank_lift": SM.lift(rerank, rnd), "queries_ndcg": n_ndcg, "queries_recall": n_recall,
                     "_per_query": p}
    return out


def run(store: Store, engine: SearchEngine, dataset: str, judgments: pd.DataFrame | None = None,
        on_step: StepFn | None = None, seed: int = 0,
        finetune: Callable[[SearchEngine, Judgments], dict[str, Any]] | None = None) -> dict[str, Any]:
    """finetune(engine, train): fine-tunes the encoder on the training queries and switches the engine's
    dense leg to it (search.build.finetune_encoder); when given, the dense, hybrid and learned systems are
    measured again with it (the *-ft rows) and the learned one with it is the final system."""
    step = on_step or (lambda msg: None)
    df, parts = split_judgments(store, engine, dataset, judgments)
    train, valid, test = parts["train"], parts["valid"], parts["test"]
    if not train or not test:
        raise ValueError("need judged queries in both the training and the test part")
    t0 = time.perf_counter()
    step(f"encoding {len(train) + len(valid) + len(test):,} queries")
    engine.prime(list(train) + list(valid) + list(test))
    step("tuning BM25 k1 and b on the training queries")
    bm25 = engine.tune_bm25(train)
    step("tuning the fusion weight on the training queries")
    alpha = engine.tune_alpha(train)
    step("learning to rank without search-log priors")
    ltr_text = engine.fit_ranker(train, valid, log_priors=False)
    text_ranker = engine.ranker
    step("learning to rank with search-log priors")
    ltr = engine.fit_ranker(train, valid, log_priors=True)
    full_ranker, full_priors = engine.ranker, engine.log_priors
    tuning_s = time.perf_counter() - t0
    def use(mode: str, ranker: Any = None, priors: Any = None) -> Callable[[], str]:
        def configure() -> str:
            engine.ranker, engine.log_priors = ranker, priors
            return mode
        return configure

    step(f"{len(SYSTEMS)} systems on {len(test):,} test queries")
    results = evaluate_systems(engine, {"bm25": use("bm25"), "dense": use("dense"), "rrf": use("rrf"),
                                        "hybrid": use("hybrid"),
                                        "ltr-text": use("ltr", text_ranker), "ltr": use("ltr", full_ranker, full_priors)},
                               test)
    engine.ranker, engine.log_priors = full_ranker, full_priors
    tuned_ft: dict[str, Any] = {}
    if finetune is not None:
        step("fine-tuning the encoder on the training queries")
        tuned_ft["encoder"] = finetune(engine, train)
        engine.prime(list(train) + list(valid) + list(test))
        step("tuning the fusion weight with the fine-tuned encoder")
        tuned_ft["alpha"] = engine.tune_alpha(train)["best"]["alpha"]
        step("learning to rank with the fine-tuned encoder")
        tuned_ft["ltr"] = engine.fit_ranker(train, valid, log_priors=True)
        step(f"{len(FINETUNED)} fine-tuned systems on {len(test):,} test queries")
        ft_ranker, ft_priors = engine.ranker, engine.log_priors
        results.update({f"{name}-ft": r for name, r in evaluate_systems(
            engine, {"dense": use("dense"), "hybrid": use("hybrid"), "ltr": use("ltr", ft_ranker, ft_priors)},
            test).items()})
        engine.ranker, engine.log_priors = ft_ranker, ft_priors
    base = results["bm25"]["_per_query"]
    paired = {}
    for system, r in results.items():
        if system == "bm25":
            continue
        a = np.array([x for x, b in zip(r["_per_query"]["ndcg"], base["ndcg"]) if x is not None and b is not None])
        b = np.array([b for x, b in zip(r["_per_query"]["ndcg"], base["ndcg"]) if x is not None and b is not None])
        paired[system] = M.paired_bootstrap(a, b, seed=seed)
    for r in results.values():
        r.pop("_per_query")
    final = "ltr-ft" if finetune is not None else "ltr"  # fixed in advance, never picked on the test queries
    best = results[final]
    return {
        "dataset": dataset, "items": len(engine.catalog), "dense_index": engine.dense.kind,
        "queries": {p: len(parts[p]) for p in parts}, "judgments": int(len(df)),
        "tuned": {"bm25": bm25["best"], "alpha": alpha["best"]["alpha"], "ltr": {k: v for k, v in ltr.items()},
                  "ltr_text": {k: v for k, v in ltr_text.items() if k != "importance"},
                  **({"finetuned": tuned_ft} if tuned_ft else {})},
        "final": final,
        "results": results, "paired_ndcg@10_vs_bm25": paired,
        "ratios": {"ndcg@10": best["ndcg@10"] / max(results["bm25"]["ndcg@10"], 1e-12),
                   "recall@100": best["recall@100"] / max(results["bm25"]["recall@100"], 1e-12),
                   "rerank_lift": best["rerank_lift"] / max(results["bm25"]["rerank_lift"], 1e-12)},
        "seconds": {"tuning_and_training": round(tuning_s, 1), "total": round(time.perf_counter() - t0, 1)},
    }


def markdown(result: dict[str, Any]) -> str:
    q = result["queries"]
    lines = [f"# Search on {result['dataset']}: {result['items']:,} items, {q['test']:,} unseen test queries", "",
             f"Queries split by a seeded hash: {q['train']:,} train / {q['valid']:,} valid / {q['test']:,} test. "
             f"BM25 k1={result['tuned']['bm25']['k1']}, b={result['tuned']['bm25']['b']} and the fusion weight "
             f"alpha={result['tuned']['alpha']} tuned on the training queries; the rankers trained there "
             f"({result['tuned']['ltr']['trees']} trees, early stopping on validation). Dense index: "
             f"{result['dense_index']}.", "",
             "| system | NDCG@10 | Recall@100 | re-rank NDCG@10 | re-rank lift over random |", "|---|---|---|---|---|"]
    labels = {"bm25": "BM25 (tuned, product analyzer)", "dense": "dense (MiniLM)",
              "rrf": "reciprocal rank fusion (equal weights)", "hybrid": "hybrid score fusion (tuned weight)",
              "ltr-text": "+ LambdaRank, text features only", "ltr": "+ LambdaRank with search-log priors",
              "dense-ft": "dense, fine-tuned encoder", "hybrid-ft": "hybrid, fine-tuned encoder",
              "ltr-ft": "+ LambdaRank with priors, fine-tuned encoder"}
    for system, r in result["results"].items():
        lines.append(f"| {labels.get(system, system)} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | "
                     f"{r['rerank_ndcg@10']:.4f} | {r['rerank_lift']:.4f} |")
    random = next(iter(result["results"].values()))["rerank_random"]
    lines += ["", f"Random order of the judged items scores {random:.4f} re-rank NDCG@10.", "",
              "Paired bootstrap of NDCG@10 against BM25 (same queries, 95 % interval):", "",
              "| system | difference | interval |", "|---|---|---|"]
    lines += [f"| {s} | {c['diff']:+.4f} | [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] |"
              for s, c in result["paired_ndcg@10_vs_bm25"].items()]
    r = result["ratios"]
    ft = result["tuned"].get("finetuned")
    if ft:
        e = ft["encoder"]
        lines += ["", f"Fine-tuned encoder: {e['steps']} steps of {e['queries_per_step']} training queries × "
                      f"{e['items_per_query']} judged items (in-batch negatives + graded pairs), loss "
                      f"{e['loss_first_50']} → {e['loss_last_50']}, {e['seconds']} s"
                      f"{' (reused from an earlier run)' if e.get('reused') else ''}; "
                      f"catalog re-encoded in {e['encode_seconds']} s "
                      f"({e['encoded']:,} texts encoded, {e['encoder'].get('backend')}); "
                      f"fusion weight alpha={ft['alpha']}, ranker {ft['ltr']['trees']} trees."]
    lines += ["", f"Final system ({result.get('final', 'ltr')}) vs BM25: NDCG@10 ×{r['ndcg@10']:.3f}, "
                  f"Recall@100 ×{r['recall@100']:.3f}, "
                  f"re-rank lift ×{r['rerank_lift']:.3f}."]
    imp = result["tuned"]["ltr"].get("importance", {})
    if imp:
        lines += ["", "Ranker feature importance (share of gain): " +
                  ", ".join(f"{k} {v:.2f}" for k, v in list(imp.items())[:8]) + "."]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """NDCG@10 and Recall@100 per system, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(result["results"])
    fig, axes = plt.subplots(1, 2, figsize=(4 + 0.9 * len(systems), 3.8), dpi=110)
    for ax, metric in zip(axes, ("ndcg@10", "recall@100")):
        values = [result["results"][s][metric] for s in systems]
        palette = {"bm25": "#8C8C8C", "dense": "#DD8452", "rrf": "#937860", "hybrid": "#4C72B0", "ltr-text": "#55A868",
                   "ltr": "#C44E52"}
        ax.bar(systems, values, color=[palette.get(s.removesuffix("-ft"), "#8172B3") for s in systems],
               edgecolor=["black" if s.endswith("-ft") else "none" for s in systems])
        ax.axhline(result["results"]["bm25"][metric], color="black", linestyle="--", linewidth=1)
        for x, v in enumerate(values):
            ax.text(x, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
        ax.set_title(f"{metric} on {result['queries']['test']:,} unseen queries")
        ax.tick_params(axis="x", labelsize=8, rotation=30)
    fig.suptitle(f"Search on {result['dataset']} (dashed: tuned BM25; outlined: fine-tuned encoder)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(result: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """search-<dataset>.{json,md,png} in out_dir; returns the paths."""
    return report.write(result, out_dir, "search", markdown, plot)
