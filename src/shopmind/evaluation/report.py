"""Benchmark reports: a markdown table, a JSON document and a plot with published results as lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

SHOWN = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "recall@50", "ndcg@50", "mrr", "coverage@10")


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# {result['dataset']}: {result['protocol']} protocol "
             f"({'history masked' if result['mask_history'] else 'history not masked'})", "",
             f"{result['users']['test']:,} test users, {result['items']:,} items, full ranking over all items. "
             "Hyper-parameters chosen on validation (model fitted on train); test run once after a refit on "
             "train + valid.", "",
             "| model | params | " + " | ".join(SHOWN) + " | fit s | selection s |",
             "|---|---|" + "---|" * (len(SHOWN) + 2)]
    for r in result["results"]:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "–"
        lines.append(f"| {r['model']} | {params} | " + " | ".join(
            f"{r['test'][m]:.4f}" if m in r["test"] else "–" for m in SHOWN) +
            f" | {r['seconds']['fit']:.1f} | {r['seconds']['selection']:.1f} |")
    for name, vals in result.get("published", {}).items():
        lines.append(f"| *{name} (published)* | – | " + " | ".join(
            f"{vals[m]:.4f}" if m in vals else "–" for m in SHOWN) + " | – | – |")
    comps = result.get("paired_ndcg@10_vs_reference", {})
    if comps:
        lines += ["", f"Paired bootstrap of NDCG@10 against {result['reference_model']} (same users, 95 % interval):",
                  "", "| model | difference | interval |", "|---|---|---|"]
        lines += [f"| {m} | {c['diff']:+.4f} | [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] |" for m, c in comps.items()]
    lines += _text_and_cold(result)
    return "\n".join(lines) + "\n"


def _text_and_cold(result: dict[str, Any]) -> list[str]:
    """The LM text's effect (paired, all users and cold items) and the long-tail / cold-item slices."""
    lines: list[str] = []
    cold = result.get("cold_items") or {}
    text = result.get("text_vs_id_ndcg@10") or {}
    if isinstance(text, dict) and "diff" in text:  # results written before the per-model form
        text = {"sasrec": text}
    if text:
        lines += ["", "LM text vs the same model with ID embeddings only, NDCG@10 difference (95 % interval):", "",
                  "| model | all test users | cold-item cases |", "|---|---|---|"]
        for m, c in text.items():
            cc = cold.get("text_vs_id_ndcg@10", {}).get(m)
            lines.append(f"| {m} − {m}-id | {c['diff']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] | " +
                         (f"{cc['diff']:+.4f} [{cc['ci_low']:+.4f}, {cc['ci_high']:+.4f}]" if cc else "–") + " |")
    tail_n = result.get("users", {}).get("test_tail")
    if tail_n or cold:
        cold_text = (f" Cold items: {cold['items']:,} items ({cold['share']:.0%} of those with interactions) lose all "
                     f"their interactions; the {cold['cases']:,} test users whose target is one of them are ranked by "
                     "models refitted without them." if cold else " No cold-item experiment (no item text).")
        lines += ["", f"Long tail: the {tail_n or 0:,} test users whose target has at most 5 training interactions."
                  + cold_text, "",
                  "| model | tail recall@10 | tail ndcg@10 | cold recall@10 | cold ndcg@10 | cold recall@50 |",
                  "|---|---|---|---|---|---|"]
        for r in result["results"]:
            c = cold.get("models", {}).get(r["model"], {})
            cells = [r["test"].get("tail_recall@10"), r["test"].get("tail_ndcg@10"), c.get("recall@10"),
                     c.get("ndcg@10"), c.get("recall@50")]
            lines.append(f"| {r['model']} | " + " | ".join("–" if v is None else f"{v:.4f}" for v in cells) + " |")
    return lines


def plot(result: dict[str, Any], path: Path, metric: str = "ndcg@10") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [r["model"] for r in result["results"]]
    values = [r["test"].get(metric, 0.0) for r in result["results"]]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.bar(models, values, color="#4C72B0")
    for x, v in enumerate(values):
        ax.text(x, v, f"{v:.4f}", ha="center", va="bottom", fontsize=8)
    for i, (name, vals) in enumerate(result.get("published", {}).items()):
        if metric in vals:
            ax.axhline(vals[metric], color=f"C{i + 1}", linestyle="--", linewidth=1, label=f"{name} (published)")
    ax.set_ylabel(metric.upper())
    ax.set_title(f"{result['dataset']} — {metric} ({result['protocol']} protocol)")
    if result.get("published"):
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(result: dict[str, Any], out_dir: Path, prefix: str = "benchmark",
          render: Callable[[dict[str, Any]], str] | None = None,
          draw: Callable[[dict[str, Any], Path], None] | None = None) -> dict[str, str]:
    """<prefix>-<dataset>.{json,md,png} in out_dir (recommender tables and plot unless render / draw are
    given); returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{prefix}-{result['dataset']}"
    paths = {"json": str(stem.with_suffix(".json")), "markdown": str(stem.with_suffix(".md")),
             "plot": str(stem.with_suffix(".png"))}
    Path(paths["json"]).write_text(json.dumps(result, indent=2, default=float) + "\n")
    Path(paths["markdown"]).write_text((render or markdown)(result))
    (draw or plot)(result, Path(paths["plot"]))
    return paths
