"""`shopmind mine`: compute and store all knowledge of one dataset, step by step, with timings.

Order: reviews -> item texts (with mined aspects) -> embeddings (cached) -> TF-IDF and keywords ->
knowledge cards -> user profiles and user TF-IDF -> item graph -> artifacts and a short report.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from ..config import KnowledgeSettings
from ..data.store import Store
from ..errors import ShopmindError
from .encoders import Encoder
from .graph import co_interaction_edges, next_item_edges, relation_edges, taxonomy
from .profiles import build_profiles, event_weight
from .reviews import ItemReviews, mine_reviews
from .tables import EmbeddingCache, ensure_tables, replace_rows, text_hash
from .text import ItemTextTemplate, fit_tfidf, keywords

# (step name, done, total): total 0 means "no progress bar, just a step".
StepFn = Callable[[str, int, int], None]


class MiningError(ShopmindError, RuntimeError):
    """The dataset cannot be mined (not in the store, no items, ...)."""


@dataclass
class MiningReport:
    """What `mine` computed. Field names are stable: they are the `mine --json` output."""

    dataset: str
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    encoder: dict[str, Any] = field(default_factory=dict)
    artifacts: str = ""
    examples: list[dict[str, Any]] = field(default_factory=list)
    neighbours: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _categories(row: dict[str, Any]) -> list[str]:
    """The item's category path, or the flattened category text a source gives (UniSRec), as one level."""
    cats = row.get("categories")
    if isinstance(cats, (list, tuple, np.ndarray)) and len(cats):
        return [str(c) for c in cats]
    fields = row.get("text_fields")
    text = json.loads(fields).get("category_text") if isinstance(fields, str) else None
    return [text] if text else []


def price_bands(prices: pd.Series, leaf: pd.Series, min_group: int = 10) -> pd.Series:
    """budget / mid / premium by price tercile within the leaf category (or the dataset when it is small)."""
    bands = pd.Series(index=prices.index, dtype=object)
    known = prices.notna()
    if known.sum() == 0:
        return bands

    def cut(p: pd.Series) -> pd.Series:
        lo, hi = p.quantile(1 / 3), p.quantile(2 / 3)
        return pd.Series(np.where(p <= lo, "budget", np.where(p <= hi, "mid", "premium")), index=p.index)

    overall = cut(prices[known])
    bands[known] = overall
    for _, grp in prices[known].groupby(leaf[known]):
        if len(grp) >= min_group:
            bands[grp.index] = cut(grp)
    return bands


class Miner:
    """Runs the knowledge steps for one dataset of a store."""

    def __init__(self, store: Store, settings: KnowledgeSettings, out_dir: Path, encoder: Encoder | None = None,
                 on_step: StepFn | None = None, onnx_dir: Path | None = None, ray: str | None = None,
                 ray_workers: int | None = None) -> None:
        """ray: a Ray cluster address (auto, local, HOST:PORT) to encode on, with `ray_workers` actors (default:
        one per CPU of the cluster); everything else runs here, as without it."""
        self.store = store
        self.cfg = settings
        self.out_dir = out_dir
        self.encoder = encoder or Encoder(settings.model, settings.backend, settings.batch_size, settings.max_length,
                                          settings.min_agreement, onnx_dir=onnx_dir or settings.onnx_dir)
        if ray:
            from .ray_encode import RayEncoder

            self.encoder = RayEncoder(self.encoder, ray, ray_workers)  # type: ignore[assignment]
        self.on_step = on_step or (lambda name, done, total: None)
        self.cache = EmbeddingCache(store, settings.dtype)
        ensure_tables(store)

    @contextmanager
    def _step(self, report: MiningReport, name: str) -> Iterator[None]:
        self.on_step(name, 0, 0)
        t0 = time.perf_counter()
        yield
        report.steps[name] = round(time.perf_counter() - t0, 3)

    def _progress(self, name: str) -> Callable[[int, int], None]:
        return lambda done, total: self.on_step(name, done, total)

    def _embed(self, texts: list[str], step: str) -> np.ndarray:
        vectors, encoded = self.cache.encode(self.encoder, texts, self._progress(step))
        self._encoded += encoded
        return vectors

    def run(self, dataset: str) -> MiningReport:
        t_start = time.perf_counter()
        report = MiningReport(dataset)
        self._encoded = 0
        items = self.store.table("SELECT item_id, title, brand, categories, description, price, attributes, text_fields, "
                                 "related FROM items WHERE dataset = ? ORDER BY item_id", [dataset])
        events = self.store.table(
            "SELECT event_id, user_id, item_id, type, value, extract(epoch FROM timestamp) AS t, seq, review_text, summary "
            "FROM events "
            "WHERE dataset = ? AND item_id IS NOT NULL ORDER BY user_id, t, seq, event_id", [dataset])
        if items.empty and events.empty:
            raise MiningError(f"{dataset}: no items or events in the store (run `shopmind ingest {dataset}` first)")
        # Items that have events but no catalog entry still get knowledge from their reviews.
        extra = sorted(set(events["item_id"]) - set(items["item_id"]))
        if extra:
            items = pd.concat([items, pd.DataFrame({"item_id": extra})], ignore_index=True)
        items = items.reset_index(drop=True)
        records = items.to_dict("records")
        index = {r["item_id"]: i for i, r in enumerate(records)}

        with self._step(report, "reviews"):
            rev_rows = events[events["review_text"].notna() | events["summary"].notna()]
            texts = (rev_rows["summary"].fillna("") + ". " + rev_rows["review_text"].fillna("")).tolist()
            values = rev_rows["value"].astype(float).tolist()
            mined: dict[str, ItemReviews] = mine_reviews(
                zip(rev_rows["item_id"].tolist(), texts, [None if np.isnan(v) else v for v in values]))

        with self._step(report, "item_texts"):
            template = ItemTextTemplate(self.cfg.item_template)
            aspects = {i: ", ".join(a["aspect"] for a in r.top("positive", 5)) for i, r in mined.items()}
            item_text = [template.render(r, aspects.get(r["item_id"], "")) for r in records]
            has_text = np.array([bool(t.strip()) for t in item_text])
            replace_rows(self.store, "item_texts", dataset, pa.table({
                "dataset": [dataset] * int(has_text.sum()),
                "item_id": [r["item_id"] for r, ok in zip(records, has_text) if ok],
                "text": [t for t, ok in zip(item_text, has_text) if ok],
                "text_hash": [text_hash(t) for t, ok in zip(item_text, has_text) if ok]}))

        with self._step(report, "embeddings"):
            vectors = np.zeros((len(records), 0), np.float32)
            if has_text.any():
                emb = self._embed([t for t, ok in zip(item_text, has_text) if ok], "embeddings")
                vectors = np.zeros((len(records), emb.shape[1]), np.float32)
                vectors[has_text] = emb
            report.counts["items_encoded"] = self._encoded
            report.encoder = self.encoder.describe()

        with self._step(report, "tfidf_keywords"):
            try:
                vectorizer, item_tfidf = fit_tfidf(item_text)
                vocab = vectorizer.get_feature_names_out()
            except ValueError:  # no item has any text (e.g. S3-Rec data: attribute ids only)
                item_tfidf, vocab = sp.csr_matrix((len(records), 0), dtype=np.float32), np.array([], dtype=object)
            item_kw = keywords(item_tfidf, vocab, vectors, lambda t: self._embed(t, "keywords"),
                               self.cfg.keywords_per_item, self.cfg.keyword_candidates, self.cfg.keyword_diversity) \
                if vectors.shape[1] and len(vocab) else [[] for _ in records]
            replace_rows(self.store, "item_keywords", dataset, pa.table({
                "dataset": [dataset] * len(records), "item_id": [r["item_id"] for r in records],
                "keywords": pa.array(item_kw, pa.list_(pa.string()))}))

        with self._step(report, "knowledge_cards"):
            cards = self._cards(records, events, mined, item_kw)
            replace_rows(self.store, "knowledge_cards", dataset, pa.table({
                "dataset": [dataset] * len(cards), "item_id": [c["item_id"] for c in cards],
                "card": [json.dumps(c, ensure_ascii=False) for c in cards]}))

        cats = [_categories(r) for r in records]
        leaf = [c[-1:] for c in cats]
        with self._step(report, "user_profiles"):
            user_tfidf, user_ids, n_profiles = self._profiles(dataset, events, index, vectors, item_kw, leaf, item_tfidf,
                                                              vocab)
        with self._step(report, "item_graph"):
            edge_counts = self._graph(dataset, records, events, cats)

        with self._step(report, "artifacts"):
            folder = self.out_dir / dataset
            folder.mkdir(parents=True, exist_ok=True)
            sp.save_npz(folder / "items_tfidf.npz", item_tfidf)
            sp.save_npz(folder / "users_tfidf.npz", user_tfidf)
            np.save(folder / "item_vectors.npy", vectors)
            (folder / "ids.json").write_text(json.dumps({"items": [r["item_id"] for r in records], "users": user_ids}))
            (folder / "vocabulary.json").write_text(json.dumps(vocab.tolist(), ensure_ascii=False))
            report.artifacts = str(folder)

        report.encoder = self.encoder.describe()  # again: keyword encoding may have added to a Ray encoder's totals
        report.counts.update({
            "items": len(records), "items_with_text": int(has_text.sum()), "texts_encoded": self._encoded,
            "reviewed_items": len(mined), "review_aspects": sum(len(r.aspects) for r in mined.values()),
            "vocabulary": len(vocab), "knowledge_cards": len(cards), "user_profiles": n_profiles, **edge_counts})
        report.examples = sorted(cards, key=lambda c: -int(c["review_count"]))[:3]
        report.neighbours = self._neighbours(records, vectors, has_text)
        report.seconds = round(time.perf_counter() - t_start, 2)
        return report

    def _cards(self, records: list[dict[str, Any]], events: pd.DataFrame, mined: dict[str, ItemReviews],
               item_kw: list[list[str]]) -> list[dict[str, Any]]:
        ratings = events[events["value"].notna() & events["type"].isin(["rating", "review"])]
        stats = ratings.groupby("item_id")["value"].agg(["count", "mean"]).to_dict("index")
        hist = (ratings.assign(star=ratings["value"].round().clip(1, 5).astype(int))
                .groupby(["item_id", "star"]).size().unstack(fill_value=0).to_dict("index"))
        leaf = pd.Series([(_categories(r) or [""])[-1] for r in records])
        prices = pd.Series([r.get("price") for r in records], dtype=float)
        bands = price_bands(prices, leaf)
        cards = []
        for i, r in enumerate(records):
            item_id = r["item_id"]
            rev = mined.get(item_id)
            rating = None
            if item_id in stats:
                h = hist.get(item_id, {})
                rating = {"count": int(stats[item_id]["count"]), "mean": round(float(stats[item_id]["mean"]), 3),
                          "histogram": {str(s): int(h.get(s, 0)) for s in range(1, 6)}}
            price = r.get("price")
            cards.append({
                "item_id": item_id, "title": r.get("title") if isinstance(r.get("title"), str) else None,
                "brand": r.get("brand") if isinstance(r.get("brand"), str) else None,
                "category_path": _categories(r), "price": None if price is None or pd.isna(price) else float(price),
                "price_band": bands.iloc[i] if i < len(bands) and isinstance(bands.iloc[i], str) else None,
                "rating": rating, "review_count": rev.reviews if rev else 0, "keywords": item_kw[i],
                "positive_aspects": rev.top("positive") if rev else [], "negative_aspects": rev.top("negative") if rev else [],
            })
        return cards

    def _profiles(self, dataset: str, events: pd.DataFrame, index: dict[str, int], vectors: np.ndarray,
                  item_kw: list[list[str]], leaf: list[list[str]], item_tfidf: sp.csr_matrix, vocab: np.ndarray
                  ) -> tuple[sp.csr_matrix, list[str], int]:
        timed = events["t"].notna().all() and len(events)
        ev = events.assign(time=events["t"] if timed else events["seq"].fillna(0).astype(float))
        half_life = self.cfg.half_life_days * 86400 if timed else self.cfg.half_life_events
        ev = ev.sort_values(["user_id", "time", "event_id"], kind="stable")
        profiles = build_profiles(zip(ev["user_id"], ev["item_id"], ev["type"], ev["value"], ev["time"]), index,
                                  vectors if vectors.shape[1] else np.zeros((len(index), 1), np.float32),
                                  item_kw, leaf, half_life)
        users = list(profiles)
        # User TF-IDF: the same decayed event weights over the items' TF-IDF rows, at the user's last event.
        u_pos = {u: i for i, u in enumerate(users)}
        last = ev.groupby("user_id")["time"].max()
        rows_, cols_, vals_ = [], [], []
        for u, it, et, v, t in zip(ev["user_id"], ev["item_id"], ev["type"], ev["value"], ev["time"]):
            if u in u_pos and it in index:
                w = event_weight(et, v) * 2.0 ** (-(last[u] - t) / half_life)
                if w > 0:
                    rows_.append(u_pos[u])
                    cols_.append(index[it])
                    vals_.append(w)
        weights = sp.csr_matrix((vals_, (rows_, cols_)), shape=(len(users), item_tfidf.shape[0]), dtype=np.float32)
        user_tfidf = (weights @ item_tfidf).tocsr()
        norms = np.sqrt(np.asarray(user_tfidf.multiply(user_tfidf).sum(axis=1)).ravel())
        user_tfidf = sp.diags(1 / np.maximum(norms, 1e-12)) @ user_tfidf
        user_vectors = np.stack([profiles[u].embedding() for u in users]) if users else np.zeros((0, 1), np.float32)
        # Per-user keywords, KeyBERT style: the user's TF-IDF terms re-ranked against their interest vector.
        user_kw = keywords(sp.csr_matrix(user_tfidf), vocab, user_vectors, lambda t: self._embed(t, "user keywords"),
                           self.cfg.keywords_per_item, self.cfg.keyword_candidates, self.cfg.keyword_diversity) \
            if users and len(vocab) and vectors.shape[1] else [[] for _ in users]
        replace_rows(self.store, "user_profiles", dataset, pa.table({
            "dataset": [dataset] * len(users), "user_id": users,
            "vector": pa.array(list(user_vectors), pa.list_(pa.float32())),
            "keywords": pa.array(user_kw, pa.list_(pa.string())),
            "interests": [json.dumps(profiles[u].top_keywords(10), ensure_ascii=False) for u in users],
            "categories": [json.dumps(profiles[u].top_categories(5), ensure_ascii=False) for u in users],
            "events": [profiles[u].events for u in users],
            "last_time": [profiles[u].last_time for u in users]}))
        return sp.csr_matrix(user_tfidf), users, len(users)

    def _graph(self, dataset: str, records: list[dict[str, Any]], events: pd.DataFrame, cats: list[list[str]]
               ) -> dict[str, int]:
        # Ties (same day, no position) are broken by event id, so the graph is the same on every run.
        order = ["user_id", "t", "seq", "event_id"] if events["t"].notna().all() else ["user_id", "seq", "event_id"]
        ev = events.sort_values(order, kind="stable")
        histories = ev.groupby("user_id", sort=False)["item_id"].agg(list)
        nxt = next_item_edges(histories.tolist())
        frames = [pd.DataFrame([(a, b, "next", float(w)) for (a, b), w in nxt.items()],
                               columns=["src", "dst", "kind", "weight"])]
        frames.append(co_interaction_edges(ev["user_id"].tolist(), ev["item_id"].tolist(), self.cfg.co_interaction_top_k))
        related = {r["item_id"]: json.loads(r["related"]) for r in records if isinstance(r.get("related"), str)}
        frames.append(relation_edges(related, {r["item_id"] for r in records}))
        edges = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else \
            pd.DataFrame(columns=["src", "dst", "kind", "weight"])
        edges.insert(0, "dataset", dataset)
        replace_rows(self.store, "item_edges", dataset, pa.Table.from_pandas(edges, preserve_index=False))
        tax = taxonomy((r["item_id"], c, r.get("brand") if isinstance(r.get("brand"), str) else None)
                       for r, c in zip(records, cats))
        tax.insert(0, "dataset", dataset)
        replace_rows(self.store, "taxonomy", dataset, pa.Table.from_pandas(tax, preserve_index=False))
        counts = edges["kind"].value_counts().to_dict() if len(edges) else {}
        return {f"edges_{k}": int(v) for k, v in counts.items()} | {"taxonomy_nodes": len(tax)}

    @staticmethod
    def _neighbours(records: list[dict[str, Any]], vectors: np.ndarray, has_text: np.ndarray, n: int = 3,
                    k: int = 5) -> list[dict[str, Any]]:
        if not vectors.shape[1] or has_text.sum() < 2:
            return []
        rows = np.flatnonzero(has_text)
        picks = rows[np.linspace(0, len(rows) - 1, n).astype(int)]
        out = []
        for i in picks:
            sims = vectors[rows] @ vectors[i]
            order = [j for j in rows[np.argsort(-sims)] if j != i][:k]
            title = lambda r: r.get("title") if isinstance(r.get("title"), str) else r["item_id"]  # noqa: E731
            out.append({"item_id": records[i]["item_id"], "title": title(records[i]),
                        "neighbours": [{"item_id": records[j]["item_id"], "title": title(records[j]),
                                        "similarity": round(float(vectors[j] @ vectors[i]), 3)} for j in order]})
        return out


def item_vectors_for(folder: Path, item_ids: Any) -> np.ndarray | None:
    """The mined item embeddings in `folder` aligned to `item_ids` (zero rows for items without one), or
    None when the dataset was not mined."""
    if not (folder / "item_vectors.npy").is_file():
        return None
    vectors = np.load(folder / "item_vectors.npy")
    index = {i: r for r, i in enumerate(json.loads((folder / "ids.json").read_text())["items"])}
    out = np.zeros((len(item_ids), vectors.shape[1]), np.float32)
    for r, item in enumerate(item_ids):
        src = index.get(str(item))
        if src is not None:
            out[r] = vectors[src]
    return out
