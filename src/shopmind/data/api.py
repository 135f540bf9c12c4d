"""High-level data operations used by the CLI, the demo and tests: resolve a dataset, ingest it, report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Settings
from .adapters import Adapter, Mapping, open_adapter
from .ingest import Ingestor, IngestReport, ProgressFn, check_dataset_name
from .registry import REGISTRY, DatasetError, DatasetSpec, resolve, sha256_of
from .forget import purge_forgotten
from .store import Store
from .tombstones import Tombstones


@dataclass
class Source:
    """What to ingest: a dataset name, the adapter that reads it, and its registry entry if any."""

    dataset: str
    adapter: Adapter
    spec: DatasetSpec | None


def open_source(settings: Settings, target: str, fmt: str | None = None, name: str | None = None,
                mapping: Mapping | None = None, encoding: str | None = None, on_download: Any = None) -> Source:
    """`target` is a registered dataset name or a path to a folder/file in a known format."""
    options: dict[str, Any] = {}
    if mapping is not None:
        options["mapping"] = mapping
    if encoding and mapping is None:
        options["encoding"] = encoding
    if target in REGISTRY and not Path(target).exists():
        spec, folder = resolve(target, settings.data.dir, settings.cache_dir, settings.data.allow_download,
                               on_file=on_download)
        return Source(check_dataset_name(name or spec.name), open_adapter(folder, fmt or spec.format, **options), spec)
    path = Path(target)
    if not path.exists():
        raise DatasetError(f"{target!r} is neither a registered dataset ({', '.join(REGISTRY)}) nor an existing path")
    adapter = open_adapter(path, fmt, **options)
    default = (path.name if path.is_dir() else path.name.split(".")[0]) or "dataset"
    return Source(check_dataset_name(name or default), adapter, None)


def fingerprint(adapter: Adapter) -> list[dict[str, Any]]:
    return [{"path": str(p), "bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in adapter.files()]


def already_ingested(store: Store, dataset: str, files: list[dict[str, Any]]) -> bool:
    """Whether the last successful run of `dataset` read exactly these files (same sha256)."""
    rows = store.con.execute(
        "SELECT files FROM ingest_runs WHERE dataset = ? AND status IN ('completed', 'completed_with_rejects') "
        "ORDER BY run_id DESC LIMIT 1", [dataset]).fetchall()
    if not rows:
        return False
    done = json.loads(rows[0][0])
    return [f.get("sha256") for f in done] == [f["sha256"] for f in files]


def ingest_source(store: Store, settings: Settings, source: Source, progress: ProgressFn | None = None,
                  force: bool = True, allow_empty: bool = False) -> IngestReport | None:
    """Ingest one source. With force=False, skip it (return None) when the same files were ingested.
    An input without any record raises EmptyInputError unless `allow_empty`."""
    files = fingerprint(source.adapter)
    if not force and already_ingested(store, source.dataset, files):
        return None
    salt = ingest_salt(settings)
    if settings.ingest.hash_user_ids and not salt:
        raise ValueError("ingest.hash_user_ids is on but no ingest.user_id_salt is set "
                         "(set SHOPMIND_INGEST_USER_ID_SALT)")
    tombstones = Tombstones(settings.privacy_dir)
    purge_forgotten(store, tombstones, source.dataset)  # forgets that found the store locked
    ingestor = Ingestor(store, source.dataset, chunk_size=settings.ingest.chunk_size, rejects_dir=settings.rejects_dir,
                        user_id_salt=salt, progress=progress, forgotten=tombstones.matcher(source.dataset),
                        allow_empty=allow_empty)
    return ingestor.run(source.adapter, files=files)


def ingest_salt(settings: Settings) -> str | None:
    """The salt ingest hashes user ids with (None when ingest.hash_user_ids is off)."""
    return settings.ingest.user_id_salt if settings.ingest.hash_user_ids else None


def stats_with_expected(store: Store, dataset: str) -> dict[str, Any]:
    """Store statistics plus, for registered datasets, the published figures and whether they match."""
    stats = store.stats(dataset)
    spec = REGISTRY.get(dataset)
    if spec is not None:
        stats["expected"] = dict(spec.expected)
        stats["matches_published"] = all(stats.get(k) == v for k, v in spec.expected.items())
    else:
        stats["expected"], stats["matches_published"] = {}, None
    return stats
