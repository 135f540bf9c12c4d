"""The `shopmind` command line: one Typer app, a module per command group. Every command that reports figures takes
--json. Heavy libraries (numpy, pandas, duckdb, pyarrow, torch) are imported inside the commands that use them, so
`shopmind --help` and `shopmind version` start fast."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import __version__
from .common import _emit_json, _guard, app, err, out, state


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
    from rich.table import Table

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


# The command modules register their commands on `app` when imported; this order is the order of `--help`.
from . import data, demo, knowledge, evaluate, serving, loop  # noqa: E402,F401  (isort: skip)
from .demo import _write_demo_record  # noqa: E402  (tests/serving/test_storefront.py)

__all__ = ["app", "err", "out", "state", "_write_demo_record"]
