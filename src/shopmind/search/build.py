"""Builds a SearchEngine for a dataset of the store: catalog, item vectors (through the embedding cache, so
a mined or previously indexed catalog is not encoded again), popularity from events, the query encoder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import Settings
from ..data.store import Store
from ..knowledge.encoders import Encoder
from ..knowledge.tables import EmbeddingCache, ensure_tables
from ..knowledge.text import ItemTextTemplate
from .catalog import Catalog
from .engine import Judgments, SearchEngine
from .ltr import LTRRanker

ProgressFn = Callable[[str, int, int], None]


def item_texts(store: Store, catalog: Catalog, dataset: str, template: str) -> list[str]:
    """The texts knowledge mining embedded (table item_texts), else the template without review aspects."""
    ensure_tables(store)
    mined = dict(store.con.execute("SELECT item_id, text FROM item_texts WHERE dataset = ?", [dataset]).fetchall())
    tpl = ItemTextTemplate(template)
    records = catalog.frame.to_dict("records")
    return [mined.get(str(r["item_id"])) or tpl.render(r, "") for r in records]


def load_engine(store: Store, settings: Settings, dataset: str, encoder: Encoder | None = None,
                on_step: ProgressFn | None = None, **kwargs: Any) -> tuple[SearchEngine, dict[str, Any]]:
    """(engine, build report with timings and how many item texts had to be encoded)."""
    step = on_step or (lambda name, done, total: None)
    k = settings.knowledge
    t0 = time.perf_counter()
    step("catalog", 0, 0)
    catalog = Catalog.load(store, dataset)
    if encoder is None:  # a fine-tuned encoder saved with the tuning replaces the configured model
        saved = _saved_tuning(settings, dataset).get("encoder")
        model = saved if saved and Path(saved).is_dir() else k.model
        encoder = _encoder(settings, model)
    texts = item_texts(store, catalog, dataset, k.item_template)
    t1 = time.perf_counter()
    step("item vectors", 0, len(texts))
    vectors, encoded = EmbeddingCache(store, k.dtype).encode(encoder, texts, lambda d, t: step("item vectors", d, t))
    t2 = time.perf_counter()
    pop = dict(store.con.execute("SELECT item_id, count(*) FROM events WHERE dataset = ? AND item_id IS NOT NULL "
                                 "GROUP BY item_id", [dataset]).fetchall())
    popularity = np.array([pop.get(i, 0) for i in catalog.item_ids], np.float32)

    def encode(text: str) -> np.ndarray:
        return encoder.encode([text])[0]

    engine = SearchEngine.build(catalog, vectors, encode, popularity, on_step=lambda m: step(m, 0, 0),
                                encode_batch=lambda texts: encoder.encode(texts), **kwargs)
    if Path(encoder.model).is_dir() and encoder.model != k.model:
        engine.encoder_path = encoder.model
    tuned = load_tuning(engine, settings, dataset)
    t3 = time.perf_counter()
    report = {"items": len(catalog), "encoded": encoded, "dense_index": engine.dense.kind, "tuning": tuned,
              "encoder": encoder.describe(),
              "seconds": {"catalog": round(t1 - t0, 2), "vectors": round(t2 - t1, 2), "indexes": round(t3 - t2, 2),
                          "total": round(t3 - t0, 2)}}
    return engine, report


def _encoder(settings: Settings, model: str) -> Encoder:
    k = settings.knowledge
    return Encoder(model, k.backend, k.batch_size, k.max_length, k.min_agreement, onnx_dir=settings.onnx_dir)


def finetune_encoder(store: Store, settings: Settings, dataset: str, engine: SearchEngine, train: Judgments,
                     steps: int = 300, on_step: ProgressFn | None = None, **params: Any) -> dict[str, Any]:
    """Fine-tune the encoder on the training judgments (knowledge.finetune), re-encode the catalog with it
    and switch the engine's dense leg to it. The model folder is named by a hash of the base model, the
    pairs and the parameters, so the same training is done once; vectors go through the embedding cache."""
    from ..knowledge.finetune import finetune_encoder as finetune, fingerprint

    step = on_step or (lambda name, done, total: None)
    k = settings.knowledge
    texts = item_texts(store, engine.catalog, dataset, k.item_template)
    pairs = {q: [(texts[engine.catalog.index[i]], float(g) - 1.0) for i, g in grades.items() if i in engine.catalog.index]
             for q, grades in train.items()}
    params = {"steps": steps, **params}
    folder = tuning_dir(settings, dataset) / f"encoder-{fingerprint(k.model, pairs, **params)}"
    t0 = time.perf_counter()
    if (folder / "shopmind_finetune.json").is_file():
        report = {**json.loads((folder / "shopmind_finetune.json").read_text()), "reused": True}
    else:
        folder.parent.mkdir(parents=True, exist_ok=True)
        report = finetune(k.model, pairs, folder, progress=lambda d, t, loss: step(f"fine-tuning (loss {loss:.3f})", d, t),
                          **params)
    t1 = time.perf_counter()
    encoder = _encoder(settings, str(folder))
    step("item vectors (fine-tuned)", 0, len(texts))
    vectors, encoded = EmbeddingCache(store, k.dtype).encode(encoder, texts,
                                                             lambda d, t: step("item vectors (fine-tuned)", d, t))
    engine.use_vectors(vectors, lambda text: encoder.encode([text])[0], lambda batch: encoder.encode(batch))
    engine.encoder_path = str(folder)
    return {**report, "folder": str(folder), "encoded": encoded, "encoder": encoder.describe(),
            "encode_seconds": round(time.perf_counter() - t1, 1), "wall_seconds": round(time.perf_counter() - t0, 1)}


def _saved_tuning(settings: Settings, dataset: str) -> dict[str, Any]:
    path = tuning_dir(settings, dataset) / "search.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def tuning_dir(settings: Settings, dataset: str) -> Path:
    return settings.store.path.with_name(settings.store.path.name + ".search") / dataset


def save_tuning(engine: SearchEngine, settings: Settings, dataset: str) -> Path:
    """Keep what was learned from the judgments (BM25 k1/b, fusion weight, ranker, search-log priors)."""
    folder = tuning_dir(settings, dataset)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "search.json").write_text(json.dumps({"k1": engine.lexical.k1, "b": engine.lexical.b,
                                                    "alpha": engine.alpha, "ranker": engine.ranker is not None,
                                                    "encoder": engine.encoder_path}))
    if engine.ranker is not None:
        engine.ranker.save(folder / "ranker.txt")
    if engine.log_priors is not None:
        np.savez(folder / "priors.npz", item_ids=engine.catalog.item_ids.astype(str), count=engine.log_priors[0],
                 mean=engine.log_priors[1])
    return folder


def load_tuning(engine: SearchEngine, settings: Settings, dataset: str) -> dict[str, Any] | None:
    """Apply a saved tuning when one exists for this dataset; returns it (None when there is none)."""
    folder = tuning_dir(settings, dataset)
    if not (folder / "search.json").is_file():
        return None
    tuned = json.loads((folder / "search.json").read_text())
    engine.lexical.reindex(tuned["k1"], tuned["b"])
    engine.alpha = tuned["alpha"]
    if tuned.get("ranker") and (folder / "ranker.txt").is_file():
        engine.ranker = LTRRanker.load(folder / "ranker.txt")
    if (folder / "priors.npz").is_file():
        p = np.load(folder / "priors.npz", allow_pickle=False)
        index = {str(i): r for r, i in enumerate(p["item_ids"])}
        count = np.zeros(len(engine.catalog), np.float32)
        mean = np.zeros(len(engine.catalog), np.float32)
        for r, item in enumerate(engine.catalog.item_ids):
            src = index.get(str(item))
            if src is not None:
                count[r], mean[r] = p["count"][src], p["mean"][src]
        engine.log_priors = (count, mean)
    return tuned
