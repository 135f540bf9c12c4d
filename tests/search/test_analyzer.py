"""The product analyzer and the typo tools on hand-made cases."""

from __future__ import annotations

import pytest

from shopmind.search.analyzer import analyze
from shopmind.search.spelling import SpellCorrector, Synonyms


@pytest.mark.parametrize("text, terms", [
    ("2x4", ["2", "x", "4"]),
    ("2 in. x 4 in. x 8 ft. Lumber", ["2", "in", "x", "4", "in", "x", "8", "ft", "lumber"]),
    ("6ft", ["6", "ft"]),
    ("60W LED bulbs", ["60", "w", "led", "bulb"]),
    ("1/2-inch copper pipe", ["1/2", "in", "copper", "pipe"]),
    ("4x8wood", ["4", "x", "8", "wood"]),
    ("4*8 beadboard", ["4", "x", "8", "beadboard"]),
    ('10" tile saw', ["10", "in", "tile", "saw"]),
    ("a saw for the wall", ["saw", "wall"]),
])
def test_product_terms(text: str, terms: list[str]) -> None:
    assert analyze(text) == terms


def test_query_and_title_spellings_meet() -> None:
    assert set(analyze("2x4x8 lumber")) <= set(analyze("2 in. x 4 in. x 8 ft. Lumber"))
    assert set(analyze("60 watt bulb")) == set(analyze("60W Bulbs"))


def test_cjk_without_spaces_gives_bigrams() -> None:
    assert analyze("防水ペンキ") == ["防水", "水ペ", "ペン", "ンキ"]
    assert analyze("") == [] and analyze(None) == []


@pytest.fixture
def speller() -> SpellCorrector:
    titles = ["Outdoor Wall Light", "Outdoor Lantern", "Roof Shingles Bundle", "Asphalt Shingles", "Wood Screws 100",
              "Deck Screws", "Wood Glue", "Cordless Drill", "Drill Bits", "Outdoor Bench"]
    return SpellCorrector().build(titles)


def test_spelling_corrects_only_unknown_words(speller: SpellCorrector) -> None:
    assert speller.correct("ourdoor light") == "outdoor light"
    assert speller.correct("shigles") == "shingles"
    assert speller.correct("woodscrews") == "wood screws"  # a compound split into two catalog words
    assert speller.correct("drill 2x4 18V") == "drill 2x4 18V"  # known words, numbers and model numbers stay
    assert speller.correct("xyzzyq") == "xyzzyq"  # nothing close: left alone


def test_synonyms_expand(tmp_path) -> None:
    path = tmp_path / "syn.txt"
    path.write_text("# comment\nfridge, refrigerator\nbbq, grill, barbecue\n")
    syn = Synonyms.load(path)
    assert syn.expand("black fridge") == ["refrigerator"]
    assert sorted(syn.expand("bbq tools")) == ["barbecue", "grill"]
    assert syn.expand("tools") == []
    assert "refrigerator" in Synonyms.load().expand("fridge")  # the packaged file
