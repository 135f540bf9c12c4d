"""Generic CSV / JSONL / Parquet files with a column mapping (CLI flags or a small TOML file).

A mapping names, for one record kind, which source column feeds each field of the data model, how source
values translate (e.g. event type 'transaction' -> 'purchase'), and reader options. Columns that are not
mapped are kept: in `attributes` for items and users, in `extra` for events. Example mapping.toml:

    kind = "events"
    [columns]
    user_id = "visitorid"
    item_id = "itemid"
    type = "event"
    [values.type]
    addtocart = "add_to_cart"
    transaction = "purchase"
    [options]
    timestamp_unit = "ms"

`[constants]` gives a field one value for every record, for a column the file does not have (a ratings
file has no event type: `type = "rating"`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..readers import Meter, Record, Reject, Row, check_encoding, iter_csv, iter_jsonl, iter_parquet
from ..schema import RECORD_MODELS
from .base import Adapter, FormatError, MissingColumnError

KINDS = {"items": "item", "events": "event", "judgments": "judgment", "users": "user"}
_SPILL = {"item": "attributes", "user": "attributes", "event": "extra", "judgment": None}
_LIST_FIELDS = {"categories"}
_OPTION_KEYS = {"encoding", "delimiter", "timestamp_unit", "list_separator"}


@dataclass
class Mapping:
    """How one source file maps onto one record kind."""

    kind: str = "events"
    columns: dict[str, str] = field(default_factory=dict)  # model field -> source column
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # model field -> {source value: value}
    constants: dict[str, Any] = field(default_factory=dict)  # model field -> the value of every record
    encoding: str = "utf-8"
    delimiter: str = ","
    timestamp_unit: str = "s"  # for numeric timestamps: s or ms
    list_separator: str = "|"
    keep_unmapped: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise FormatError(f"unknown kind {self.kind!r}; use one of {', '.join(KINDS)}")
        model = RECORD_MODELS[KINDS[self.kind]]
        unknown = (set(self.columns) | set(self.constants)) - set(model.model_fields)
        if unknown:
            raise FormatError(f"unknown {self.kind} field(s) in mapping: {', '.join(sorted(unknown))}; "
                              f"fields are {', '.join(model.model_fields)}")
        both = set(self.columns) & set(self.constants)
        if both:
            raise FormatError(f"field(s) {', '.join(sorted(both))} both mapped to a column and given a constant; "
                              "keep one")
        if self.timestamp_unit not in ("s", "ms"):
            raise FormatError(f"timestamp_unit must be 's' or 'ms', got {self.timestamp_unit!r}")
        self.encoding = check_encoding(self.encoding)
        if len(self.delimiter) != 1:
            raise FormatError(f"delimiter must be one character, got {self.delimiter!r}")

    @classmethod
    def from_toml(cls, path: Path, **overrides: Any) -> "Mapping":
        try:
            doc = tomllib.loads(path.read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise FormatError(f"{path}: cannot read mapping: {e}") from None
        options = doc.get("options", {})
        sections = {"kind", "columns", "values", "constants", "options"}
        unknown = set(options) - _OPTION_KEYS - {"keep_unmapped"}
        if unknown or set(doc) - sections:
            raise FormatError(f"{path}: unknown keys {sorted(unknown | (set(doc) - sections))}")
        kwargs: dict[str, Any] = {"kind": doc.get("kind", "events"), "columns": dict(doc.get("columns", {})),
                                  "values": {k: dict(v) for k, v in doc.get("values", {}).items()},
                                  "constants": dict(doc.get("constants", {})), **options}
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)


class GenericAdapter(Adapter):
    """One CSV, JSONL (optionally gzipped) or Parquet file, or every such file in a folder."""

    format = "generic"
    description = "CSV / JSONL / Parquet with a column mapping (--kind, --map field=column, --mapping file.toml)"
    _EXT = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}

    def __init__(self, path: str | Path, mapping: Mapping | None = None, file_format: str | None = None,
                 **options: Any) -> None:
        super().__init__(path, **options)
        self.mapping = mapping or Mapping()
        self.file_format = file_format
        if self.path.is_dir():
            self._files = sorted(p for p in self.path.iterdir() if p.is_file() and self._kind_of(p))
        else:
            self._files = [self.path]
        if not self._files:
            raise FormatError(f"{self.path}: no .csv/.jsonl/.parquet files")
        for p in self._files:
            if self._kind_of(p) is None:
                raise FormatError(f"{p}: cannot tell the file format from its name; pass --format csv|jsonl|parquet")

    def _kind_of(self, p: Path) -> str | None:
        if self.file_format:
            return self.file_format
        suffixes = [s.lower() for s in p.suffixes if s.lower() != ".gz"]
        return self._EXT.get(suffixes[-1]) if suffixes else None

    def files(self) -> list[Path]:
        return list(self._files)

    def check(self) -> None:
        """Every CSV and Parquet file must have a column for each field its kind requires (JSONL has no header:
        its records are checked one by one). Reads only the header (CSV) or the schema (Parquet)."""
        for path in self._files:
            fmt = self._kind_of(path)
            if fmt == "csv":
                header: list[str] = []
                rows = iter_csv(path, self.mapping.encoding, self._delimiter(path), header_out=header)
                try:
                    next(rows, None)
                finally:
                    rows.close()  # type: ignore[attr-defined]
            elif fmt == "parquet":
                import pyarrow.parquet as pq

                try:
                    header = list(pq.read_schema(path).names)
                except Exception:  # a damaged file: iter_parquet rejects it with the reason
                    continue
            else:
                continue
            if header:  # no header at all is an empty file: the ingest reports it
                self.check_columns(path, header)

    def check_columns(self, path: Path, header: list[str]) -> None:
        """MissingColumnError naming the missing source column(s) and the columns found."""
        m = self.mapping
        kind = KINDS[m.kind]
        model = RECORD_MODELS[kind]
        found = set(header)

        def named(field: str) -> str:
            col = m.columns.get(field, field)
            return repr(col) + (f" (for {field})" if col != field else "")

        missing = [named(f) for f, info in model.model_fields.items()
                   if info.is_required() and f not in m.constants and m.columns.get(f, f) not in found]
        if kind == "event" and not {m.columns.get("item_id", "item_id"), m.columns.get("query", "query")} & found:
            missing.append(f"{named('item_id')} (or {named('query')}, for search events)")
        if missing:
            cols = ", ".join(header) if len(header) <= 30 else ", ".join(header[:30]) + f", … ({len(header)} in all)"
            raise MissingColumnError(f"{path}: missing required column {' and '.join(missing)} for {m.kind}; "
                                     f"columns found: {cols} (map a column with --map FIELD=COLUMN)")

    def _delimiter(self, path: Path) -> str:
        m = self.mapping
        return "\t" if path.suffix.lower() == ".tsv" and m.delimiter == "," else m.delimiter

    def records(self, meter: Meter | None = None) -> Iterator[Record]:
        m = self.mapping
        kind = KINDS[m.kind]
        for path in self._files:
            fmt = self._kind_of(path)
            if fmt == "csv":
                source: Iterator[Any] = iter_csv(path, m.encoding, self._delimiter(path), meter)
            elif fmt == "jsonl":
                source = iter_jsonl(path, m.encoding, meter)
            elif fmt == "parquet":
                source = iter_parquet(path, meter)
            else:
                raise FormatError(f"unknown file format {fmt!r}; use csv, jsonl or parquet")
            for item in source:
                if isinstance(item, Reject):
                    yield item
                    continue
                n, raw = item
                yield Row(kind, str(path), n, self.map_record(kind, raw))

    def map_record(self, kind: str, raw: dict[str, Any]) -> dict[str, Any]:
        """Source record -> model fields (validation happens later, in ingest)."""
        m = self.mapping
        fields = RECORD_MODELS[kind].model_fields
        by_source = {src: dst for dst, src in m.columns.items()}
        out: dict[str, Any] = {}
        spill: dict[str, Any] = {}
        for col, value in raw.items():
            dst = by_source.get(col, col if col in fields and col not in m.columns else None)
            if value == "":
                value = None
            if dst is None:
                if value is not None and m.keep_unmapped:
                    spill[col] = value
                continue
            if dst in m.values and value is not None:
                value = m.values[dst].get(str(value), value)
            if dst in _LIST_FIELDS and isinstance(value, str):
                value = [v.strip() for v in value.split(m.list_separator) if v.strip()]
            if dst == "timestamp" and value is not None and m.timestamp_unit == "ms":
                try:
                    value = float(value) / 1000.0
                except (TypeError, ValueError):
                    pass  # not numeric: leave it for the datetime parser
            out[dst] = value
        out.update(m.constants)
        target = _SPILL[kind]
        if target and spill:
            base = dict(out.get(target) or {})
            if target == "attributes":
                spill = {k: v if isinstance(v, str) else str(v) for k, v in spill.items()}
            base.update(spill)
            out[target] = base
        return out
