"""Where the serving state that every API process must agree on lives: the event log, the API keys and the
secrets that sign sessions, recommendation tokens and forget digests. In the state folder (the embedded
default: processes of one host), or in PostgreSQL when the store is there (`serving.event_log`: auto, file or
postgres), so API processes on hosts that share no disk serve one shop."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import ConfigError, Settings
from ..fsutil import secret_key


def log_url(settings: Settings) -> str | None:
    """The PostgreSQL URL holding the serving state, or None for the state folder."""
    mode = settings.serving.event_log
    if mode == "file":
        return None
    if mode == "postgres" and not settings.store.url:
        raise ConfigError("serving.event_log = postgres needs a PostgreSQL store (store.url / SHOPMIND_STORE_URL)")
    return settings.store.url


def open_event_log(settings: Settings, dataset: str, digest: Callable[[str], str] | None = None,
                   required: Sequence[str] = ("user_id", "type")) -> Any:
    """The dataset's event log: PgEventLog in PostgreSQL, else EventLog in <state_dir>/<dataset>."""
    url = log_url(settings)
    if url:
        from .pglog import PgEventLog

        return PgEventLog(url, dataset, digest=digest, required=required)
    from .eventlog import EventLog

    return EventLog(Path(settings.state_dir) / dataset, digest=digest, required=required)


def open_keys(settings: Settings) -> Any:
    """The API key store every process checks keys against."""
    url = log_url(settings)
    if url:
        from .pgkeys import PgKeyStore

        return PgKeyStore(url)
    from .auth import KeyStore

    return KeyStore(Path(settings.state_dir) / "api_keys.json")


def secret(settings: Settings, name: str, file: Path) -> bytes:
    """32 random bytes every process shares: `file` in the state folder, or the row `name` in PostgreSQL."""
    url = log_url(settings)
    if url:
        from .pglog import shared_secret

        return shared_secret(url, name)
    return secret_key(file)
