"""Ray Tune for the benchmark's hyper-parameter grids (`shopmind benchmark --ray`): each setting of a model's grid
is one Tune trial (`tune.grid_search` over the same values), fitted on the train part and measured on the
validation cases, in parallel over the cluster's CPUs. The runner then selects exactly as without Ray (best
validation NDCG@10, the grid's order breaking ties) and refits and tests once, on the driver.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

from .protocols import Protocol

StepFn = Callable[[str], None]


def _trial(config: dict[str, Any], protocol: Protocol, item_vectors: np.ndarray | None, name: str, seed: int) -> None:
    """One grid setting: fit with validation, report the validation metrics (and what the fit tuned)."""
    from ray import tune

    from ..models import MODELS
    from .runner import evaluate

    model = MODELS[name](**config, seed=seed).fit_validated(protocol.train, item_vectors, protocol.valid.histories,
                                                            protocol.valid.targets, protocol.valid.users)
    valid, _, _ = evaluate(model, protocol.valid, protocol.mask_history)
    # The metrics travel as JSON (exact floats, no Tune bookkeeping mixed in); ndcg@10 also as Tune's metric.
    tune.report({"ndcg@10": valid["ndcg@10"], "valid": json.dumps(valid), "tuned": json.dumps(model.tuned)})


def grid(protocol: Protocol, name: str, space: dict[str, list[Any]], settings: list[dict[str, Any]],
         item_vectors: np.ndarray | None, seed: int, address: str | None, on_step: StepFn | None = None,
         cpus_per_trial: float = 1) -> list[dict[str, Any]]:
    """Run every setting of `space` (whose product, in grid order, is `settings`) as a Tune trial; returns
    [{"params": setting + tuned, "valid": metrics}] in the order of `settings`."""
    from ray import tune

    from ..raycluster import connect

    connect(address)
    step = on_step or (lambda msg: None)
    total = len(settings)

    class Progress(tune.Callback):
        """A line per finished trial, on the driver. Tune pickles its callbacks with the experiment state: no
        closure over the progress function (a live display, with locks), and that copy goes without it."""

        def __init__(self, step: StepFn, name: str, total: int) -> None:
            self.step, self.name, self.total, self.done = step, name, total, 0

        def __getstate__(self) -> dict[str, Any]:
            return {**self.__dict__, "step": None}

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.done += 1
            if self.step:
                self.step(f"{self.name}: {self.done}/{self.total} grid settings done (Ray Tune)")

    step(f"{name}: {total} grid settings as Ray Tune trials")
    storage = tempfile.mkdtemp(prefix="shopmind-ray-tune-")
    try:
        trainable = tune.with_resources(tune.with_parameters(_trial, protocol=protocol, item_vectors=item_vectors,
                                                             name=name, seed=seed), {"cpu": cpus_per_trial})
        tuner = tune.Tuner(trainable, param_space={k: tune.grid_search(list(v)) for k, v in space.items()},
                           tune_config=tune.TuneConfig(metric="ndcg@10", mode="max"),
                           run_config=tune.RunConfig(name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=storage,
                                                     verbose=0, callbacks=[Progress(step, name, total)]))
        with contextlib.redirect_stdout(sys.stderr):  # Tune prints an experiment header: keep stdout for --json
            results = tuner.fit()
        if results.errors:
            raise RuntimeError(f"{name}: {len(results.errors)} Ray Tune trial(s) failed: {results.errors[0]}")
        by_params = {json.dumps(r.config, sort_keys=True): r.metrics for r in results}
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    trials = []
    for params in settings:
        metrics = by_params[json.dumps(params, sort_keys=True)]
        trials.append({"params": {**params, **json.loads(metrics["tuned"])}, "valid": json.loads(metrics["valid"])})
    return trials
