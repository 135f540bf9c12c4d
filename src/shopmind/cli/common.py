"""What every command module shares: the Typer app, the consoles, global state, error guard and progress displays."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import typer
from rich.console import Console

from ..errors import ShopmindError

if TYPE_CHECKING:  # the data and config modules pull in pydantic, duckdb, pyarrow, pandas: imported where used
    from rich.progress import Progress

    from ..config import Settings
    from ..data.adapters import Mapping
    from ..data.ingest import IngestReport
    from ..data.store import Store

app = typer.Typer(help="shopmind: e-commerce search and recommendation powered by a language model.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
# Piped output (CI logs, make demo | tee) gets a wide table instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 150)

# Error types shown as one line, not a traceback. Those defined in heavy modules are named (module, class) and
# looked up only when that module is loaded: an exception of a class never imported cannot have been raised.
_USER_ERRORS: tuple[type[BaseException], ...] = (ShopmindError, ValueError, OSError)
_LAZY_USER_ERRORS = (("shopmind.config", "ConfigError"), ("shopmind.data.adapters.base", "FormatError"),
                     ("shopmind.data.registry", "DatasetError"), ("shopmind.data.store", "StoreError"),
                     ("shopmind.data.splits", "SplitError"), ("shopmind.serving.artifact", "ArtifactError"))


def user_errors() -> tuple[type[BaseException], ...]:
    """The error types a command reports as one red line: the fixed ones plus those of the loaded modules."""
    lazy = tuple(getattr(sys.modules[m], name) for m, name in _LAZY_USER_ERRORS if m in sys.modules)
    return (*_USER_ERRORS, *lazy)


class _State:
    config: Optional[Path] = None
    store: Optional[Path] = None
    data_dir: Optional[Path] = None

    def settings(self, **overrides: Any) -> Settings:
        from ..config import load_settings

        base = {"store.path": self.store, "data.dir": self.data_dir}
        return load_settings(self.config, {**base, **overrides})


state = _State()


def _guard(fn: Callable[[], Any], extra: tuple[type[BaseException], ...] = ()) -> Any:
    """Run a command body; user-facing errors become one red line and exit code 2, never a traceback."""
    try:
        return fn()
    except BaseException as e:
        if not isinstance(e, (*user_errors(), *extra)):
            raise
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)  # one line, however long
        raise typer.Exit(2) from None


def _emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str, ensure_ascii=False) + "\n")


def _artifact_dir(settings: Settings, dataset: str) -> Path:
    return settings.store.path.with_name(settings.store.path.name + ".artifacts") / dataset


def _progress() -> Progress:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                    TextColumn("{task.fields[rows]:>10,} rows"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=err, transient=False)


class _NullProgress:
    def __enter__(self) -> "_NullProgress":
        return self

    def __exit__(self, *a: object) -> None:
        pass

    def add_task(self, *a: Any, **k: Any) -> int:
        return 0

    def update(self, *a: Any, **k: Any) -> None:
        pass


def _run_ingest(store: Store, settings: Settings, target: str, *, fmt: str | None = None, name: str | None = None,
                mapping: Mapping | None = None, encoding: str | None = None, force: bool = True,
                quiet: bool = False, allow_empty: bool = False) -> IngestReport | None:
    from ..data.api import ingest_source, open_source

    with err.status(f"looking for {target} …") as status:
        source = open_source(settings, target, fmt, name, mapping, encoding,
                             lambda file: status.update(f"downloading {file} (sha256 checked) …"))
    with _progress() if not quiet else _NullProgress() as progress:
        task = progress.add_task(f"ingest {source.dataset}", total=None, rows=0)

        def update(done: int, total: int, rows: int) -> None:
            progress.update(task, completed=done, total=total, rows=rows)

        report = ingest_source(store, settings, source, progress=update, force=force, allow_empty=allow_empty)
    return report


@contextmanager
def _step_progress(quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A progress display for named steps: a bar when a step reports totals, a spinner line otherwise."""
    if quiet:
        yield lambda name, done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
