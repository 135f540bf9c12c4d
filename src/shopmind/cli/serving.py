"""Serving commands: train the pipeline, serve it, manage API keys, forget a user."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer

from .common import _artifact_dir, _emit_json, _guard, _run_ingest, app, err, out, state, status

@app.command()
def train(
    dataset: str = typer.Option("amazon-scientific", "--dataset", "-d", help="Dataset (ingested and mined if needed)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Artifact folder (default: <store>.artifacts/<dataset>)."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="unisrec, s3rec or time (default: the "
                                          "dataset's own; time for a dataset the registry does not know)."),
    sources: str = typer.Option("itemknn,sasrec,twotower,pop", "--sources", help="Candidate source models."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Train the neural sources with Ray Train on this cluster: "
                                      "auto, local or HOST:PORT (needs shopmind[scale]; docs/ray.md)."),
    ray_workers: int = typer.Option(2, "--ray-workers", min=1, help="Ray Train workers (DDP, one CPU each)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Train the recommendation pipeline (candidate sources + learned ranker), measure it on the test users
    against each source alone, and write the artifact `shopmind serve` runs."""
    from ..ranking.sources import DEFAULT_SOURCES
    from ..ranking.train import markdown
    from ..serving import artifact

    def body() -> dict[str, Any]:
        from ..data.store import open_store

        settings = state.settings()
        names = [x.strip() for x in sources.split(",") if x.strip()]
        config = {n: DEFAULT_SOURCES.get(n, {}) for n in names}
        t0 = time.perf_counter()
        if ray:
            from ..raycluster import connect

            connect(ray)  # a missing Ray or a wrong address fails here, before any work
        with open_store(settings) as store:
            if dataset not in store.datasets():
                _run_ingest(store, settings, dataset, quiet=as_json)
            with status("train …") as shown:
                path, report = artifact.train(store, settings, dataset, out_dir or _artifact_dir(settings, dataset),
                                              config, protocol, on_step=lambda m: shown.update(f"train {dataset}: {m}"),
                                              ray=ray, ray_workers=ray_workers)
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
    experiment: Optional[str] = typer.Option(None, "--experiment", help="PATH[:SHARE]: a second artifact of the same "
                                             "dataset recommends to SHARE (default 0.5) of the shoppers, by a hash "
                                             "of their id; /stats/online compares the arms (docs/online.md)."),
    trainer: bool = typer.Option(False, "--trainer", help="Also run the trainer role (`shopmind trainer` with its "
                                 "default schedule) in its own process beside the server, stopped with it."),
) -> None:
    """Run the HTTP API (search, recommendations, events) over a trained artifact. POST /admin/reload swaps in
    a new artifact without dropping requests; the event log lives in serving.state_dir."""
    from ..serving.server import ensure_quiet_threads

    ensure_quiet_threads()

    def body() -> None:
        from ..serving.server import parse_experiment, serve as run

        if mode not in (None, "production", "demo"):
            raise ValueError(f"--mode must be production or demo, not {mode!r}")
        settings = state.settings(**{"serving.mode": mode})
        folder = artifact_dir or _artifact_dir(settings, dataset)
        err.print(f"loading {folder} ({settings.serving.mode} mode) …")
        child = _start_trainer(folder) if trainer else None
        try:
            run(folder, settings, host, port, workers, parse_experiment(experiment))
        finally:
            if child is not None and child.poll() is None:
                child.terminate()
                child.wait(timeout=60)

    _guard(body)


def _start_trainer(folder: Path) -> Any:
    """`shopmind trainer` for the served artifact's dataset, in its own process (training never runs in a
    serving worker), with this command's store, config and data options; its log goes to stderr."""
    import json
    import subprocess
    import sys

    try:
        name = json.loads((Path(folder) / "manifest.json").read_text())["dataset"]
    except (OSError, ValueError, KeyError):
        raise ValueError(f"{folder}: not a shopmind artifact; --trainer needs one to know the dataset") from None
    cmd = [sys.executable, "-m", "shopmind.cli"]
    for flag, value in (("--store", state.store), ("--config", state.config), ("--data-dir", state.data_dir)):
        if value:
            cmd += [flag, str(value)]
    err.print(f"trainer for {name} in its own process", highlight=False)
    return subprocess.Popen([*cmd, "trainer", name, "--artifact", str(folder)])


keys_app = typer.Typer(help="API keys: scopes read, read_private, write, session, admin (docs/security.md).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _keys() -> Any:
    from ..serving.shared import open_keys

    return open_keys(state.settings())


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
    from ..serving.forget import forget_everywhere

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

