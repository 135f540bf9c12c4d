"""Settings: packaged defaults < TOML file < SHOPMIND_<SECTION>_<KEY> environment < CLI overrides."""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping

from platformdirs import user_cache_dir
from pydantic import BaseModel, ConfigDict, Field, ValidationError

ENV_PREFIX = "SHOPMIND_"
CONFIG_ENV = "SHOPMIND_CONFIG"
DEFAULT_CONFIG_FILE = "shopmind.toml"


class ConfigError(ValueError):
    """A configuration file or value that cannot be used."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreSettings(_Section):
    path: Path = Path("shopmind.duckdb")
    # PostgreSQL instead of the DuckDB file (postgresql://user:password@host:port/db, env SHOPMIND_STORE_URL).
    # The local folders named after `path` (knowledge, serving state, privacy) stay on each host.
    url: str | None = Field(None, repr=False, pattern=r"^postgres(ql)?://")


class DataSettings(_Section):
    dir: Path | None = None
    cache_dir: Path | None = None
    allow_download: bool = True


class IngestSettings(_Section):
    chunk_size: int = Field(50_000, ge=1, le=10_000_000)
    rejects_dir: Path | None = None
    hash_user_ids: bool = False
    user_id_salt: str | None = Field(None, repr=False)


class KnowledgeSettings(_Section):
    model: str = "all-MiniLM-L6-v2"
    backend: str = Field("auto", pattern="^(auto|torch|onnx|onnx-int8)$")
    min_agreement: float = Field(0.99, gt=0, le=1)
    batch_size: int = Field(32, ge=1, le=4096)
    max_length: int = Field(256, ge=8, le=8192)
    dtype: str = Field("float32", pattern="^(float32|float16)$")
    item_template: str = "{title}. {brand}. {categories}. {description}. {attributes}. {review_aspects}"
    keywords_per_item: int = Field(5, ge=0, le=50)
    keyword_candidates: int = Field(15, ge=1, le=200)
    keyword_diversity: float = Field(0.5, ge=0, le=1)
    half_life_days: float = Field(30.0, gt=0)
    half_life_events: float = Field(20.0, gt=0)
    co_interaction_top_k: int = Field(20, ge=1, le=1000)
    dir: Path | None = None
    onnx_dir: Path | None = None


class ServingSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    state_dir: Path | None = None  # event log and API keys; default <store>.serving
    # production: every read needs a key or a shopper session, sessions are minted by the shop's backend.
    # demo: the open storefront (anyone may pick a shopper), on loopback only unless demo_public is set.
    mode: Literal["production", "demo"] = "production"
    demo_public: bool = False
    session_ttl_s: int = Field(3600, ge=60, le=7 * 86400)  # the longest session a key may mint
    # Rate limits per client (0 = off), divided among the worker processes. A key serves a whole shop, a
    # session one shopper, an address without credentials (demo mode) one visitor.
    key_requests_per_s: float = Field(1000, ge=0)
    key_events_per_s: float = Field(5000, ge=0)
    session_requests_per_s: float = Field(20, ge=0)
    session_events_per_s: float = Field(20, ge=0)
    anonymous_requests_per_s: float = Field(50, ge=0)
    burst_s: float = Field(2.0, gt=0, le=60)  # a bucket holds this many seconds of its rate
    body_timeout_s: float = Field(10.0, gt=0, le=600)  # a request body must arrive within this
    max_batch: int = Field(1000, ge=1, le=100_000)  # events per POST /events
    max_k: int = Field(100, ge=1, le=1000)
    max_page: int = Field(50, ge=1, le=10_000)
    diversity: float = Field(0.2, ge=0, le=1)
    category_cap: int = Field(0, ge=0, le=1000)
    explore: bool = True
    torch_threads: int = Field(1, ge=1, le=256)
    workers: int = Field(1, ge=1, le=64)  # processes; they share the event log
    # Where the event log, API keys and shared secrets live: auto = PostgreSQL when store.url is set (API
    # processes on several hosts), else the state folder; file; postgres (docs/scale.md).
    event_log: Literal["auto", "file", "postgres"] = "auto"
    cpu_threads: int = Field(0, ge=0, le=256)  # threads per worker for CPU-bound requests; 0 = auto
    storefront: bool = True  # the web page, shopper sessions and the dashboard
    results_dir: Path | None = None  # benchmark results for the dashboard; default bench/results if present


class Settings(_Section):
    store: StoreSettings = Field(default_factory=StoreSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    knowledge: KnowledgeSettings = Field(default_factory=KnowledgeSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)

    @property
    def knowledge_dir(self) -> Path:
        return self.knowledge.dir or self.store.path.with_name(self.store.path.name + ".knowledge")

    @property
    def onnx_dir(self) -> Path:
        return self.knowledge.onnx_dir or Path(user_cache_dir("shopmind")) / "onnx"

    @property
    def state_dir(self) -> Path:
        return self.serving.state_dir or self.store.path.with_name(self.store.path.name + ".serving")

    @property
    def privacy_dir(self) -> Path:
        """The tombstones of forgotten users and their key (next to the store, like state_dir)."""
        return self.store.path.with_name(self.store.path.name + ".privacy")

    @property
    def benchmarks_dir(self) -> Path:
        """Where `benchmark`, `evaluate-search` and `demo` write their results (next to the store)."""
        return self.store.path.with_name(self.store.path.name + ".benchmarks")

    @property
    def cache_dir(self) -> Path:
        return self.data.cache_dir or Path(user_cache_dir("shopmind")) / "datasets"

    @property
    def rejects_dir(self) -> Path:
        return self.ingest.rejects_dir or self.store.path.with_name(self.store.path.name + ".rejects")

    def public_dict(self) -> dict[str, Any]:
        """Effective settings with secrets masked, for display."""
        d = self.model_dump(mode="json")
        if d["ingest"]["user_id_salt"]:
            d["ingest"]["user_id_salt"] = "***"
        if d["store"]["url"]:
            from .data.pgstore import redact

            d["store"]["url"] = redact(d["store"]["url"])
        d["derived"] = {"cache_dir": str(self.cache_dir), "rejects_dir": str(self.rejects_dir),
                        "knowledge_dir": str(self.knowledge_dir), "onnx_dir": str(self.onnx_dir),
                        "state_dir": str(self.state_dir),
                        "privacy_dir": str(self.privacy_dir)}
        return d


def _defaults() -> dict[str, Any]:
    return tomllib.loads(resources.files("shopmind").joinpath("defaults.toml").read_text("utf-8"))


def _merge(base: dict[str, Any], top: Mapping[str, Any], origin: str) -> None:
    for section, values in top.items():
        if section not in base or not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: unknown section [{section}] (known: {', '.join(base)})")
        for key, value in values.items():
            if key not in base[section]:
                raise ConfigError(f"{origin}: unknown key {section}.{key} (known: {', '.join(base[section])})")
            base[section][key] = value


def _env_overrides(base: dict[str, Any], environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for section, values in base.items():
        for key in values:
            name = f"{ENV_PREFIX}{section}_{key}".upper()
            if name in environ:
                out.setdefault(section, {})[key] = environ[name]
    return out


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the effective settings. `overrides` maps "section.key" to a value (from CLI flags)."""
    environ = os.environ if environ is None else environ
    merged = _defaults()
    path = config_file or environ.get(CONFIG_ENV) or None  # empty means unset
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            _merge(merged, tomllib.loads(p.read_text("utf-8")), str(p))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: invalid TOML: {e}") from None
    _merge(merged, _env_overrides(merged, environ), "environment")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        _merge(merged, {section: {key: value}}, "command line")
    # Empty strings in TOML/env mean "not set".
    for values in merged.values():
        for key, value in values.items():
            if value == "":
                values[key] = None
    try:
        return Settings.model_validate(merged)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid setting {where}: {first['msg']} (got {first.get('input')!r})") from None
