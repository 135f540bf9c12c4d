"""The searchable catalog of one dataset: item fields, filter masks and facet counts.

Filters are boolean masks over the item rows, so the lexical and the dense leg apply exactly the same
filter before their top-k. Facets are counted over a result set (item rows) and are exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.store import Store


@dataclass
class Filters:
    """Category (any level of the item's path), brand, price range and attribute equality; all optional."""

    category: str | None = None
    brand: str | None = None
    price_min: float | None = None
    price_max: float | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.category or self.brand or self.price_min is not None or self.price_max is not None
                    or self.attributes)

    @classmethod
    def parse(cls, specs: Sequence[str]) -> "Filters":
        """From 'key=value' strings: category=, brand=, price=LO..HI (either side may be empty), attr.NAME=."""
        f = cls()
        for spec in specs:
            key, sep, value = spec.partition("=")
            key, value = key.strip().lower(), value.strip()
            if not sep or not value:
                raise ValueError(f"filter {spec!r}: expected key=value")
            if key == "category":
                f.category = value
            elif key == "brand":
                f.brand = value
            elif key == "price":
                lo, dots, hi = value.partition("..")
                if not dots:
                    raise ValueError(f"filter {spec!r}: price takes LO..HI, e.g. price=10..50")
                try:
                    f.price_min = float(lo) if lo else None
                    f.price_max = float(hi) if hi else None
                except ValueError:
                    raise ValueError(f"filter {spec!r}: prices must be numbers") from None
            elif key.startswith("attr."):
                f.attributes[key[5:]] = value
            else:
                raise ValueError(f"filter {spec!r}: unknown key {key!r} (category, brand, price, attr.NAME)")
        return f


PRICE_BUCKETS = (0, 10, 25, 50, 100, 250, 500, 1000)


def price_bucket(price: float) -> str:
    """'10–25' style label of the bucket a price falls in ('1000+' above the last edge)."""
    edges = PRICE_BUCKETS
    for lo, hi in zip(edges, edges[1:]):
        if price < hi:
            return f"{lo}–{hi}"
    return f"{edges[-1]}+"


class Catalog:
    """Item rows of a dataset with the fields search needs."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame.reset_index(drop=True)
        self.item_ids = self.frame["item_id"].astype(str).to_numpy()
        self.index = {i: r for r, i in enumerate(self.item_ids)}
        self.paths: list[list[str]] = self.frame["path"].tolist()
        self.brands = self.frame["brand"].fillna("").astype(str).to_numpy()
        self.prices = self.frame["price"].astype(float).to_numpy()
        self.attributes: list[dict[str, Any]] = self.frame["attrs"].tolist()
        self._brand_lower = np.char.lower(self.brands.astype(str))
        self.titles = self.frame["title"].fillna("").astype(str).to_numpy()
        # Facet counting as sparse sums: items x values membership matrices built once.
        self._facet_names: dict[str, np.ndarray] = {}
        self._facet_matrix: dict[str, sp.csr_matrix] = {}
        buckets = [[price_bucket(p)] if not np.isnan(p) else [] for p in self.prices]
        for name, values in (("category", [list(dict.fromkeys(p)) for p in self.paths]),
                             ("brand", [[b] if b else [] for b in self.brands]), ("price", buckets)):
            names = sorted({v for vs in values for v in vs})
            index = {v: i for i, v in enumerate(names)}
            rows = np.repeat(np.arange(len(values)), [len(vs) for vs in values])
            cols = np.array([index[v] for vs in values for v in vs], np.int64)
            self._facet_names[name] = np.array(names, dtype=object)
            self._facet_matrix[name] = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)),
                                                     shape=(len(values), max(len(names), 1)))

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def load(cls, store: Store, dataset: str) -> "Catalog":
        df = store.table("SELECT item_id, title, description, brand, categories, price, attributes, text_fields "
                         "FROM items WHERE dataset = ? ORDER BY item_id", [dataset])
        if df.empty:
            raise ValueError(f"{dataset}: no items in the store (run `shopmind ingest {dataset}` first)")

        def path(row: pd.Series) -> list[str]:
            cats = row["categories"]
            if isinstance(cats, (list, np.ndarray)) and len(cats):
                return [str(c) for c in cats]
            tf = json.loads(row["text_fields"]) if isinstance(row["text_fields"], str) else {}
            return [tf["category_text"]] if tf.get("category_text") else []

        df["path"] = df.apply(path, axis=1)
        df["attrs"] = [json.loads(a) if isinstance(a, str) and a else {} for a in df["attributes"]]
        return cls(df)

    def texts(self, name: str) -> list[str]:
        """One text per item for a lexical field: title, brand, categories, description, attributes."""
        if name == "categories":
            return [" ".join(p) for p in self.paths]
        if name == "attributes":
            return [" ".join(f"{k} {v}" for k, v in a.items() if isinstance(v, (str, int, float))) for a in self.attributes]
        return self.frame[name].fillna("").astype(str).tolist()

    def mask(self, filters: Filters | None) -> np.ndarray | None:
        """Rows that pass the filters (None: no filter)."""
        if filters is None or filters.is_empty():
            return None
        keep = np.ones(len(self), bool)
        if filters.category:  # a column of the category membership matrix (any level of the path)
            want = filters.category.lower()
            cols = [j for j, n in enumerate(self._facet_names["category"]) if str(n).lower() == want]
            member = self._facet_matrix["category"][:, cols].sum(axis=1) if cols else np.zeros((len(self), 1))
            keep &= np.asarray(member).ravel() > 0
        if filters.brand:
            keep &= self._brand_lower == filters.brand.lower()
        if filters.price_min is not None:
            keep &= np.nan_to_num(self.prices, nan=-np.inf) >= filters.price_min
        if filters.price_max is not None:
            keep &= np.nan_to_num(self.prices, nan=np.inf) <= filters.price_max
        for k, v in filters.attributes.items():
            keep &= np.array([str(a.get(k, "")).lower() == v.lower() for a in self.attributes])
        return keep

    def facets(self, rows: Sequence[int] | np.ndarray, top: int = 10) -> dict[str, list[tuple[str, int]]]:
        """Counts of categories (every level) and brands over result rows, most frequent first (ties by
        value); price buckets in price order, as a shopper reads a price range."""
        rows = np.asarray(rows, np.int64)
        out: dict[str, list[tuple[str, int]]] = {}
        for name, matrix in self._facet_matrix.items():
            names = self._facet_names[name]
            counts = np.asarray(matrix[rows].sum(axis=0)).ravel()[:len(names)] if len(rows) else np.zeros(len(names))
            nz = np.flatnonzero(counts)
            order = nz[np.lexsort((names[nz].astype(str), -counts[nz]))][:top]
            if name == "price":
                order = sorted(order, key=lambda i: float(str(names[i]).split("–")[0].rstrip("+")))
            out[name] = [(str(names[i]), int(counts[i])) for i in order]
        return out
