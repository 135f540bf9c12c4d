"""Source formats: one adapter per published dataset format, plus generic CSV/JSONL/Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .amazon import AmazonAdapter
from .base import Adapter, FormatError, clean_html
from .generic import GenericAdapter, Mapping
from .homedepot import HomeDepotAdapter
from .movielens import MovieLensAdapter
from .s3rec import S3RecAdapter
from .unisrec import UniSRecAdapter

FORMATS: dict[str, type[Adapter]] = {a.format: a for a in (
    UniSRecAdapter, S3RecAdapter, AmazonAdapter, HomeDepotAdapter, MovieLensAdapter, GenericAdapter)}
# Aliases users may type.
FORMATS.update({"recbole": UniSRecAdapter, "amazon2018": AmazonAdapter, "ml-100k": MovieLensAdapter,
                "csv": GenericAdapter, "jsonl": GenericAdapter, "parquet": GenericAdapter})


def detect_format(path: Path) -> str:
    """The format of a folder or file, or FormatError listing the formats when none fits."""
    for name in ("unisrec", "s3rec", "movielens", "homedepot", "amazon"):
        if FORMATS[name].detect(path):
            return name
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if path.is_file() and suffixes and suffixes[-1] in GenericAdapter._EXT:
        return "generic"
    raise FormatError(f"{path}: cannot tell the format; pass --format one of {', '.join(sorted(set(FORMATS)))}")


def open_adapter(path: str | Path, fmt: str | None = None, **options: Any) -> Adapter:
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file or folder")
    if fmt is None and options.get("mapping") is not None:
        fmt = "generic"  # a column mapping is for generic files: a shop's products.csv is not Home Depot's
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise FormatError(f"unknown format {fmt!r}; known: {', '.join(sorted(set(FORMATS)))}")
    cls = FORMATS[fmt]
    if cls is not GenericAdapter and options.get("mapping") is not None:
        raise FormatError(f"a column mapping (--map, --mapping, --kind) is for generic files; --format {fmt} "
                          "has its own columns (use --format csv, jsonl or parquet)")
    if cls is GenericAdapter and fmt in ("csv", "jsonl", "parquet"):
        options.setdefault("file_format", fmt)
    return cls(path, **options)


__all__ = ["Adapter", "FormatError", "FORMATS", "GenericAdapter", "Mapping", "clean_html", "detect_format",
           "open_adapter"]
