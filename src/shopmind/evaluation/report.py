"""Benchmark reports: a markdown table, a JSON document and a plot with published results as lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    text = result.get("text_vs_id_ndcg@10")
    if text:
        lines += ["", f"LM text vs ID only (sasrec − sasrec-id), NDCG@10: {text['diff']:+.4f} "
                      f"[{text['ci_low']:+.4f}, {text['ci_high']:+.4f}]"]
    return "\n".join(lines) + "\n"


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


def write(result: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """benchmark-<dataset>.{json,md,png} in out_dir; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"benchmark-{result['dataset']}"
    paths = {"json": str(stem.with_suffix(".json")), "markdown": str(stem.with_suffix(".md")),
             "plot": str(stem.with_suffix(".png"))}
    Path(paths["json"]).write_text(json.dumps(result, indent=2, default=float) + "\n")
    Path(paths["markdown"]).write_text(markdown(result))
    plot(result, Path(paths["plot"]))
    return paths
