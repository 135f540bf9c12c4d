"""Tokenizer, item text template, TF-IDF and MMR keywords (hand-made cases, including Chinese)."""

from __future__ import annotations

import math

import numpy as np

from shopmind.knowledge.text import ItemTextTemplate, analyze, fit_tfidf, keywords, mmr, tokenize


def test_tokenizer_keeps_model_numbers_and_handles_cjk() -> None:
    assert tokenize("Simpson 2x4 Angle, 1/2-Inch x 10yd, 3.5mm") == ["simpson", "2x4", "angle", "1/2-inch", "x", "10yd",
                                                                     "3.5mm"]
    # No spaces in Chinese: character bigrams, Latin parts kept whole.
    assert tokenize("不锈钢保温杯500ml") == ["不锈", "锈钢", "钢保", "保温", "温杯", "500ml"]
    assert tokenize("杯") == ["杯"]


def test_analyzer_never_pairs_across_phrases() -> None:
    terms = analyze("Sanding Roll. PORTER-CABLE. Tools > Abrasives")
    assert "roll porter-cable" not in terms and "porter-cable tools" not in terms
    assert "sanding roll" in terms
    cjk = analyze("不锈钢保温杯，大容量")
    assert "保温" in cjk and "温杯 大容" not in cjk and not any(" " in t for t in cjk)


def test_template_drops_empty_fields_and_uses_fallbacks() -> None:
    t = ItemTextTemplate()
    item = {"title": "Drill", "brand": None, "categories": ["Tools", "Power Tools"], "description": math.nan,
            "attributes": '{"voltage": "18V", "manual": "https://x.y/z.pdf"}', "text_fields": None}
    assert t.render(item, "battery life") == "Drill. Tools > Power Tools. voltage: 18V. battery life"
    sci = {"title": "Glue", "categories": [], "text_fields": '{"category_text": "Adhesives"}'}
    assert t.render(sci) == "Glue. Adhesives"
    custom = ItemTextTemplate("{brand} | {features}")
    assert custom.render({"brand": "Acme", "text_fields": {"features": "quiet"}}) == "Acme | quiet"
    assert t.render({"title": "保温杯", "brand": "象印"}) == "保温杯. 象印"


def test_tfidf_and_mmr_keywords() -> None:
    docs = ["cordless drill 18v battery drill", "hammer drill concrete", "green tea organic", "black tea loose leaf",
            "drill bits set titanium"]
    vec, m = fit_tfidf(docs, min_df=1)
    vocab = vec.get_feature_names_out()
    assert m.shape == (5, len(vocab)) and np.allclose(np.asarray(m.multiply(m).sum(1)).ravel(), 1, atol=1e-5)
    rng = np.random.default_rng(0)
    table: dict[str, np.ndarray] = {}

    def embed(terms: list[str]) -> np.ndarray:
        for t in terms:
            table.setdefault(t, rng.normal(size=16))
        v = np.stack([table[t] for t in terms])
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    docs_vec = embed(["drill", "concrete", "tea", "leaf", "bits"])
    kws = keywords(m, vocab, docs_vec, embed, k=3, candidates=6)
    assert all(len(k) == 3 and len(set(k)) == 3 for k in kws)
    assert all(any(w in docs[i] for w in " ".join(kws[i]).split()) for i in range(5))


def test_mmr_prefers_diverse_candidates() -> None:
    doc = np.array([1.0, 0.0, 0.0])
    cands = np.array([[0.99, 0.14, 0.0], [0.98, 0.2, 0.0], [0.6, 0.0, 0.8]])
    cands /= np.linalg.norm(cands, axis=1, keepdims=True)
    assert mmr(cands @ doc, cands, 2, diversity=0.0) == [0, 1]
    assert mmr(cands @ doc, cands, 2, diversity=0.7) == [0, 2]
