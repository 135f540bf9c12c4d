"""Query-item features for learning to rank: per-field BM25, dense similarity, leg ranks, term coverage,
number/unit matches, head-noun match, phrase matches, lengths, category intent and popularity.

The head noun of a product query is usually its last word ("cordless drill", "white 2x4 shelf"), and a
title without it is rarely relevant however many other words match; numbers and units ("2x4", "60w")
must match exactly. These are the signals that BM25's bag of words misses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

NAMES_FIXED = ("bm25_weighted", "dense", "lex_rank", "dense_rank", "fused", "coverage", "numbers_total",
               "numbers_matched", "head_match", "first_match", "bigram_match", "title_len", "query_len",
               "phrase_in_title", "intent", "popularity", "log_judged", "log_mean_grade")


@dataclass
class Candidates:
    """The candidate rows of one query with the raw signals the features are computed from."""

    rows: np.ndarray
    field_scores: dict[str, np.ndarray]  # field -> BM25 of each candidate
    lexical: np.ndarray  # weighted BM25
    dense: np.ndarray  # cosine
    lex_rank: np.ndarray  # 1-based rank in the lexical leg (depth + 1 when outside it)
    dense_rank: np.ndarray
    fused: np.ndarray = field(default_factory=lambda: np.zeros(0))
    intent: np.ndarray = field(default_factory=lambda: np.zeros(0))


def feature_names(fields: Sequence[str]) -> list[str]:
    return [f"bm25_{f}" for f in fields] + list(NAMES_FIXED)


def _is_number(t: str) -> bool:
    return t[:1].isdigit()


def features(query: str, query_terms: Sequence[str], cands: Candidates, title_terms: Sequence[Sequence[str]],
             fields: Sequence[str], popularity: np.ndarray | None = None,
             log_priors: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """One row per candidate, columns as `feature_names(fields)`. title_terms: analysed titles of the candidates.
    log_priors: per item, how often it was judged for training queries and its mean grade there (the
    shop's search-log priors, like a click-through rate; learned from training queries only)."""
    n = len(cands.rows)
    q = list(query_terms)
    q_set = set(q)
    nums = {t for t in q if _is_number(t)}
    words = [t for t in q if not _is_number(t) and t != "x"]
    head, first = (words[-1], words[0]) if words else (None, None)
    q_bigrams = set(zip(q, q[1:]))
    q_phrase = " ".join(q)
    out = np.zeros((n, len(fields) + len(NAMES_FIXED)), np.float32)
    for c, f in enumerate(fields):
        out[:, c] = cands.field_scores.get(f, np.zeros(n))
    base = len(fields)
    out[:, base + 0] = cands.lexical
    out[:, base + 1] = cands.dense
    out[:, base + 2] = np.log1p(cands.lex_rank)
    out[:, base + 3] = np.log1p(cands.dense_rank)
    out[:, base + 4] = cands.fused if len(cands.fused) == n else 0.0
    for r, terms in enumerate(title_terms):
        t_set = set(terms)
        out[r, base + 5] = len(q_set & t_set) / max(len(q_set), 1)
        out[r, base + 6] = len(nums)
        out[r, base + 7] = len(nums & t_set)
        out[r, base + 8] = 1.0 if head is not None and head in t_set else 0.0
        out[r, base + 9] = 1.0 if first is not None and first in t_set else 0.0
        out[r, base + 10] = len(q_bigrams & set(zip(terms, terms[1:]))) / max(len(q_bigrams), 1)
        out[r, base + 11] = len(terms)
        out[r, base + 13] = 1.0 if q_phrase and q_phrase in " ".join(terms) else 0.0
    out[:, base + 12] = len(q)
    out[:, base + 14] = cands.intent if len(cands.intent) == n else 0.0
    if popularity is not None:
        out[:, base + 15] = np.log1p(popularity[cands.rows])
    if log_priors is not None:
        out[:, base + 16] = np.log1p(log_priors[0][cands.rows])
        out[:, base + 17] = log_priors[1][cands.rows]
    return out
