"""Ray Train for the neural sequence models (SASRec, two-tower and their ID-only twins): `fit(model, ...)` trains
the model with `TorchTrainer` on `workers` CPU workers (DDP, gloo) and returns it fitted, as `model.fit` would.

Each worker runs the model's own training loop with a `RayParallel` plugged in: the loss module is wrapped in
DistributedDataParallel (`ray.train.torch.prepare_model`), every training batch is split across the workers
(each computes 1/N of its rows; DDP averages the gradients, so the global batch and the number of steps are
those of one process), validation NDCG@10 is computed on a share of the cases per worker and summed with an
all-reduce, so every worker makes the same early-stopping decision in the same epoch. Rank 0 sends the weights
back as a Ray Train checkpoint; the driver loads them into `model`, which then scores, saves and loads exactly
like a locally fitted one (`model.fit_info` says how it was trained: workers, nodes, seconds). Not bit-equal
to one process: the loss is a mean per worker (then averaged), and float sums run in another order, so
trajectories drift apart a little (docs/ray.md has the tolerance).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..data.interactions import Interactions
from .training import Parallel, SequenceNetModel, ndcg_at_10

StepFn = Callable[[str], None]


class RayParallel(Parallel):
    """The training-loop hooks on rank `rank` of `world` Ray Train workers."""

    def __init__(self, rank: int, world: int, label: str) -> None:
        self.rank, self.world, self.label = rank, world, label

    def wrap(self, module: Any) -> Any:
        import inspect

        from ray.train.torch import prepare_model
        from torch.nn.parallel import DistributedDataParallel

        # Buffers (the item text vectors) never change: syncing them before every step would only cost time.
        known = inspect.signature(DistributedDataParallel.__init__).parameters
        key = "forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers"  # torch >= 2.13
        return prepare_model(module, parallel_strategy_kwargs={key: False})

    def shard(self, batch: np.ndarray) -> np.ndarray:
        # The same batches in the same order on every worker (same seed); a batch too small to give every
        # worker a row is skipped by all of them, so all run the same number of steps (DDP needs that).
        return batch[self.rank::self.world] if len(batch) >= self.world else batch[:0]

    def ndcg(self, score: Callable[[Sequence[np.ndarray], np.ndarray | None], np.ndarray],
             histories: Sequence[np.ndarray], targets: np.ndarray) -> float:
        import torch
        import torch.distributed as dist

        mine = slice(self.rank, None, self.world)
        cases = len(targets[mine])
        total = ndcg_at_10(score, list(histories)[mine], targets[mine]) * cases if cases else 0.0
        both = torch.tensor([total, float(cases)], dtype=torch.float64)
        dist.all_reduce(both)
        return float(both[0] / max(both[1], 1))

    def epoch_end(self, record: dict[str, float]) -> None:
        # A line per epoch from rank 0 is the progress. Not a ray.train.report per epoch: each is a barrier that
        # waits for the controller's next poll (2 s by default), more than a small model's whole epoch.
        if self.rank == 0:
            extra = f", valid ndcg@10 {record['valid_ndcg@10']:.4f}" if "valid_ndcg@10" in record else ""
            # Written, not print()ed: Ray Train also routes print() through its logger, which would double it.
            sys.stderr.write(f"{self.label} epoch {record['epoch']}: loss {record['loss']:.4f}{extra} "
                             f"({record['seconds']:.1f} s)\n")
            sys.stderr.flush()


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the model's own loop with RayParallel; rank 0 checkpoints the result."""
    import logging

    import ray
    import ray.train
    import torch

    # Not an INFO line per report from Ray Train (some of its loggers are named by file, so the root's level
    # too): the epoch lines above are the progress.
    for name in ("ray.train", ""):
        logging.getLogger(name).setLevel(logging.WARNING)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    model: SequenceNetModel = config["model"]
    if rank:
        model.log_dir = None  # TensorBoard logs from rank 0 only
    model._parallel = RayParallel(rank, world, config["label"])
    data, features, valid = config["data"], config["features"], config["valid"]
    if features is not None:
        features = np.array(features)  # a writable copy: arrays from the object store are read-only
    if valid is None:
        model.fit(data, features)
    else:
        model.fit_validated(data, features, *valid)
    nodes: list[Any] = [None] * world
    torch.distributed.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            torch.save(model._net.state_dict(), Path(folder) / "net.pt")
            (Path(folder) / "fit.json").write_text(json.dumps({"tuned": model.tuned, "history": model.history,
                                                               "workers": world, "nodes": len(set(nodes))}))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({"epochs_run": float(len(model.history))}, checkpoint=checkpoint)


def fit(model: SequenceNetModel, data: Interactions, item_features: np.ndarray | None = None,
        valid: tuple[Sequence[np.ndarray], np.ndarray] | None = None, address: str | None = "auto", workers: int = 2,
        threads: int = 1, storage: str | None = None, on_step: StepFn | None = None) -> SequenceNetModel:
    """Train `model` (unfitted; its parameters as given) on Ray Train and return it fitted: `model.fit(data,
    item_features)`, or `model.fit_validated(data, item_features, *valid)` when validation cases are given.
    storage: where the checkpoint travels through (default: $SHOPMIND_RAY_STORAGE, else a temporary folder;
    on a cluster of several machines it must be a folder every node sees, or a URI such as s3://...)."""
    import shutil

    import torch
    from ray.train import LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from ..raycluster import RayUnavailable, cluster_cpus, connect

    connect(address)
    if workers < 1:
        raise ValueError("Ray Train needs at least 1 worker")
    if cluster_cpus() < workers * threads:  # else Ray Train would wait for CPUs that never come
        raise RayUnavailable(f"Ray Train with {workers} workers needs {workers * threads} CPUs; the cluster has "
                             f"{cluster_cpus()} (use --ray-workers {max(1, cluster_cpus() // threads)})")
    label = f"{model.name} ({'validation' if valid is not None else 'fit'}, Ray Train x{workers})"
    if on_step:
        on_step(label)
    t0 = time.perf_counter()
    own = storage or os.environ.get("SHOPMIND_RAY_STORAGE")
    root = own or tempfile.mkdtemp(prefix="shopmind-ray-train-")
    config = {"model": model, "data": data, "features": item_features, "label": label, "threads": threads,
              "valid": None if valid is None else (list(valid[0]), np.asarray(valid[1]))}
    trainer = TorchTrainer(
        _worker, train_loop_config=config, torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": threads}),
        run_config=RunConfig(name=f"{model.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}", storage_path=root,
                             logging_config=LoggingConfig(log_level="WARNING")))
    try:
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"Ray Train returned no checkpoint for {model.name}")
        with result.checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "net.pt", weights_only=True)
            meta = json.loads((Path(folder) / "fit.json").read_text())
    finally:
        if not own:
            shutil.rmtree(root, ignore_errors=True)
    model.data = data
    model._restore_net(state)
    model.tuned = meta["tuned"]
    model.history = meta["history"]
    model.fit_info = {"ray_train": True, "workers": meta["workers"], "nodes": meta["nodes"],
                      "seconds": round(time.perf_counter() - t0, 2)}
    return model


def fit_model(model: Any, data: Interactions, item_features: np.ndarray | None = None,
              valid: tuple[Sequence[np.ndarray], np.ndarray, np.ndarray | None] | None = None, ray: str | None = None,
              workers: int = 2, on_step: StepFn | None = None) -> Any:
    """`model.fit` (valid None) or `model.fit_validated(data, item_features, *valid)`, on Ray Train when `ray` (a
    cluster address) is given and the model is a neural sequence model; any other model fits here."""
    if ray and isinstance(model, SequenceNetModel):
        return fit(model, data, item_features, None if valid is None else (valid[0], valid[1]), address=ray,
                   workers=workers, on_step=on_step)
    if valid is None:
        return model.fit(data, item_features)
    return model.fit_validated(data, item_features, *valid)
