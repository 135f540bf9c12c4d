"""API keys in PostgreSQL (`serving_state` row "api_keys"), for API processes on hosts that share no disk: the
same salted hashes, scopes and rotation as the key file (auth.KeyStore); a change made on any host is seen by
every process within auth.WATCH_S (one indexed read per process per interval). Key data that cannot be read
fails closed, as an unreadable key file does. A database that does not answer is not a changed key set: the
keys last read stay in force (a revocation is a database write, so none can be missed meanwhile) and reads
go on being served while writes are refused (503)."""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from .auth import KeyStore
from .pglog import connect, ensure_schema

log = logging.getLogger("shopmind.serving")
ROW = "api_keys"


class PgKeyStore(KeyStore):
    def __init__(self, url: str) -> None:
        from .pglog import redact_url

        self.url = url
        self._db = threading.Lock()
        self._conn: Any = None
        label = f"{redact_url(url)} (serving_state.{ROW})"
        super().__init__(label)
        self.path = label  # type: ignore[assignment]  # for messages: no file behind it

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self.url)
            ensure_schema(self._conn)
        return self._conn

    def _read(self, lock: bool = False) -> tuple[list[dict[str, Any]], int | None]:
        row = self._connection().execute("SELECT value, version FROM serving_state WHERE name = %s"
                                         + (" FOR UPDATE" if lock else ""), [ROW]).fetchone()
        if row is None:
            return [], None
        entries = json.loads(row[0])
        if not isinstance(entries, list):
            raise ValueError("not a list of keys")
        return entries, int(row[1])

    def _stat(self) -> Any:
        import psycopg

        try:
            with self._db:
                row = self._connection().execute("SELECT version FROM serving_state WHERE name = %s", [ROW]).fetchone()
        except psycopg.OperationalError as e:  # no answer: keep the keys last read
            self._unreachable(e)
            return self._stamp
        self._down = False
        return None if row is None else int(row[0])

    def _unreachable(self, e: Exception) -> None:
        if not getattr(self, "_down", False):
            log.error("API keys in %s: the database does not answer (%s); the keys last read stay in force",
                      self.path, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        self._down = True

    def reload(self) -> None:
        import psycopg

        try:
            with self._db:
                entries, version = self._read()
        except psycopg.OperationalError as e:
            self._unreachable(e)
            if getattr(self, "_entries", None) is not None and self._stamp is not None:
                return
            entries, version = [], None  # never read: nothing to keep
        except Exception as e:  # noqa: BLE001 - key data that cannot be read: fail closed
            log.error("API keys in %s cannot be read (%s): no key is accepted until it is fixed", self.path,
                      str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
            entries, version = [], ("unreadable", str(e))  # type: ignore[assignment]
        with self._lock:
            self._entries, self._stamp, self._checked = entries, version, time.monotonic()

    @contextmanager
    def _mutating(self) -> Iterator[None]:
        with self._db:
            conn = self._connection()
            with conn.transaction():
                conn.execute("INSERT INTO serving_state VALUES (%s, '[]', 0) ON CONFLICT DO NOTHING", [ROW])
                self._entries, _ = self._read(lock=True)  # what every host wrote, under the row lock
                yield

    def _write(self) -> None:
        conn = self._connection()  # inside _mutating's transaction
        version = conn.execute("UPDATE serving_state SET value = %s, version = version + 1 WHERE name = %s "
                               "RETURNING version", [json.dumps(self._entries), ROW]).fetchone()[0]
        self._stamp = int(version)

    def close(self) -> None:
        with self._db:
            if self._conn is not None:
                self._conn.close()
