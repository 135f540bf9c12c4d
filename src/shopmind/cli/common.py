"""What every command module shares: the Typer app, the consoles, global state, error guard and progress displays."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import typer
from rich.console import Console

from ..errors import ShopmindError

if TYPE_CHECKING:  # the data and config modules pull in pydantic, duckdb, pyarrow, pandas: imported where used

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
        from rich.markup import escape

        # One line, however long; escaped, so a message's own brackets ("shopmind[scale]") are printed, not styled.
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str, ensure_ascii=False) + "\n")


def _artifact_dir(settings: Settings, dataset: str) -> Path:
    return settings.store.path.with_name(settings.store.path.name + ".artifacts") / dataset


PLAIN_EVERY_S = float(os.environ.get("SHOPMIND_PROGRESS_EVERY", "10"))  # a plain progress line at least this often


class _Plain:
    """Progress as plain lines on stderr, for logs and pipes where rich draws nothing until the end: a line
    when something starts or changes, and a heartbeat every PLAIN_EVERY_S seconds, so a long step is never
    silent in a log file."""

    def __init__(self, text: str = "") -> None:
        self.t0 = time.monotonic()
        self.text = text
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._printed = 0.0

    def line(self, text: str | None = None) -> None:
        with self._lock:
            if text is not None:
                self.text = text
            self._printed = time.monotonic()
            err.print(f"[{self._printed - self.t0:6.0f} s] {self.text}", highlight=False, markup=False, soft_wrap=True)

    def _beat(self) -> None:
        while not self._stop.wait(1.0):
            if time.monotonic() - self._printed >= PLAIN_EVERY_S:
                self.line()

    def __enter__(self) -> "_Plain":
        if self.text:
            self.line()
        threading.Thread(target=self._beat, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


class _PlainStatus(_Plain):
    """rich's `Console.status` as plain lines."""

    def update(self, text: str) -> None:
        if text != self.text:
            self.line(text)


def status(text: str) -> Any:
    """A spinner on a terminal; plain timestamped lines (with a heartbeat) in a log or a pipe."""
    return err.status(text) if err.is_terminal else _PlainStatus(text)


class _PlainProgress(_Plain):
    """The part of rich's Progress the commands use, as plain lines: each task's rows, done and total."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[int, dict[str, Any]] = {}

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        self.fields[len(self.fields)] = {"description": description, "total": total, "completed": 0, **fields}
        self.line(f"{description}: started")
        return len(self.fields) - 1

    def update(self, task: int, **changes: Any) -> None:
        self.fields[task].update(changes)
        f = self.fields[task]
        rows = f" · {f['rows']:,} rows" if "rows" in f else ""
        share = f" · {100 * f['completed'] / f['total']:.0f} %" if f.get("total") else ""
        self.text = f"{f['description']}{rows}{share}"

    def __exit__(self, *exc: object) -> None:
        super().__exit__()
        for f in self.fields.values():
            self.line(f"{f['description']}: finished" + (f" · {f['rows']:,} rows" if "rows" in f else ""))


def _progress() -> Any:
    if not err.is_terminal:
        return _PlainProgress()
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

    with status(f"looking for {target} …") as looking:
        source = open_source(settings, target, fmt, name, mapping, encoding,
                             lambda file: looking.update(f"downloading {file} (sha256 checked) …"))
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
    if not err.is_terminal:
        with _Plain() as plain:
            def plain_step(name: str, done: int, total: int) -> None:
                text = f"{name}: {done:,}/{total:,}" if total else name
                if not plain.text.startswith(name):  # a new step: say so at once
                    plain.line(text)
                plain.text = text

            yield plain_step
            plain.line("done")
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
