"""Review mining: aspects with sentiment, on hand-made reviews and the real Amazon review files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from shopmind.knowledge.reviews import mine_reviews, sentences


def test_sentences_split_latin_and_cjk() -> None:
    assert sentences("Great card. Arrived late!\nWould buy again") == ["Great card.", "Arrived late!", "Would buy again"]
    assert sentences("质量很好。物流很慢！") == ["质量很好。", "物流很慢！"]


def test_aspect_polarity_from_text_and_stars() -> None:
    reviews = [
        ("mag", "The recipes are wonderful and the photos are beautiful.", 5.0),
        ("mag", "Lovely recipes, great photos.", 5.0),
        ("mag", "The pages tore and the binding fell apart.", 1.0),
        ("mag", "Pages tore again, binding is awful.", 1.0),
        ("other", "Recipes okay. The binding is fine, the photos are small and the pages are thick.", 4.0),
    ]
    result = mine_reviews(reviews)
    pos = {a["aspect"] for a in result["mag"].top("positive")}
    neg = {a["aspect"] for a in result["mag"].top("negative")}
    assert {"recipes", "photos"} <= pos
    assert {"pages", "binding"} & neg
    assert not pos & neg
    snippet = next(a["snippet"] for a in result["mag"].top("negative") if a["aspect"] in ("pages", "binding"))
    assert "tore" in snippet or "awful" in snippet or "apart" in snippet


def test_real_gift_card_reviews(data_dir: Path) -> None:
    with gzip.open(data_dir / "amazon2018-giftcards" / "Gift_Cards_5.json.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    result = mine_reviews((r["asin"], f"{r.get('summary', '')}. {r.get('reviewText', '')}", r["overall"]) for r in rows)
    assert len(result) == 148 and sum(r.reviews for r in result.values()) == 2972
    starbucks = result["B00AR51Y5I"]  # the Starbucks card, 94 reviews
    top = starbucks.top("positive")
    assert top[0]["aspect"] in ("starbucks", "coffee", "starbucks card")
    for a in top:
        assert any(w in a["snippet"].lower() for w in a["aspect"].split())
    negatives = [a for r in result.values() for a in r.top("negative")]
    assert negatives, "some gift card complaints (bent cards, wrong amounts) must surface"
