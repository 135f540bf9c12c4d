"""Lexical retrieval: BM25 per item field (bm25s), summed with per-field weights.

One bm25s index per field (title, brand, categories, description, attributes) rather than one index over
the concatenated text: a title match then counts more than the same word deep in a description, each
field gets its own length normalisation (BM25F's idea, as Elasticsearch's multi_match "most_fields"
does), and the per-field scores are features for learning to rank. bm25s scores all documents of a
field at once (a sparse matrix lookup), which makes exact filtering before top-k trivial.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np

from .analyzer import analyze

DEFAULT_FIELD_WEIGHTS = {"title": 1.0, "brand": 0.5, "categories": 0.3, "attributes": 0.2, "description": 0.1}


class LexicalIndex:
    """BM25 over several text fields of the same items (rows aligned across fields)."""

    def __init__(self, k1: float = 1.2, b: float = 0.75, weights: Mapping[str, float] | None = None) -> None:
        self.k1, self.b = k1, b
        self.weights = dict(DEFAULT_FIELD_WEIGHTS if weights is None else weights)
        self._fields: dict[str, object] = {}
        self._terms: dict[str, list[list[str]]] = {}
        self.n_docs = 0

    def build(self, fields: Mapping[str, Sequence[str | None]]) -> "LexicalIndex":
        """fields: name -> one text per item. Fields with no text at all are skipped."""
        self._terms = {}
        for name, texts in fields.items():
            terms = [analyze(t) for t in texts]
            if any(terms):
                self._terms[name] = terms
                self.n_docs = len(terms)
        return self.reindex(self.k1, self.b)

    def reindex(self, k1: float, b: float) -> "LexicalIndex":
        """Rebuild the BM25 statistics with other k1 / b (the analysed terms are kept)."""
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on import: a line per build
        self.k1, self.b = k1, b
        self._fields = {}
        for name, terms in self._terms.items():
            index = bm25s.BM25(k1=k1, b=b)
            index.index(terms, show_progress=False)
            self._fields[name] = index
        return self

    def terms(self, field: str) -> list[list[str]]:
        """The analysed terms of every item in a field ([] per item when the field had no text)."""
        return self._terms.get(field) or [[] for _ in range(self.n_docs)]

    @property
    def fields(self) -> list[str]:
        return list(self._fields)

    def vocabulary(self) -> dict[str, int]:
        """Analysed term -> number of items containing it (over all fields)."""
        counts: dict[str, int] = {}
        for terms in self._terms.values():
            for doc in terms:
                for t in set(doc):
                    counts[t] = counts.get(t, 0) + 1
        return counts

    def field_scores(self, query: str | Sequence[str]) -> dict[str, np.ndarray]:
        """BM25 of every item, per field, for a query (text or analysed terms)."""
        terms = analyze(query) if isinstance(query, str) else list(query)
        out = {}
        for name, index in self._fields.items():
            out[name] = index.get_scores(terms) if terms else np.zeros(self.n_docs, np.float32)
        return out

    def scores(self, query: str | Sequence[str]) -> np.ndarray:
        """The weighted sum of the field scores, one per item."""
        total = np.zeros(self.n_docs, np.float32)
        for name, s in self.field_scores(query).items():
            w = self.weights.get(name, 0.0)
            if w:
                total += w * s
        return total
