"""Typo tolerance from the catalog's own vocabulary: spelling correction, compound splitting, synonyms.

Real queries are full of typos ("ourdoor", "shigles") and run-together words ("deckover" is a brand, but
"woodscrews" is two words). The corrector (symspellpy's symmetric-delete lookup, built from the words of
item titles and other fields with their item counts) changes a query word only when the word itself is
not in the catalog: then it takes the most frequent catalog word within edit distance 1 (2 for words of
8+ letters), or splits the word into two catalog words. Numbers, model numbers and short words are left
alone. Synonyms come from a small editable file (`synonyms.txt`, one group of equivalent terms per line)
and expand the query rather than replace words.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Iterable

_WORD = re.compile(r"[a-z]+")
_TOKENS = re.compile(r"\S+")


class SpellCorrector:
    def __init__(self, min_count: int = 2, min_length: int = 4) -> None:
        self.min_count, self.min_length = min_count, min_length
        self.counts: dict[str, int] = {}
        self._sym = None

    def build(self, texts: Iterable[str]) -> "SpellCorrector":
        from symspellpy import SymSpell

        counts: dict[str, int] = {}
        for text in texts:
            for w in set(_WORD.findall(text.lower())):
                counts[w] = counts.get(w, 0) + 1
        self.counts = counts
        self._sym = SymSpell(max_dictionary_edit_distance=2, prefix_length=7)
        for w, c in counts.items():
            if c >= self.min_count and len(w) > 1:
                self._sym.create_dictionary_entry(w, c)
        return self

    def correct_word(self, word: str) -> str:
        """The word, or its correction (possibly two words) when it is not in the catalog."""
        from symspellpy import Verbosity

        if (self._sym is None or len(word) < self.min_length or not word.isalpha() or not word.isascii()
                or self.counts.get(word, 0) >= 1):
            return word
        distance = 2 if len(word) >= 8 else 1
        found = self._sym.lookup(word, Verbosity.TOP, max_edit_distance=distance)
        split = self._split(word)
        if found and (split is None or found[0].distance <= 1):
            return found[0].term
        return split or word

    def _split(self, word: str) -> str | None:
        """word -> 'left right' when both halves are frequent catalog words (the best-supported split)."""
        best, score = None, 0
        for i in range(3, len(word) - 2):
            a, b = word[:i], word[i:]
            ca, cb = self.counts.get(a, 0), self.counts.get(b, 0)
            if ca >= self.min_count and cb >= self.min_count and min(ca, cb) > score:
                best, score = f"{a} {b}", min(ca, cb)
        return best

    def correct(self, query: str) -> str:
        """The query with each unknown word corrected; everything else (numbers, units, case) kept."""
        def fix(m: re.Match[str]) -> str:
            tok = m.group(0)
            low = tok.lower()
            return self.correct_word(low) if low.isalpha() else tok

        return _TOKENS.sub(fix, query)


class Synonyms:
    """Groups of equivalent terms; a query gets the other members of each group it mentions."""

    def __init__(self, groups: Iterable[Iterable[str]] = ()) -> None:
        self.groups = [tuple(g) for g in groups if len(tuple(g)) > 1]

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Synonyms":
        """From a file of comma-separated groups ('#' comments); default: the packaged synonyms.txt."""
        text = (Path(path).read_text(encoding="utf-8") if path else
                resources.files("shopmind.search").joinpath("synonyms.txt").read_text(encoding="utf-8"))
        groups = []
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                groups.append([t.strip().lower() for t in line.split(",") if t.strip()])
        return cls(groups)

    def expand(self, query: str) -> list[str]:
        """Extra phrases for the query (not including what it already says)."""
        padded = f" {query.lower()} "
        out: list[str] = []
        for group in self.groups:
            if any(f" {t} " in padded for t in group):
                out.extend(t for t in group if f" {t} " not in padded)
        return out
