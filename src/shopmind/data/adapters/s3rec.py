"""S3-Rec sequence format: `<name>.txt` (`user item1 item2 ...` in time order) + `<name>_item2attributes.json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from ..readers import Meter, Record, Reject, Row, clip, iter_delimited
from .base import Adapter, FormatError


class S3RecAdapter(Adapter):
    format = "s3rec"
    description = "S3-Rec: <name>.txt with 'user item1 item2 ...' per line (+ <name>_item2attributes.json)"

    def __init__(self, path: str | Path, **options: object) -> None:
        super().__init__(path, **options)
        if self.path.is_dir():
            seqs = [p for p in self._glob("*.txt") if not p.name.endswith("_sample.txt")]
            if len(seqs) != 1:
                raise FormatError(f"{self.path}: expected one <name>.txt sequence file, found "
                                  f"{[p.name for p in seqs] or 'none'}")
            self.seq_file = seqs[0]
        else:
            self.seq_file = self.path
        self.attr_file = self.seq_file.with_name(self.seq_file.stem + "_item2attributes.json")

    @classmethod
    def detect(cls, path: Path) -> bool:
        folder = path if path.is_dir() else path.parent
        return any(folder.glob("*_item2attributes.json"))

    def files(self) -> list[Path]:
        return [self.seq_file] + ([self.attr_file] if self.attr_file.is_file() else [])

    def records(self, meter: Meter | None = None) -> Iterator[Record]:
        name = str(self.seq_file)
        for item in iter_delimited(self.seq_file, " ", "utf-8", meter, min_fields=2):
            if isinstance(item, Reject):
                yield item
                continue
            n, parts = item
            parts = [p for p in parts if p]
            if len(parts) < 2:
                yield Reject(name, n, "a user line needs at least one item", clip(" ".join(parts)))
                continue
            user = parts[0]
            for pos, it in enumerate(parts[1:]):
                # S3-Rec's data comes from Amazon 5-core review files: each interaction is a review.
                yield Row("event", name, n, {"user_id": user, "item_id": it, "type": "review", "seq": pos})
        if self.attr_file.is_file():
            yield from self._items(meter)

    def _items(self, meter: Meter | None) -> Iterator[Record]:
        name = str(self.attr_file)
        try:
            data = json.loads(self.attr_file.read_text("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            yield Reject(name, getattr(e, "lineno", None), f"invalid JSON: {e}")
            return
        finally:
            if meter is not None:
                meter.start_file()
                meter.at(self.attr_file.stat().st_size)
        if not isinstance(data, dict):
            yield Reject(name, 1, "expected a JSON object mapping item -> attribute ids")
            return
        for i, (item_id, attrs) in enumerate(data.items(), start=1):
            if not isinstance(attrs, list):
                yield Reject(name, 1, f"item {item_id}: attributes must be a list", clip(repr(attrs)))
                continue
            # One JSON document: the entry number stands in for a line number.
            yield Row("item", name, i, {"item_id": str(item_id),
                                        "attributes": {"attribute_ids": " ".join(str(a) for a in attrs)}})
