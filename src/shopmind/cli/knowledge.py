"""The mine command: knowledge mined from item texts, reviews and behaviour."""

from __future__ import annotations

from typing import Any, Optional

import typer

from .common import _emit_json, _guard, _step_progress, app, state
from .render import _print_mining

@app.command()
def mine(
    datasets: list[str] = typer.Option(..., "--dataset", "-d", help="Dataset in the store (repeatable)."),
    model: Optional[str] = typer.Option(None, "--model", help="Encoder: packaged name, Hugging Face id or folder."),
    backend: Optional[str] = typer.Option(None, "--backend", help="auto, torch, onnx or onnx-int8."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Encode on a Ray cluster: auto, local or HOST:PORT "
                                      "(needs shopmind[scale]; docs/ray.md)."),
    ray_workers: Optional[int] = typer.Option(None, "--ray-workers", min=1, help="Encoder actors on the cluster "
                                              "(default: one per CPU)."),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
) -> None:
    """Mine knowledge: item embeddings, TF-IDF and keywords, review aspects and knowledge cards,
    user profiles, item graph. Unchanged item texts are not encoded again."""
    from ..knowledge.mine import Miner, MiningError

    if ray_workers and not ray:
        raise typer.BadParameter("--ray-workers needs --ray", param_hint="--ray-workers")

    def body() -> list[dict[str, Any]]:
        from ..data.store import open_store

        settings = state.settings(**{"knowledge.model": model, "knowledge.backend": backend})
        if ray:
            from ..raycluster import connect

            connect(ray)  # a missing Ray or a wrong address fails here, before any work
        reports = []
        with open_store(settings) as store:
            missing = [d for d in datasets if d not in store.datasets()]
            if missing:
                raise MiningError(f"not in the store: {', '.join(missing)} (run `shopmind ingest` first)")
            for name in datasets:
                with _step_progress(quiet=as_json) as on_step:
                    report = Miner(store, settings.knowledge, settings.knowledge_dir, on_step=on_step,
                                   onnx_dir=settings.onnx_dir, ray=ray, ray_workers=ray_workers).run(name)
                reports.append(report.to_json())
                if not as_json:
                    _print_mining(report.to_json())
        return reports

    reports = _guard(body)
    if as_json:
        _emit_json({"reports": reports})

