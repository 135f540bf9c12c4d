"""UniSRec / RecBole sequence format: `<name>.text` + `<name>.{train,valid,test}.inter` (+ index maps).

The .inter files hold one row per (user, prefix, target), histories cut to the last 50 items. The full
chronological sequence of each user is rebuilt from the train prefixes plus the valid and test targets,
checked link by link, and emitted as events with `seq` (position) and `split` (the given split).
Item and user indices are mapped back to the raw ids (ASINs, reviewer ids) when the maps are present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..readers import Meter, Record, Reject, Row, clip, iter_lines
from .base import Adapter, FormatError

_SPLITS = ("train", "valid", "test")


class UniSRecAdapter(Adapter):
    format = "unisrec"
    description = "UniSRec/RecBole: <name>.text + <name>.train/.valid/.test.inter (+ item2index, user2index)"

    def __init__(self, path: str | Path, **options: object) -> None:
        super().__init__(path, **options)
        inters = self._glob("*.train.inter")
        if not inters:
            raise FormatError(f"{self.path}: no <name>.train.inter file (UniSRec format)")
        if len(inters) > 1 and self.path.is_dir():
            names = ", ".join(p.name for p in inters)
            raise FormatError(f"{self.path}: several datasets here ({names}); pass one file's path")
        base = inters[0] if self.path.is_dir() else self.path
        self.stem = base.name.split(".")[0]
        self.folder = base.parent
        self.inter = {s: self.folder / f"{self.stem}.{s}.inter" for s in _SPLITS}
        missing = [p.name for p in self.inter.values() if not p.is_file()]
        if missing:
            raise FormatError(f"{self.folder}: missing {', '.join(missing)}")
        self.text = self.folder / f"{self.stem}.text"
        self.item_map = self.folder / f"{self.stem}.item2index"
        self.user_map = self.folder / f"{self.stem}.user2index"

    @classmethod
    def detect(cls, path: Path) -> bool:
        folder = path if path.is_dir() else path.parent
        return any(folder.glob("*.train.inter"))

    def files(self) -> list[Path]:
        extra = [p for p in (self.item_map, self.user_map, self.text) if p.is_file()]
        return extra + [self.inter[s] for s in _SPLITS]

    def _index(self, path: Path, meter: Meter | None) -> tuple[dict[str, str], list[Reject]]:
        """index -> raw id, from a `raw_id \\t index` file (no header)."""
        mapping: dict[str, str] = {}
        rejects: list[Reject] = []
        if not path.is_file():
            return mapping, rejects
        for item in iter_lines(path, "utf-8", meter):
            if isinstance(item, Reject):
                rejects.append(item)
                continue
            n, text = item
            parts = text.rstrip("\r\n").split("\t")
            if len(parts) != 2 or not parts[0] or not parts[1].strip().isdigit():
                rejects.append(Reject(str(path), n, "expected 'raw_id<TAB>index'", clip(text)))
                continue
            mapping[parts[1].strip()] = parts[0]
        return mapping, rejects

    def records(self, meter: Meter | None = None) -> Iterator[Record]:
        item_of, rejects = self._index(self.item_map, meter)
        yield from rejects
        user_of, rejects = self._index(self.user_map, meter)
        yield from rejects
        if self.text.is_file():
            yield from self._items(meter)
        # user -> rows of (line, history, target), per split, in file order.
        rows: dict[str, dict[str, list[tuple[int, list[str], str]]]] = {}
        for split in _SPLITS:
            path = self.inter[split]
            header_seen = False
            for item in iter_lines(path, "utf-8", meter):
                if isinstance(item, Reject):
                    yield item
                    continue
                n, text = item
                parts = text.rstrip("\r\n").split("\t")
                if not header_seen and parts and parts[0].startswith("user_id"):
                    header_seen = True
                    continue
                if len(parts) != 3 or not parts[0] or not parts[2].strip():
                    yield Reject(str(path), n, "expected 'user_id<TAB>item_id_list<TAB>item_id'", clip(text))
                    continue
                rows.setdefault(parts[0], {}).setdefault(split, []).append((n, parts[1].split(), parts[2].strip()))
        for user, by_split in rows.items():
            yield from self._user_events(user, by_split, item_of, user_of)

    def _user_events(self, user: str, by_split: dict[str, list[tuple[int, list[str], str]]],
                     item_of: dict[str, str], user_of: dict[str, str]) -> Iterator[Record]:
        # Rebuild the sequence: the train rows come longest prefix first in the published files, so
        # sort by (prefix length, file order reversed) to get them oldest target first.
        train = sorted(by_split.get("train", []), key=lambda r: (len(r[1]), -r[0]))
        tail = [(s, by_split[s][0]) for s in ("valid", "test") if by_split.get(s)]
        ordered = [("train", r) for r in train] + tail
        first_line, first_hist, _ = ordered[0][1]
        seq: list[tuple[str, int, str]] = [("train", first_line, it) for it in first_hist]
        for split, (line, hist, target) in ordered:
            expected = [it for _, _, it in seq][-len(hist):] if hist else []
            if hist != expected:
                path = self.inter[split]
                yield Reject(str(path), line, f"user {user}: history does not continue the user's earlier rows; "
                                              "user skipped")
                return
            seq.append((split, line, target))
        uid = user_of.get(user, user)
        for pos, (split, line, idx) in enumerate(seq):
            yield Row("event", str(self.inter[split]), line, {
                "user_id": uid, "item_id": item_of.get(idx, idx), "type": "rating", "seq": pos, "split": split,
            })

    def _items(self, meter: Meter | None) -> Iterator[Record]:
        rows: list[tuple[int, str, str]] = []
        for item in iter_lines(self.text, "utf-8", meter):
            if isinstance(item, Reject):
                yield item
                continue
            n, text = item
            parts = text.rstrip("\r\n").split("\t")
            if n == 1 and parts[0].startswith("item_id"):
                continue
            if len(parts) != 2 or not parts[0]:
                yield Reject(str(self.text), n, "expected 'item_id<TAB>text'", clip(text))
                continue
            rows.append((n, parts[0], parts[1]))
        prefix = category_prefix([t for _, _, t in rows])
        for n, item_id, text in rows:
            yield Row("item", str(self.text), n, split_unisrec_text(item_id, text, prefix))


def category_prefix(texts: list[str]) -> str | None:
    """The words that start the category part in most texts ('Industrial & Scientific' for Scientific):
    the most common first two words of the segments after the title, if at least half the texts have it."""
    counts: dict[str, int] = {}
    for text in texts:
        seen = {" ".join(seg.split()[:2]) for seg in text.strip().rstrip(".").split(". ")[1:] if seg.strip()}
        for key in seen:
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return None
    best = max(counts, key=lambda k: counts[k])
    return best if counts[best] * 2 >= len(texts) else None


def split_unisrec_text(item_id: str, text: str, prefix: str | None = None) -> dict[str, object]:
    """UniSRec item text is 'title. categories. brand. ' (any part may be empty); split it.

    Titles and brands may contain '. ' themselves ('Mr. Heater'), so the category part is found by the
    dataset's category prefix (see `category_prefix`) or by the empty-category marker '. . '. The category
    path was flattened with spaces, so it is kept as text. The original text is always in text_fields['text'].
    """
    full = text.strip()
    rec: dict[str, object] = {"item_id": item_id, "text_fields": {"text": full}}
    body = full[:-1] if full.endswith(".") else full
    title = cats = brand = None
    start = body.rfind(f". {prefix}") if prefix else -1
    if start >= 0:
        title, rest = body[:start], body[start + 2:]
        cats, _, brand = rest.partition(". ")
    elif ". . " in body:
        title, _, brand = body.rpartition(". . ")
    else:
        parts = body.split(". ")
        if len(parts) == 3:
            title, cats, brand = parts
    if title is None:
        rec["title"] = body.strip() or None
        return rec
    rec["title"] = title.strip() or None
    rec["brand"] = (brand or "").strip() or None
    if cats and cats.strip():
        rec["text_fields"] = {"text": full, "category_text": cats.strip()}
    return rec
