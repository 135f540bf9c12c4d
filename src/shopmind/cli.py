"""The `shopmind` command line: one Typer app. Every command that reports figures takes --json."""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from . import __version__
from .config import ConfigError, Settings, load_settings
from .data.adapters import FORMATS, FormatError, Mapping
from .data.api import ingest_source, open_source, stats_with_expected
from .data.ingest import IngestReport
from .data.registry import REGISTRY, DatasetError, fetch, get_spec, local_path, verify
from .data.splits import STRATEGIES, SplitError, make_split, summarize
from .data.store import Store, StoreError
from .errors import ShopmindError

app = typer.Typer(help="shopmind: e-commerce search and recommendation powered by a language model.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
# Piped output (CI logs, make demo | tee) gets a wide table instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 150)

_USER_ERRORS = (ShopmindError, ConfigError, FormatError, DatasetError, StoreError, SplitError, ValueError, OSError)


class _State:
    config: Optional[Path] = None
    store: Optional[Path] = None
    data_dir: Optional[Path] = None

    def settings(self, **overrides: Any) -> Settings:
        base = {"store.path": self.store, "data.dir": self.data_dir}
        return load_settings(self.config, {**base, **overrides})


state = _State()


def _guard(fn: Callable[[], Any], extra: tuple[type[BaseException], ...] = ()) -> Any:
    """Run a command body; user-facing errors become one red line and exit code 2, never a traceback."""
    try:
        return fn()
    except (*_USER_ERRORS, *extra) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)  # one line, however long
        raise typer.Exit(2) from None


def _emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str, ensure_ascii=False) + "\n")


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                    TextColumn("{task.fields[rows]:>10,} rows"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=err, transient=False)


@app.callback()
def main(
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config file (default: ./shopmind.toml if present)."),
    store: Optional[Path] = typer.Option(None, "--store", help="DuckDB store file (config store.path)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Datasets folder (config data.dir, "
                                            "env SHOPMIND_DATA_DIR)."),
) -> None:
    state.config, state.store, state.data_dir = config, store, data_dir


@app.command()
def version() -> None:
    """Print the shopmind version."""
    out.print(__version__)


@app.command("config")
def show_config(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Show the effective configuration (defaults < file < environment < flags)."""
    settings = _guard(state.settings)
    payload = settings.public_dict()
    if as_json:
        _emit_json(payload)
        return
    table = Table("setting", "value", title="effective configuration")
    for section, values in payload.items():
        for key, value in values.items():
            table.add_row(f"{section}.{key}", str(value))
    out.print(table)


def _parse_map(pairs: list[str]) -> dict[str, str]:
    cols = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field or not column:
            raise FormatError(f"--map expects field=column, got {pair!r}")
        cols[field.strip()] = column.strip()
    return cols


def _run_ingest(store: Store, settings: Settings, target: str, *, fmt: str | None = None, name: str | None = None,
                mapping: Mapping | None = None, encoding: str | None = None, force: bool = True,
                quiet: bool = False, allow_empty: bool = False) -> IngestReport | None:
    with err.status(f"looking for {target} …") as status:
        source = open_source(settings, target, fmt, name, mapping, encoding,
                             lambda file: status.update(f"downloading {file} (sha256 checked) …"))
    with _progress() if not quiet else _NullProgress() as progress:
        task = progress.add_task(f"ingest {source.dataset}", total=None, rows=0)

        def update(done: int, total: int, rows: int) -> None:
            progress.update(task, completed=done, total=total, rows=rows)

        report = ingest_source(store, settings, source, progress=update, force=force, allow_empty=allow_empty)
    return report


class _NullProgress:
    def __enter__(self) -> "_NullProgress":
        return self

    def __exit__(self, *a: object) -> None:
        pass

    def add_task(self, *a: Any, **k: Any) -> int:
        return 0

    def update(self, *a: Any, **k: Any) -> None:
        pass


def _print_report(r: IngestReport) -> None:
    table = Table(title=f"ingest {r.dataset} (run {r.run_id}, {r.format}): {r.status}")
    for col in ("kind", "inserted", "updated", "unchanged", "rejected"):
        table.add_column(col, justify="right" if col != "kind" else "left")
    for kind, c in r.counts.items():
        table.add_row(kind, *(f"{c[k]:,}" for k in ("inserted", "updated", "unchanged", "rejected")))
    out.print(table)
    out.print(f"{r.rows_read:,} rows in {r.seconds:.2f} s ({r.rows_per_second:,.0f} rows/s)")
    if r.rejected:
        out.print(f"[yellow]{r.rejected:,} rejected rows kept in {r.rejects_file}[/]")


@app.command()
def ingest(
    targets: Optional[list[str]] = typer.Argument(None, help="Registered dataset names or paths to folders/files."),
    datasets: list[str] = typer.Option([], "--dataset", "-d", help="Same as TARGET (repeatable)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help=f"Source format: {', '.join(sorted(set(FORMATS)))}."),
    name: Optional[str] = typer.Option(None, "--name", help="Dataset name in the store (default: registry name "
                                       "or the folder/file name)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Generic files: items, events, judgments or users."),
    maps: list[str] = typer.Option([], "--map", help="Generic files: field=column (repeatable)."),
    mapping_file: Optional[Path] = typer.Option(None, "--mapping", help="Generic files: mapping TOML."),
    encoding: Optional[str] = typer.Option(None, "--encoding", help="Text encoding (generic files, Home Depot)."),
    delimiter: Optional[str] = typer.Option(None, "--delimiter", help="CSV delimiter (generic files)."),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", help="Rows per transaction (ingest.chunk_size)."),
    hash_user_ids: Optional[bool] = typer.Option(None, "--hash-user-ids/--no-hash-user-ids",
                                                 help="Replace user ids by a keyed hash (needs a salt)."),
    allow_empty: bool = typer.Option(False, "--allow-empty", help="Accept an input with no records (by default "
                                     "an empty file, or one with only a header, is an error)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run reports as JSON."),
) -> None:
    """Ingest datasets into the store (idempotent; bad rows go to a rejects file)."""

    all_targets = [*(targets or []), *datasets]

    def body() -> list[IngestReport]:
        if not all_targets:
            raise ValueError("give at least one dataset name or path (see `shopmind datasets`)")
        settings = state.settings(**{"ingest.chunk_size": chunk_size, "ingest.hash_user_ids": hash_user_ids})
        mapping = None
        if mapping_file or maps or kind or delimiter or (fmt in ("csv", "jsonl", "parquet", "generic")):
            overrides = {"kind": kind, "encoding": encoding, "delimiter": delimiter}
            if mapping_file:
                mapping = Mapping.from_toml(mapping_file, **overrides)
                mapping.columns.update(_parse_map(maps))
            else:
                mapping = Mapping(**{k: v for k, v in overrides.items() if v is not None}, columns=_parse_map(maps))
        if name and len(all_targets) > 1:
            raise ValueError("--name needs a single target")
        reports = []
        with Store(settings.store.path) as store:
            for target in all_targets:
                r = _run_ingest(store, settings, target, fmt=fmt, name=name, mapping=mapping, encoding=encoding,
                                quiet=as_json, allow_empty=allow_empty)
                assert r is not None
                reports.append(r)
                if not as_json:
                    _print_report(r)
        return reports

    reports = _guard(body)
    if as_json:
        _emit_json({"runs": [r.to_json() for r in reports]})


_STAT_COLUMNS = [("users", "users"), ("items", "items"), ("interacted_items", "items w/ events"),
                 ("events", "events"), ("judgments", "judgments"), ("queries", "queries"),
                 ("rejected_last_run", "rejected")]


def _stats_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    table.add_column("dataset")
    for _, header in _STAT_COLUMNS:
        table.add_column(header, justify="right")
    table.add_column("published", justify="center")
    for s in rows:
        exp = s.get("expected", {})
        cells = []
        for key, _ in _STAT_COLUMNS:
            v = s.get(key, 0)
            text = f"{v:,}" if v else "·"
            if key in exp:
                text = f"[green]{text}[/]" if v == exp[key] else f"[red]{text} (≠ {exp[key]:,})[/]"
            cells.append(text)
        m = s.get("matches_published")
        cells.append("[green]✓ match[/]" if m else "[red]✗ differs[/]" if m is False else "–")
        table.add_row(s["dataset"], *cells)
    return table


@app.command()
def stats(
    datasets: Optional[list[str]] = typer.Argument(None, help="Datasets in the store (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Statistics of ingested datasets, checked against the published figures."""

    def body() -> list[dict[str, Any]]:
        settings = state.settings()
        if not Path(settings.store.path).exists():
            raise StoreError(f"no store at {settings.store.path}; run `shopmind ingest` first")
        with Store(settings.store.path, read_only=True) as store:
            names = datasets or store.datasets()
            unknown = [d for d in names if d not in store.datasets()]
            if unknown:
                raise ValueError(f"not in the store: {', '.join(unknown)}")
            return [stats_with_expected(store, d) for d in names]

    rows = _guard(body)
    if as_json:
        _emit_json({"datasets": rows})
    else:
        out.print(_stats_table(rows, "datasets in the store"))


@app.command("datasets")
def list_datasets(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """The dataset registry: names, formats, where each is found locally."""
    settings = _guard(state.settings)
    rows = []
    for spec in REGISTRY.values():
        where = local_path(spec, settings.data.dir, settings.cache_dir)
        rows.append({"name": spec.name, "format": spec.format, "description": spec.description,
                     "local_path": str(where) if where else None, "origin": spec.origin,
                     "downloadable": all(f.url for f in spec.files if f.required), "expected": spec.expected})
    if as_json:
        _emit_json({"datasets": rows})
        return
    table = Table("name", "format", "local", "description", title="registered datasets")
    for r in rows:
        table.add_row(r["name"], r["format"], r["local_path"] or "[dim]not here[/]", r["description"])
    out.print(table)


@app.command("fetch")
def fetch_dataset(
    names: list[str] = typer.Argument(..., help="Registered dataset names."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Make datasets available locally (data dir, cache, or download) and verify their sha256."""

    def body() -> list[dict[str, Any]]:
        settings = state.settings()
        results = []
        for name in names:
            spec = get_spec(name)
            folder = local_path(spec, settings.data.dir, settings.cache_dir)
            if folder is None:
                if not settings.data.allow_download:
                    raise DatasetError(f"{name}: not found locally and downloads are off")
                with err.status(f"downloading {name} …") as status:
                    folder = fetch(spec, settings.cache_dir,
                                   on_file=lambda f: status.update(f"downloading {f} (sha256 checked) …"))
            results.append({"name": name, "path": str(folder), "files": verify(folder, spec)})
        return results

    results = _guard(body)
    if as_json:
        _emit_json({"datasets": results})
        return
    for r in results:
        bad = {f: s for f, s in r["files"].items() if s != "ok"}
        mark = "[green]verified[/]" if not bad else f"[red]{bad}[/]"
        out.print(f"{r['name']}: {r['path']} {mark}")
    if any(s == "mismatch" for r in results for s in r["files"].values()):
        raise typer.Exit(1)


@app.command()
def split(
    dataset: str = typer.Argument(..., help="Dataset in the store."),
    strategy: str = typer.Option("leave_one_out", "--strategy", "-s", help=f"One of: {', '.join(STRATEGIES)}."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the split (Parquet or CSV)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Compute an evaluation split and print its size per part (optionally write it out)."""

    def body() -> dict[str, Any]:
        settings = state.settings()
        with Store(settings.store.path, read_only=True) as store:
            df = make_split(store, dataset, strategy)
        if output:
            df.to_csv(output, index=False) if output.suffix == ".csv" else df.to_parquet(output, index=False)
        return {"dataset": dataset, "strategy": strategy, "parts": summarize(df), **df.attrs,
                "output": str(output) if output else None}

    summary = _guard(body)
    if as_json:
        _emit_json(summary)
        return
    table = Table("part", *summary["parts"]["train"].keys(), title=f"{dataset}: {strategy} split")
    for part, vals in summary["parts"].items():
        table.add_row(part, *(f"{v:,}" for v in vals.values()))
    out.print(table)


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
                from .knowledge.mine import Miner

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
        from .serving.server import ensure_quiet_threads, serve as run

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
    from .evaluation import search_eval
    from .search.build import load_engine, save_tuning, tuning_dir
    from .serving import artifact

    steps: list[dict[str, Any]] = []
    folder = _artifact_dir(settings, DEMO_SERVE)
    if DEMO_SERVE in names:
        if _fresh(folder / "manifest.json", store, DEMO_SERVE):
            steps.append({"step": f"train {DEMO_SERVE}", "status": "reused"})
            if not quiet:
                err.print(f"[bold]train {DEMO_SERVE}[/] artifact newer than the data, reused ({folder})")
        else:
            t = time.perf_counter()
            with err.status(f"train {DEMO_SERVE} …") as status:
                _, report = artifact.train(store, settings, DEMO_SERVE, folder,
                                           on_step=lambda m: status.update(f"train {DEMO_SERVE}: {m}"))
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
            with err.status("evaluate-search homedepot …") as status:
                result = search_eval.run(store, engine, "homedepot",
                                         on_step=lambda m: status.update(f"evaluate-search homedepot: {m}"))
            save_tuning(engine, settings, "homedepot")
            search_eval.write(result, settings.benchmarks_dir)
            steps.append({"step": "evaluate-search homedepot", "status": "done",
                          "seconds": round(time.perf_counter() - t, 1)})
            if not quiet:
                res = result["results"]
                err.print(f"[bold]evaluate-search homedepot[/] NDCG@10 BM25 {res['bm25']['ndcg@10']:.4f}, learned "
                          f"{res['ltr']['ndcg@10']:.4f} ({time.perf_counter() - t:.0f} s)")
    return steps


@app.command()
def mine(
    datasets: list[str] = typer.Option(..., "--dataset", "-d", help="Dataset in the store (repeatable)."),
    model: Optional[str] = typer.Option(None, "--model", help="Encoder: packaged name, Hugging Face id or folder."),
    backend: Optional[str] = typer.Option(None, "--backend", help="auto, torch, onnx or onnx-int8."),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
) -> None:
    """Mine knowledge: item embeddings, TF-IDF and keywords, review aspects and knowledge cards,
    user profiles, item graph. Unchanged item texts are not encoded again."""
    from .knowledge.mine import Miner, MiningError

    def body() -> list[dict[str, Any]]:
        settings = state.settings(**{"knowledge.model": model, "knowledge.backend": backend})
        reports = []
        with Store(settings.store.path) as store:
            missing = [d for d in datasets if d not in store.datasets()]
            if missing:
                raise MiningError(f"not in the store: {', '.join(missing)} (run `shopmind ingest` first)")
            for name in datasets:
                with _step_progress(quiet=as_json) as on_step:
                    report = Miner(store, settings.knowledge, settings.knowledge_dir, on_step=on_step,
                                   onnx_dir=settings.onnx_dir).run(name)
                reports.append(report.to_json())
                if not as_json:
                    _print_mining(report.to_json())
        return reports

    reports = _guard(body)
    if as_json:
        _emit_json({"reports": reports})


@app.command()
def benchmark(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset (registered name; ingested if needed)."),
    models: str = typer.Option("pop,itemknn,als,bpr", "--models", "-m", help="Comma-separated model names."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="unisrec or s3rec (default: the dataset's own)."),
    mask: Optional[bool] = typer.Option(None, "--mask/--no-mask", help="Remove history items from the ranking "
                                        "(default: as the protocol publishes)."),
    grid: bool = typer.Option(True, "--grid/--no-grid", help="Select hyper-parameters on validation."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for the markdown, JSON and plot "
                                           "(default: <store>.benchmarks)."),
    cold_share: float = typer.Option(0.1, "--cold-share", min=0.0, max=0.5,
                                     help="Share of items made cold for the cold-item experiment (0: off)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train recommenders, select on validation, test once with full ranking; write table, JSON and plot.

    TensorBoard logs of every neural training run go to <out>/runs (`tensorboard --logdir <out>/runs`)."""

    def body() -> dict[str, Any]:
        from .evaluation import protocols, report, runner

        settings = state.settings()
        names = [m.strip() for m in models.split(",") if m.strip()]
        t0 = time.perf_counter()
        with Store(settings.store.path) as store:
            if dataset not in store.datasets():
                _run_ingest(store, settings, dataset, quiet=as_json)
            proto = protocols.build(store, dataset, protocol, mask)
        from .knowledge.mine import item_vectors_for

        vectors = item_vectors_for(settings.knowledge_dir / dataset, proto.full.item_ids)
        folder = out_dir or settings.benchmarks_dir
        with err.status("benchmark …") as status:
            result = runner.run(proto, names, grid=grid, item_vectors=vectors, log_dir=folder / "runs" / dataset,
                                cold_share=cold_share,
                                on_step=lambda msg: status.update(f"benchmark {dataset}: {msg}"))
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
    from .evaluation.report import markdown

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
    from .search.build import load_engine
    from .search.catalog import Filters

    def body() -> dict[str, Any]:
        settings = state.settings()
        parsed = Filters.parse(filters)
        with Store(settings.store.path) as store:
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

    from .knowledge.tables import ensure_tables

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
    from .evaluation import search_eval
    from .search.build import finetune_encoder, load_engine, save_tuning

    def body() -> dict[str, Any]:
        settings = state.settings()
        t0 = time.perf_counter()
        with Store(settings.store.path) as store:
            if dataset not in store.datasets():
                _run_ingest(store, settings, dataset, quiet=as_json)
            with _step_progress(quiet=as_json) as on_step:
                engine, report = load_engine(store, settings, dataset, on_step=on_step)
            extra = search_eval.read_judgments(judgments) if judgments else None
            finetune = None
            if finetune_steps:
                def finetune(eng: Any, train: Any) -> dict[str, Any]:
                    return finetune_encoder(store, settings, dataset, eng, train, steps=finetune_steps)
            with err.status("evaluate-search …") as status:
                result = search_eval.run(store, engine, dataset, extra, finetune=finetune,
                                         on_step=lambda msg: status.update(f"evaluate-search {dataset}: {msg}"))
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


def _artifact_dir(settings: Settings, dataset: str) -> Path:
    return settings.store.path.with_name(settings.store.path.name + ".artifacts") / dataset


@app.command()
def train(
    dataset: str = typer.Option("amazon-scientific", "--dataset", "-d", help="Dataset (ingested and mined if needed)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Artifact folder (default: <store>.artifacts/<dataset>)."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="unisrec or s3rec (default: the dataset's own)."),
    sources: str = typer.Option("itemknn,sasrec,twotower,pop", "--sources", help="Candidate source models."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Train the recommendation pipeline (candidate sources + learned ranker), measure it on the test users
    against each source alone, and write the artifact `shopmind serve` runs."""
    from .ranking.sources import DEFAULT_SOURCES
    from .ranking.train import markdown
    from .serving import artifact

    def body() -> dict[str, Any]:
        settings = state.settings()
        names = [x.strip() for x in sources.split(",") if x.strip()]
        config = {n: DEFAULT_SOURCES.get(n, {}) for n in names}
        t0 = time.perf_counter()
        with Store(settings.store.path) as store:
            if dataset not in store.datasets():
                _run_ingest(store, settings, dataset, quiet=as_json)
            with err.status("train …") as status:
                path, report = artifact.train(store, settings, dataset, out_dir or _artifact_dir(settings, dataset),
                                              config, protocol, on_step=lambda m: status.update(f"train {dataset}: {m}"))
        report["artifact"] = str(path)
        report["seconds"]["wall"] = round(time.perf_counter() - t0, 1)
        report["markdown"] = markdown(report)
        return report

    report = _guard(body)
    if as_json:
        _emit_json(report)
        return
    out.print(report.pop("markdown"))
    out.print(f"artifact: {report['artifact']} ({report['seconds']['wall']:.0f} s); serve it with "
              f"`shopmind serve {report['artifact']}`")


@app.command()
def serve(
    artifact_dir: Optional[Path] = typer.Argument(None, help="Artifact folder (default: <store>.artifacts/<dataset>)."),
    dataset: str = typer.Option("amazon-scientific", "--dataset", "-d", help="Dataset whose default artifact to serve."),
    host: Optional[str] = typer.Option(None, "--host", help="Interface (default from settings: 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", min=1, max=65535, help="Port (default from settings: 8000)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, max=64, help="Worker processes (default from "
                                          "settings: 1; one per core serves most); they share the event log, so "
                                          "each sees every acknowledged event."),
    mode: Optional[str] = typer.Option(None, "--mode", help="production (default: reads need a key or a shopper "
                                       "session) or demo (open storefront, loopback only); serving.mode."),
) -> None:
    """Run the HTTP API (search, recommendations, events) over a trained artifact. POST /admin/reload swaps in
    a new artifact without dropping requests; the event log lives in serving.state_dir."""
    from .serving.server import ensure_quiet_threads

    ensure_quiet_threads()

    def body() -> None:
        from .serving.server import serve as run

        if mode not in (None, "production", "demo"):
            raise ValueError(f"--mode must be production or demo, not {mode!r}")
        settings = state.settings(**{"serving.mode": mode})
        folder = artifact_dir or _artifact_dir(settings, dataset)
        err.print(f"loading {folder} ({settings.serving.mode} mode) …")
        run(folder, settings, host, port, workers)

    _guard(body)


keys_app = typer.Typer(help="API keys: scopes read, read_private, write, session, admin (docs/security.md).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _keys() -> Any:
    from .serving.auth import KeyStore
    from .serving.server import keys_path

    return KeyStore(keys_path(state.settings()))


@keys_app.command("create")
def keys_create(name: str = typer.Argument(..., help="A name for the key (who or what uses it)."),
                scopes: list[str] = typer.Option(["read"], "--scope", help="read, read_private, write, session or "
                                                 "admin (repeatable; default read).")) -> None:
    """Create a key; it is printed once and stored only as a salted hash. Running servers accept it within a
    second."""
    out.print(_guard(lambda: _keys().create(name, scopes)))


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Names and scopes of the keys (never the keys)."""
    rows = _guard(lambda: _keys().names())
    if as_json:
        _emit_json(rows)
        return
    for e in rows:
        extra = f"\told key valid until {time.ctime(e['previous_valid_until'])}" if e["previous_valid_until"] else ""
        out.print(f"{e['name']}\t{','.join(e['scopes'])}{extra}", highlight=False)


@keys_app.command("revoke")
def keys_revoke(name: str = typer.Argument(...)) -> None:
    """Remove a key; every running server worker refuses it within a second, and the shopper sessions it
    minted end with it."""
    if not _guard(lambda: _keys().revoke(name)):
        err.print(f"[bold red]error:[/] no key named {name!r}")
        raise typer.Exit(2)


@keys_app.command("rotate")
def keys_rotate(name: str = typer.Argument(...),
                grace: float = typer.Option(0.0, "--grace", min=0, help="Seconds the old key keeps working.")) -> None:
    """A new secret for a key, same name and scopes (printed once); the old secret stops working after
    --grace seconds (default at once). Sessions minted under the name stay valid."""
    out.print(_guard(lambda: _keys().rotate(name, grace)))


@app.command()
def forget(
    user: str = typer.Argument(..., help="The user id, as the source data (or the API) names them."),
    datasets: list[str] = typer.Option([], "--dataset", "-d", help="Only in this dataset (repeatable; default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was removed as JSON."),
) -> None:
    """Forget a user everywhere: a tombstone (keyed hash only) so no later ingest or train takes them back,
    their rows in the store and rejects, the knowledge folder, every artifact under <store>.artifacts/ and
    the serving event logs (a running server notices and rebuilds its state without them)."""
    from .serving.forget import forget_everywhere

    report = _guard(lambda: forget_everywhere(state.settings(), user, datasets or None))
    if as_json:
        _emit_json(report)
        return
    store = report["store"]
    if store == "pending":
        out.print("store: [yellow]locked by another process[/]; the next ingest or train removes the user")
    else:
        out.print(f"store: {store if store == 'missing' else ', '.join(f'{t} {n:,}' for t, n in store.items())}")
    out.print(f"rejects files: {report['rejects_files']:,} lines")
    for dataset, files in report["knowledge"].items():
        out.print(f"knowledge {dataset}: " + ", ".join(f"{f} {n:,}" for f, n in files.items()))
    for folder, found in report["artifacts"].items():
        out.print(f"artifact {folder}: {'removed' if found else 'not in it'}")
    for dataset, n in report["event_logs"].items():
        out.print(f"serving event log {dataset}: {n:,} events removed")


@contextmanager
def _step_progress(quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A progress display for named steps: a bar when a step reports totals, a spinner line otherwise."""
    if quiet:
        yield lambda name, done, total: None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=False) as progress:
        tasks: dict[str, Any] = {}

        def on_step(name: str, done: int, total: int) -> None:
            if name not in tasks:
                for other in tasks.values():
                    t = progress.tasks[other]
                    progress.update(other, total=t.total or 1, completed=t.total or 1)
                tasks[name] = progress.add_task(name, total=total or None)
            progress.update(tasks[name], completed=done, total=total or None)

        yield on_step
        for task in tasks.values():
            t = progress.tasks[task]
            progress.update(task, total=t.total or 1, completed=t.total or 1)


def _print_mining(r: dict[str, Any]) -> None:
    enc = r["encoder"]
    out.print(f"[bold]{r['dataset']}[/]: mined in {r['seconds']:.1f} s with {enc.get('model')} "
              f"({enc.get('backend')}" + (f", agreement {enc['agreement']:.4f}" if enc.get("agreement") else "") + ")")
    table = Table("count", "value", title="knowledge")
    for k, v in r["counts"].items():
        table.add_row(k, f"{v:,}")
    out.print(table)
    steps = Table("step", "seconds", title="timing")
    for k, v in r["steps"].items():
        steps.add_row(k, f"{v:.2f}")
    out.print(steps)
    for card in r["examples"][:2]:
        pos = ", ".join(f"{a['aspect']} ({a['count']})" for a in card["positive_aspects"]) or "–"
        neg = ", ".join(f"{a['aspect']} ({a['count']})" for a in card["negative_aspects"]) or "–"
        rating = card["rating"]
        out.print(f"[bold]card[/] {card['item_id']} {card['title'] or ''}\n"
                  f"  category: {' > '.join(card['category_path']) or '–'} | price band: {card['price_band'] or '–'} | "
                  f"rating: {rating['mean'] if rating else '–'} ({rating['count'] if rating else 0})\n"
                  f"  keywords: {', '.join(card['keywords']) or '–'}\n  liked: {pos}\n  disliked: {neg}")
    for nb in r["neighbours"]:
        out.print(f"[bold]nearest to[/] {nb['item_id']} {str(nb['title'])[:70]}")
        for x in nb["neighbours"][:3]:
            out.print(f"  {x['similarity']:.3f}  {x['item_id']} {str(x['title'])[:70]}")


if __name__ == "__main__":  # pragma: no cover
    app()
