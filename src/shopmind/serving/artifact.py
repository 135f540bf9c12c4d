"""The trained artifact `shopmind train` writes and `shopmind serve` loads: everything serving needs, with
no store connection at run time (the store stays free for ingestion while a server runs).

    manifest.json      dataset, creation time, versions, what was trained, the evaluation summary
    sources/<name>/    the candidate models (refitted on train + valid)
    ranker.txt         the LightGBM ranker
    pipeline.json      candidate depth and blend weights
    items.parquet      the catalog in model row order (fields, category path, knowledge card)
    item_info.npz      popularity, prices, first-seen times and L2-normalised LM vectors per item row
    users.npz          every user's item history (all events, in order) and purchases
    search.json        search tuning (BM25 k1/b, fusion weight) when judgments were learned from
    evaluation.{json,md}
A folder is written as <dir>.tmp and renamed when complete, so a server never loads half an artifact.
`forget_user` rewrites, file by file (atomically), every file that names a user.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.forget import purge_forgotten, replace_file
from ..data.store import Store
from ..data.tombstones import Tombstones
from ..evaluation.timesplit import EXCLUDED_TYPES
from ..ranking.features import ItemInfo
from ..ranking.pipeline import RankingPipeline
from ..ranking.sources import Sources
from ..search.catalog import Catalog
from ..search.ltr import LTRRanker
from .shipper import FORMAT as LOG_FORMAT  # the ingest-run format of events shipped from the serving log

FORMAT = 1
PURCHASE_TYPES = ("purchase",)


class ArtifactError(RuntimeError):
    """A folder that is not a complete shopmind artifact."""


@dataclass
class Artifact:
    folder: Path
    manifest: dict[str, Any]
    pipeline: RankingPipeline
    catalog: Catalog
    cards: list[dict[str, Any]]
    histories: dict[str, list[int]]
    purchases: dict[str, set[int]]
    search_tuning: dict[str, Any] | None

    @property
    def dataset(self) -> str:
        return str(self.manifest["dataset"])

    @property
    def item_ids(self) -> np.ndarray:
        return self.catalog.item_ids


def _catalog_frame(store: Store, dataset: str, item_ids: np.ndarray) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    try:
        cat = Catalog.load(store, dataset).frame.set_index("item_id")
    except ValueError:  # events without a catalog (reviews published without metadata): ids only
        cat = pd.DataFrame({"item_id": [str(i) for i in item_ids], "title": None, "description": None,
                            "brand": None, "price": np.nan, "path": [[] for _ in item_ids],
                            "attrs": [{} for _ in item_ids]}).set_index("item_id")
    tables = store.tables()
    cards = dict(store.con.execute("SELECT item_id, card FROM knowledge_cards WHERE dataset = ?", [dataset]).fetchall()) \
        if "knowledge_cards" in tables else {}
    frame = cat.reindex([str(i) for i in item_ids])
    frame.index.name = "item_id"
    frame = frame.reset_index()
    frame["path"] = [p if isinstance(p, list) else [] for p in frame["path"]]
    frame["attrs"] = [a if isinstance(a, dict) else {} for a in frame["attrs"]]
    card_list = [json.loads(cards[i]) if i in cards else {} for i in frame["item_id"]]
    return frame, card_list


def save(folder: str | Path, pipeline: RankingPipeline, store: Store, dataset: str, report: dict[str, Any],
         search_tuning: dict[str, Any] | None = None, encoder: dict[str, Any] | None = None,
         extra: dict[str, Any] | None = None) -> Path:
    """Write the artifact. encoder: the model (and max_length) the item vectors came from, so that the
    server encodes queries with the same one; extra: more manifest entries (e.g. the trainer's run)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    data = pipeline.sources.data
    pipeline.sources.save(tmp / "sources")
    if pipeline.ranker is not None:
        pipeline.ranker.save(tmp / "ranker.txt")
    (tmp / "pipeline.json").write_text(json.dumps({"per_source": pipeline.per_source, "depth": pipeline.depth,
                                                   "blend": pipeline.blend}))
    frame, cards = _catalog_frame(store, dataset, data.item_ids)
    out = frame[["item_id", "title", "description", "brand", "price"]].copy()
    out["path"] = [json.dumps(p) for p in frame["path"]]
    out["attrs"] = [json.dumps(a) for a in frame["attrs"]]
    out["card"] = [json.dumps(c) for c in cards]
    out.to_parquet(tmp / "items.parquet", index=False)
    info = pipeline.info
    groups = info.groups if info.groups is not None else sp.csr_matrix((info.n_items, 1), dtype=np.float32)
    np.savez(tmp / "item_info.npz", popularity=info.popularity, recent=info.recent, price=info.price,
             first_seen=info.first_seen, reference_time=np.array([info.reference_time]), vectors=info.vectors,
             g_data=groups.data, g_indices=groups.indices, g_indptr=groups.indptr, g_shape=np.array(groups.shape))
    index = {str(i): r for r, i in enumerate(data.item_ids)}
    # The served base histories leave out events that came from the serving log (shipped by the shipper):
    # the server replays its whole log on top of them at start, so they would count twice.
    events = store.table("SELECT user_id, item_id, type FROM events WHERE dataset = ? AND item_id IS NOT NULL "
                         "AND run_id NOT IN (SELECT run_id FROM ingest_runs WHERE format = ?) "
                         "AND type <> ALL(?) ORDER BY user_id, timestamp NULLS FIRST, seq NULLS FIRST, "
                         "event_id", [dataset, LOG_FORMAT, list(EXCLUDED_TYPES)])
    newest = store.con.execute("SELECT max(timestamp), count(*) FROM events WHERE dataset = ?", [dataset]).fetchone()
    events = events[events["item_id"].astype(str).isin(index)]
    rows = events["item_id"].astype(str).map(index).to_numpy(np.int64)
    users, starts = np.unique(events["user_id"].astype(str).to_numpy(), return_index=True)
    bought = events["type"].isin(PURCHASE_TYPES).to_numpy()
    np.savez(tmp / "users.npz", users=users.astype(str), starts=np.append(starts, len(events)), rows=rows, bought=bought)
    if search_tuning:
        (tmp / "search.json").write_text(json.dumps(search_tuning))
    (tmp / "evaluation.json").write_text(json.dumps(report, indent=1, default=str))
    from ..ranking.train import markdown

    if report.get("results") and "dataset" in report:  # a trainer's cheap run has no offline test table
        (tmp / "evaluation.md").write_text(markdown(report))
    from .. import __version__

    manifest = {"format": FORMAT, "dataset": dataset, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "shopmind": __version__, "items": int(len(data.item_ids)), "users": int(len(users)),
                "events": int(len(events)), "event_types": {str(k): int(v) for k, v in events["type"].value_counts().items()},
                "through": {"newest": newest[0].replace(tzinfo=timezone.utc).timestamp() if newest[0] else None,
                            "store_events": int(newest[1])},  # what the store held when it was saved
                "sources": pipeline.sources.names, "ranker": pipeline.ranker is not None,
                "summary": {n: {k: round(v, 4) for k, v in r.items() if k in ("recall@10", "ndcg@10", "recall@50")}
                            for n, r in report.get("results", {}).items()}}
    manifest.update(extra or {})
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if folder.exists():
        old = folder.with_name(folder.name + f".old-{int(time.time())}")
        folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(folder)
    return folder


def load(folder: str | Path) -> Artifact:
    folder = Path(folder)
    if not (folder / "manifest.json").is_file():
        raise ArtifactError(f"{folder}: not a shopmind artifact (no manifest.json; create one with `shopmind train`)")
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{folder}: artifact format {manifest.get('format')} is not {FORMAT}; train it again")
    sources = Sources.load(folder / "sources")
    z = np.load(folder / "item_info.npz", allow_pickle=False)
    groups = sp.csr_matrix((z["g_data"], z["g_indices"], z["g_indptr"]), shape=tuple(z["g_shape"]))
    info = ItemInfo(z["popularity"], z["recent"], z["price"], z["first_seen"], float(z["reference_time"][0]),
                    z["vectors"], groups)
    ranker = LTRRanker.load(folder / "ranker.txt") if (folder / "ranker.txt").is_file() else None
    p = json.loads((folder / "pipeline.json").read_text())
    pipeline = RankingPipeline(sources, info, ranker, per_source=p["per_source"], depth=p["depth"], blend=p["blend"])
    items = pd.read_parquet(folder / "items.parquet")
    items["path"] = [json.loads(s) for s in items["path"]]
    items["attrs"] = [json.loads(s) for s in items["attrs"]]
    cards = [json.loads(s) for s in items.pop("card")]
    catalog = Catalog(items)
    if list(catalog.item_ids) != [str(i) for i in sources.data.item_ids]:
        raise ArtifactError(f"{folder}: items.parquet does not match the models' item index")
    u = np.load(folder / "users.npz", allow_pickle=False)
    histories, purchases = {}, {}
    starts, rows, bought = u["starts"], u["rows"], u["bought"]
    for i, user in enumerate(u["users"]):
        a, b = starts[i], starts[i + 1]
        histories[str(user)] = rows[a:b].tolist()
        if bought[a:b].any():
            purchases[str(user)] = set(rows[a:b][bought[a:b]].tolist())
    tuning = json.loads((folder / "search.json").read_text()) if (folder / "search.json").is_file() else None
    return Artifact(folder, manifest, pipeline, catalog, cards, histories, purchases, tuning)


def train(store: Store, settings: Any, dataset: str, folder: str | Path, sources: dict[str, dict[str, Any]] | None = None,
          protocol: str | None = None, on_step: Any = None, ray: str | None = None,
          ray_workers: int = 2) -> tuple[Path, dict[str, Any]]:
    """Train the pipeline on a dataset of the store (mined first when its item vectors are missing) and
    save the artifact; returns (folder, training report). Settings: shopmind.config.Settings.
    ray: a Ray cluster address: the mining (if needed) encodes there, the neural sources train on Ray Train.
    Rows of tombstoned users still in the store are deleted first: a forget that found the store locked by
    another process (`store: "pending"`) is applied here, or by the next ingest, so no train learns from them."""
    from ..evaluation import protocols
    from ..knowledge.mine import Miner, item_vectors_for
    from ..ranking.train import train_pipeline
    from ..search.build import tuning_dir

    purge_forgotten(store, Tombstones(settings.privacy_dir), dataset)
    knowledge = settings.knowledge_dir / dataset
    if not (knowledge / "item_vectors.npy").is_file():
        Miner(store, settings.knowledge, settings.knowledge_dir, onnx_dir=settings.onnx_dir, ray=ray).run(dataset)
    proto = protocols.build(store, dataset, protocol)
    vectors = item_vectors_for(knowledge, proto.full.item_ids)
    pipeline, report = train_pipeline(store, dataset, proto, vectors, sources, on_step=on_step, ray=ray,
                                      ray_workers=ray_workers)
    tuned = tuning_dir(settings, dataset) / "search.json"
    search_tuning = json.loads(tuned.read_text()) if tuned.is_file() else None
    if search_tuning and search_tuning.get("encoder"):  # tuned with other (fine-tuned) vectors: keep BM25's only
        search_tuning = {k: v for k, v in search_tuning.items() if k in ("k1", "b")}
    encoder = {"model": settings.knowledge.model, "max_length": settings.knowledge.max_length}
    report["encoder"] = encoder
    saved = save(folder, pipeline, store, dataset, report, search_tuning, encoder)
    forget_tombstoned(saved, Tombstones(settings.privacy_dir), dataset)  # users forgotten while it trained
    return saved, report



def _rewrite_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    replace_file(path, lambda f: f.write(buf.getvalue()))


def _forget_in_model(path: Path, forms: set[str]) -> int:
    """Drop the users from one saved model's arrays.npz: its user id list, their sequences and every per-user
    array (`user_*` with one row per user, e.g. ALS/BPR user_factors, LightGCN user_vectors)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    users = arrays["user_ids"].astype(str)
    keep = ~np.isin(users, list(forms))
    if keep.all():
        return 0
    lengths = arrays["seq_lengths"]
    arrays["seq_items"] = arrays["seq_items"][np.repeat(keep, lengths)]
    arrays["seq_lengths"] = lengths[keep]
    for name, arr in arrays.items():
        if name.startswith("user") and arr.ndim and arr.shape[0] == len(users):
            arrays[name] = arr[keep]
    _rewrite_npz(path, arrays)
    return int((~keep).sum())


def forget_user(folder: str | Path, user_id: str, forms: Sequence[str] = ()) -> bool:
    """Remove the user (and the other stored `forms` of the id, e.g. its ingest hash) from an artifact:
    users.npz and every source model's user index, sequences and per-user arrays, each file rewritten
    atomically; `load(folder)` still works. Returns whether anything named the user."""
    folder, found = Path(folder), False
    wanted = {user_id, *forms}
    path = folder / "users.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            users, starts, rows, bought = z["users"].astype(str), z["starts"], z["rows"], z["bought"]
        keep = ~np.isin(users, list(wanted))
        if not keep.all():
            found = True
            per_row = np.repeat(keep, np.diff(starts))
            lengths = np.diff(starts)[keep]
            _rewrite_npz(path, {"users": users[keep], "starts": np.concatenate([[0], np.cumsum(lengths)]),
                                "rows": rows[per_row], "bought": bought[per_row]})
            manifest_path = folder / "manifest.json"
            manifest = json.loads(manifest_path.read_text())
            manifest.update(users=int(keep.sum()), events=int(per_row.sum()))
            data = json.dumps(manifest, indent=1).encode()
            replace_file(manifest_path, lambda f: f.write(data))
    for model in sorted((folder / "sources").rglob("arrays.npz")):
        found = _forget_in_model(model, wanted) > 0 or found
    return found


def forget_tombstoned(folder: str | Path, tombstones: Tombstones, dataset: str) -> int:
    """Remove every tombstoned user from the artifact (found by the digest of the stored id); returns how many."""
    wanted = tombstones.digests(dataset)
    path = Path(folder) / "users.npz"
    if not wanted or not path.is_file():
        return 0
    with np.load(path, allow_pickle=False) as z:
        gone = [str(u) for u in z["users"] if tombstones.digest(str(u)) in wanted]
    if gone:
        forget_user(folder, gone[0], gone[1:])
    return len(gone)


def scrub_review_snippets(folder: str | Path, texts: Sequence[str]) -> int:
    """Blank the knowledge-card snippets in items.parquet quoted from `texts` (a forgotten user's reviews)."""
    from ..knowledge.forget import scrub_card

    path = Path(folder) / "items.parquet"
    if not texts or not path.is_file():
        return 0
    items = pd.read_parquet(path)
    cards = [json.loads(c) for c in items["card"]]
    changed = [scrub_card(c, texts) for c in cards]
    if any(changed):
        items["card"] = [json.dumps(c) for c in cards]
        buf = io.BytesIO()
        items.to_parquet(buf, index=False)
        replace_file(path, lambda f: f.write(buf.getvalue()))
    return sum(changed)
