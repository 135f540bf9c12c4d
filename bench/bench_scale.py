"""Cost-growth benchmark: how ingest, mining, training, index build, search, recommend and memory grow with
the catalog and the event log, through shopmind's real code, on synthetic shops fitted on the real data.

For each size (default 10k items / 0.2M events, 100k / 2M, 1M / 20M) `bench/scale_data.py` writes a shop
(real titles, brands and category paths recombined; Zipf popularity, user activity, co-visitation and
time gaps fitted on the real events: see its docstring), then each stage runs in its own subprocess, so
its peak memory (ru_maxrss from wait4) is its own and a crash, a memory error or a timeout costs one stage,
not the run:

  generate          the synthetic shop (Parquet)
  ingest_duckdb     `Ingestor` + the generic adapter into a fresh DuckDB store: items, then events
  ingest_postgres   the same into a throwaway PostgreSQL (`LocalCluster`); events capped (--pg-events-cap)
  mine              once: the ONNX int8 encoder's texts/s on a fixed sample of item texts (size-independent);
                    Ray 1-vs-2 workers only when src/shopmind/knowledge/ray_encode.py exists
  vectors           item vectors for the catalog (see "Item vectors" below)
  train_prep        the training store (events capped at --train-events-cap) and the time protocol
                    (`evaluation.protocols.build`), saved for the model stages
  train_<model>     `MODELS[name].fit` per model (pop, itemknn, twotower, sasrec); the neural ones for
                    --neural-epochs epochs on the first users covering --neural-events training events,
                    under an address-space limit (--mem-limit-gb) and a timeout (--neural-timeout)
  assemble          the candidate sources loaded, the LambdaRank ranker fitted on validation users
                    (`RankingPipeline.fit_ranker`, --ranker-cases), the artifact saved (`serving.artifact.save`)
  serve             the artifact loaded into `serving.service.Service`, the search index built
                    (`SearchEngine.build`: BM25 fields, FAISS, speller), then sequential single-threaded
                    requests: `Service.search` with queries cut from the generated titles, and
                    `Service.recommend` for distinct users with histories (no cache hits)

Item vectors: encoding a million titles with the ONNX int8 encoder takes ~40 min on two cores (texts/s is
measured by `mine`), so the catalog's vectors are composed from real encoder vectors instead: the
encoder embeds the 20,000 most frequent title words of the real pool and the real category paths once;
an item's vector is the normalised mean of its title words' vectors plus half its category path's
vector. Same dimension and the same space as the query encoder, with the neighbourhood structure of
shared words and categories; the index build and search costs are those of real vectors of that size.

A power law cost = a * size^b is fitted per stage (least squares on log-log) and reported with its points;
extrapolations to 100M items / 10k requests/s are labelled as such. Results: bench/results/scale.{md,json,png}
(written after every stage, so an interrupted run keeps what it measured). Progress goes to stderr.

    SHOPMIND_DATA_DIR=../shared/data HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE \\
        .venv/bin/python bench/bench_scale.py [--sizes 10k:200k,100k:2M,1M:20M] [--work /tmp/shopmind-scale]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))

from common import RESULTS, command_line, machine  # noqa: E402  (bench/ on the path)

DEFAULT_SIZES = "10k:200k,100k:2M,1M:20M"
MODELS_TRAINED = ("pop", "itemknn", "twotower", "sasrec")
NEURAL = ("twotower", "sasrec")
DATASET = "shop"
GOALS = {"search_p99_ms": 50.0, "recommend_p99_ms": 50.0, "duckdb_rows_per_s": 50_000.0, "postgres_rows_per_s": 20_000.0,
         "ray_speedup": 1.6}


def log(msg: str) -> None:
    print(f"[bench_scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_count(text: str) -> int:
    text = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(round(float(text[:-1] if mult > 1 else text) * mult))


def parse_sizes(spec: str) -> list[tuple[str, int, int]]:
    out = []
    for part in spec.split(","):
        items, _, events = part.partition(":")
        out.append((f"{items.strip()}-{events.strip()}", parse_count(items), parse_count(events)))
    return out


def vm_status() -> dict[str, float]:
    """VmRSS and VmHWM of this process, MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, np.float64)
    return {"n": int(len(a)), "p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "p99": round(float(np.percentile(a, 99)), 2), "mean": round(float(a.mean()), 2), "max": round(float(a.max()), 2)}


# ======================================================================================= stages (children)
class Ctx:
    def __init__(self, work: Path, label: str, items: int, events: int, cfg: dict[str, Any]) -> None:
        self.work, self.label, self.items, self.events, self.cfg = work, label, items, events, cfg
        self.dir = work / label
        self.data = self.dir / "data"

    def result(self, stage: str) -> dict[str, Any] | None:
        path = self.dir / f"{stage}.json"
        if not path.is_file():
            return None
        doc = json.loads(path.read_text())
        return doc.get("result") if doc.get("ok") else None

    def settings(self, store_path: Path | None = None) -> Any:
        from shopmind.config import load_settings

        return load_settings(overrides={"store.path": str(store_path or self.dir / "shop.duckdb"),
                                        "data.dir": self.cfg["data_dir"], "data.allow_download": False,
                                        "knowledge.backend": "onnx-int8"})


def _events_source(ctx: Ctx, cap: int | None) -> tuple[Path, int]:
    """The events folder, or a folder of links to the first parts holding at least `cap` events."""
    import pyarrow.parquet as pq

    parts = sorted((ctx.data / "events").glob("part-*.parquet"))
    rows = [pq.ParquetFile(p).metadata.num_rows for p in parts]
    if cap is None or cap >= sum(rows):
        return ctx.data / "events", sum(rows)
    folder = ctx.data / f"events-first-{cap}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    total = 0
    for p, n in zip(parts, rows):
        if total >= cap:
            break
        (folder / p.name).symlink_to(p)
        total += n
    return folder, total


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _Every:
    """An ingest progress callback: logs every `seconds` and samples (wall, CPU, rows) every `sample` seconds,
    so throughput can be read as a function of how many rows the table already holds."""

    def __init__(self, seconds: float, what: str, sample: float = 10.0) -> None:
        self.seconds, self.what, self.sample = seconds, what, sample
        self.last = self.last_sample = time.perf_counter()
        self.samples: list[tuple[float, float, int]] = [(self.last, _cpu(), 0)]

    def __call__(self, done: int, total: int, rows: int) -> None:
        now = time.perf_counter()
        if now - self.last_sample > self.sample:
            self.last_sample = now
            self.samples.append((now, _cpu(), rows))
        if now - self.last > self.seconds:
            self.last = now
            log(f"{self.what}: {rows:,} rows")

    def windows(self) -> list[dict[str, float]]:
        out = []
        for (t0, c0, r0), (t1, c1, r1) in zip(self.samples, self.samples[1:]):
            if r1 > r0:
                out.append({"rows_from": r0, "rows_to": r1, "rows_per_s": round((r1 - r0) / (t1 - t0)),
                            "rows_per_cpu_s": round((r1 - r0) / max(c1 - c0, 1e-6))})
        return out


def _ingest(store: Any, ctx: Ctx, events_cap: int | None, progress: str) -> dict[str, Any]:
    from shopmind.data.adapters.generic import GenericAdapter, Mapping
    from shopmind.data.ingest import Ingestor

    out: dict[str, Any] = {}
    chunk = ctx.settings().ingest.chunk_size
    events_path, n_events = _events_source(ctx, events_cap)
    for kind, path in (("items", ctx.data / "items.parquet"), ("events", events_path)):
        mapping = Mapping.from_toml(ctx.data / f"{kind}.mapping.toml")
        t0, c0 = time.perf_counter(), _cpu()
        every = _Every(30, f"{progress} {kind}")
        rep = Ingestor(store, DATASET, chunk_size=chunk, rejects_dir=ctx.dir / "rejects", progress=every).run(
            GenericAdapter(path, mapping))
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        out[kind] = {"rows": rep.rows_read, "rejected": rep.rejected, "seconds": round(wall, 2),
                     "rows_per_s": round(rep.rows_read / wall, 1), "cpu_seconds": round(cpu, 2),
                     "rows_per_cpu_s": round(rep.rows_read / max(cpu, 1e-6), 1), "status": rep.status,
                     "windows": every.windows()}
        log(f"{progress} {kind}: {rep.rows_read:,} rows in {wall:.1f} s ({rep.rows_read / wall:,.0f} rows/s, "
            f"{rep.rejected} rejected)")
    rows = out["items"]["rows"] + out["events"]["rows"]
    secs = out["items"]["seconds"] + out["events"]["seconds"]
    out["total"] = {"rows": rows, "seconds": round(secs, 2), "rows_per_s": round(rows / secs, 1)}
    out["events_capped"] = n_events < ctx.events
    out["chunk_size"] = chunk
    return out


def stage_generate(ctx: Ctx) -> dict[str, Any]:
    import scale_data

    s = scale_data.generate(ctx.data, ctx.items, ctx.events, ctx.cfg["seed"], ctx.cfg["data_dir"])
    s["bytes"] = sum(p.stat().st_size for p in ctx.data.rglob("*.parquet"))
    return s


def stage_ingest_duckdb(ctx: Ctx) -> dict[str, Any]:
    from shopmind.data.store import open_store

    path = ctx.dir / "shop.duckdb"
    for p in (path, path.with_suffix(".duckdb.wal")):
        p.unlink(missing_ok=True)
    with open_store(path) as store:
        out = _ingest(store, ctx, ctx.cfg["ingest_cap"], "duckdb")
    out["store_bytes"] = path.stat().st_size
    return out


def stage_ingest_postgres(ctx: Ctx) -> dict[str, Any]:
    from shopmind.data.pglocal import LocalCluster
    from shopmind.data.store import open_store

    with LocalCluster() as pg:
        url = pg.create_database("shop")
        with open_store(url) as store:
            out = _ingest(store, ctx, ctx.cfg["pg_cap"], "postgres")
        out["server"] = "PostgreSQL (LocalCluster: fsync on, synchronous_commit on, shared_buffers 128MB); its " \
                        "memory is not in this stage's peak RSS (a separate process tree)"
    return out


def stage_mine(ctx: Ctx) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from shopmind.knowledge.encoders import Encoder
    from shopmind.knowledge.text import ItemTextTemplate

    s = ctx.settings()
    k = s.knowledge
    n = ctx.cfg["mine_texts"]
    items = pq.read_table(ctx.data / "items.parquet").slice(0, n).to_pylist()
    tpl = ItemTextTemplate(k.item_template)
    texts = [tpl.render(r) for r in items]
    enc = Encoder(k.model, "onnx-int8", k.batch_size, k.max_length, k.min_agreement, onnx_dir=s.onnx_dir)
    t0 = time.perf_counter()
    enc.encode(texts[:32])
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc.encode(texts)
    secs = time.perf_counter() - t0
    out: dict[str, Any] = {"texts": len(texts), "seconds": round(secs, 2), "texts_per_s": round(len(texts) / secs, 1),
                           "load_seconds": round(load, 2), "encoder": enc.describe(),
                           "mean_chars": round(float(np.mean([len(t) for t in texts])), 1),
                           "hours_for_1M_items": round(1e6 / (len(texts) / secs) / 3600, 2)}
    out["ray"] = ray_hook(ctx)
    return out


def ray_hook(ctx: Ctx) -> dict[str, Any]:
    """`shopmind mine --ray` with 1 and 2 workers, when the Ray encoder exists in this checkout."""
    if not (ROOT / "src" / "shopmind" / "knowledge" / "ray_encode.py").is_file():
        return {"measured": False, "note": "not measured here: src/shopmind/knowledge/ray_encode.py is not in this "
                                           "checkout (the Ray work is on another branch)"}
    out: dict[str, Any] = {"measured": True, "runs": {}}
    store = ctx.dir / "shop.duckdb"
    for workers in (1, 2):
        cmd = [sys.executable, "-m", "shopmind.cli", "--store", str(store), "mine", "-d", DATASET, "--ray",
               "--ray-workers", str(workers), "--json"]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        out["runs"][workers] = {"command": " ".join(cmd), "rc": p.returncode, "seconds": round(time.perf_counter() - t0, 1),
                                "stderr_tail": p.stderr[-500:] if p.returncode else ""}
    ok = all(r["rc"] == 0 for r in out["runs"].values())
    if ok:
        out["speedup_2_vs_1"] = round(out["runs"][1]["seconds"] / out["runs"][2]["seconds"], 2)
    return out


def _vocabulary(ctx: Ctx) -> dict[str, Any]:
    """Encoder vectors of the real pool's frequent title words and its category paths (once per work folder)."""
    path = ctx.work / "vocabulary_vectors.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        return {"words": z["words"].tolist(), "word_vectors": z["word_vectors"], "paths": z["paths"].tolist(),
                "path_vectors": z["path_vectors"], "encode_seconds": float(z["encode_seconds"]), "cached": True}
    import scale_data
    from sklearn.feature_extraction.text import CountVectorizer

    from shopmind.knowledge.encoders import Encoder

    pool = scale_data.load_pool(ctx.cfg["data_dir"])
    titles = [f"{h} {t}" for h, t in zip(pool.head, pool.tail)]
    cv = CountVectorizer(token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b", max_features=20_000).fit(titles)
    words = cv.get_feature_names_out().tolist()
    paths = [" > ".join(p) for p in pool.paths]
    s = ctx.settings()
    k = s.knowledge
    enc = Encoder(k.model, "onnx-int8", k.batch_size, k.max_length, k.min_agreement, onnx_dir=s.onnx_dir)
    t0 = time.perf_counter()
    wv = enc.encode(words)
    pv = enc.encode(paths)
    secs = time.perf_counter() - t0
    np.savez(path, words=np.array(words), word_vectors=wv, paths=np.array(paths), path_vectors=pv,
             encode_seconds=np.array(secs))
    return {"words": words, "word_vectors": wv, "paths": paths, "path_vectors": pv, "encode_seconds": secs,
            "cached": False}


def stage_vectors(ctx: Ctx) -> dict[str, Any]:
    import pyarrow.parquet as pq
    from sklearn.feature_extraction.text import CountVectorizer

    voc = _vocabulary(ctx)
    t0 = time.perf_counter()
    table = pq.read_table(ctx.data / "items.parquet", columns=["item_id", "title", "categories"])
    titles = table.column("title").to_pylist()
    cats = table.column("categories").to_pylist()
    cv = CountVectorizer(token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b", vocabulary=voc["words"])
    x = cv.transform(titles).astype(np.float32)
    rows = np.asarray(x.sum(axis=1)).ravel()
    x = x.multiply(1 / np.maximum(rows, 1)[:, None]).tocsr()
    vectors = np.asarray(x @ voc["word_vectors"], np.float32)
    pindex = {p: i for i, p in enumerate(voc["paths"])}
    prow = np.array([pindex.get(" > ".join(c or []), -1) for c in cats])
    has = prow >= 0
    vectors[has] += 0.5 * voc["path_vectors"][prow[has]]
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    np.save(ctx.dir / "item_vectors.npy", vectors)
    (ctx.dir / "item_vector_ids.json").write_text(json.dumps(table.column("item_id").to_pylist()))
    return {"items": len(titles), "dim": int(vectors.shape[1]), "compose_seconds": round(time.perf_counter() - t0, 2),
            "vocabulary": len(voc["words"]), "category_paths": len(voc["paths"]),
            "vocabulary_encode_seconds": round(voc["encode_seconds"], 2), "vocabulary_cached": voc["cached"],
            "items_without_known_words": int((rows == 0).sum())}


def _save_cases(path: Path, data: Any, cases: Any, mask: bool, extra: dict[str, np.ndarray]) -> None:
    g = data.item_groups
    np.savez(path, user_ids=data.user_ids.astype(str), item_ids=data.item_ids.astype(str),
             seq_lengths=np.array([len(s) for s in data.sequences], np.int64),
             seq_items=np.concatenate(data.sequences) if data.sequences else np.zeros(0, np.int64),
             g_data=g.data, g_indices=g.indices, g_indptr=g.indptr, g_shape=np.array(g.shape),
             valid_users=np.asarray(cases.users, np.int64), valid_targets=np.asarray(cases.targets, np.int64),
             valid_lengths=np.array([len(h) for h in cases.histories], np.int64),
             valid_items=np.concatenate(cases.histories) if len(cases.histories) else np.zeros(0, np.int64),
             mask=np.array(mask), **extra)


def _load_cases(path: Path) -> tuple[Any, Any, bool, Any]:
    import scipy.sparse as sp

    from shopmind.data.interactions import Interactions
    from shopmind.evaluation.protocols import Cases

    z = np.load(path, allow_pickle=False)
    bounds = np.concatenate([[0], np.cumsum(z["seq_lengths"])])
    items = z["seq_items"]
    seqs = [items[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]
    data = Interactions(z["user_ids"].astype(object), z["item_ids"].astype(object), seqs)
    data.item_groups = sp.csr_matrix((z["g_data"], z["g_indices"], z["g_indptr"]), shape=tuple(z["g_shape"]))
    vb = np.concatenate([[0], np.cumsum(z["valid_lengths"])])
    vi = z["valid_items"]
    cases = Cases(z["valid_users"], [vi[vb[i]:vb[i + 1]] for i in range(len(vb) - 1)], z["valid_targets"])
    return data, cases, bool(z["mask"]), z


def stage_train_prep(ctx: Ctx) -> dict[str, Any]:
    from shopmind.data.store import open_store
    from shopmind.evaluation import protocols
    from shopmind.ranking.train import item_info

    cap = ctx.cfg["train_cap"]
    duck = ctx.result("ingest_duckdb")
    out: dict[str, Any] = {"train_events_cap": cap}
    if duck and not duck["events_capped"] and ctx.events <= cap:
        store_path = ctx.dir / "shop.duckdb"
        out["store"] = "the ingest_duckdb store"
    else:
        store_path = ctx.dir / "train.duckdb"
        store_path.unlink(missing_ok=True)
        with open_store(store_path) as store:
            rep = _ingest(store, ctx, cap, "train store")
        out["store"] = f"train.duckdb: items + the first {rep['events']['rows']:,} events (whole users)"
        out["prep_ingest"] = rep
    out["store_path"] = str(store_path)
    with open_store(store_path, read_only=True) as store:
        t0 = time.perf_counter()
        proto = protocols.build(store, DATASET, "time")
        out["protocol_seconds"] = round(time.perf_counter() - t0, 2)
        log(f"protocol {proto.name}: {proto.train.n_users:,} users x {proto.train.n_items:,} items, "
            f"{out['protocol_seconds']} s")
        ids = json.loads((ctx.dir / "item_vector_ids.json").read_text())
        vec = np.load(ctx.dir / "item_vectors.npy", mmap_mode="r")
        pos = {i: r for r, i in enumerate(ids)}
        rows = np.array([pos.get(str(i), -1) for i in proto.train.item_ids])
        vectors = np.zeros((len(rows), vec.shape[1]), np.float32)
        vectors[rows >= 0] = vec[rows[rows >= 0]]
        np.save(ctx.dir / "train_vectors.npy", vectors)
        frame = proto.frame
        t0 = time.perf_counter()
        info = item_info(store, DATASET, proto.train, frame[frame["split"] == "train"], vectors)
        out["item_info_seconds"] = round(time.perf_counter() - t0, 2)
    _save_cases(ctx.dir / "train_cases.npz", proto.train, proto.valid, proto.mask_history,
                {"popularity": info.popularity, "recent": info.recent, "price": info.price,
                 "first_seen": info.first_seen, "reference_time": np.array([info.reference_time])})
    out.update({"protocol": proto.name, "train_users": proto.train.n_users, "items": proto.train.n_items,
                "train_events": int(sum(len(s) for s in proto.train.sequences)),
                "valid_cases": len(proto.valid.targets), "counts": proto.counts})
    return out


def _model_params(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    from shopmind.ranking.sources import DEFAULT_SOURCES

    params = dict(DEFAULT_SOURCES.get(name, {}))
    if name in NEURAL:
        params["epochs"] = cfg["neural_epochs"]
    return params


def _neural_subset(data: Any, events: int) -> Any:
    from shopmind.data.interactions import Interactions

    lengths = np.array([len(s) for s in data.sequences])
    k = int(np.searchsorted(np.cumsum(lengths), events, "left")) + 1
    return Interactions(data.user_ids[:k], data.item_ids, data.sequences[:k], data.item_groups)


def stage_train_model(ctx: Ctx, name: str) -> dict[str, Any]:
    import torch

    from shopmind.models import MODELS

    data, _, _, _ = _load_cases(ctx.dir / "train_cases.npz")
    vectors = np.load(ctx.dir / "train_vectors.npy")
    params = _model_params(name, ctx.cfg)
    out: dict[str, Any] = {"params": params, "torch_threads": torch.get_num_threads()}
    if name in NEURAL:
        data = _neural_subset(data, ctx.cfg["neural_events"])
        out["note"] = (f"{ctx.cfg['neural_epochs']} epoch(s) on the first {data.n_users:,} training users "
                       f"(>= {ctx.cfg['neural_events']:,} events), no validation")
    out["train_events"] = int(sum(len(s) for s in data.sequences))
    out["users"], out["items"] = data.n_users, data.n_items
    before = vm_status()
    t0 = time.perf_counter()
    model = MODELS[name](**params).fit(data, vectors)
    out["fit_seconds"] = round(time.perf_counter() - t0, 2)
    out["seconds_per_100k_events"] = round(out["fit_seconds"] / max(out["train_events"], 1) * 1e5, 3)
    out["rss_before_fit_mb"] = before.get("VmRSS")
    folder = ctx.dir / "sources" / name
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    model.save(folder)
    out["save_seconds"] = round(time.perf_counter() - t0, 2)
    return out


def stage_assemble(ctx: Ctx) -> dict[str, Any]:
    import scipy.sparse as sp

    from shopmind.data.store import open_store
    from shopmind.models import MODELS
    from shopmind.ranking.features import ItemInfo
    from shopmind.ranking.pipeline import RankingPipeline
    from shopmind.ranking.sources import Sources
    from shopmind.serving import artifact

    data, valid, mask, z = _load_cases(ctx.dir / "train_cases.npz")
    vectors = np.load(ctx.dir / "train_vectors.npy")
    folder = ctx.dir / "sources"
    out: dict[str, Any] = {"untrained": []}
    config = {}
    for name in MODELS_TRAINED:
        params = _model_params(name, ctx.cfg)
        if not (folder / name / "model.json").is_file() or not ctx.result(f"train_{name}"):
            # Training did not finish (memory, time): the same model with 0 epochs, for the latency only.
            shutil.rmtree(folder / name, ignore_errors=True)
            params = {**params, "epochs": 0}
            MODELS[name](**params).fit(_neural_subset(data, 1000), vectors).save(folder / name)
            out["untrained"].append(name)
        config[name] = params
    (folder / "sources.json").write_text(json.dumps({"config": config, "seed": 0}))
    t0 = time.perf_counter()
    sources = Sources.load(folder)
    out["sources_load_seconds"] = round(time.perf_counter() - t0, 2)
    groups = data.item_groups if data.item_groups is not None else sp.csr_matrix((data.n_items, 1), dtype=np.float32)
    info = ItemInfo(z["popularity"], z["recent"], z["price"], z["first_seen"], float(z["reference_time"][0]),
                    vectors, groups)
    pipe = RankingPipeline(sources, info)
    t0 = time.perf_counter()
    rk = None
    try:
        rk = pipe.fit_ranker(valid, mask, max_cases=ctx.cfg["ranker_cases"])
    except (MemoryError, RuntimeError) as e:  # numpy's MemoryError, or torch's RuntimeError "can't allocate memory"
        if isinstance(e, RuntimeError) and "allocate" not in str(e):
            raise
        out["ranker_error"] = f"{type(e).__name__}: {str(e)[:200]} (after {time.perf_counter() - t0:.1f} s)"
    if rk is None:  # outside the except block, so that the failed attempt's arrays are freed
        # fit_ranker scores validation users in batches of 512 x every item per source; when that does not fit, a
        # ranker from one small batch of users whose target is among the 50 most popular items (so that enough
        # targets are candidates) keeps the served path, and its latency, the same. Its quality is not measured.
        from shopmind.evaluation.protocols import Cases

        top = set(np.argsort(-z["popularity"])[:50].tolist())
        sel = np.array([i for i, t in enumerate(valid.targets) if int(t) in top][:ctx.cfg["ranker_fallback_cases"]])
        sub = Cases(valid.users[sel], [valid.histories[i] for i in sel], valid.targets[sel])
        log(f"fit_ranker: {out['ranker_error']}; retrying on {len(sel)} users with a popular target")
        t0 = time.perf_counter()
        rk = pipe.fit_ranker(sub, mask, max_cases=len(sel))
        out["ranker_fallback"] = f"{len(sel)} validation users whose target is among the 50 most popular items"
    out["ranker_seconds"] = round(time.perf_counter() - t0, 2)
    out["ranker"] = {k: rk[k] for k in ("cases", "target_in_candidates", "mean_candidates", "trees")}
    prep = ctx.result("train_prep") or {}
    t0 = time.perf_counter()
    with open_store(prep.get("store_path", ctx.dir / "shop.duckdb"), read_only=True) as store:
        artifact.save(ctx.dir / "artifact", pipe, store, DATASET,
                      {"note": "bench_scale: sources fitted on the train part, no refit, no offline test"})
    out["artifact_save_seconds"] = round(time.perf_counter() - t0, 2)
    out["artifact_bytes"] = sum(p.stat().st_size for p in (ctx.dir / "artifact").rglob("*") if p.is_file())
    return out


def _queries(titles: np.ndarray, n: int, seed: int) -> list[str]:
    """Shopper-like queries cut from catalog titles: 2-3 consecutive words; one in ten with a typo."""
    import re

    rng = np.random.default_rng([seed, 7])
    out: list[str] = []
    while len(out) < n:
        words = [w.lower() for w in re.findall(r"[A-Za-z]{2,}", str(titles[rng.integers(len(titles))]))]
        if len(words) < 2:
            continue
        k = int(rng.integers(2, 4))
        s = int(rng.integers(0, max(1, len(words) - k + 1)))
        q = words[s:s + k]
        if rng.random() < 0.1:
            j = int(np.argmax([len(w) for w in q]))
            if len(q[j]) >= 5:
                c = int(rng.integers(1, len(q[j]) - 1))
                q[j] = q[j][:c] + q[j][c + 1:]
        out.append(" ".join(q))
    return out


def stage_serve(ctx: Ctx) -> dict[str, Any]:
    import gc

    from shopmind.knowledge.encoders import Encoder
    from shopmind.search.engine import SearchEngine
    from shopmind.serving import artifact
    from shopmind.serving.service import Service

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    art = artifact.load(ctx.dir / "artifact")
    out["artifact_load_seconds"] = round(time.perf_counter() - t0, 2)
    state = ctx.dir / "state"
    shutil.rmtree(state, ignore_errors=True)
    t0 = time.perf_counter()
    service = Service(art, state, encode=None)
    out["service_start_seconds"] = round(time.perf_counter() - t0, 2)
    out["rss_after_load_mb"] = vm_status().get("VmRSS")
    s = ctx.settings()
    k = s.knowledge
    enc = Encoder(k.model, "onnx-int8", k.batch_size, k.max_length, k.min_agreement, onnx_dir=s.onnx_dir)
    enc.encode(["warm up"])

    def encode(text: str) -> np.ndarray:
        return enc.encode([text])[0]

    steps: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    engine = SearchEngine.build(service.catalog, service.vectors, encode, service.pipeline.info.popularity,
                                on_step=lambda m: steps.append((m, time.perf_counter())))
    t1 = time.perf_counter()
    marks = [t for _, t in steps] + [t1]
    out["index_build_seconds"] = round(t1 - t0, 2)
    out["index_build_steps"] = {name: round(marks[i + 1] - marks[i], 2) for i, (name, _) in enumerate(steps)}
    out["dense_index"] = engine.dense.kind
    service.search_engine = engine  # what Service(..., encode=...) builds itself
    gc.collect()
    out["rss_after_index_mb"] = vm_status().get("VmRSS")
    n, warm = ctx.cfg["requests"], ctx.cfg["warmup"]
    queries = _queries(service.catalog.titles, n + warm, ctx.cfg["seed"])
    ms: list[float] = []
    cpu: list[float] = []
    for i, q in enumerate(queries):
        t0, c0 = time.perf_counter(), time.process_time()
        service.search(q)
        if i >= warm:
            ms.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
    out["search"] = percentiles(ms)
    out["search"]["cpu"] = percentiles(cpu)
    out["search"]["examples"] = queries[warm:warm + 5]
    rng = np.random.default_rng([ctx.cfg["seed"], 8])
    users = np.array(sorted(u for u, h in art.histories.items() if len(h)), dtype=object)
    pick = rng.choice(len(users), min(len(users), n + warm), replace=False)
    ms, cpu = [], []
    for i, u in enumerate(users[pick]):
        t0, c0 = time.perf_counter(), time.process_time()
        service.recommend(str(u), k=10)
        if i >= warm:
            ms.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
    out["recommend"] = percentiles(ms)
    out["recommend"]["cpu"] = percentiles(cpu)
    out["loadavg_1min_after_requests"] = round(os.getloadavg()[0], 2)
    out["recommend"]["cache"] = dict(service.cache_stats)
    out["sources"] = service.pipeline.sources.names
    out["users_in_artifact"] = len(art.histories)
    service.close()
    return out


STAGES: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "generate": stage_generate, "ingest_duckdb": stage_ingest_duckdb, "ingest_postgres": stage_ingest_postgres,
    "mine": stage_mine, "vectors": stage_vectors, "train_prep": stage_train_prep,
    **{f"train_{m}": (lambda ctx, m=m: stage_train_model(ctx, m)) for m in MODELS_TRAINED},
    "assemble": stage_assemble, "serve": stage_serve}


def child(stage: str, work: Path, label: str, items: int, events: int, cfg: dict[str, Any]) -> int:
    ctx = Ctx(work, label, items, events, cfg)
    ctx.dir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"stage": stage, "ok": False}
    try:
        doc["result"] = STAGES[stage](ctx)
        doc["ok"] = True
    except BaseException as e:  # recorded, the parent goes on
        doc["error"] = f"{type(e).__name__}: {str(e)[:400]}"
        doc["traceback"] = traceback.format_exc()[-3000:]
        log(f"{label} {stage} failed: {doc['error']}")
    doc["vm"] = vm_status()
    (ctx.dir / f"{stage}.json").write_text(json.dumps(doc, indent=1, default=str))
    return 0 if doc["ok"] else 1


# ======================================================================================= the parent
def run_stage(stage: str, work: Path, label: str, items: int, events: int, cfg: dict[str, Any], timeout: float,
              mem_limit_gb: float | None) -> dict[str, Any]:
    out_file = work / label / f"{stage}.json"
    out_file.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--work", str(work), "--label", label,
           "--items", str(items), "--events", str(events), "--cfg", json.dumps(cfg)]

    def limits() -> None:
        if mem_limit_gb:
            cap = int(mem_limit_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    log(f"{label}: {stage} ...")
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=limits)
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - t0 > timeout:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)  # the stage's own process group, started above
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    doc = json.loads(out_file.read_text()) if out_file.is_file() else {"stage": stage, "ok": False}
    if not out_file.is_file():
        why = f"timed out after {timeout:.0f} s" if timed_out else f"exit status {proc.returncode}"
        if proc.returncode == -signal.SIGKILL and not timed_out:
            why += " (SIGKILL: out of memory?)"
        doc["error"] = f"no result: {why}"
    doc.update({"wall_seconds": round(wall, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
                "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                "rc": proc.returncode, "timed_out": timed_out, "mem_limit_gb": mem_limit_gb})
    out_file.write_text(json.dumps(doc, indent=1, default=str))
    state = "ok" if doc.get("ok") else f"FAILED ({doc.get('error')})"
    log(f"{label}: {stage} {state} in {wall:.1f} s, peak RSS {usage.ru_maxrss / 1024:,.0f} MB")
    return doc


def power_fit(xs: list[float], ys: list[float]) -> dict[str, Any] | None:
    """cost = a * x^b by least squares on log-log, plus the local exponent of the last step (the two largest x),
    which extrapolations use: a cost whose growth steepens is not averaged down by the small sizes."""
    pts = [(x, y) for x, y in zip(xs, ys) if x and y and x > 0 and y > 0 and math.isfinite(y)]
    if len(pts) < 2 or len({p[0] for p in pts}) < len(pts):
        # One size, or the same x at two sizes (a capped count while the catalog grew): no slope in x.
        return None
    pts.sort()
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    b, a = np.polyfit(lx, ly, 1)
    pred = a + b * lx
    ss = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1 - float(((ly - pred) ** 2).sum()) / ss if ss > 0 and len(pts) > 2 else None
    last = float((ly[-1] - ly[-2]) / (lx[-1] - lx[-2]))
    return {"b": round(float(b), 3), "a": float(math.exp(a)), "points": len(pts), "r2": None if r2 is None else round(r2, 3),
            "b_last": round(last, 3), "xs": [p[0] for p in pts], "ys": [p[1] for p in pts]}


def extrapolate(f: dict[str, Any], x: float) -> float:
    """From the largest measured point with the last step's exponent."""
    return f["ys"][-1] * (x / f["xs"][-1]) ** f["b_last"]


def get(doc: dict[str, Any] | None, *path: str) -> Any:
    cur: Any = doc
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def series(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """(name, x name, per-size x and y): what is fitted and plotted."""
    def ok(run: dict[str, Any], stage: str) -> dict[str, Any] | None:
        d = run["stages"].get(stage)
        return d.get("result") if d and d.get("ok") else None

    def rss(run: dict[str, Any], stage: str) -> float | None:
        d = run["stages"].get(stage)
        return d.get("peak_rss_mb") if d and d.get("ok") else None

    out = []

    def add(name: str, kind: str, xname: str, fx: Callable, fy: Callable) -> None:
        xs, ys = [], []
        for r in runs:
            x, y = fx(r), fy(r)
            if x is not None and y is not None:
                xs.append(float(x))
                ys.append(float(y))
        out.append({"name": name, "kind": kind, "x": xname, "xs": xs, "ys": ys})

    add("generate s", "time", "events", lambda r: r["events"], lambda r: get(ok(r, "generate"), "seconds"))
    for be in ("duckdb", "postgres"):
        st = f"ingest_{be}"
        add(f"ingest {be} items s", "time", "items", lambda r, st=st: get(ok(r, st), "items", "rows"),
            lambda r, st=st: get(ok(r, st), "items", "seconds"))
        add(f"ingest {be} events s", "time", "events ingested", lambda r, st=st: get(ok(r, st), "events", "rows"),
            lambda r, st=st: get(ok(r, st), "events", "seconds"))
    add("vectors (compose) s", "time", "items", lambda r: r["items"], lambda r: get(ok(r, "vectors"), "compose_seconds"))
    add("protocol build s", "time", "train events", lambda r: get(ok(r, "train_prep"), "train_events"),
        lambda r: get(ok(r, "train_prep"), "protocol_seconds"))
    for m in MODELS_TRAINED:
        xname = "items (fixed events)" if m in NEURAL else "train events"
        fx = (lambda r, m=m: get(ok(r, f"train_{m}"), "items")) if m in NEURAL else \
            (lambda r, m=m: get(ok(r, f"train_{m}"), "train_events"))
        add(f"train {m} s", "time", xname, fx, lambda r, m=m: get(ok(r, f"train_{m}"), "fit_seconds"))
    add("ranker fit s", "time", "items", lambda r: r["items"],
        lambda r: None if get(ok(r, "assemble"), "ranker_fallback") else get(ok(r, "assemble"), "ranker_seconds"))
    add("artifact save s", "time", "items", lambda r: r["items"], lambda r: get(ok(r, "assemble"), "artifact_save_seconds"))
    add("index build s", "time", "items", lambda r: r["items"], lambda r: get(ok(r, "serve"), "index_build_seconds"))
    for ep in ("search", "recommend"):
        for q in ("p50", "p99"):
            add(f"{ep} {q} ms", "latency", "items", lambda r: r["items"], lambda r, ep=ep, q=q: get(ok(r, "serve"), ep, q))
    for st in ("ingest_duckdb", "train_prep", "train_itemknn", "train_sasrec", "train_twotower", "assemble", "serve"):
        add(f"peak RSS {st} MB", "memory", "items", lambda r: r["items"], lambda r, st=st: rss(r, st))
    return out


def fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def cell(run: dict[str, Any], stage: str, *path: str, digits: int = 2) -> str:
    d = run["stages"].get(stage)
    if d is None:
        return "not run"
    if not d.get("ok"):
        return "FAILED"
    return fmt(get(d.get("result"), *path), digits)


def markdown(doc: dict[str, Any]) -> str:
    runs = doc["runs"]
    fit = doc.get("generator_fit") or {}
    head = "| stage | " + " | ".join(f"{r['label']} ({r['items']:,} items, {r['events']:,} events)" for r in runs) + " |"
    sep = "|---|" + "---|" * len(runs)

    def row(name: str, f: Callable[[dict[str, Any]], str]) -> str:
        return f"| {name} | " + " | ".join(f(r) for r in runs) + " |"

    def rss(stage: str) -> Callable[[dict[str, Any]], str]:
        def f(r: dict[str, Any]) -> str:
            d = r["stages"].get(stage)
            if d is None:
                return "not run"
            v = fmt(d.get("peak_rss_mb"), 0)
            return v if d.get("ok") else f"FAILED at {v}"
        return f

    lines = [
        "# Cost growth with catalog and event-log size",
        "",
        f"{doc['timestamp']} on {doc['machine']['cpu']} ({doc['machine']['cpu_count']} CPUs, "
        f"{doc['machine'].get('memory_gb', '?')} GiB), Python {doc['machine']['python']}, commit `{doc['commit']}`.",
        "",
        f"Reproduce (one run from scratch): `{doc['command']}`" + (f" (this file: `{doc['invoked']}`)"
                                                                   if doc.get("invoked") else ""),
        "",
        "## Measured, per size",
        "",
        head, sep,
        row("generate: seconds", lambda r: cell(r, "generate", "seconds")),
        row("generate: users", lambda r: cell(r, "generate", "users")),
        row("ingest DuckDB: items rows/s", lambda r: cell(r, "ingest_duckdb", "items", "rows_per_s", digits=0)),
        row("ingest DuckDB: events ingested", lambda r: cell(r, "ingest_duckdb", "events", "rows")),
        row("ingest DuckDB: events rows/s", lambda r: cell(r, "ingest_duckdb", "events", "rows_per_s", digits=0)),
        row("ingest DuckDB: all rows/s", lambda r: cell(r, "ingest_duckdb", "total", "rows_per_s", digits=0)),
        row("ingest PostgreSQL: items rows/s", lambda r: cell(r, "ingest_postgres", "items", "rows_per_s", digits=0)),
        row("ingest PostgreSQL: events ingested", lambda r: cell(r, "ingest_postgres", "events", "rows")),
        row("ingest PostgreSQL: events rows/s", lambda r: cell(r, "ingest_postgres", "events", "rows_per_s", digits=0)),
        row("ingest PostgreSQL: all rows/s", lambda r: cell(r, "ingest_postgres", "total", "rows_per_s", digits=0)),
        row("item vectors composed: s", lambda r: cell(r, "vectors", "compose_seconds")),
        row("training events (cap)", lambda r: cell(r, "train_prep", "train_events")),
        row("time protocol build: s", lambda r: cell(r, "train_prep", "protocol_seconds")),
        *[row(f"train {m}: s (events)", lambda r, m=m: f"{cell(r, f'train_{m}', 'fit_seconds')} "
              f"({cell(r, f'train_{m}', 'train_events')})") for m in MODELS_TRAINED],
        row("ranker fit: s", lambda r: cell(r, "assemble", "ranker_seconds")),
        row("artifact save: s", lambda r: cell(r, "assemble", "artifact_save_seconds")),
        row("artifact load + service start: s",
            lambda r: f"{cell(r, 'serve', 'artifact_load_seconds')} + {cell(r, 'serve', 'service_start_seconds')}"),
        row("search index build: s", lambda r: cell(r, "serve", "index_build_seconds")),
        row("dense index", lambda r: cell(r, "serve", "dense_index")),
        row("**search p50 / p99 ms**", lambda r: f"{cell(r, 'serve', 'search', 'p50')} / {cell(r, 'serve', 'search', 'p99')}"),
        row("**recommend p50 / p99 ms**",
            lambda r: f"{cell(r, 'serve', 'recommend', 'p50')} / {cell(r, 'serve', 'recommend', 'p99')}"),
        row("search CPU p50 / p99 ms (process time)",
            lambda r: f"{cell(r, 'serve', 'search', 'cpu', 'p50')} / {cell(r, 'serve', 'search', 'cpu', 'p99')}"),
        row("recommend CPU p50 / p99 ms (process time)",
            lambda r: f"{cell(r, 'serve', 'recommend', 'cpu', 'p50')} / {cell(r, 'serve', 'recommend', 'cpu', 'p99')}"),
        row("load average (1 min) during serve", lambda r: fmt(get(r["stages"].get("serve"), "loadavg_1min"))),
        row("serve RSS after load / after index MB",
            lambda r: f"{cell(r, 'serve', 'rss_after_load_mb', digits=0)} / {cell(r, 'serve', 'rss_after_index_mb', digits=0)}"),
        *[row(f"peak RSS {st} MB", rss(st)) for st in ("generate", "ingest_duckdb", "ingest_postgres", "vectors", "train_prep",
                                                       *[f"train_{m}" for m in MODELS_TRAINED], "assemble", "serve")],
        "",
    ]
    def wall(stage: str) -> Callable[[dict[str, Any]], str]:
        def f(r: dict[str, Any]) -> str:
            d = r["stages"].get(stage)
            if d is None:
                return "not run"
            load = d.get("loadavg_1min")
            return (f"{fmt(d.get('wall_seconds'), 1)} / {fmt(d.get('cpu_seconds'), 1)} / "
                    f"{'-' if not load else f'{load[0]:.1f}..{load[1]:.1f}'}" + ("" if d.get("ok") else " FAILED"))
        return f

    lines += ["Whole stage (subprocess, including loading its inputs): wall s / CPU s / 1-min load average at start..end "
              "(the machine is shared: a load above 2 means other work competed for the 2 cores)", "", head, sep,
              *[row(st, wall(st)) for st in STAGES if st != "mine"], ""]
    mine = doc.get("mine") or {}
    mres = mine.get("result") if mine.get("ok") else None
    lines += ["## Mining (size-independent)", ""]
    if mres:
        ray = mres["ray"]
        lines += [f"ONNX int8 encoder: "
                  f"**{mres['texts_per_s']:,.0f} texts/s** on {mres['texts']:,} item texts (mean {mres['mean_chars']:.0f} "
                  f"characters), {mres['seconds']:.1f} s, model load {mres['load_seconds']:.1f} s; peak RSS "
                  f"{mine.get('peak_rss_mb', 0):,.0f} MB. At this rate 1M item texts take "
                  f"{mres['hours_for_1M_items']:.2f} h on this machine (extrapolation).",
                  "", f"Ray, 1 vs 2 workers: {json.dumps(ray) if ray.get('measured') else ray['note']}.", ""]
    else:
        lines += [f"not measured: {mine.get('error', 'not run')}", ""]
    lines += ["## Fitted growth exponents (cost = a * size^b, least squares on log-log)", "",
              "b: over all sizes; b last: between the two largest sizes (what the extrapolation uses). A series whose x "
              "did not change between two sizes (a capped count) gets no exponent.", "",
              "| series | x | b | R² | b last | points (x: y) | at x = 100M (EXTRAPOLATED with b last) |",
              "|---|---|---|---|---|---|---|"]
    for s in doc.get("fits", []):
        f = s.get("fit")
        if not f:
            pts = "; ".join(f"{fmt(x)}: {fmt(y)}" for x, y in zip(s["xs"], s["ys"]))
            lines.append(f"| {s['name']} | {s['x']} | - | - | - | {pts} | - |")
            continue
        pts = "; ".join(f"{x:,.0f}: {fmt(y)}" for x, y in zip(f["xs"], f["ys"]))
        ext = extrapolate(f, 1e8) if s["x"] in ("items", "items (fixed events)") else None
        lines.append(f"| {s['name']} | {s['x']} | **{f['b']:+.2f}** | {fmt(f['r2'])} | {f['b_last']:+.2f} | {pts} | "
                     f"{fmt(ext) if ext is not None else '-'} |")
    lines += ["", "## Goals", ""] + [f"- {g}" for g in doc.get("goals", [])] + [""]
    lines += ["## Extrapolation (not measured)", ""] + [f"- {e}" for e in doc.get("extrapolation", [])] + [""]
    lines += ["## How the data was made", "", doc.get("data_note", ""), "",
              "Fitted on the real files (bench/scale_data.py `fit_real`):", "", "```json", json.dumps(fit, indent=1), "```", "",
              "## Caps and method", ""] + [f"- {c}" for c in doc.get("caps", [])] + [""]
    errors = [(r["label"], st, d.get("error")) for r in runs for st, d in r["stages"].items() if not d.get("ok")]
    if errors:
        lines += ["## Failed stages", ""] + [f"- {lab} {st}: {err}" for lab, st, err in errors] + [""]
    if doc.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in doc["notes"]] + [""]
    analysis = RESULTS / f"{doc['stem']}-analysis.md"
    if analysis.is_file():  # written by hand after a run: what the numbers mean, with the evidence
        lines += ["## Analysis (written after the run; `" + analysis.name + "`)", "", analysis.read_text().strip(), ""]
    return "\n".join(lines)


def goals(doc: dict[str, Any]) -> list[str]:
    runs = doc["runs"]
    big = max(runs, key=lambda r: r["items"]) if runs else None
    out = []
    if big:
        serve = big["stages"].get("serve")
        sres = serve.get("result") if serve and serve.get("ok") else None
        for ep, key in (("search", "search_p99_ms"), ("recommend", "recommend_p99_ms")):
            v = get(sres, ep, "p99")
            goal = GOALS[key]
            out.append(f"{ep} p99 <= {goal:.0f} ms at {big['items']:,} items: " +
                       ("not measured" if v is None else f"{v:.1f} ms -> {'met' if v <= goal else 'NOT met'}"))
    for be, key in (("duckdb", "duckdb_rows_per_s"), ("postgres", "postgres_rows_per_s")):
        vals = [(r["label"], get(r["stages"].get(f"ingest_{be}"), "result", "events", "rows_per_s"),
                 get(r["stages"].get(f"ingest_{be}"), "result", "events", "rows")) for r in runs]
        vals = [v for v in vals if v[1]]
        goal = GOALS[key]
        if vals:
            out.append(f"ingest >= {goal:,.0f} rows/s into {be} (events): " +
                       ", ".join(f"{lab} {v:,.0f} rows/s over {n:,} rows ({'met' if v >= goal else 'NOT met'})"
                                 for lab, v, n in vals))
        else:
            out.append(f"ingest >= {goal:,.0f} rows/s into {be}: not measured")
    mine = doc.get("mine") or {}
    ray = get(mine, "result", "ray")
    if ray and ray.get("measured") and ray.get("speedup_2_vs_1"):
        v = ray["speedup_2_vs_1"]
        out.append(f"Ray mining 2 workers >= 1.6x one: {v:.2f}x -> {'met' if v >= 1.6 else 'NOT met'}")
    else:
        out.append("Ray mining 2 workers >= 1.6x one: not measured here (no src/shopmind/knowledge/ray_encode.py in this "
                   "checkout)")
    mem = [s for s in doc.get("fits", []) if s["kind"] == "memory" and s.get("fit")]
    if mem:
        worst = max(mem, key=lambda s: s["fit"]["b"])
        out.append("memory linear in items (exponent <= ~1): peak-RSS exponents " +
                   ", ".join(f"{s['name'].replace('peak RSS ', '').replace(' MB', '')} {s['fit']['b']:+.2f}" for s in mem) +
                   f"; the largest is {worst['name']} ({worst['fit']['b']:+.2f}). Users in the trained artifact: " +
                   ", ".join(f"{r['label']} {fmt(get(r['stages'].get('train_prep'), 'result', 'train_users'))}"
                             for r in runs) + " (the training cap), so the serving and training stages do not test "
                   "users growing with items beyond that; see the analysis for the batch x items terms")
    return out


def extrapolation(doc: dict[str, Any]) -> list[str]:
    out = []
    fits = {s["name"]: s.get("fit") for s in doc.get("fits", [])}
    for ep in ("search", "recommend"):
        f50, f99 = fits.get(f"{ep} p50 ms"), fits.get(f"{ep} p99 ms")
        if f50 and f99:
            p50, p99 = extrapolate(f50, 1e8), extrapolate(f99, 1e8)
            cores = 10_000 * p50 / 1000
            out.append(f"{ep} at 100M items (EXTRAPOLATED from the 1M point with the last step's exponent): p50 ~{p50:,.0f} ms, "
                       f"p99 ~{p99:,.0f} ms; 10k requests/s at that p50 would need ~{cores:,.0f} cores busy (one "
                       "request per core at a time, no cache), before any memory limit")
    f = fits.get("index build s")
    if f:
        out.append(f"search index build at 100M items (EXTRAPOLATED): ~{extrapolate(f, 1e8) / 3600:,.1f} h")
    for name in ("peak RSS serve MB", "peak RSS assemble MB"):
        f = fits.get(name)
        if f:
            out.append(f"{name} at 100M items (EXTRAPOLATED): ~{extrapolate(f, 1e8) / 1024:,.0f} GB")
    return out


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    groups = [("time", "items / events", "seconds", axes[0][0], lambda s: not s["name"].startswith("ingest")),
              ("time", "rows", "seconds", axes[0][1], lambda s: s["name"].startswith("ingest")),
              ("latency", "items", "ms (sequential, one thread)", axes[1][0], lambda s: True),
              ("memory", "items", "peak RSS MB", axes[1][1], lambda s: True)]
    for kind, xl, yl, ax, keep in groups:
        for s in doc.get("fits", []):
            if s["kind"] != kind or not keep(s) or not s.get("fit"):  # no fit: points in the table only
                continue
            b = s["fit"]["b"] if s.get("fit") else None
            ax.plot(s["xs"], s["ys"], marker="o", label=f"{s['name']} vs {s['x']}" + (f" (b={b:+.2f})" if b is not None else ""))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0][0].set_title("build and training stages")
    axes[0][1].set_title("ingest (DuckDB, PostgreSQL)")
    axes[1][0].set_title("search and recommend latency")
    axes[1][1].set_title("peak memory per stage")
    if "latency" in [s["kind"] for s in doc.get("fits", [])]:
        axes[1][0].axhline(50, color="red", ls="--", lw=1)
    fig.suptitle("shopmind cost growth (log-log; b = fitted exponent)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reproduce_args(argv: list[str] | None) -> list[str]:
    """This invocation's arguments without the ones that only reuse or select earlier stage results."""
    args, out, skip = list(sys.argv[1:] if argv is None else argv), [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("--resume", "--report-only"):
            continue
        elif a == "--stages":
            skip = True
        elif not a.startswith("--stages="):
            out.append(a)
    return out


def data_note(doc: str) -> str:
    """The generator docstring's "how each part is made" section."""
    body = doc.split("How each part is made", 1)[-1].split("Throughput:", 1)[0]
    return body.split("\n", 1)[-1].strip()


def commit() -> str:
    try:
        h = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "bench", ":!bench/results"], cwd=ROOT,
                               capture_output=True,
                               text=True).stdout.strip()
        return h + ("+uncommitted changes" if dirty else "")
    except OSError:
        return "unknown"


def write_all(doc: dict[str, Any]) -> None:
    doc["fits"] = []
    for s in series(doc["runs"]):
        s["fit"] = power_fit(s["xs"], s["ys"])
        doc["fits"].append(s)
    doc["goals"] = goals(doc)
    doc["extrapolation"] = extrapolation(doc)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = doc["stem"]
    (RESULTS / f"{stem}.json.tmp").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (RESULTS / f"{stem}.json.tmp").replace(RESULTS / f"{stem}.json")
    (RESULTS / f"{stem}.md.tmp").write_text(markdown(doc))
    (RESULTS / f"{stem}.md.tmp").replace(RESULTS / f"{stem}.md")
    try:
        plot(doc, RESULTS / f"{stem}.png")
    except Exception as e:  # a plot must not lose the numbers
        log(f"plot failed: {e}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="ITEMS:EVENTS,... (k and M suffixes)")
    p.add_argument("--max-size", default=None, help="skip sizes with more items than this (e.g. 100k)")
    p.add_argument("--work", type=Path, default=Path("/tmp/shopmind-scale"), help="scratch folder (large at 1M)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stages", default=",".join(STAGES), help="stages to run (comma-separated)")
    p.add_argument("--resume", action="store_true", help="keep stage results already in the work folder")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: rewrite the results from the stage files in the work folder")
    p.add_argument("--ingest-events-cap", type=parse_count, default=None, help="events ingested into DuckDB (default all)")
    p.add_argument("--pg-events-cap", type=parse_count, default=2_000_000, help="events ingested into PostgreSQL")
    p.add_argument("--train-events-cap", type=parse_count, default=1_000_000, help="events in the training store")
    p.add_argument("--neural-events", type=parse_count, default=100_000, help="training events the neural models see")
    p.add_argument("--neural-epochs", type=int, default=1)
    p.add_argument("--neural-timeout", type=float, default=600.0, help="seconds per neural model")
    p.add_argument("--mem-limit-gb", type=float, default=18.0, help="address-space limit of the training stages")
    p.add_argument("--ranker-cases", type=int, default=2000)
    p.add_argument("--ranker-fallback-cases", type=int, default=200,
                   help="validation users for the ranker when --ranker-cases runs out of memory")
    p.add_argument("--requests", type=int, default=300, help="measured requests per endpoint (after 10 warm-up)")
    p.add_argument("--mine-texts", type=int, default=5000)
    p.add_argument("--stage-timeout", type=float, default=3600.0)
    p.add_argument("--out", default="scale", help="result file stem in bench/results")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--label", help=argparse.SUPPRESS)
    p.add_argument("--items", type=int, help=argparse.SUPPRESS)
    p.add_argument("--events", type=int, help=argparse.SUPPRESS)
    p.add_argument("--cfg", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args.child, args.work, args.label, args.items, args.events, json.loads(args.cfg))

    data_dir = os.environ.get("SHOPMIND_DATA_DIR")
    if not data_dir:
        sys.exit("SHOPMIND_DATA_DIR is not set: point it at the real datasets (e.g. ../shared/data)")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    sizes = parse_sizes(args.sizes)
    if args.max_size:
        sizes = [s for s in sizes if s[1] <= parse_count(args.max_size)]
    wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(wanted) - set(STAGES)
    if unknown:
        sys.exit(f"unknown stage(s) {', '.join(sorted(unknown))}; known: {', '.join(STAGES)}")
    cfg = {"seed": args.seed, "data_dir": str(Path(data_dir).resolve()), "ingest_cap": args.ingest_events_cap,
           "pg_cap": args.pg_events_cap, "train_cap": args.train_events_cap, "neural_events": args.neural_events,
           "neural_epochs": args.neural_epochs, "ranker_cases": args.ranker_cases, "requests": args.requests,
           "warmup": 10, "mine_texts": args.mine_texts, "ranker_fallback_cases": args.ranker_fallback_cases}
    args.work.mkdir(parents=True, exist_ok=True)
    info = machine()
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    import scale_data

    doc: dict[str, Any] = {
        "stem": args.out, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": info,
        "commit": commit(), "command": "SHOPMIND_DATA_DIR=../shared/data HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE "
                                      + command_line("bench_scale.py", reproduce_args(argv)),
        "invoked": command_line("bench_scale.py", argv),
        "config": cfg, "generator_fit": scale_data.fit_real(data_dir), "data_note": data_note(scale_data.__doc__ or ""),
        "runs": [], "mine": None,
        "caps": [
            "DuckDB ingest: " + ("all events" if args.ingest_events_cap is None else
                                 f"the first {args.ingest_events_cap:,} events (whole users)")
            + "; items always all. Rows/s = rows read / wall seconds of `Ingestor.run` "
            "(validation, ids, rejects, "
            "one transaction per chunk), chunk size from the settings.",
            f"PostgreSQL ingest: items all, events capped at the first {args.pg_events_cap:,} (whole users).",
            f"Training: a store with the items and the first {args.train_events_cap:,} events (whole users) when a "
            "size has more; the time protocol (`protocols.build(..., 'time')`) splits it.",
            f"pop and itemknn: fitted on the whole training part. twotower and sasrec: {args.neural_epochs} epoch(s), "
            f"no validation/early stopping, on the first users covering {args.neural_events:,} training events, "
            f"limited to {args.neural_timeout:.0f} s and an address space of {args.mem_limit_gb:.0f} GiB; a neural model "
            "that did not finish is served untrained (0 epochs) so that the latency stays comparable (said per size).",
            f"Ranker: LambdaRank on {args.ranker_cases:,} validation users; no refit on train + valid and no offline "
            "test (that is `shopmind train`'s evaluation, not serving cost).",
            f"Latency: {args.requests} requests per endpoint after 10 warm-up, one after the other in one thread, "
            "through `Service.search` / `Service.recommend` (k=10, defaults: diversity re-ranking, exploration, "
            "explanations), each recommend for a different user with a history (no cache hits). Search queries: "
            "2-3 consecutive words of random catalog titles, one in ten with a dropped letter.",
            "Item vectors: composed from real encoder vectors (see the module docstring), not encoded per item.",
            "Peak memory: ru_maxrss of each stage's process (wait4), which includes loading its inputs.",
        ],
        "notes": [],
    }
    for label, items, events in sizes:
        run = {"label": label, "items": items, "events": events, "stages": {}}
        doc["runs"].append(run)
        for stage in STAGES:
            if stage == "mine":
                continue
            prev = args.work / label / f"{stage}.json"
            if args.report_only or stage not in wanted:
                if prev.is_file():
                    run["stages"][stage] = json.loads(prev.read_text())
            elif args.resume and prev.is_file() and json.loads(prev.read_text()).get("ok"):
                run["stages"][stage] = json.loads(prev.read_text())
                log(f"{label}: {stage} kept from an earlier run")
            else:
                neural = stage in {f"train_{m}" for m in NEURAL}
                timeout = args.neural_timeout if neural else args.stage_timeout
                limit = args.mem_limit_gb if stage.startswith("train_") or stage == "assemble" else None
                run["stages"][stage] = run_stage(stage, args.work, label, items, events, cfg, timeout, limit)
            if stage == "generate" and doc["mine"] is None:
                prev = args.work / label / "mine.json"
                old = json.loads(prev.read_text()) if prev.is_file() else None
                if old and (args.report_only or "mine" not in wanted or (args.resume and old.get("ok"))):
                    doc["mine"] = old
                elif "mine" in wanted and not args.report_only:
                    doc["mine"] = run_stage("mine", args.work, label, items, events, cfg, args.stage_timeout, None)
            if not args.report_only:
                write_all(doc)
    write_all(doc)
    print((RESULTS / f"{args.out}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
