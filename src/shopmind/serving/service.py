"""The service behind the HTTP API: a loaded artifact plus the online state that events change.

Online state (in memory, rebuilt from the artifact and the event log at start):
- every user's item history (artifact histories + live events), their purchases, forgotten users;
- the exploration bandit's impressions and clicks per item, from events that reference a recommendation;
- the online evaluation (`online`: impressions, clicks, carts, purchases attributed through the signed
  `rec_id` tokens recommendations carry; online.py, online_stats.py), counts only.
An acknowledged event is on disk (EventLog) and already applied here, so the very next request sees it.

Every logged record reaches the state through one path, `sync()`: the log hands out its records (other
workers' and this process's own, in file order) exactly once, or the whole log after a rewrite, and
`sync()` applies them under one lock. `ingest()` writes, then syncs, so its events are applied before it
returns, once.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..ranking.bandit import ThompsonExplorer
from ..ranking.explain import Explainer
from ..ranking.rerank import RerankConfig, rerank
from ..search.catalog import Filters
from ..search.engine import SearchEngine
from ..search.fusion import unit
from .artifact import Artifact
from .eventlog import EventLog
from .online import EXPLORE, SEARCH, artifact_version, encode_token, load_key, origins, origins_from_ranks
from .online_stats import OnlineStats

HISTORY_TYPES = {"view", "click", "add_to_cart", "purchase", "rating", "review"}
MAX_HISTORY = 200  # items per user kept for scoring (the models look at the last 50)
CACHE_SIZE = 20_000  # ranked candidate pools kept; a user's entries are stale as soon as one of their events lands


class NotFound(LookupError):
    """An unknown user or item id (a 404 at the API)."""


def _kind(attrs: dict[str, Any]) -> str:
    return str(attrs.get("kind", "product")).lower()


def _float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


class Service:
    def __init__(self, artifact: Artifact, state_dir: str | Path, encode: Callable[[str], np.ndarray] | None = None,
                 rerank_config: RerankConfig | None = None, seed: int = 0, attach: bool = True,
                 digest: Callable[[str], str] | None = None, arm: str = "main",
                 log_factory: Callable[[Callable[[str], str] | None], Any] | None = None,
                 token_key: bytes | None = None) -> None:
        """digest: how forget tombstones in the event log name users and event ids (see EventLog); every
        worker sharing the state folder must use the same one. None: the log's own keyed HMAC. arm: the
        experiment arm this service's recommendations are attributed to. log_factory(digest): opens the event
        log (default: the file log in state_dir; serving/shared.py opens the PostgreSQL one). token_key: the
        key signing recommendation tokens (default: state_dir/online.key)."""
        self.artifact = artifact
        self.pipeline = artifact.pipeline
        self.catalog = artifact.catalog
        self.n_items = len(self.catalog)
        self.config = rerank_config or RerankConfig()
        self._lock = threading.RLock()
        self._sync_lock = threading.RLock()  # catch_up + apply, as one step
        self.digest = digest
        self._seed = seed
        self._forgetting: dict[str, str] = {}  # digest -> user id, while this process forgets them
        self._artifact_digests: dict[str, str] | None = None  # digest -> artifact user (built when needed)
        self.generation = 0  # bumped by every forget and rebuild: pools computed before are not cached
        info = self.pipeline.info
        self.vectors = info.vectors
        leaves = [" > ".join(p) if p else "" for p in self.catalog.paths]
        names = sorted({x for x in leaves if x})
        index = {n: i for i, n in enumerate(names)}
        self.leaf = np.array([index.get(x, -1) for x in leaves], np.int64)
        self.kinds = np.array([_kind(a) for a in self.catalog.attributes], dtype=object)
        self.is_ad = self.kinds == "ad"
        self.bids = np.array([_float(a.get("bid")) or 0.0 for a in self.catalog.attributes])
        self.out_of_stock = np.array([str(a.get("in_stock", "true")).lower() in ("false", "0", "no")
                                      for a in self.catalog.attributes])
        cards = artifact.cards
        knn = self.pipeline.sources.models.get("itemknn")
        self.explainer = Explainer(
            titles=list(self.catalog.titles), keywords=[c.get("keywords", []) or [] for c in cards],
            aspects=[[a["aspect"] if isinstance(a, dict) else str(a) for a in (c.get("positive_aspects") or [])]
                     for c in cards],
            leaf=self.leaf, leaf_names=names, popularity=info.popularity,
            similarity=getattr(knn, "similarity", None), vectors=self.vectors if self.vectors.shape[1] else None)
        self.explorer = ThompsonExplorer(self.n_items, seed=seed)
        if self.n_items >= self.pipeline.sparse_from:  # build the sources' candidate indexes now, not at a request
            self.pipeline.sources.tops(np.zeros(0, np.int64), None)
        self.histories: dict[str, list[int]] = {u: list(h[-MAX_HISTORY:]) for u, h in artifact.histories.items()}
        self.purchases: dict[str, set[int]] = {u: set(p) for u, p in artifact.purchases.items()}
        self.event_counts: dict[str, Counter[str]] = {}  # per user: logged events by type
        self.type_counts: Counter[str] = Counter()  # all logged events by type (the dashboard's statistics)
        # Ranked candidate pools by (user, user state version, request context): the expensive part of a
        # recommendation (every source, features, the ranker) is redone only when the user's history changed;
        # diversity, exploration and explanations run on every request.
        self.versions: dict[str, int] = {}
        self.cache: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.cache_stats = {"hits": 0, "misses": 0}
        self.state_dir = Path(state_dir)
        self.arm = arm
        self.token_key = token_key if token_key is not None else load_key(self.state_dir)  # shared by every worker
        self._log_factory = log_factory
        self.online = OnlineStats(self.token_key, self._price)
        self.log: EventLog | None = None
        self.on_control: Callable[[dict[str, Any]], None] | None = None  # control records from other workers
        self.started = time.time()
        self.search_engine: SearchEngine | None = None
        if encode is not None:
            self.search_engine = SearchEngine.build(self.catalog, self.vectors if self.vectors.shape[1] else
                                                    np.zeros((self.n_items, 1), np.float32), encode, info.popularity)
            tuning = artifact.search_tuning or {}
            if "k1" in tuning:
                self.search_engine.lexical.reindex(tuning["k1"], tuning["b"])
            if "alpha" in tuning:
                self.search_engine.alpha = tuning["alpha"]
        if attach:
            self.attach_log()

    def attach_log(self) -> None:
        """Open the event log and replay it: every logged event applied in order, forgotten users out."""
        if self._log_factory is not None:
            self.log = self._log_factory(self.digest)
        else:
            self.log = EventLog(self.state_dir, digest=self.digest, required=("user_id", "type"))
        self.digest = self.log.digest
        self.sync()

    def _reset(self) -> None:
        """Back to the artifact's state (the whole log is applied next). Called under both locks."""
        self.histories = {u: list(h[-MAX_HISTORY:]) for u, h in self.artifact.histories.items()}
        self.purchases = {u: set(p) for u, p in self.artifact.purchases.items()}
        self.event_counts = {}
        self.type_counts = Counter()
        self.versions = {}
        self.cache.clear()
        self.generation += 1  # with versions restarting, a pool in the making must not be cached
        self.explorer = ThompsonExplorer(self.n_items, seed=self._seed)
        self.online.reset()

    @property
    def artifact_version(self) -> str:
        """8 hex digits naming the served artifact (its creation time and dataset), as tokens carry it."""
        return artifact_version(str(self.artifact.manifest.get("created", "")), self.artifact.dataset)

    def _price(self, item_id: str) -> float | None:
        r = self.catalog.index.get(item_id)
        p = self.catalog.prices[r] if r is not None else np.nan
        return None if np.isnan(p) else float(p)

    def sync(self) -> None:
        """Apply what was logged since the last call, by any worker process or this one (one stat when nothing
        changed). After it returns, every record this process wrote before the call is applied."""
        if self.log is None:
            return
        with self._sync_lock:
            records, rotated = self.log.catch_up()
            if rotated:  # the whole log (at start, or another worker rewrote it: a user was forgotten)
                with self._lock:
                    self._reset()
                    for record in records:
                        self._record(record, replay=True)
                return
            for record in records:
                self._record(record, replay=False)

    def _record(self, record: dict[str, Any], replay: bool) -> None:
        kind = record.get("kind")
        if kind is None:
            self._apply(record)
        elif kind == "forget":
            with self._lock:
                for user in self._users_with(record["user"], live=not replay):
                    self._drop_user(user)
        elif self.on_control is not None:
            self.on_control(record)

    def _users_with(self, digest: str, live: bool) -> list[str]:
        """The users in memory whose id has this digest. In a replay only artifact users can match (a
        forget removed every event of its user that precedes its tombstone)."""
        if self._artifact_digests is None:
            users = set(self.artifact.histories) | set(self.artifact.purchases)
            self._artifact_digests = {self.digest(u): u for u in users}
        hint = self._forgetting.get(digest)  # this process is forgetting them: no need to search
        found = {u for u in (hint, self._artifact_digests.get(digest)) if u is not None}
        if live and hint is None:  # another process's tombstone outside a rewrite: rare, so a scan will do
            known = set(self.event_counts) | set(self.histories) | set(self.purchases) | set(self.versions)
            found |= {u for u in known if self.digest(u) == digest}
        return sorted(found)

    # -- state -----------------------------------------------------------------------------------------------
    def row(self, item_id: str) -> int:
        r = self.catalog.index.get(str(item_id))
        if r is None:
            raise NotFound(f"unknown item {item_id!r}")
        return r

    def _drop_user(self, user: str) -> None:
        """Every in-memory trace of the user: history, purchases, event counts, version, cached pools; and
        no pool computed before this may be cached after it. Called under self._lock."""
        self.generation += 1
        self.versions.pop(user, None)
        self.histories.pop(user, None)
        self.purchases.pop(user, None)
        self.type_counts -= self.event_counts.pop(user, Counter())
        for key in [k for k in self.cache if k[0] == user]:
            del self.cache[key]

    def _apply(self, e: dict[str, Any]) -> None:
        """Apply one logged event to the online state (also used for replay at start)."""
        user, kind, item = e["user_id"], e["type"], e.get("item_id")
        r = self.catalog.index.get(str(item)) if item is not None else None
        with self._lock:
            self.online.observe(e)
            self.event_counts.setdefault(user, Counter())[kind] += 1
            self.type_counts[kind] += 1
            self.versions[user] = self.versions.get(user, 0) + 1
            if r is None:
                return
            if kind in HISTORY_TYPES:
                h = self.histories.setdefault(user, [])
                h.append(r)
                if len(h) > MAX_HISTORY:
                    del h[:len(h) - MAX_HISTORY]
            if kind == "purchase":
                self.purchases.setdefault(user, set()).add(r)
            if kind == "impression":
                self.explorer.record(r, impressions=1)
            elif kind == "click" and e.get("rec_id"):  # a click on something we recommended
                self.explorer.record(r, clicks=1)

    def history(self, user: str) -> list[int]:
        with self._lock:
            return list(self.histories.get(user, ()))

    def ingest(self, events: Sequence[dict[str, Any]]) -> list[bool]:
        """Log events durably, then apply them; returns per event whether it was new (not a duplicate id, nor
        the id of a forgotten event). The new ones are applied, once, through `sync()` before this returns."""
        records = [{**e, "event_id": e.get("event_id") or uuid.uuid4().hex,
                    "received": time.time()} for e in events]
        fresh = self.log.append(records)
        self.sync()  # applies them, in log order after whatever other workers logged before them
        return fresh

    def forget(self, user: str) -> dict[str, Any]:
        """Erase the user's events from the log (a tombstone of digests stays) and every trace of them here."""
        with self._sync_lock:
            self.sync()
            with self._lock:
                known = user in self.histories or user in self.event_counts
            digest = self.log.digest(user)
            self._forgetting[digest] = user
            try:
                removed = self.log.forget(user)
                self.sync()  # applies the tombstone: the user is dropped
            finally:
                self._forgetting.pop(digest, None)
            with self._lock:
                self._drop_user(user)  # (again: also when the log was rewritten meanwhile by another worker)
        return {"user_id": user, "known": known, "events_removed_from_log": removed}

    # -- recommendation --------------------------------------------------------------------------------------
    def _blocked(self, user: str | None, history: Sequence[int], filters: Filters | None, exclude_seen: bool,
                 kind: str | None, extra: Sequence[int] = ()) -> np.ndarray:
        blocked = self.is_ad | self.out_of_stock
        mask = self.catalog.mask(filters)
        if mask is not None:
            blocked = blocked | ~mask
        if kind:
            blocked = blocked | (self.kinds != kind.lower())
        blocked = blocked.copy()
        if user is not None:
            with self._lock:
                bought = list(self.purchases.get(user, ()))
            blocked[bought] = True
        if exclude_seen and len(history):
            blocked[np.asarray(history, np.int64)] = True
        if len(extra):
            blocked[np.asarray(extra, np.int64)] = True
        return blocked

    def _user_index(self, user: str | None) -> int | None:
        return self.pipeline.sources.data.user_index(user) if user is not None else None

    def recommend(self, user: str, k: int = 10, filters: Filters | None = None, item: str | None = None,
                  cart: Sequence[str] = (), exclude_seen: bool = True, diversity: float | None = None,
                  explore: bool | None = None, kind: str | None = None, ads: int = 0,
                  query: str | None = None) -> dict[str, Any]:
        """query: what the shopper is searching for right now: recommend among its top search results."""
        t0 = time.perf_counter()
        self.sync()
        context = [self.row(i) for i in cart] + ([self.row(item)] if item else [])
        with self._lock:  # the history and its version together (the version keys the cache)
            history = list(self.histories.get(user, ()))
            version = self.versions.get(user, 0)
            generation = self.generation
        seq = (history + context)[-MAX_HISTORY:]
        blocked = self._blocked(user, history, filters, exclude_seen, kind, context)
        config = RerankConfig(diversity=self.config.diversity if diversity is None else diversity,
                              category_cap=self.config.category_cap,
                              explore=self.config.explore if explore is None else explore,
                              explore_position=self.config.explore_position, pool=max(self.config.pool, k))
        key = (user, version, tuple(context), repr(filters), exclude_seen, kind, query, config.pool)
        with self._lock:
            cached = self.cache.get(key)
            if cached is not None:
                self.cache.move_to_end(key)
        self.cache_stats["hits" if cached is not None else "misses"] += 1
        rows, scores, codes = cached if cached is not None else self._ranked(user, seq, blocked, filters, query,
                                                                              config.pool)
        if cached is None:
            with self._lock:
                if self.generation == generation:  # no forget or rebuild since the history was read
                    self.cache[key] = (rows.astype(np.int32), scores.astype(np.float32), codes)
                while len(self.cache) > CACHE_SIZE:
                    self.cache.popitem(last=False)
        slots = rerank(rows, scores, k, self.vectors, self.leaf, self.explorer, config)
        interests = self.explainer.user_keywords(seq)
        items = []
        reasons = self.explainer.explain_all([s.row for s in slots], seq, interests, [s.explore for s in slots])
        for pos, (s, why) in enumerate(zip(slots, reasons)):
            if "item_row" in why:
                why["item_id"] = str(self.catalog.item_ids[why.pop("item_row")])
            items.append({**self.item_summary(s.row), "position": pos, "score": round(s.score, 6),
                          "explore": s.explore, "explanation": why})
        ad_items = self._ads(user, seq, filters, ads) if ads else []
        # Events that answer this list (impressions, clicks, purchases) carry it back; it names what was shown
        # and where each item came from, so any worker can attribute them (online.py).
        origin = dict(zip(rows.tolist(), codes.tolist()))
        rec_id = encode_token(self.token_key, self.artifact_version, [i["item_id"] for i in items],
                              [EXPLORE if s.explore else origin.get(s.row, SEARCH if query else 0) for s in slots],
                              self.arm, time.time())
        return {"rec_id": rec_id, "user_id": user, "known_user": bool(history), "history_size": len(history),
                "events_seen": sum(self.event_counts.get(user, Counter()).values()), "items": items, "ads": ad_items,
                "took_ms": round((time.perf_counter() - t0) * 1e3, 2)}

    def _ranked(self, user: str, seq: list[int], blocked: np.ndarray, filters: Filters | None, query: str | None,
                pool: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ranked candidate pool (rows, scores, origin codes) before diversity, caps and exploration. A
        row's origin is the source that ranks it best (online.origins); within a search, the search."""
        extra: list[int] = []
        search_scores: dict[int, float] = {}
        if query and self.search_engine is not None:
            # Recommendations within the current search: candidates are its top 50 results, ordered by an
            # even blend of personal relevance (the ranker) and query relevance (the search score).
            found = self.search_engine.search(query, filters, 1, 50, None, None, facets=False)
            search_scores = {self.catalog.index[i["item_id"]]: i["score"] for i in found.items}
            extra = [r for r in search_scores if not blocked[r]]
            blocked = np.ones(self.n_items, bool)
            blocked[extra] = False
        ranked = self.pipeline.rank(seq, self._user_index(user), k=pool, blocked=blocked, extra=extra)
        if search_scores and len(ranked.rows):
            q = np.array([search_scores.get(int(r), 0.0) for r in ranked.rows])
            blend = 0.5 * unit(np.asarray(ranked.scores, np.float64)) + 0.5 * unit(q)
            order = np.lexsort((ranked.rows, -blend))
            return ranked.rows[order], blend[order], np.full(len(order), SEARCH, np.int8)
        codes = origins(ranked.rows, ranked.source_scores, blocked, self.pipeline.per_source) \
            if ranked.source_ranks is None else origins_from_ranks(len(ranked.rows), ranked.source_ranks,
                                                                   self.pipeline.per_source)
        return ranked.rows, np.asarray(ranked.scores, np.float64), codes

    def _ads(self, user: str, seq: Sequence[int], filters: Filters | None, n: int) -> list[dict[str, Any]]:
        """Ad slots: eligible ads ranked by expected value = predicted click probability x bid, where the
        click probability is the Beta posterior mean of the ad's observed click-through."""
        eligible = self.is_ad & ~self.out_of_stock & (self.bids > 0)
        mask = self.catalog.mask(filters)
        if mask is not None:
            eligible &= mask
        rows = np.flatnonzero(eligible)
        if not len(rows):
            return []
        ctr = self.explorer.posterior_mean(rows)
        value = ctr * self.bids[rows]
        order = np.lexsort((rows, -value))[:n]
        return [{**self.item_summary(int(rows[i])), "bid": float(self.bids[rows[i]]), "p_click": round(float(ctr[i]), 5),
                 "expected_value": round(float(value[i]), 6), "explanation": {"kind": "ad", "text": "Sponsored"}}
                for i in order]

    def similar(self, item: str, k: int = 10, method: str = "pipeline") -> dict[str, Any]:
        self.sync()
        r = self.row(item)
        if method == "covisitation":
            knn = self.pipeline.sources.models.get("itemknn")
            if knn is None:
                raise ValueError("this artifact has no item-KNN source")
            row = knn.similarity[r].toarray().ravel()
            row[r] = 0
            row[self.is_ad] = 0
            top = np.flatnonzero(row > 0)
            top = top[np.lexsort((top, -row[top]))][:k]
            scores = row[top]
        elif method == "text":
            if not self.vectors.shape[1]:
                raise ValueError("this artifact has no item text vectors")
            sims = self.vectors @ self.vectors[r]
            sims[r] = -np.inf
            sims[self.is_ad] = -np.inf
            top = np.argsort(-sims, kind="stable")[:k]
            scores = sims[top]
        elif method == "pipeline":
            blocked = self.is_ad | self.out_of_stock
            blocked = blocked.copy()
            blocked[r] = True
            ranked = self.pipeline.rank([r], None, k=k, blocked=blocked)
            top, scores = ranked.rows, ranked.scores
        else:
            raise ValueError("method must be pipeline, covisitation or text")
        return {"item_id": str(self.catalog.item_ids[r]), "method": method,
                "items": [{**self.item_summary(int(t)), "score": round(float(s), 6)} for t, s in zip(top, scores)]}

    # -- items and search ------------------------------------------------------------------------------------
    def item_summary(self, r: int) -> dict[str, Any]:
        price = self.catalog.prices[r]
        return {"item_id": str(self.catalog.item_ids[r]), "title": str(self.catalog.titles[r]),
                "brand": str(self.catalog.brands[r]) or None, "price": None if np.isnan(price) else float(price),
                "category": " > ".join(self.catalog.paths[r]) or None, "kind": str(self.kinds[r])}

    def item(self, item_id: str) -> dict[str, Any]:
        r = self.row(item_id)
        card = self.artifact.cards[r]
        desc = self.catalog.frame.at[r, "description"] if "description" in self.catalog.frame else None
        return {**self.item_summary(r), "description": desc if isinstance(desc, str) else None,
                "attributes": self.catalog.attributes[r], "popularity": int(self.pipeline.info.popularity[r]),
                "knowledge": {k: card.get(k) for k in ("keywords", "positive_aspects", "negative_aspects", "rating",
                                                       "review_count", "price_band") if k in card}}

    def user_vector(self, user: str) -> np.ndarray | None:
        """The user's interest vector for search personalisation: recency-weighted mean of history vectors."""
        h = self.history(user)[-50:]
        if not h or not self.vectors.shape[1]:
            return None
        w = 0.9 ** np.arange(len(h) - 1, -1, -1)
        v = (self.vectors[h] * w[:, None]).sum(0)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def search(self, query: str, filters: Filters | None = None, page: int = 1, size: int = 10,
               user: str | None = None, mode: str | None = None) -> dict[str, Any]:
        if self.search_engine is None:
            raise ValueError("search is not enabled on this server")
        self.sync()
        uv = self.user_vector(user) if user else None
        res = self.search_engine.search(query, filters, page, size, mode, uv)
        return {"query": res.query, "corrected": res.corrected, "mode": res.mode, "total": res.total,
                "page": res.page, "size": res.size, "personalised": uv is not None,
                "items": [{**self.item_summary(self.catalog.index[i["item_id"]]), "score": round(i["score"], 6)}
                          for i in res.items],
                "facets": {k: [{"value": v, "count": c} for v, c in vals] for k, vals in res.facets.items()},
                "intent": [{"category": c, "p": p} for c, p in res.intent],
                "took_ms": round(res.timings_ms.get("total", 0.0), 2)}

    def stats(self) -> dict[str, Any]:
        return {"dataset": self.artifact.dataset, "items": self.n_items, "users": len(self.histories),
                "logged_records": self.log.records if self.log is not None else 0, "cache": dict(self.cache_stats),
                "uptime_s": round(time.time() - self.started, 1),
                "artifact": str(self.artifact.folder), "artifact_created": self.artifact.manifest.get("created"),
                "pid": os.getpid()}

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
