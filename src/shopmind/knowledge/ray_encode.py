"""`RayEncoder`: the `Encoder` interface, with `encode` run by Ray Data over a pool of actors on a cluster.

The driver's encoder chooses the backend (for `auto`, by measured agreement, as on one machine); each actor then
loads that very encoder (same model, backend, max_length: the same `model_id`, so the embedding cache is shared
with single-process runs) with `threads` ONNX intra-op threads, and encodes the blocks Ray Data hands it.
Texts go out as the single-process encoder's own batches (`Encoder.batch_plan`: by token length, longest
first), one Ray Data row per batch and a few rows to a block, and come back by index, so vectors are in input order and match the
single-process ones (int8 activations are quantised per model call, so the grouping must be the same; what is
left is float rounding of 1 vs N intra-op threads: cosine >= 0.999 per row, tested).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from .encoders import Encoder, ProgressFn


class _EncodeBlock:
    """The Ray Data callable class: one per actor, holding one loaded encoder."""

    def __init__(self, spec: dict[str, Any], model_id: str) -> None:
        self.encoder = Encoder(**spec)
        if self.encoder.model_id != model_id:  # a backend or length that differs would poison the cache
            raise RuntimeError(f"actor encoder {self.encoder.model_id} is not the driver's {model_id}")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each row holds one model call of the single-process plan (its texts and their indices): encoded as
        such, returned as one row per text."""
        vectors = [self.encoder.encode([str(t) for t in texts]) for texts in batch["text"]]
        return {"idx": np.concatenate([np.asarray(i, np.int64) for i in batch["idx"]]), "vector": np.vstack(vectors)}


class RayEncoder:
    """An `Encoder` whose `encode` runs on Ray (`address`: auto, local, HOST:PORT; `workers` actors, default:
    the cluster's CPUs divided by `threads`)."""

    def __init__(self, base: Encoder, address: str | None = "auto", workers: int | None = None, threads: int = 1,
                 block: int = 128) -> None:
        if workers is not None and workers < 1:
            raise ValueError("--ray-workers must be at least 1")
        self.base, self.address, self.workers, self.threads, self.block = base, address, workers, threads, block
        self.stats: dict[str, float] = {"calls": 0, "texts": 0, "seconds": 0.0}

    # --- the Encoder interface, delegated ------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.base.model_id

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def backend_used(self) -> str | None:
        return self.base.backend_used

    @property
    def agreement(self) -> float | None:
        return self.base.agreement

    def prepare(self, sample: Sequence[str] = ()) -> str:
        return self.base.prepare(sample)

    def describe(self) -> dict[str, object]:
        """The base encoder's description, plus the Ray run: workers, and texts, seconds and texts/s over all
        `encode` calls so far (actor start-up included)."""
        stats = self.stats
        return {**self.base.describe(), "threads": self.threads,
                "ray": {"address": self.address, "workers": self.workers, **stats,
                        "texts_per_s": round(stats["texts"] / stats["seconds"], 1) if stats["seconds"] else None}}

    def _spec(self) -> dict[str, Any]:
        b = self.base
        return {"model": b.model, "backend": b.backend_used, "batch_size": b.batch_size, "max_length": b.max_length,
                "min_agreement": b.min_agreement, "onnx_dir": str(b.onnx_dir), "threads": self.threads,
                "calibration_size": b.calibration_size}

    # --- the work ---------------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text, in input order."""
        from ..raycluster import cluster_cpus, connect

        texts = [t if isinstance(t, str) else "" for t in texts]
        self.prepare(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        t0 = time.perf_counter()  # the plan (tokenizing here) counts: it is part of encoding on Ray
        plan = self.base.batch_plan(texts)
        if len(plan) == 1:  # one model call (a few keywords, say): not worth starting an actor pool for
            self.stats["local_texts"] = self.stats.get("local_texts", 0) + len(texts)
            return self.base.encode(texts, progress)
        ray = connect(self.address)
        # One row per model call of the single-process encoder (`batch_plan`: longest texts first), a few calls
        # to a Ray block: each actor then feeds the model exactly what one process would, so the vectors agree.
        rows = [{"idx": idx.tolist(), "text": [texts[i] for i in idx]} for idx in plan]
        per_block = max(1, self.block // max(len(plan[0]), 1))
        blocks = -(-len(rows) // per_block)
        workers = min(self.workers or max(1, cluster_cpus() // self.threads), blocks)
        ds = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            _EncodeBlock, fn_constructor_kwargs={"spec": self._spec(), "model_id": self.model_id},
            batch_size=per_block, batch_format="numpy", num_cpus=self.threads,
            compute=ray.data.ActorPoolStrategy(size=workers))
        out: np.ndarray | None = None
        done = 0
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            vectors = np.asarray(batch["vector"], np.float32)
            if out is None:
                out = np.zeros((len(texts), vectors.shape[1]), np.float32)
            out[batch["idx"]] = vectors
            done += len(vectors)
            if progress:
                progress(done, len(texts))
        if out is None or done != len(texts):
            raise RuntimeError(f"Ray encoded {done} of {len(texts)} texts")
        self.stats.update({"workers": max(workers, self.stats.get("workers", 0)), "calls": self.stats["calls"] + 1,
                           "texts": self.stats["texts"] + len(texts),
                           "seconds": round(self.stats["seconds"] + time.perf_counter() - t0, 3)})
        return out
