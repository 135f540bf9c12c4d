"""Item text from a template, a tokenizer that needs no spaces (CJK), TF-IDF and KeyBERT-style keywords.

The tokenizer keeps Latin words and numbers (model numbers such as "2x4" or "1/2-inch" stay whole) and
turns runs of CJK characters into character bigrams, so Chinese or Japanese product text gets useful
terms without a segmenter and nothing assumes whitespace-separated words.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

DEFAULT_TEMPLATE = "{title}. {brand}. {categories}. {description}. {attributes}. {review_aspects}"

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+(?:[./\-x][^\W_{_CJK}]+)*", re.UNICODE)
_IS_CJK = re.compile(rf"[{_CJK}]")
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS) | {"amp", "quot", "br"}


def tokenize(text: str) -> list[str]:
    """Lower-cased terms: Latin words/numbers (with internal . / - x kept), CJK runs as character bigrams."""
    out: list[str] = []
    for m in _TOKEN.finditer(text.lower()):
        tok = m.group(0)
        if _IS_CJK.match(tok):
            out.extend(tok[i:i + 2] for i in range(max(len(tok) - 1, 1)))
        else:
            out.append(tok)
    return out


_SEGMENT = re.compile(r"[.;:,!?|>()\[\]\"。！？；：，、]+(?:\s|$)|\n|\s-\s")


def _terms(text: str) -> list[str]:
    return [t for t in tokenize(text) if t not in STOP_WORDS and not (len(t) == 1 and t in string.ascii_lowercase)]


def analyze(text: str) -> list[str]:
    """Unigrams and bigrams, with bigrams only inside a phrase (never across '. ', ', ', ' > ', ...)."""
    out: list[str] = []
    for segment in _SEGMENT.split(text):
        terms = _terms(segment)
        out.extend(terms)
        # CJK runs are already character bigrams; pairing those again adds only noise.
        out.extend(f"{a} {b}" for a, b in zip(terms, terms[1:]) if not (_IS_CJK.match(a) and _IS_CJK.match(b)))
    return out


class ItemTextTemplate:
    """Renders one text per item from a format string over its fields.

    Fields: title, brand, categories (path joined by ' > ', or the flattened category text a source
    gives), description, attributes ('key: value; ...'), review_aspects (from knowledge cards), and any
    key of the item's text_fields. Empty fields and their separators are dropped.
    """

    def __init__(self, template: str = DEFAULT_TEMPLATE, max_chars: int = 2000) -> None:
        self.template = template
        self.fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
        self.max_chars = max_chars

    def values(self, item: Mapping[str, Any], review_aspects: str = "") -> dict[str, str]:
        text_fields = _as_dict(item.get("text_fields"))
        attributes = _as_dict(item.get("attributes"))
        cats = item.get("categories")
        cats = list(cats) if isinstance(cats, (list, tuple, np.ndarray)) else []
        categories = " > ".join(map(str, cats)) if cats else _str(text_fields.get("category_text"))
        values = {k: _str(v) for k, v in text_fields.items()}
        values.update({
            "title": _str(item.get("title")), "brand": _str(item.get("brand")), "categories": categories,
            "description": _str(item.get("description"))[:1000],
            "attributes": "; ".join(f"{k}: {v}" for k, v in attributes.items()
                                    if k != "attribute_ids" and not str(v).startswith(("http://", "https://")))[:500],
            "review_aspects": review_aspects,
        })
        return values

    def render(self, item: Mapping[str, Any], review_aspects: str = "") -> str:
        values = self.values(item, review_aspects)
        # Render each field alone and join the non-empty pieces with the template's own separators.
        pieces = []
        for literal, field, _, _ in string.Formatter().parse(self.template):
            value = values.get(field, "").strip() if field else ""
            if value:
                pieces.append((literal, value))
        text = "".join((lit if i else lit.lstrip(". ,;")) + val for i, (lit, val) in enumerate(pieces))
        if not text:
            text = _str(_as_dict(item.get("text_fields")).get("text"))
        return text[: self.max_chars]


def _str(value: Any) -> str:
    """Text of a field that may be missing, None or a pandas NaN."""
    return value if isinstance(value, str) else ""


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {}
    return dict(value) if isinstance(value, Mapping) else {}


def fit_tfidf(texts: Sequence[str], max_features: int = 50_000, min_df: int = 2) -> tuple[TfidfVectorizer, sp.csr_matrix]:
    """TF-IDF over unigrams and bigrams of the shared tokenizer; rows are L2-normalised."""
    min_df = min_df if len(texts) >= 50 else 1
    vec = TfidfVectorizer(analyzer=analyze, min_df=min_df,
                          max_df=0.5 if len(texts) >= 50 else 1.0, max_features=max_features, sublinear_tf=True,
                          dtype=np.float32)
    matrix = vec.fit_transform(texts)
    return vec, matrix.tocsr()


def top_terms(matrix: sp.csr_matrix, vocab: np.ndarray, row: int, k: int) -> list[str]:
    start, end = matrix.indptr[row], matrix.indptr[row + 1]
    if start == end:
        return []
    idx, vals = matrix.indices[start:end], matrix.data[start:end]
    order = np.argsort(-vals, kind="stable")[:k]
    return [str(vocab[idx[i]]) for i in order]


def mmr(relevance: np.ndarray, vectors: np.ndarray, k: int, diversity: float = 0.5) -> list[int]:
    """Maximal marginal relevance (Carbonell & Goldstein, 1998): greedily pick the candidate maximising
    (1 - diversity) * relevance - diversity * (max cosine to those already picked). Returns positions.
    Vectorised: one matrix-vector product per pick, so it also serves re-ranking at request time."""
    relevance = np.asarray(relevance, np.float64)
    n = len(relevance)
    if n == 0 or k <= 0:
        return []
    v = np.asarray(vectors, np.float32)
    chosen = [int(np.argmax(relevance))]
    max_sim = (v @ v[chosen[0]]).astype(np.float64)
    free = np.ones(n, bool)
    free[chosen[0]] = False
    while len(chosen) < min(k, n):
        gain = np.where(free, (1 - diversity) * relevance - diversity * max_sim, -np.inf)
        nxt = int(np.argmax(gain))  # ties: the earlier position
        chosen.append(nxt)
        free[nxt] = False
        max_sim = np.maximum(max_sim, v @ v[nxt])
    return chosen


def keywords(matrix: sp.csr_matrix, vocab: np.ndarray, doc_vectors: np.ndarray,
             embed: Callable[[list[str]], np.ndarray], k: int = 5, candidates: int = 15,
             diversity: float = 0.5) -> list[list[str]]:
    """Per row: TF-IDF candidate terms re-ranked by embedding similarity to the row's vector, with MMR.
    Each distinct candidate term is embedded once (through `embed`, which may be cached)."""
    cands = [top_terms(matrix, vocab, r, candidates) for r in range(matrix.shape[0])]
    unique = sorted({t for c in cands for t in c})
    vectors = embed(unique) if unique else np.zeros((0, doc_vectors.shape[1]), np.float32)
    pos = {t: i for i, t in enumerate(unique)}
    out = []
    for r, terms in enumerate(cands):
        if not terms:
            out.append([])
            continue
        cand = vectors[[pos[t] for t in terms]]
        picked = mmr(cand @ doc_vectors[r], cand, k, diversity)
        out.append([terms[i] for i in picked])
    return out
