"""The demo command: ingest everything found, mine two datasets, optionally train, evaluate search and serve."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from .common import _artifact_dir, _emit_json, _guard, _run_ingest, _step_progress, app, err, out, state, status
from .render import _print_mining, _stats_table

if TYPE_CHECKING:
    from ..config import Settings
    from ..data.store import Store

DEMO_MINE = ("amazon-scientific", "amazon2018-giftcards")


@app.command()
def demo(
    force: bool = typer.Option(False, "--force", help="Re-ingest even when the files were ingested before."),
    mine_knowledge: bool = typer.Option(True, "--mine/--no-mine", help=f"Mine knowledge for {', '.join(DEMO_MINE)}."),
    serve_after: bool = typer.Option(False, "--serve/--no-serve", help="Also train the recommendation pipeline, "
                                     "evaluate search on homedepot and start the storefront (what `make demo` does)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port of the storefront with --serve."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """The main job: ingest every registered dataset found locally (or downloadable), print statistics,
    and mine knowledge (embeddings, keywords, review knowledge cards, profiles, item graph) for two of them.
    With --serve: train amazon-scientific's pipeline, evaluate search on homedepot, and serve the
    storefront. Work already done (unchanged ingests, mined knowledge and artifacts newer than the data,
    a saved search tuning) is reused."""

    def body() -> dict[str, Any]:
        from ..data.api import stats_with_expected
        from ..data.registry import REGISTRY, DatasetError
        from ..data.store import Store

        settings = state.settings()
        t0 = time.perf_counter()
        steps, names = [], []
        with Store(settings.store.path) as store:
            for name in REGISTRY:
                t = time.perf_counter()
                try:
                    r = _run_ingest(store, settings, name, force=force, quiet=as_json)
                except DatasetError as e:
                    steps.append({"dataset": name, "status": "skipped", "reason": str(e)})
                    if not as_json:
                        err.print(f"[yellow]skip {name}:[/] {e}")
                    continue
                names.append(name)
                status = "reused" if r is None else r.status
                steps.append({"dataset": name, "status": status, "seconds": round(time.perf_counter() - t, 2),
                              "run": r.to_json() if r else None})
                if not as_json:
                    msg = "unchanged since the last ingest, reused" if r is None else (
                        f"{r.status}: {r.rows_read:,} rows, {r.rejected:,} rejected, {r.seconds:.1f} s")
                    err.print(f"[bold]{name}[/] {msg}")
            stats_rows = [stats_with_expected(store, n) for n in names]
            mining = []
            if mine_knowledge:
                from ..knowledge.mine import Miner

                for name in [n for n in DEMO_MINE if n in names]:
                    if serve_after and _fresh(settings.knowledge_dir / name / "item_vectors.npy", store, name):
                        steps.append({"step": f"mine {name}", "status": "reused"})
                        if not as_json:
                            err.print(f"[bold]mine {name}[/] knowledge newer than the data, reused")
                        continue
                    t = time.perf_counter()
                    with _step_progress(quiet=as_json) as on_step:
                        report = Miner(store, settings.knowledge, settings.knowledge_dir, on_step=on_step,
                                       onnx_dir=settings.onnx_dir).run(name)
                    mining.append(report.to_json())
                    steps.append({"step": f"mine {name}", "status": "done", "seconds": round(time.perf_counter() - t, 1)})
            if serve_after:
                steps += _demo_train_and_search(store, settings, names, as_json)
        result = {"store": str(settings.store.path), "steps": steps, "datasets": stats_rows, "mining": mining,
                  "seconds": round(time.perf_counter() - t0, 2)}
        if serve_after:  # the storefront's dashboard shows the last demo's steps
            _write_demo_record(settings.benchmarks_dir, steps, result["seconds"])
        return result

    result = _guard(body)
    if as_json:
        _emit_json(result)
    else:
        out.print(_stats_table(result["datasets"], f"shopmind store {result['store']}"))
        for report in result["mining"]:
            _print_mining(report)
    if not result["datasets"]:
        err.print("[bold red]error:[/] no dataset could be found or downloaded; set SHOPMIND_DATA_DIR to the "
                  "folder holding them (e.g. ../shared/data)")
        raise typer.Exit(1)
    if as_json:
        return
    out.print(_steps_table(result["steps"], result["seconds"]))
    ok = all(s["matches_published"] is not False for s in result["datasets"])
    out.print(("[green]all statistics match the published figures[/]" if ok
               else "[red]some statistics differ from the published figures[/]") + f" ({result['seconds']:.1f} s)")
    if serve_after:
        from ..serving.server import ensure_quiet_threads, serve as run

        ensure_quiet_threads()
        settings = state.settings(**{"serving.mode": "demo"})  # the open storefront, on loopback only
        folder = _artifact_dir(settings, DEMO_SERVE)
        out.print("\n[bold yellow]demo mode:[/] an open storefront on 127.0.0.1 (anyone may act as any shopper); "
                  "`shopmind serve` runs in production mode (docs/security.md)")
        out.print(f"[bold green]storefront:[/] http://127.0.0.1:{port}/  ·  dashboard: "
                  f"http://127.0.0.1:{port}/#/dashboard  ·  API: http://127.0.0.1:{port}/docs  (Ctrl-C stops)")
        _guard(lambda: run(folder, settings, "127.0.0.1", port))


DEMO_SERVE = "amazon-scientific"


def _step_name(step: dict[str, Any]) -> str:
    return f"ingest {step['dataset']}" if "dataset" in step else step["step"]


def _write_demo_record(folder: Path, steps: list[dict[str, Any]], seconds: float) -> None:
    """demo-steps.json in the store's .benchmarks folder: each step's status and time, the total, when."""
    from datetime import datetime, timezone

    folder.mkdir(parents=True, exist_ok=True)
    record = {"steps": [{"step": _step_name(s), "status": s["status"], "seconds": s.get("seconds")} for s in steps],
              "seconds": seconds, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    tmp = folder / "demo-steps.json.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(folder / "demo-steps.json")


def _steps_table(steps: list[dict[str, Any]], total: float) -> Table:
    """What each demo step did and how long it took (reused steps cost nothing)."""
    table = Table("step", "status", "seconds", title="demo steps")
    for s in steps:
        table.add_row(_step_name(s), s["status"], f"{s['seconds']:.1f}" if "seconds" in s else "–")
    table.add_row("[bold]total[/]", "", f"[bold]{total:.1f}[/]")
    return table


def _fresh(path: Path, store: Store, dataset: str) -> bool:
    """Whether a derived file exists and is newer than the dataset's last ingest."""
    if not path.exists():
        return False
    last = store.con.execute("SELECT max(finished_at) FROM ingest_runs WHERE dataset = ? AND status LIKE 'completed%'",
                             [dataset]).fetchone()[0]
    from datetime import timezone

    return last is None or path.stat().st_mtime > last.replace(tzinfo=timezone.utc).timestamp()  # stored as UTC


def _demo_train_and_search(store: Store, settings: Settings, names: list[str], quiet: bool) -> list[dict[str, Any]]:
    """The demo's heavier steps, each reused when already done: the pipeline artifact, the search tuning."""
    from ..evaluation import search_eval
    from ..search.build import load_engine, save_tuning, tuning_dir
    from ..serving import artifact

    steps: list[dict[str, Any]] = []
    folder = _artifact_dir(settings, DEMO_SERVE)
    if DEMO_SERVE in names:
        if _fresh(folder / "manifest.json", store, DEMO_SERVE):
            steps.append({"step": f"train {DEMO_SERVE}", "status": "reused"})
            if not quiet:
                err.print(f"[bold]train {DEMO_SERVE}[/] artifact newer than the data, reused ({folder})")
        else:
            t = time.perf_counter()
            with status(f"train {DEMO_SERVE} …") as shown:
                _, report = artifact.train(store, settings, DEMO_SERVE, folder,
                                           on_step=lambda m: shown.update(f"train {DEMO_SERVE}: {m}"))
            r = report["results"]
            steps.append({"step": f"train {DEMO_SERVE}", "status": "done", "seconds": round(time.perf_counter() - t, 1)})
            if not quiet:
                err.print(f"[bold]train {DEMO_SERVE}[/] ranker NDCG@10 {r['ranker']['ndcg@10']:.4f} vs best source "
                          f"{report['best_source']} {r[report['best_source']]['ndcg@10']:.4f} "
                          f"({time.perf_counter() - t:.0f} s)")
    if "homedepot" in names:
        if (tuning_dir(settings, "homedepot") / "search.json").is_file():
            steps.append({"step": "evaluate-search homedepot", "status": "reused"})
            if not quiet:
                err.print("[bold]evaluate-search homedepot[/] tuning found, reused")
        else:
            t = time.perf_counter()
            with _step_progress(quiet=quiet) as on_step:
                engine, _ = load_engine(store, settings, "homedepot", on_step=on_step)
            with status("evaluate-search homedepot …") as shown:
                result = search_eval.run(store, engine, "homedepot",
                                         on_step=lambda m: shown.update(f"evaluate-search homedepot: {m}"))
            save_tuning(engine, settings, "homedepot")
            search_eval.write(result, settings.benchmarks_dir)
            steps.append({"step": "evaluate-search homedepot", "status": "done",
                          "seconds": round(time.perf_counter() - t, 1)})
            if not quiet:
                res = result["results"]
                err.print(f"[bold]evaluate-search homedepot[/] NDCG@10 BM25 {res['bm25']['ndcg@10']:.4f}, learned "
                          f"{res['ltr']['ndcg@10']:.4f} ({time.perf_counter() - t:.0f} s)")
    return steps
