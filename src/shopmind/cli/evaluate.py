"""Evaluation and search commands: benchmark, search, evaluate-search."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.table import Table

from .common import _emit_json, _guard, _run_ingest, _step_progress, app, out, state, status

if TYPE_CHECKING:
    from ..data.store import Store

@app.command()
def benchmark(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset (registered name; ingested if needed)."),
    models: str = typer.Option("pop,itemknn,als,bpr", "--models", "-m", help="Comma-separated model names."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="unisrec, s3rec or time (default: the "
                                          "dataset's own; time for a dataset the registry does not know)."),
    mask: Optional[bool] = typer.Option(None, "--mask/--no-mask", help="Remove history items from the ranking "
                                        "(default: as the protocol publishes)."),
    grid: bool = typer.Option(True, "--grid/--no-grid", help="Select hyper-parameters on validation."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for the markdown, JSON and plot "
                                           "(default: <store>.benchmarks)."),
    cold_share: float = typer.Option(0.1, "--cold-share", min=0.0, max=0.5,
                                     help="Share of items made cold for the cold-item experiment (0: off)."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Run grids as Ray Tune trials and train the neural models "
                                      "with Ray Train on this cluster: auto, local or HOST:PORT (docs/ray.md)."),
    ray_workers: int = typer.Option(2, "--ray-workers", min=1, help="Ray Train workers (DDP, one CPU each)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train recommenders, select on validation, test once with full ranking; write table, JSON and plot.

    TensorBoard logs of every neural training run go to <out>/runs (`tensorboard --logdir <out>/runs`)."""

    def body() -> dict[str, Any]:
        from ..data.registry import REGISTRY
        from ..data.store import open_store
        from ..evaluation import protocols, report, runner

        settings = state.settings()
        names = [m.strip() for m in models.split(",") if m.strip()]
        t0 = time.perf_counter()
        if ray:
            from ..raycluster import connect

            connect(ray)  # a missing Ray or a wrong address fails here, before any work
        with open_store(settings) as store:
            if dataset not in store.datasets():
                _run_ingest(store, settings, dataset, quiet=as_json)
            proto = protocols.build(store, dataset, protocol, mask)
        from ..knowledge.mine import item_vectors_for

        vectors = item_vectors_for(settings.knowledge_dir / dataset, proto.full.item_ids)
        folder = out_dir or settings.benchmarks_dir
        with status("benchmark …") as shown:
            result = runner.run(proto, names, grid=grid, item_vectors=vectors, log_dir=folder / "runs" / dataset,
                                cold_share=cold_share, ray=ray, ray_workers=ray_workers,
                                on_step=lambda msg: shown.update(f"benchmark {dataset}: {msg}"))
        spec = REGISTRY.get(dataset)
        result["dataset"] = dataset
        result["published"] = spec.published if spec and spec.published_protocol == proto.name else {}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        result["files"] = report.write(result, folder)
        return result

    result = _guard(body)
    if as_json:
        _emit_json(result)
        return
    from ..evaluation.report import markdown

    out.print(markdown(result))
    out.print(f"written: {', '.join(result['files'].values())} ({result['seconds']:.0f} s)")


@app.command()
def search(
    query: str = typer.Argument(..., help="What the shopper typed."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset in the store."),
    filters: list[str] = typer.Option([], "--filter", "-f", help="category=, brand=, price=LO..HI, attr.NAME= "
                                      "(repeatable)."),
    user: Optional[str] = typer.Option(None, "--user", "-u", help="Personalise for this user's interest profile."),
    mode: Optional[str] = typer.Option(None, "--mode", help="bm25, dense, rrf, hybrid or ltr (default: ltr when a "
                                       "ranker was trained by evaluate-search, else hybrid)."),
    page: int = typer.Option(1, "--page", min=1, max=1000),
    size: int = typer.Option(10, "--size", min=1, max=100),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Search a dataset's catalog with the engine the API uses: typo tolerance, hybrid retrieval, facets."""
    from ..search.build import load_engine
    from ..search.catalog import Filters

    def body() -> dict[str, Any]:
        from ..data.store import open_store

        settings = state.settings()
        parsed = Filters.parse(filters)
        with open_store(settings) as store:
            if dataset not in store.datasets():
                raise ValueError(f"{dataset!r} is not in the store (run `shopmind ingest {dataset}` first)")
            with _step_progress(quiet=as_json) as on_step:
                engine, report = load_engine(store, settings, dataset, on_step=on_step)
            user_vector = _user_vector(store, dataset, user) if user else None
        result = engine.search(query, parsed, page, size, mode, user_vector)
        return {**asdict(result), "engine": report}

    result = _guard(body, (ValueError,))
    if as_json:
        _emit_json(result)
        return
    fixed = f" (showing results for [bold]{result['corrected']}[/])" if result["corrected"] else ""
    out.print(f"{result['total']:,} results for [bold]{query}[/]{fixed}, mode {result['mode']}, "
              f"{result['timings_ms']['total']:.1f} ms")
    table = Table("#", "item", "title", "score")
    for n, item in enumerate(result["items"], start=(page - 1) * size + 1):
        table.add_row(str(n), item["item_id"], item["title"][:90], f"{item['score']:.4f}")
    out.print(table)
    for name, counts in result["facets"].items():
        if counts:
            out.print(f"[bold]{name}[/]: " + ", ".join(f"{k} ({v})" for k, v in counts[:6]))
    if result["intent"]:
        out.print("[bold]intent[/]: " + ", ".join(f"{k} ({p:.2f})" for k, p in result["intent"]))


def _user_vector(store: Store, dataset: str, user: str) -> Any:
    import numpy as np

    from ..knowledge.tables import ensure_tables

    ensure_tables(store)
    row = store.con.execute("SELECT vector FROM user_profiles WHERE dataset = ? AND user_id = ?", [dataset, user]).fetchone()
    if row is None or row[0] is None:
        raise ValueError(f"no interest profile for user {user!r} in {dataset} (run `shopmind mine -d {dataset}`)")
    return np.asarray(row[0], np.float32)


@app.command("evaluate-search")
def evaluate_search(
    dataset: str = typer.Option("homedepot", "--dataset", "-d", help="Dataset whose catalog is searched."),
    judgments: Optional[Path] = typer.Option(None, "--judgments", help="Judgments file (Home Depot format or a "
                                             "query,item_id,grade CSV); default: the dataset's ingested judgments."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for the markdown, JSON and plot "
                                           "(default: <store>.benchmarks)."),
    finetune_steps: int = typer.Option(0, "--finetune-steps", min=0, max=100_000,
                                       help="Also fine-tune the encoder on the training queries for this many "
                                       "steps (about 2 s each on 2 cores) and measure the *-ft systems; 0: off."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Tune and train search on training queries, then measure BM25, dense, hybrid and learned ranking on
    unseen queries; writes a table, JSON and a plot, and keeps the trained ranker (and the fine-tuned
    encoder, with --finetune-steps) for `shopmind search`."""
    from ..evaluation import search_eval
    from ..search.build import finetune_encoder, load_engine, save_tuning

    def body() -> dict[str, Any]:
        from ..data.store import open_store

        settings = state.settings()
        t0 = time.perf_counter()
        with open_store(settings) as store:
            if dataset not in store.datasets():
                _run_ingest(store, settings, dataset, quiet=as_json)
            with _step_progress(quiet=as_json) as on_step:
                engine, report = load_engine(store, settings, dataset, on_step=on_step)
            extra = search_eval.read_judgments(judgments) if judgments else None
            finetune = None
            if finetune_steps:
                def finetune(eng: Any, train: Any) -> dict[str, Any]:
                    return finetune_encoder(store, settings, dataset, eng, train, steps=finetune_steps)
            with status("evaluate-search …") as shown:
                result = search_eval.run(store, engine, dataset, extra, finetune=finetune,
                                         on_step=lambda msg: shown.update(f"evaluate-search {dataset}: {msg}"))
        result["engine"] = report
        result["seconds"]["total"] = round(time.perf_counter() - t0, 1)
        folder = out_dir or settings.benchmarks_dir
        result["files"] = search_eval.write(result, folder)
        result["tuning_saved"] = str(save_tuning(engine, settings, dataset))
        return result

    result = _guard(body, (ValueError,))
    if as_json:
        _emit_json(result)
        return
    out.print(search_eval.markdown(result))
    out.print(f"written: {', '.join(result['files'].values())}; tuning kept in {result['tuning_saved']} "
              f"({result['seconds']['total']:.0f} s)")

