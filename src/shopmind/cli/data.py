"""Data commands: ingest, stats, datasets, fetch, split."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.table import Table

from .common import _emit_json, _guard, _run_ingest, app, err, out, state, status
from .render import _print_report, _stats_table

if TYPE_CHECKING:
    from ..data.ingest import IngestReport

# The names in shopmind.data.adapters.FORMATS and shopmind.data.splits.STRATEGIES, written out so that --help
# does not import the adapters (pandas, pyarrow); tests/test_cli_startup.py checks they stay the same.
FORMAT_NAMES = ("amazon", "amazon2018", "csv", "generic", "homedepot", "jsonl", "ml-100k", "movielens", "parquet",
                "recbole", "s3rec", "unisrec")
STRATEGY_NAMES = ("given", "leave_one_out", "temporal", "query")


def _parse_map(pairs: list[str]) -> dict[str, str]:
    from ..data.adapters import FormatError

    cols = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field or not column:
            raise FormatError(f"--map expects field=column, got {pair!r}")
        cols[field.strip()] = column.strip()
    return cols


@app.command()
def ingest(
    targets: Optional[list[str]] = typer.Argument(None, help="Registered dataset names or paths to folders/files."),
    datasets: list[str] = typer.Option([], "--dataset", "-d", help="Same as TARGET (repeatable)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help=f"Source format: {', '.join(FORMAT_NAMES)}."),
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
        from ..data.adapters import Mapping
        from ..data.store import open_store

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
        with open_store(settings) as store:
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


@app.command()
def stats(
    datasets: Optional[list[str]] = typer.Argument(None, help="Datasets in the store (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Statistics of ingested datasets, checked against the published figures."""

    def body() -> list[dict[str, Any]]:
        from ..data.api import stats_with_expected
        from ..data.store import StoreError, open_store

        settings = state.settings()
        if not settings.store.url and not Path(settings.store.path).exists():
            raise StoreError(f"no store at {settings.store.path}; run `shopmind ingest` first")
        with open_store(settings, read_only=True) as store:
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


@app.command("copy-store")
def copy_store_cmd(
    source: Optional[Path] = typer.Option(None, "--from", help="The DuckDB store file to copy (default: store.path)."),
    datasets: Optional[list[str]] = typer.Option(None, "--dataset", "-d", help="Only these datasets (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print rows copied per table as JSON."),
) -> None:
    """Copy the embedded DuckDB store into the PostgreSQL store at store.url (SHOPMIND_STORE_URL): every table,
    mined knowledge included. Rows already there are kept, so an interrupted copy run again completes."""

    def body() -> dict[str, int]:
        from ..data.migrate import copy_store
        from ..data.store import Store, StoreError, open_store
        from ..knowledge.tables import DDL

        settings = state.settings()
        if not settings.store.url:
            raise StoreError("set the target: store.url or SHOPMIND_STORE_URL=postgresql://user:password@host/db")
        path = source or settings.store.path
        if not Path(path).is_file():
            raise StoreError(f"no store at {path}")
        with Store(path, read_only=True) as src, open_store(settings) as dst:
            return copy_store(src, dst, datasets, DDL, progress=lambda t, n: err.print(f"[dim]{t}: {n:,} rows[/dim]"))

    copied = _guard(body)
    if as_json:
        _emit_json({"copied": copied})
    else:
        for table, n in copied.items():
            out.print(f"{table}: {n:,} rows")


@app.command("datasets")
def list_datasets(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """The dataset registry: names, formats, where each is found locally."""
    from ..data.registry import REGISTRY, local_path

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
        from ..data.registry import DatasetError, fetch, get_spec, local_path, verify

        settings = state.settings()
        results = []
        for name in names:
            spec = get_spec(name)
            folder = local_path(spec, settings.data.dir, settings.cache_dir)
            if folder is None:
                if not settings.data.allow_download:
                    raise DatasetError(f"{name}: not found locally and downloads are off")
                with status(f"downloading {name} …") as shown:
                    folder = fetch(spec, settings.cache_dir,
                                   on_file=lambda f: shown.update(f"downloading {f} (sha256 checked) …"))
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
    strategy: str = typer.Option("leave_one_out", "--strategy", "-s", help=f"One of: {', '.join(STRATEGY_NAMES)}."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the split (Parquet or CSV)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Compute an evaluation split and print its size per part (optionally write it out)."""

    def body() -> dict[str, Any]:
        from ..data.splits import make_split, summarize
        from ..data.store import open_store

        settings = state.settings()
        with open_store(settings, read_only=True) as store:
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

