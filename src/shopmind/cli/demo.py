"""The demo command: ingest everything found, mine two datasets, optionally train, evaluate search and serve."""

from __future__ import annotations

import json
import os
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
    finish: bool = typer.Option(False, "--finish", hidden=True, help="The demo's background part: the full "
                                "pipeline (hot-reloaded into the running storefront), search evaluation, more mining."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """The main job: ingest every registered dataset found locally (or downloadable), print statistics,
    and mine knowledge (embeddings, keywords, review knowledge cards, profiles, item graph) for two of them.
    With --serve: train a quick amazon-scientific artifact (item-KNN and popularity with the ranker), serve
    the storefront at once, and finish in a background process: the full pipeline (hot-reloaded into the
    running storefront by the trainer role), search evaluation on homedepot, the other mining. Work already
    done (unchanged ingests, mined knowledge and artifacts newer than the data, a saved search tuning) is
    reused."""
    if finish:
        _guard(lambda: _finish(quiet=as_json))
        return

    def body() -> dict[str, Any]:
        from ..data.api import stats_with_expected
        from ..data.registry import REGISTRY, DatasetError
        from ..data.store import open_store

        settings = state.settings()
        t0 = time.perf_counter()
        steps, names = [], []
        with open_store(settings) as store:
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

                # With --serve only the served dataset is mined before the storefront opens; the rest later.
                for name in [n for n in (DEMO_MINE[:1] if serve_after else DEMO_MINE) if n in names]:
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
                steps += _demo_quick_train(store, settings, names, as_json)
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
        background = _start_finisher(settings)
        if background:
            out.print(f"[bold]finishing in the background[/] (pid {background.pid}): the full pipeline replaces the "
                      f"quick artifact when it is ready (progress on the dashboard; log {_finish_log(settings)})")
        out.print("\n[bold yellow]demo mode:[/] an open storefront on 127.0.0.1 (anyone may act as any shopper); "
                  "`shopmind serve` runs in production mode (docs/security.md)")
        out.print(f"[bold green]storefront:[/] http://127.0.0.1:{port}/  ·  dashboard: "
                  f"http://127.0.0.1:{port}/#/dashboard  ·  API: http://127.0.0.1:{port}/docs  (Ctrl-C stops)")
        try:
            _guard(lambda: run(folder, settings, "127.0.0.1", port))
        finally:
            if background and background.poll() is None:
                background.terminate()


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


QUICK_SOURCES = {"itemknn": {"neighbors": 50, "shrink": 10.0, "decay": 0.7}, "pop": {}}  # seconds, not minutes
FULL_SOURCES = ("sasrec", "twotower")  # what the background finisher adds


def _needs_full(folder: Path) -> bool:
    try:
        sources = json.loads((folder / "manifest.json").read_text()).get("sources", [])
    except (OSError, ValueError):
        return True
    return not set(FULL_SOURCES) <= set(sources)


def _demo_quick_train(store: Store, settings: Settings, names: list[str], quiet: bool) -> list[dict[str, Any]]:
    """The artifact the storefront opens with: reused when newer than the data, else a quick one (item-KNN and
    popularity under the learned ranker, well under a minute); the finisher swaps in the full pipeline."""
    from ..serving import artifact

    steps: list[dict[str, Any]] = []
    folder = _artifact_dir(settings, DEMO_SERVE)
    if DEMO_SERVE not in names:
        return steps
    if _fresh(folder / "manifest.json", store, DEMO_SERVE):
        steps.append({"step": f"train {DEMO_SERVE}", "status": "reused"})
        if not quiet:
            err.print(f"[bold]train {DEMO_SERVE}[/] artifact newer than the data, reused ({folder})")
        return steps
    t = time.perf_counter()
    with status(f"train {DEMO_SERVE} (quick) …") as shown:
        _, report = artifact.train(store, settings, DEMO_SERVE, folder, QUICK_SOURCES,
                                   on_step=lambda m: shown.update(f"train {DEMO_SERVE} (quick): {m}"))
    r = report["results"]
    steps.append({"step": f"train {DEMO_SERVE} (quick: itemknn, pop)", "status": "done",
                  "seconds": round(time.perf_counter() - t, 1)})
    if not quiet:
        err.print(f"[bold]train {DEMO_SERVE} (quick)[/] ranker NDCG@10 {r['ranker']['ndcg@10']:.4f} "
                  f"({time.perf_counter() - t:.0f} s); the full pipeline follows in the background")
    return steps


def _finish_log(settings: Settings) -> Path:
    return settings.benchmarks_dir / "demo-finish.log"


def _start_finisher(settings: Settings) -> Any:
    """`shopmind demo --finish` in its own process when something is left to do, else None."""
    import subprocess
    import sys

    from ..search.build import tuning_dir

    folder = _artifact_dir(settings, DEMO_SERVE)
    todo = (folder / "manifest.json").is_file() and _needs_full(folder)
    todo = todo or not (tuning_dir(settings, "homedepot") / "search.json").is_file()
    todo = todo or not (settings.knowledge_dir / DEMO_MINE[1] / "item_vectors.npy").is_file()
    if not todo:
        return None
    log = _finish_log(settings)
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "shopmind.cli", "--store", str(settings.store.path)]
    if state.config:
        cmd += ["--config", str(state.config)]
    if state.data_dir:
        cmd += ["--data-dir", str(state.data_dir)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.Popen([*cmd, "demo", "--finish"], stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env)


def _finish(quiet: bool) -> None:
    """The demo's background part, each step reused when done: the full pipeline through the trainer role (it
    swaps the artifact and every storefront worker reloads it), search evaluation on homedepot, the other
    mining. Appends its steps to the demo record (the dashboard shows them)."""
    from ..data.registry import DatasetError
    from ..data.store import open_store
    from ..evaluation import search_eval
    from ..knowledge.mine import Miner
    from ..ranking.sources import DEFAULT_SOURCES
    from ..search.build import load_engine, save_tuning, tuning_dir
    from ..serving.trainer import Trainer, TrainerConfig

    settings = state.settings()
    steps: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def done(name: str, t: float, status_: str = "done") -> None:
        steps.append({"step": name, "status": status_, "seconds": round(time.perf_counter() - t, 1)})
        err.print(f"{name}: {status_} ({time.perf_counter() - t:.0f} s)", highlight=False)
        _append_demo_record(settings.benchmarks_dir, steps)

    folder = _artifact_dir(settings, DEMO_SERVE)
    if (folder / "manifest.json").is_file() and _needs_full(folder):
        t = time.perf_counter()
        config = TrainerConfig(gate="off", sources={n: dict(v) for n, v in DEFAULT_SOURCES.items()})
        trainer = Trainer(settings, DEMO_SERVE, folder, config,
                          on_step=lambda m: err.print(f"train {DEMO_SERVE} (full): {m}", highlight=False))
        try:
            result = trainer.run_once("full")
        finally:
            trainer.close()
        done(f"train {DEMO_SERVE} (full, swapped in)", t, "done" if result.get("promoted") else
             f"failed: {result.get('error') or result.get('reason')}")
    try:
        with open_store(settings) as store:
            if not (tuning_dir(settings, "homedepot") / "search.json").is_file() and "homedepot" in store.datasets():
                t = time.perf_counter()
                engine, _ = load_engine(store, settings, "homedepot")
                result = search_eval.run(store, engine, "homedepot",
                                         on_step=lambda m: err.print(f"evaluate-search homedepot: {m}", highlight=False))
                save_tuning(engine, settings, "homedepot")
                search_eval.write(result, settings.benchmarks_dir)
                done("evaluate-search homedepot", t)
            name = DEMO_MINE[1]
            if name in store.datasets() and not (settings.knowledge_dir / name / "item_vectors.npy").is_file():
                t = time.perf_counter()
                Miner(store, settings.knowledge, settings.knowledge_dir, onnx_dir=settings.onnx_dir).run(name)
                done(f"mine {name}", t)
    except DatasetError as e:
        err.print(f"demo finish: {e}")
    err.print(f"demo finished in the background in {time.perf_counter() - t0:.0f} s", highlight=False)


def _append_demo_record(folder: Path, steps: list[dict[str, Any]]) -> None:
    """Add the background steps to demo-steps.json (as `background`), so the dashboard shows them."""
    path = folder / "demo-steps.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {"steps": [], "seconds": None}
    record["background"] = [{"step": s["step"], "status": s["status"], "seconds": s.get("seconds")} for s in steps]
    tmp = path.with_name(path.name + ".tmp")
    folder.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)
