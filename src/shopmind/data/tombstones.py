"""Tombstones of forgotten users, shared by every role (ingest, train, serving, the CLI).

The registry is a folder (`Settings.privacy_dir`) with a random key (`tombstones.key`, created once, owner
only) and an append-only `tombstones.jsonl` of {"user": HMAC-SHA256(key, user id) hex, "dataset": name or
null (every dataset), "at": unix time}. The clear id is never written: a user is recognised by recomputing
the keyed digest. Appends hold an exclusive `flock` and are fsynced; readers reload when the file changed.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Callable

from ..fsutil import secret_key

KEY_FILE = "tombstones.key"
LOG_FILE = "tombstones.jsonl"


def load_key(folder: Path) -> bytes:
    """The registry's secret key (created once, mode 0600, in a folder of mode 0700)."""
    return secret_key(Path(folder) / KEY_FILE, folder_mode=0o700)


class Tombstones:
    """The forgotten users: `add` records one, `in` / `is_forgotten` ask, `digest` is the keyed hash."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._key: bytes | None = None  # read (or created) on first use: asking an empty registry creates nothing
        self.path = self.folder / LOG_FILE
        self._stat: tuple[int, int, int] | None = None
        self._scopes: dict[str, set[str | None]] = {}  # digest -> datasets (None: all)

    def digest(self, user_id: str) -> str:
        """HMAC-SHA256 of the user id under the registry key (hex); a plain Callable[[str], str]."""
        if self._key is None:
            self._key = load_key(self.folder)
        return hmac.new(self._key, str(user_id).encode("utf-8"), hashlib.sha256).hexdigest()

    def add(self, user_id: str, dataset: str | None = None) -> str:
        """Record that the user is forgotten (in one dataset, or all when None); returns the digest."""
        record = {"user": self.digest(user_id), "dataset": dataset, "at": int(time.time())}
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock
        self._scopes.setdefault(record["user"], set()).add(dataset)
        return str(record["user"])

    def _reload(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stat, self._scopes = None, {}
            return
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if key == self._stat:
            return
        scopes: dict[str, set[str | None]] = {}
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a torn last line (an append cut by a crash) was never confirmed
                try:
                    rec = json.loads(line)
                    scopes.setdefault(str(rec["user"]), set()).add(rec.get("dataset"))
                except (ValueError, KeyError, TypeError):
                    continue
        self._stat, self._scopes = key, scopes

    def digests(self, dataset: str | None = None) -> set[str]:
        """Digests of the forgotten users (those forgotten in `dataset` or everywhere, when given)."""
        self._reload()
        if dataset is None:
            return set(self._scopes)
        return {d for d, scopes in self._scopes.items() if None in scopes or dataset in scopes}

    def is_forgotten(self, user_id: str, dataset: str | None = None) -> bool:
        """Whether the user is forgotten everywhere, or in `dataset` when one is given."""
        self._reload()
        if not self._scopes:
            return False
        scopes = self._scopes.get(self.digest(user_id))
        return bool(scopes) and (dataset is None or None in scopes or dataset in scopes)

    def __contains__(self, user_id: object) -> bool:
        return isinstance(user_id, str) and self.is_forgotten(user_id)

    def __len__(self) -> int:
        self._reload()
        return len(self._scopes)

    def matcher(self, dataset: str) -> Callable[[str], bool] | None:
        """A fast predicate for one dataset's ingest (digests cached per id); None when nobody is forgotten."""
        wanted = self.digests(dataset)
        if not wanted:
            return None
        cache: dict[str, bool] = {}

        def forgotten(user_id: str) -> bool:
            hit = cache.get(user_id)
            if hit is None:
                if len(cache) > 1_000_000:
                    cache.clear()
                hit = cache[user_id] = self.digest(user_id) in wanted
            return hit

        return forgotten
