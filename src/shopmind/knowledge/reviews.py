"""Review mining: aspects with sentiment from review sentences, aggregated per item.

Aspects are the content words and two-word phrases that recur in a dataset's reviews (stop words,
sentiment words and generic purchase verbs removed; CJK text gives character bigrams). Each sentence's
sentiment blends VADER's lexicon score of the sentence with the review's star rating, so "the pages
tore" in a 1-star review counts as negative even without a sentiment word. Per item, each aspect gets
positive / negative mention counts and the most telling example sentence.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from .text import STOP_WORDS, tokenize

_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+|[\n\r]+|(?<=[。！？])")
# Words that recur in reviews but say nothing about the product itself.
_GENERIC = frozenset("""
bought buy buying purchase purchased order ordered received receive came come arrived arrive got get getting gets
use used using uses would could should really just also one two first time times thing things way lot bit little
think thought know make made makes gave give given giving want wanted need needed say said says see seen look looks
looked like likes liked love loved loves great good nice best better well much many even still ever never always
product item amazon review reviews star stars price money recommend recommended definitely highly pretty
year years month months day days week weeks old new back went go going take took try tried put found find
ago actually absolutely usually maybe probably totally completely quite very almost enough else instead
anyway sure able away far right left sent send sending keep kept let lets done does did doing
couldn didn doesn doesnt dont don isn isnt wasn wasnt won wouldn shouldn aren haven hasn hadn ve ll
daughter son wife husband mom dad mother father friend friends family kids kid grandson granddaughter
sister brother girlfriend boyfriend people person everyone someone anyone
""".split())


@dataclass
class AspectStats:
    positive: int = 0
    negative: int = 0
    neutral: int = 0
    best_positive: tuple[float, str] = (0.0, "")
    best_negative: tuple[float, str] = (0.0, "")


@dataclass
class ItemReviews:
    """Aspect statistics for one item."""

    reviews: int = 0
    aspects: dict[str, AspectStats] = field(default_factory=dict)

    def top(self, polarity: str, k: int = 5) -> list[dict[str, object]]:
        """The k aspects mentioned most often with this polarity (and more often so than the opposite)."""
        rows = []
        for name, s in self.aspects.items():
            count, other = (s.positive, s.negative) if polarity == "positive" else (s.negative, s.positive)
            if count > other and count > 0:
                snippet = (s.best_positive if polarity == "positive" else s.best_negative)[1]
                rows.append({"aspect": name, "count": count, "opposite": other, "snippet": snippet})
        rows.sort(key=lambda r: (-int(r["count"]), str(r["aspect"])))  # type: ignore[call-overload]
        return rows[:k]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text or "") if s and len(s.strip()) > 2]


def _lexicon() -> tuple[object, frozenset[str]]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return analyzer, frozenset(analyzer.lexicon)


def candidate_phrases(sentence: str, sentiment_words: frozenset[str]) -> set[str]:
    """Content unigrams and bigrams of a sentence (no stop, sentiment, generic or numeric words)."""
    toks = tokenize(sentence)
    ok = [len(t) >= 2 and t not in STOP_WORDS and t not in _GENERIC and t not in sentiment_words
          and not t.replace(".", "").isdigit() and (len(t) >= 3 or not t.isascii()) for t in toks]
    out = {t for t, good in zip(toks, ok) if good}
    out.update(f"{a} {b}" for (a, ga), (b, gb) in zip(zip(toks, ok), zip(toks[1:], ok[1:])) if ga and gb and a != b)
    return out


def _snippet(sentence: str, limit: int = 160) -> str:
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rsplit(" ", 1)[0] + "…"


def mine_reviews(reviews: Iterable[tuple[str, str | None, float | None]], min_items: int = 2,
                 max_item_share: float = 0.5, threshold: float = 0.2) -> dict[str, ItemReviews]:
    """reviews: (item_id, text, rating 1-5 or None). Returns aspect statistics per item.

    An aspect must be mentioned in the reviews of at least `min_items` items (or three times for one
    item) and for at most `max_item_share` of the reviewed items (else it is the category itself)."""
    analyzer, sentiment_words = _lexicon()
    mentions: list[tuple[str, str, float, str]] = []  # item, aspect, score, sentence
    review_count: Counter[str] = Counter()
    for item_id, text, rating in reviews:
        review_count[item_id] += 1
        star = ((rating - 3.0) / 2.0) if rating is not None else None
        for sent in sentences(text or ""):
            phrases = candidate_phrases(sent, sentiment_words)
            if not phrases:
                continue
            compound = analyzer.polarity_scores(sent)["compound"]  # type: ignore[attr-defined]
            score = compound if star is None else 0.6 * compound + 0.4 * star
            for p in phrases:
                mentions.append((item_id, p, score, sent))
    items_per_aspect: dict[str, set[str]] = defaultdict(set)
    per_item_count: Counter[tuple[str, str]] = Counter()
    for item_id, p, _, _ in mentions:
        items_per_aspect[p].add(item_id)
        per_item_count[(item_id, p)] += 1
    reviewed = max(len(review_count), 1)
    keep = {p for p, items in items_per_aspect.items()
            if (len(items) >= min_items or max(per_item_count[(i, p)] for i in items) >= 3)
            and (len(items) / reviewed <= max_item_share or reviewed < 4)}
    result: dict[str, ItemReviews] = {i: ItemReviews(reviews=n) for i, n in review_count.items()}
    for item_id, p, score, sent in mentions:
        if p not in keep:
            continue
        stats = result[item_id].aspects.setdefault(p, AspectStats())
        if score >= threshold:
            stats.positive += 1
            if score > stats.best_positive[0]:
                stats.best_positive = (score, _snippet(sent))
        elif score <= -threshold:
            stats.negative += 1
            if -score > stats.best_negative[0]:
                stats.best_negative = (-score, _snippet(sent))
        else:
            stats.neutral += 1
    # A unigram inside a kept bigram of the same item with as many mentions adds nothing: drop it.
    for rev in result.values():
        for bigram in [a for a in rev.aspects if " " in a]:
            for part in bigram.split():
                s, b = rev.aspects.get(part), rev.aspects[bigram]
                if s is not None and s.positive + s.negative <= b.positive + b.negative:
                    del rev.aspects[part]
    return result
