"""Starting the service: load an artifact, attach the event log, build the search engine with the query
encoder the artifact's vectors came from, and run uvicorn (one or more processes sharing the event log),
in production mode unless demo mode is asked for (and then on loopback only)."""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ..config import Settings
from ..ranking.rerank import RerankConfig
from .artifact import load
from .service import Service
from .shared import open_keys

WORKER_ENV = "SHOPMIND_SERVE_WORKER"


def keys_path(settings: Settings) -> Path:
    return settings.state_dir / "api_keys.json"


def load_service(folder: str | Path, settings: Settings, attach: bool = True, search: bool = True,
                 arm: str = "main") -> Service:
    artifact = load(folder)
    encode = None
    if search and artifact.pipeline.info.vectors.shape[1]:
        from ..knowledge.encoders import Encoder

        k = settings.knowledge
        enc = artifact.manifest.get("encoder", {})
        encoder = Encoder(enc.get("model", k.model), k.backend, k.batch_size, enc.get("max_length", k.max_length),
                          k.min_agreement, onnx_dir=settings.onnx_dir, threads=settings.serving.torch_threads)

        def encode(text: str) -> Any:
            return encoder.encode([text])[0]

        encode("warm up")  # load the model now, not on the first request
    s = settings.serving
    config = RerankConfig(diversity=s.diversity, category_cap=s.category_cap, explore=s.explore)
    from .shared import open_event_log, secret

    dataset = artifact.dataset
    folder = settings.state_dir / dataset
    return Service(artifact, folder, encode, config, attach=attach, arm=arm,
                   log_factory=lambda digest: open_event_log(settings, dataset, digest),
                   token_key=secret(settings, f"online:{dataset}", folder / "online.key"))


def parse_experiment(spec: str | None) -> tuple[Path, float] | None:
    """`PATH[:SHARE]` (share in (0, 1], default 0.5) as (folder, share); None for None."""
    if not spec:
        return None
    path, _, share = spec.rpartition(":")
    try:
        value = float(share) if path else 0.5
    except ValueError:
        path, value = spec, 0.5
    if not 0 < value <= 1:
        raise ValueError(f"--experiment {spec!r}: the share must be in (0, 1]")
    return Path(path or spec), value


def _build_app(folder: str | Path, settings: Settings, experiment: tuple[Path, float] | None = None) -> Any:
    import torch

    from .app import create_app

    torch.set_num_threads(settings.serving.torch_threads)
    current = {"folder": Path(folder)}

    def loader(path: str | None) -> Service:
        target = Path(path) if path else current["folder"]
        service = load_service(target, settings, attach=False)
        current["folder"] = target
        return service

    service = load_service(folder, settings)
    exp = None
    if experiment is not None:  # a second artifact for a share of the shoppers (arm "experiment")
        exp = (load_service(experiment[0], settings, arm="experiment"), experiment[1])
    # The loaded artifact is millions of long-lived objects; a full garbage collection walking them all
    # stalls every request for a tenth of a second. Freezing moves them out of the collector's sight.
    gc.collect()
    gc.freeze()
    keys = open_keys(settings)
    if not len(keys):
        logging.getLogger("shopmind.serving").warning(
            "no API keys in %s: %s refused until one is created (shopmind keys create NAME --scope ...)", keys.path,
            "writes are" if settings.serving.mode == "demo" else "every read and write is")
    bench = settings.serving.results_dir or (Path("bench/results") if Path("bench/results").is_dir() else None)
    from .forget import forget_everywhere
    from .shared import secret

    def forget(user: str, folder: Path) -> dict[str, Any]:
        folders = [folder] + ([exp[0].artifact.folder] if exp is not None else [])
        return forget_everywhere(settings, user, [service.artifact.dataset], folders, event_logs=False)

    session_secret = secret(settings, "storefront", settings.state_dir / "storefront.secret")
    return create_app(service, keys, settings.serving, loader, secret=session_secret,
                      results={"local": settings.benchmarks_dir, "bench": bench}, forget=forget, experiment=exp)


def _configure_logging() -> None:
    """shopmind's own INFO lines with timestamps; libraries only at WARNING (faiss logs which CPU build it
    tried, line by line, at INFO)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("faiss", "faiss.loader", "bm25s"):
        logging.getLogger(name).setLevel(logging.WARNING)


LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def check_mode(settings: Settings, host: str) -> None:
    """Demo mode is the open storefront (anyone may act as any shopper): refuse it on a public interface
    unless asked for, and say it loudly either way."""
    s = settings.serving
    if s.mode != "demo":
        logging.getLogger("shopmind.serving").info("production mode: reads need a key or a shopper session")
        return
    if host not in LOOPBACK and not host.startswith("127.") and not s.demo_public:
        raise ValueError(f"demo mode serves an open storefront and listens on loopback only; {host!r} is not "
                         "loopback (set serving.demo_public = true to allow it, or serve in production mode)")
    banner = "!" * 78
    logging.getLogger("shopmind.serving").warning(
        "\n%s\nDEMO MODE: open storefront, anyone may read and act as any shopper (no keys needed for reads).\n"
        "Not for real shoppers: serve with serving.mode = \"production\" (the default of `shopmind serve`).\n%s",
        banner, banner)


def worker_app() -> Any:
    """uvicorn factory for each worker process of `serve(workers > 1)`: the artifact and settings come
    through the environment, since uvicorn starts workers by import string."""
    spec = json.loads(os.environ[WORKER_ENV])
    _configure_logging()
    exp = spec.get("experiment")
    return _build_app(spec["folder"], Settings.model_validate(spec["settings"]),
                      (Path(exp[0]), float(exp[1])) if exp else None)


def serve(folder: str | Path, settings: Settings, host: str | None = None, port: int | None = None,
          workers: int | None = None, experiment: tuple[Path, float] | None = None) -> None:
    """Run the API until interrupted. OMP_WAIT_POLICY=PASSIVE must be set before torch loads (the CLI does).
    workers > 1: that many processes, each with the whole model; they share the event log (see eventlog)."""
    import uvicorn

    _configure_logging()
    host, port = host or settings.serving.host, port or settings.serving.port
    check_mode(settings, host)
    workers = workers or settings.serving.workers
    settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"workers": workers})})
    options = dict(host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    if workers <= 1:
        uvicorn.run(_build_app(folder, settings, experiment), **options)
        return
    load(folder)  # fail here, with one clear message, rather than in every worker
    if experiment is not None:
        load(experiment[0])
    prom = settings.state_dir / "prometheus"
    if prom.exists():
        shutil.rmtree(prom)
    prom.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
    os.environ[WORKER_ENV] = json.dumps({"folder": str(folder), "settings": settings.model_dump(mode="json"),
                                         "experiment": [str(experiment[0]), experiment[1]] if experiment else None})
    uvicorn.run("shopmind.serving.server:worker_app", factory=True, workers=workers, **options)


def ensure_quiet_threads() -> None:
    """Set before torch/OpenMP start: spinning OpenMP threads make 2-core serving 25x slower."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
