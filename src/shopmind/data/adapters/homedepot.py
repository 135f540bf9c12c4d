"""Home Depot search relevance (Kaggle 2016): `products.csv` (catalog) + `train*.csv` (graded judgments).

The Kaggle files are latin-1. A judgment file is any CSV whose header has search_term and relevance;
it also carries product titles, which fill the catalog when there is no products.csv.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..readers import Meter, Record, Reject, Row, iter_csv
from .base import Adapter, FormatError

_JUDGMENT_COLS = {"product_uid", "search_term", "relevance"}


def _header(path: Path, encoding: str) -> set[str]:
    with open(path, "rb") as f:
        return {c.strip().lstrip("\ufeff") for c in f.readline().decode(encoding, "replace").strip().split(",")}


class HomeDepotAdapter(Adapter):
    format = "homedepot"
    description = "Home Depot relevance: products.csv (product_uid, product_title) + train*.csv judgments (latin-1)"

    def __init__(self, path: str | Path, **options: object) -> None:
        super().__init__(path, **options)
        self.encoding = str(options.get("encoding") or "latin-1")
        csvs = self._glob("*.csv") if self.path.is_dir() else [self.path]
        self.products = [p for p in csvs if p.name == "products.csv"]
        self.judgments = [p for p in csvs if p not in self.products and _JUDGMENT_COLS <= _header(p, self.encoding)]
        if not self.judgments and not self.products:
            raise FormatError(f"{self.path}: no products.csv or judgment CSV (product_uid, search_term, relevance)")

    @classmethod
    def detect(cls, path: Path) -> bool:
        folder = path if path.is_dir() else path.parent
        return (folder / "products.csv").is_file() or any(
            _JUDGMENT_COLS <= _header(p, "latin-1") for p in folder.glob("*.csv"))

    def files(self) -> list[Path]:
        return self.products + self.judgments

    def records(self, meter: Meter | None = None) -> Iterator[Record]:
        titles_from_judgments = not self.products
        for path in self.products:
            # products.csv is derived UTF-8 in ../shared/data; fall back to the Kaggle encoding otherwise.
            for item in iter_csv(path, "utf-8", meter=meter):
                if isinstance(item, Reject):
                    yield item
                    continue
                n, rec = item
                yield Row("item", str(path), n, {"item_id": rec.get("product_uid"), "title": rec.get("product_title")})
        seen: set[str] = set()
        for path in self.judgments:
            for item in iter_csv(path, self.encoding, meter=meter):
                if isinstance(item, Reject):
                    yield item
                    continue
                n, rec = item
                uid = rec.get("product_uid")
                yield Row("judgment", str(path), n, {"judgment_id": rec.get("id") or None, "query": rec.get("search_term"),
                                                     "item_id": uid, "grade": rec.get("relevance")})
                if titles_from_judgments and uid and uid not in seen:
                    seen.add(uid)
                    yield Row("item", str(path), n, {"item_id": uid, "title": rec.get("product_title")})
