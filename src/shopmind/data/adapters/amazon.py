"""Amazon review data (McAuley lab, 2018 and 2014): reviews `*.json(.gz)` + metadata `meta_*.json(.gz)`.

Reviews become `review` events (rating in `value`, text, summary); metadata becomes items with HTML
removed from titles and descriptions, prices parsed from '$1,250.00', and also_buy / also_view kept as
item relations. The 2014 files (Python dict literals, `related`, `imUrl`, nested `categories`) load too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from ..readers import Meter, Record, Reject, Row, iter_jsonl
from .base import Adapter, FormatError, clean_html

_PRICE = re.compile(r"^\s*\$?\s*([0-9][0-9,]*(?:\.[0-9]+)?)")
_RELATIONS = ("also_buy", "also_view", "also_bought", "also_viewed", "bought_together", "buy_after_viewing")


class AmazonAdapter(Adapter):
    format = "amazon"
    description = "Amazon review data 2018/2014: <Category>_5.json.gz reviews + meta_<Category>.json.gz"

    def __init__(self, path: str | Path, **options: object) -> None:
        super().__init__(path, **options)
        if self.path.is_dir():
            files = self._glob("*.json.gz", "*.json", "*.jsonl", "*.jsonl.gz")
        else:
            files = [self.path]
        self.meta = [p for p in files if p.name.startswith("meta_")]
        self.reviews = [p for p in files if not p.name.startswith("meta_")]
        if not self.meta and not self.reviews:
            raise FormatError(f"{self.path}: no Amazon review (*.json.gz) or metadata (meta_*.json.gz) files")

    @classmethod
    def detect(cls, path: Path) -> bool:
        folder = path if path.is_dir() else path.parent
        return any(folder.glob("meta_*.json*")) or any(folder.glob("*_5.json*"))

    def files(self) -> list[Path]:
        return self.meta + self.reviews

    def records(self, meter: Meter | None = None) -> Iterator[Record]:
        sources = [(p, "item", meta_to_item) for p in self.meta] + [(p, "event", review_to_event) for p in self.reviews]
        for path, kind, convert in sources:
            for item in iter_jsonl(path, "utf-8", meter, literal_fallback=True):
                if isinstance(item, Reject):
                    yield item
                    continue
                n, obj = item
                rec = convert(obj)
                yield Row(kind, str(path), n, rec) if rec else Reject(str(path), n, "metadata without an asin")


def review_to_event(obj: dict[str, Any]) -> dict[str, Any]:
    """One review line -> Event fields (missing required fields are left for validation to reject)."""
    extra: dict[str, Any] = {}
    for key in ("verified", "vote", "style", "reviewerName", "helpful"):
        if key in obj and obj[key] not in (None, ""):
            extra[key] = obj[key]
    if obj.get("image"):
        extra["images"] = len(obj["image"])
    return {
        "user_id": obj.get("reviewerID"),
        "item_id": obj.get("asin"),
        "type": "review",
        "value": obj.get("overall"),
        "timestamp": obj.get("unixReviewTime"),
        "review_text": obj.get("reviewText"),
        "summary": obj.get("summary"),
        "extra": extra,
    }


def parse_price(value: Any) -> float | None:
    """'$1,250.00' -> 1250.0; '$10.00 - $20.00' -> 10.0 (the low end); junk (CSS, HTML) -> None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or len(value) > 40:
        return None
    m = _PRICE.match(value)
    return float(m.group(1).replace(",", "")) if m else None


def _text_list(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value] if isinstance(value, str) else []
    out = [clean_html(v) for v in items if isinstance(v, str)]
    return [v for v in out if v]


def meta_to_item(obj: dict[str, Any]) -> dict[str, Any] | None:
    asin = obj.get("asin")
    if not isinstance(asin, str) or not asin.strip():
        return None
    cats = obj.get("category", obj.get("categories", []))
    if cats and isinstance(cats[0], list):  # 2014: a list of paths; keep the first
        cats = cats[0]
    categories = _text_list(cats)
    attributes: dict[str, str] = {}
    details = obj.get("details")
    if isinstance(details, dict):
        for k, v in details.items():
            key = str(k).strip().rstrip(":").strip()
            val = clean_html(str(v)) if v is not None else None
            if key and val and key.upper() != "ASIN":
                attributes[key] = val
    for key in ("main_cat", "date", "tech1", "tech2", "fit"):
        val = clean_html(obj.get(key)) if isinstance(obj.get(key), str) else None
        if val:
            attributes[key] = val
    rank = obj.get("rank", obj.get("salesRank"))
    if rank:
        attributes["sales_rank"] = clean_html(str(rank if not isinstance(rank, list) else "; ".join(map(str, rank)))) or ""
        if not attributes["sales_rank"]:
            del attributes["sales_rank"]
    related: dict[str, list[str]] = {}
    nested = obj.get("related")
    rel_src: dict[str, Any] = nested if isinstance(nested, dict) else obj
    for key in _RELATIONS:
        ids = rel_src.get(key)
        if isinstance(ids, list) and ids:
            related[key] = [str(i) for i in ids if i]
    images = obj.get("imageURLHighRes") or obj.get("imageURL") or obj.get("image") or obj.get("imUrl")
    image = images[0] if isinstance(images, list) and images else images if isinstance(images, str) else None
    text_fields: dict[str, str] = {}
    features = _text_list(obj.get("feature"))
    if features:
        text_fields["features"] = "\n".join(features)
    description = _text_list(obj.get("description"))
    return {
        "item_id": asin.strip(),
        "title": clean_html(obj.get("title")) if isinstance(obj.get("title"), str) else None,
        "description": "\n".join(description) or None,
        "brand": clean_html(obj.get("brand")) if isinstance(obj.get("brand"), str) else None,
        "categories": categories,
        "price": parse_price(obj.get("price")),
        "attributes": attributes,
        "image_url": image,
        "text_fields": text_fields,
        "related": related,
    }
