"""Product-aware text analysis for lexical search: numbers and units, stems, CJK bigrams, synonyms.

Shoppers type "2x4", "6ft", "60W", "1/2-inch", "4x8wood" and titles say "2 in. x 4 in.", "6 ft.",
"60-Watt", "1/2 in.": terms must meet in the middle. The analyzer
- splits letters from digits ("6ft" -> 6 ft, "4x8wood" -> 4 x 8 wood) and keeps one-character tokens
  (the 2 and 4 of "2x4"), fractions ("1/2") and decimals ("1.5") whole;
- maps unit spellings to one form ("inch", "inches", "in.", '"' -> in; "feet", "foot", "'" -> ft;
  "watt"/"watts" -> w; "gallon" -> gal; ...);
- stems English words with the Snowball stemmer (PyStemmer, the one bm25s uses) and drops a short list of
  stop words (not "in", which is the inch unit in product titles);
- turns runs of CJK characters into character bigrams (no whitespace assumption; same rule as knowledge).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_IS_CJK = re.compile(rf"[{_CJK}]")
# A CJK run | a number (fraction or decimal) | a run of letters | an inch or foot mark right after a number.
_PIECE = re.compile(rf"[{_CJK}]+|\d+(?:[./]\d+)?|[^\W\d_{_CJK}]+|(?<=\d)[\"']|(?<=\d )[\"']", re.UNICODE)

UNITS = {
    "inch": "in", "inches": "in", "\"": "in", "in": "in",
    "feet": "ft", "foot": "ft", "'": "ft", "ft": "ft",
    "watt": "w", "watts": "w", "w": "w", "volt": "v", "volts": "v", "v": "v", "amp": "a", "amps": "a",
    "gallon": "gal", "gallons": "gal", "gal": "gal", "pound": "lb", "pounds": "lb", "lbs": "lb", "lb": "lb",
    "ounce": "oz", "ounces": "oz", "oz": "oz", "millimeter": "mm", "mm": "mm", "centimeter": "cm", "cm": "cm",
    "yard": "yd", "yards": "yd", "yd": "yd", "square": "sq", "sq": "sq", "cubic": "cu", "cu": "cu",
    "quart": "qt", "qt": "qt", "btu": "btu", "mah": "mah", "psi": "psi",
}
_TIMES = re.compile(r"(?<=\d)\s*[*×]\s*(?=\d)")
STOP = frozenset("a an and are as at be by for from has have is it its of on or that the this to was were will "
                 "with".split())


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer  # PyStemmer: Snowball stemmers in C

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return _stemmer().stemWord(word)


def analyze(text: str | None, stem: bool = True) -> list[str]:
    """Search terms of a text (a title, a query), in order; duplicates kept (BM25 counts them)."""
    if not text:
        return []
    text = unicodedata.normalize("NFKC", text).lower().replace("″", "\"").replace("′", "'")
    text = _TIMES.sub(" x ", text)  # 4*8 and 4×8 mean 4 x 8
    out: list[str] = []
    for m in _PIECE.finditer(text):
        tok = m.group(0)
        if _IS_CJK.match(tok):
            out.extend(tok[i:i + 2] for i in range(max(len(tok) - 1, 1)))
        elif tok[0].isdigit():
            out.append(tok)
        elif tok in UNITS and (tok not in ("in", "w", "v", "a", "'", "\"") or _after_number(out)):
            out.append(UNITS[tok])
        elif tok in STOP:
            continue
        elif len(tok) > 1 or tok == "x":  # "x" as in 2 x 4; other single letters carry nothing
            out.append(_stem(tok) if stem and tok.isascii() else tok)
    return out


def _after_number(out: list[str]) -> bool:
    """Short unit spellings (in, w, v, a, quote marks) count as units only right after a number."""
    return bool(out) and out[-1][0].isdigit()
