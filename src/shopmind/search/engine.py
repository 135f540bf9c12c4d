"""The search engine: query understanding, two retrieval legs, fusion, learned ranking, personalisation,
filters, facets and paging — the one code path the CLI, the evaluation and the API use.

search(query):
1. spelling correction from the catalog vocabulary, synonym expansion;
2. lexical leg (per-field BM25, the filter mask applied to all scores) and dense leg (FAISS with the same
   mask as an ID selector), `depth` candidates each; their union is the candidate pool;
3. ordering by mode: "bm25", "dense", "hybrid" (min-max score fusion, weight `alpha`, plus a soft boost
   from the predicted category intent) or "ltr" (LightGBM LambdaRank over the features; the default once
   a ranker is trained);
4. optional personalisation: a blend with the user's interest vector (off for anonymous users);
5. facets counted over the whole ordered result set, then a stable page of it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .analyzer import analyze
from .catalog import Catalog, Filters
from .dense import DenseIndex
from .features import Candidates, feature_names, features
from .fusion import minmax, score_fusion
from .lexical import LexicalIndex
from .ltr import LTRRanker, labels_from_grades
from .spelling import SpellCorrector, Synonyms

MODES = ("bm25", "dense", "rrf", "hybrid", "ltr")
Judgments = Mapping[str, Mapping[str, float]]  # query -> item id -> grade
StepFn = Callable[[str], None]


@dataclass
class SearchResult:
    query: str
    corrected: str | None
    mode: str
    total: int
    page: int
    size: int
    items: list[dict[str, Any]]
    facets: dict[str, list[tuple[str, int]]]
    intent: list[tuple[str, float]] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)


class Intent:
    """Predicted category of a query: softmax over cosines to category centroids of the item vectors."""

    def __init__(self, catalog: Catalog, vectors: np.ndarray, min_items: int = 5, temperature: float = 0.05) -> None:
        leaves = [" > ".join(p) for p in catalog.paths]
        counts = Counter(leaves)
        names = sorted(n for n, c in counts.items() if n and c >= min_items)
        names = names if len(names) <= 5000 else []  # too many categories for a softmax over centroids
        self.names = names
        self.temperature = temperature
        index = {n: i for i, n in enumerate(names)}
        self.item_group = np.array([index.get(n, -1) for n in leaves], np.int64)
        cents = np.zeros((len(names), vectors.shape[1] if vectors.ndim == 2 else 0), np.float32)
        grouped = self.item_group >= 0
        np.add.at(cents, self.item_group[grouped], vectors[grouped])  # centroid direction: the sum is enough
        self.centroids = cents / np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)

    def predict(self, query_vector: np.ndarray) -> np.ndarray:
        if not self.names:
            return np.zeros(0, np.float32)
        logits = self.centroids @ (query_vector / max(float(np.linalg.norm(query_vector)), 1e-12)) / self.temperature
        p = np.exp(logits - logits.max())
        return p / p.sum()

    def item_scores(self, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if not len(probs):
            return np.zeros(len(rows), np.float32)
        g = self.item_group[rows]
        return np.where(g >= 0, probs[np.maximum(g, 0)], 0.0).astype(np.float32)


class SearchEngine:
    def __init__(self, catalog: Catalog, lexical: LexicalIndex, dense: DenseIndex, encode: Callable[[str], np.ndarray],
                 speller: SpellCorrector | None = None, synonyms: Synonyms | None = None,
                 popularity: np.ndarray | None = None, alpha: float = 0.3, intent_weight: float = 0.1,
                 personal_weight: float = 0.2, depth: int = 100, max_results: int = 1000,
                 encode_batch: Callable[[list[str]], np.ndarray] | None = None) -> None:
        self.catalog, self.lexical, self.dense, self._encode = catalog, lexical, dense, encode
        self._encode_batch = encode_batch
        self.speller, self.synonyms = speller, synonyms or Synonyms()
        self.popularity = popularity if popularity is not None else np.zeros(len(catalog))
        self.alpha, self.intent_weight, self.personal_weight = alpha, intent_weight, personal_weight
        self.depth, self.max_results = depth, max_results
        self.intent = Intent(catalog, dense.vectors)
        self.ranker: LTRRanker | None = None
        self.log_priors: tuple[np.ndarray, np.ndarray] | None = None
        self._title_terms = lexical.terms("title")  # analysed once, when the lexical index was built
        self._query_cache: dict[str, np.ndarray] = {}
        self.encoder_path: str | None = None  # a fine-tuned encoder's folder, when the dense leg uses one

    # -- building -------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, catalog: Catalog, vectors: np.ndarray, encode: Callable[[str], np.ndarray],
              popularity: np.ndarray | None = None, on_step: StepFn | None = None, **kwargs: Any) -> "SearchEngine":
        step = on_step or (lambda msg: None)
        step("lexical index")
        fields = {f: catalog.texts(f) for f in ("title", "brand", "categories", "attributes", "description")}
        lexical = LexicalIndex().build(fields)
        step("dense index")
        dense = DenseIndex().build(vectors)
        step("spelling vocabulary")
        speller = SpellCorrector().build(t for f in ("title", "brand", "categories") for t in fields[f])
        return cls(catalog, lexical, dense, encode, speller, Synonyms.load(), popularity, **kwargs)

    def use_vectors(self, vectors: np.ndarray, encode: Callable[[str], np.ndarray],
                    encode_batch: Callable[[list[str]], np.ndarray] | None = None) -> None:
        """Swap the dense leg to other item vectors and their query encoder (e.g. a fine-tuned model)."""
        self.dense = DenseIndex().build(vectors)
        self._encode, self._encode_batch = encode, encode_batch
        self.intent = Intent(self.catalog, self.dense.vectors)
        self._query_cache.clear()

    def query_vector(self, text: str) -> np.ndarray:
        v = self._query_cache.get(text)
        if v is None:
            v = np.asarray(self._encode(text), np.float32).ravel()
            if len(self._query_cache) > 100_000:
                self._query_cache.clear()
            self._query_cache[text] = v
        return v

    def prime(self, queries: Sequence[str]) -> None:
        """Encode many queries in batches ahead of time (evaluation, tuning): the single-query path is slower."""
        texts = sorted({self.understand(q)[0] for q in queries} - set(self._query_cache))
        if texts and self._encode_batch is not None:
            for text, v in zip(texts, self._encode_batch(texts)):
                self._query_cache[text] = np.asarray(v, np.float32)

    # -- retrieval ------------------------------------------------------------------------------------------
    def understand(self, query: str) -> tuple[str, list[str]]:
        """(corrected query, analysed terms including synonym expansions)."""
        corrected = self.speller.correct(query) if self.speller else query
        terms = analyze(corrected)
        for phrase in self.synonyms.expand(corrected):
            terms += analyze(phrase)
        return corrected, terms

    def candidates(self, query: str, mask: np.ndarray | None = None, terms: list[str] | None = None,
                   extra_rows: Sequence[int] = (), dense: bool = True) -> Candidates:
        """The candidate pool of a query: top `depth` of each leg (plus extra_rows, e.g. judged items).
        dense=False skips the dense leg and the query encoding (lexical-only search)."""
        if terms is None:
            query, terms = self.understand(query)
        field_scores = self.lexical.field_scores(terms)
        lex = np.zeros(len(self.catalog), np.float32)
        for name, s in field_scores.items():
            lex += self.lexical.weights.get(name, 0.0) * s
        if mask is not None:
            lex = np.where(mask, lex, 0.0)
        matched = np.flatnonzero(lex > 0)
        if len(matched) > self.depth:  # partial selection first: a common word matches tens of thousands
            matched = matched[np.argpartition(-lex[matched], self.depth - 1)[:self.depth]]
        lex_top = matched[np.lexsort((matched, -lex[matched]))]
        qv = self.query_vector(query) if dense else None
        dense_top = self.dense.search(qv, self.depth, mask)[0] if qv is not None else np.zeros(0, np.int64)
        rows = np.union1d(np.union1d(lex_top, dense_top), np.asarray(extra_rows, np.int64)).astype(np.int64)
        lex_rank = np.full(len(self.catalog), self.depth + 1, np.float32)
        lex_rank[lex_top] = np.arange(1, len(lex_top) + 1)
        dense_rank = np.full(len(self.catalog), self.depth + 1, np.float32)
        dense_rank[dense_top] = np.arange(1, len(dense_top) + 1)
        dense_sim = self.dense.similarity(qv, rows) if qv is not None else np.zeros(len(rows), np.float32)
        c = Candidates(rows, {f: s[rows] for f, s in field_scores.items()}, lex[rows], dense_sim,
                       lex_rank[rows], dense_rank[rows])
        c.intent = self.intent.item_scores(self.intent.predict(qv), rows) if qv is not None else np.zeros(len(rows))
        c.fused = score_fusion(c.lexical, c.dense, self.alpha) + self.intent_weight * c.intent
        return c

    def feature_matrix(self, query: str, terms: list[str], c: Candidates,
                       own: Mapping[str, float] | None = None) -> np.ndarray:
        """Features of the candidates. own: this query's own judgments, left out of the search-log priors
        (a training query must not see its own labels through them)."""
        priors = self.log_priors
        if priors is not None and own:
            count, mean = priors[0].copy(), priors[1].copy()
            for item, grade in own.items():
                r = self.catalog.index.get(item)
                if r is not None and count[r] > 0:
                    total = mean[r] * count[r] - grade
                    count[r] -= 1
                    mean[r] = total / count[r] if count[r] > 0 else 0.0
            priors = (count, mean)
        return features(query, terms, c, [self._title_terms[r] for r in c.rows], self.lexical.fields, self.popularity,
                        priors)

    def order(self, query: str, terms: list[str], c: Candidates, mode: str) -> np.ndarray:
        """Scores of the candidates for a mode (higher first); -inf drops a candidate from the results."""
        if mode == "bm25":
            return np.where(c.lexical > 0, c.lexical, -np.inf)
        if mode == "dense":
            return np.where(c.dense_rank <= self.depth, c.dense, -np.inf)
        if mode == "rrf":  # equal-weight reciprocal rank fusion of the two legs (k = 60)
            return 1 / (60 + c.lex_rank) * (c.lex_rank <= self.depth) + 1 / (60 + c.dense_rank) * (c.dense_rank <= self.depth)
        if mode == "hybrid":
            return c.fused
        if mode == "ltr":
            if self.ranker is None:
                raise ValueError("mode 'ltr' needs a trained ranker (fit_ranker)")
            return self.ranker.predict(self.feature_matrix(query, terms, c))
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")

    @property
    def default_mode(self) -> str:
        return "ltr" if self.ranker is not None else "hybrid"

    def search(self, query: str, filters: Filters | None = None, page: int = 1, size: int = 10,
               mode: str | None = None, user_vector: np.ndarray | None = None, facets: bool = True) -> SearchResult:
        t0 = time.perf_counter()
        mode = mode or self.default_mode
        if page < 1 or size < 1:
            raise ValueError("page and size must be at least 1")
        corrected, terms = self.understand(query)
        mask = self.catalog.mask(filters)
        t1 = time.perf_counter()
        c = self.candidates(corrected, mask, terms, dense=mode != "bm25")
        t2 = time.perf_counter()
        scores = np.asarray(self.order(corrected, terms, c, mode), np.float64)
        if user_vector is not None and np.linalg.norm(user_vector) > 0:
            finite = np.isfinite(scores)
            personal = self.dense.similarity(np.asarray(user_vector, np.float32), c.rows)
            scores = np.where(finite, (1 - self.personal_weight) * minmax(np.where(finite, scores, 0.0))
                              + self.personal_weight * minmax(personal), -np.inf)
        keep = np.isfinite(scores)
        rows, scores = c.rows[keep], scores[keep]
        order = np.lexsort((rows, -scores))[:self.max_results]  # stable: ties broken by row
        rows, scores = rows[order], scores[order]
        t3 = time.perf_counter()
        page_rows = slice((page - 1) * size, page * size)
        items = [{"item_id": str(self.catalog.item_ids[r]), "title": str(self.catalog.titles[r]), "score": float(s)}
                 for r, s in zip(rows[page_rows], scores[page_rows])]
        probs = self.intent.predict(self.query_vector(corrected)) if mode != "bm25" else np.zeros(0)
        intent = [(self.intent.names[i], round(float(probs[i]), 3)) for i in np.argsort(-probs)[:3]] if len(probs) else []
        result = SearchResult(query, corrected if corrected != query else None, mode, int(len(rows)), page, size, items,
                              self.catalog.facets(rows) if facets else {}, intent)
        result.timings_ms = {"understand": (t1 - t0) * 1e3, "retrieve": (t2 - t1) * 1e3, "rank": (t3 - t2) * 1e3,
                             "total": (time.perf_counter() - t0) * 1e3}
        return result

    # -- learning from judgments ----------------------------------------------------------------------------
    def ranked_ids(self, query: str, mode: str, k: int = 100) -> list[str]:
        """Item ids of the top k for a query in a mode (no filters; for evaluation and tuning)."""
        corrected, terms = self.understand(query)
        if mode == "bm25":  # the lexical leg alone: no need to encode the query
            lex = self.lexical.scores(terms)
            top = np.flatnonzero(lex > 0)
            top = top[np.lexsort((top, -lex[top]))][:k]
            return [str(self.catalog.item_ids[r]) for r in top]
        return self.rank_candidates(corrected, terms, self.candidates(corrected, None, terms), mode, k)

    def tune_bm25(self, judgments: Judgments, grid: Sequence[tuple[float, float]] = ((0.9, 0.4), (1.2, 0.5),
                  (1.2, 0.75), (1.5, 0.6), (0.6, 0.3), (2.0, 0.75)), metric: Callable | None = None) -> dict[str, Any]:
        """Pick BM25's k1 and b by NDCG@10 on these (training) queries."""
        from .metrics import ndcg, summarize

        trials = []
        for k1, b in grid:
            self.lexical.reindex(k1, b)
            value, _ = summarize([ndcg(self.ranked_ids(q, "bm25", 10), g) for q, g in judgments.items()])
            trials.append({"k1": k1, "b": b, "ndcg@10": round(value, 4)})
        best = max(trials, key=lambda t: t["ndcg@10"])
        self.lexical.reindex(best["k1"], best["b"])
        return {"best": best, "trials": trials}

    def tune_alpha(self, judgments: Judgments, grid: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)) -> dict[str, Any]:
        """Pick the fusion weight by NDCG@10 on these (training) queries."""
        from .metrics import ndcg, summarize

        pools = []  # the candidates do not depend on alpha: retrieve once, fuse per setting
        for q, g in judgments.items():
            corrected, terms = self.understand(q)
            pools.append((self.candidates(corrected, None, terms), g))
        trials = []
        for a in grid:
            per_query = []
            for c, g in pools:
                fused = score_fusion(c.lexical, c.dense, a) + self.intent_weight * c.intent
                per_query.append(ndcg(self.catalog.item_ids[c.rows[np.lexsort((c.rows, -fused))][:10]].tolist(), g))
            trials.append({"alpha": a, "ndcg@10": round(summarize(per_query)[0], 4)})
        best = max(trials, key=lambda t: t["ndcg@10"])
        self.alpha = best["alpha"]
        return {"best": best, "trials": trials}

    def training_rows(self, judgments: Judgments, include_judged: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Features, labels and group sizes for the ranker: each query's candidate pool labelled with the
        judged grades (unjudged = grade 1, gain 0). The pool is what serving retrieves; adding judged items
        from outside it (include_judged) would teach the ranker about feature values it never sees live."""
        xs, ys, groups = [], [], []
        for q, grades in judgments.items():
            corrected, terms = self.understand(q)
            judged = [self.catalog.index[i] for i in grades if i in self.catalog.index] if include_judged else []
            c = self.candidates(corrected, None, terms, extra_rows=judged)
            xs.append(self.feature_matrix(corrected, terms, c, own=grades))
            ys.append(labels_from_grades(np.array([grades.get(str(self.catalog.item_ids[r]), 1.0) for r in c.rows])))
            groups.append(len(c.rows))
        return np.vstack(xs), np.concatenate(ys), groups

    def judgment_priors(self, judgments: Judgments) -> tuple[np.ndarray, np.ndarray]:
        """Per item: number of judgments and mean grade (0 when never judged) over these queries."""
        count = np.zeros(len(self.catalog), np.float32)
        total = np.zeros(len(self.catalog), np.float32)
        for grades in judgments.values():
            for item, grade in grades.items():
                r = self.catalog.index.get(item)
                if r is not None:
                    count[r] += 1
                    total[r] += grade
        return count, np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)

    def rank_candidates(self, query: str, terms: list[str], c: Candidates, mode: str, k: int = 100) -> list[str]:
        """Item ids of the top k of a candidate pool in a mode."""
        s = np.asarray(self.order(query, terms, c, mode), np.float64)
        keep = np.isfinite(s)
        rows, s = c.rows[keep], s[keep]
        return [str(self.catalog.item_ids[r]) for r in rows[np.lexsort((rows, -s))][:k]]

    def fit_ranker(self, train: Judgments, valid: Judgments | None = None, log_priors: bool = True,
                   **params: Any) -> dict[str, Any]:
        """Train the LambdaRank ranker on training queries (early stopping on validation queries).
        log_priors: use the search-log priors (how often and how well items were judged for training queries)."""
        self.log_priors = self.judgment_priors(train) if log_priors else None
        x, y, g = self.training_rows(train)
        v = self.training_rows(valid) if valid else None
        self.ranker = LTRRanker(**params).fit(x, y, g, feature_names(self.lexical.fields), v)
        return {"trees": self.ranker.best_iteration, "rows": int(len(y)), "queries": len(g),
                "importance": self.ranker.importance()}
