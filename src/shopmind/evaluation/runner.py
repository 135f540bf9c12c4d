"""Train, select on validation, test once: the benchmark behind `shopmind benchmark`.

Each model gets a small hyper-parameter grid; the setting with the best validation NDCG@10 (model fitted
on the train part) is refitted on train + valid and tested once. Results: metrics per model, timings,
beyond-accuracy measures, a long-tail slice (targets with at most TAIL training interactions), paired
bootstrap intervals against the best model, the text-vs-ID comparison of the neural models, and a
cold-item experiment (a share of items loses all its interactions; their test users are ranked again).
"""

from __future__ import annotations

import inspect
import itertools
import time
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from ..models import MODELS, Recommender
from ..models.base import bounded_batch
from ..models.ray_train import fit_model
from . import metrics as M
from .protocols import Cases, Protocol, cold_items

# Small grids: defaults that work across datasets matter more than per-dataset tuning.
GRIDS: dict[str, dict[str, list[Any]]] = {
    "pop": {},
    "pop-cat": {"decay": [1.0, 0.8, 0.5]},
    "itemknn": {"neighbors": [50, 200], "shrink": [0.0, 10.0], "decay": [1.0, 0.7, 0.4]},
    "als": {"factors": [64, 128], "regularization": [0.01, 0.1], "alpha": [5.0, 20.0]},
    "bpr": {"factors": [64, 128], "learning_rate": [0.01, 0.05]},
    # Epochs are chosen by early stopping on validation; the refit on train + valid reuses that count.
    "lightgcn": {},
    "twotower": {},
    "twotower-id": {},
    "sasrec": {},
    "sasrec-id": {},
    "hybrid": {},  # its blend weights are chosen on validation inside fit_validated
}
TEXT_PAIRS = {"sasrec": "sasrec-id", "twotower": "twotower-id"}  # text-enhanced model -> its ID-only twin
TAIL = 5  # long-tail slice: test targets with at most this many training interactions
StepFn = Callable[[str], None]


@dataclass
class ModelResult:
    model: str
    params: dict[str, Any]
    valid: dict[str, float]
    test: dict[str, float]
    seconds: dict[str, float]
    grid: list[dict[str, Any]] = field(default_factory=list)


def evaluate(model: Recommender, cases: Cases, mask_history: bool, batch: int = 1024,
             ks: tuple[int, ...] = M.KS) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Full ranking of every case's target; returns (metrics, ranks, top-50 lists)."""
    ranks, tops = [], []
    batch = bounded_batch(model._require_data().n_items, batch, copies=2)
    for s in range(0, len(cases.targets), batch):
        hist = cases.histories[s:s + batch]
        targets = cases.targets[s:s + batch]
        scores = model.score(hist, cases.users[s:s + batch])
        masks = [np.setdiff1d(h, [t]) for h, t in zip(hist, targets)] if mask_history else None
        r, top = M.target_ranks(scores, targets, masks, keep_top=max(ks))
        ranks.append(r)
        tops.append(top)
    all_ranks = np.concatenate(ranks)
    return M.accuracy(all_ranks, ks), all_ranks, np.vstack(tops)


def _grid(name: str, grid: bool) -> list[dict[str, Any]]:
    space = GRIDS.get(name, {}) if grid else {}
    keys = list(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))] or [{}]


def _make(cls: type[Recommender], params: dict[str, Any], seed: int, log_dir: Path | None) -> Recommender:
    if log_dir is not None and "log_dir" in inspect.signature(cls).parameters:
        return cls(**params, seed=seed, log_dir=str(log_dir / cls.name))
    return cls(**params, seed=seed)


def default_cold_models(models: list[str]) -> list[str]:
    """Models that declare cold-item support, their ID-only twins, and item-KNN as a reference."""
    twins = {TEXT_PAIRS[m] for m in models if m in TEXT_PAIRS}
    return [m for m in models if MODELS[m].supports_cold_items or m in twins or m == "itemknn"]


def run(protocol: Protocol, models: list[str], grid: bool = True, item_vectors: np.ndarray | None = None,
        seed: int = 0, on_step: StepFn | None = None, log_dir: str | Path | None = None,
        cold_share: float = 0.1, cold_models: list[str] | None = None, ray: str | None = None,
        ray_workers: int = 2) -> dict[str, Any]:
    """Benchmark `models` on `protocol`. log_dir: TensorBoard logs of every training run (one folder per
    model). cold_share: share of items made cold for the cold-item experiment (0 turns it off).
    ray: a Ray cluster address: grids run as Ray Tune trials, the neural models train on Ray Train with
    `ray_workers` workers (docs/ray.md); selection and the single test are the same as without it."""
    on_step = on_step or (lambda msg: None)

    def fit(model: Recommender, data: Any, valid: Cases | None = None) -> Recommender:
        cases = None if valid is None else (valid.histories, valid.targets, valid.users)
        return fit_model(model, data, item_vectors, cases, ray=ray, workers=ray_workers, on_step=on_step)

    logs = Path(log_dir) if log_dir else None
    results: list[ModelResult] = []
    per_user: dict[str, np.ndarray] = {}
    extras: dict[str, dict[str, float]] = {}
    popularity = protocol.full.item_popularity()
    tail = popularity[protocol.test.targets] <= TAIL
    best_params: dict[str, dict[str, Any]] = {}
    for name in models:
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
        cls = MODELS[name]
        trials = []
        t0 = time.perf_counter()
        settings = _grid(name, grid)
        if ray and len(settings) > 1:
            from .ray_tune import grid as tune_grid

            trials = tune_grid(protocol, name, GRIDS[name], settings, item_vectors, seed, ray, on_step)
        else:
            for params in settings:
                on_step(f"{name} {params or ''} (validation)")
                model = fit(_make(cls, params, seed, logs), protocol.train, protocol.valid)
                valid, _, _ = evaluate(model, protocol.valid, protocol.mask_history)
                trials.append({"params": {**params, **model.tuned}, "valid": valid})
        select_s = time.perf_counter() - t0
        best = max(trials, key=lambda t: t["valid"]["ndcg@10"])
        on_step(f"{name} {best['params'] or ''} (refit on train + valid, test)")
        t1 = time.perf_counter()
        best_params[name] = best["params"]
        model = fit(_make(cls, best["params"], seed, logs), protocol.full)
        fit_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        test, ranks, tops = evaluate(model, protocol.test, protocol.mask_history)
        eval_s = time.perf_counter() - t2
        valid = best["valid"]
        n_items = protocol.full.n_items
        test.update({"coverage@10": M.coverage(tops, n_items), "novelty@10": M.novelty(tops, popularity, protocol.full.n_users),
                     "popular_share@10": M.popularity_share(tops, popularity)})
        if tail.any():
            test.update({f"tail_{k}": v for k, v in M.accuracy(ranks[tail], (10, 50)).items() if k != "mrr"})
        if item_vectors is not None and item_vectors.shape[0] == n_items and item_vectors.shape[1] > 1:
            test["diversity@10"] = M.intra_list_diversity(tops, item_vectors)
        per_user[name] = M.per_user_ndcg(ranks)
        results.append(ModelResult(name, best["params"], valid, test,
                                   {"selection": round(select_s, 2), "fit": round(fit_s, 2), "test": round(eval_s, 2)},
                                   [{"params": t["params"], "ndcg@10": t["valid"]["ndcg@10"],
                                     "recall@10": t["valid"]["recall@10"]} for t in trials]))
    best_base = max(results, key=lambda r: r.valid["ndcg@10"]).model if results else None
    comparisons = {r.model: M.paired_bootstrap(per_user[r.model], per_user[best_base], seed=seed)
                   for r in results if best_base and r.model != best_base}
    # The LM text's own effect: the same model with and without it, on the same users.
    text = {m: M.paired_bootstrap(per_user[m], per_user[twin], seed=seed)
            for m, twin in TEXT_PAIRS.items() if m in per_user and twin in per_user}
    if text:
        extras["text_vs_id_ndcg@10"] = text
    cold_list = default_cold_models(models) if cold_models is None else [m for m in cold_models if m in best_params]
    has_text = item_vectors is not None and item_vectors.ndim == 2 and item_vectors.shape[1] > 1
    if cold_share > 0 and cold_list and has_text:  # without item text no model can rank a cold item
        extras["cold_items"] = _cold_experiment(protocol, cold_list, best_params, item_vectors, seed, cold_share, on_step,
                                                fit)
    if ray:
        extras["ray"] = {"address": ray, "train_workers": ray_workers}
    return {"protocol": protocol.name, "mask_history": protocol.mask_history,
            "users": {"valid": len(protocol.valid.targets), "test": len(protocol.test.targets),
                      "test_tail": int(tail.sum())},
            "items": protocol.full.n_items, "results": [asdict(r) for r in results],
            "reference_model": best_base, "paired_ndcg@10_vs_reference": comparisons, **extras}


def _cold_experiment(protocol: Protocol, models: list[str], params: dict[str, dict[str, Any]],
                     item_vectors: np.ndarray | None, seed: int, share: float, on_step: StepFn,
                     fit: Callable[[Recommender, Any], Recommender] | None = None) -> dict[str, Any]:
    """Refit each model (its selected parameters) without the cold items' interactions; rank their targets."""
    fit = fit or (lambda model, data: model.fit(data, item_vectors))
    data, cases, cold = cold_items(protocol, share, seed)
    out: dict[str, Any] = {"share": share, "items": int(len(cold)), "cases": int(len(cases.targets)), "models": {}}
    per_user: dict[str, np.ndarray] = {}
    for name in models:
        on_step(f"{name} (cold-item experiment, {len(cold)} items made cold)")
        t0 = time.perf_counter()
        model = fit(MODELS[name](**params[name], seed=seed), data)
        metrics, ranks, _ = evaluate(model, cases, protocol.mask_history, ks=(10, 50))
        per_user[name] = M.per_user_ndcg(ranks)
        out["models"][name] = {**{k: v for k, v in metrics.items() if k != "mrr"},
                               "fit_s": round(time.perf_counter() - t0, 2)}
    out["text_vs_id_ndcg@10"] = {m: M.paired_bootstrap(per_user[m], per_user[t], seed=seed)
                                 for m, t in TEXT_PAIRS.items() if m in per_user and t in per_user}
    return out
