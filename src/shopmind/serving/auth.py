"""API keys for write and admin endpoints, stored hashed.

A key is 32 random bytes (urlsafe base64, prefixed "sm_"), shown once when created. The file keeps
name, scope and HMAC-SHA256(salt, key) per key; a fast hash is right here because the keys are random
256-bit secrets, not passwords (nothing to brute-force), and it keeps every write request cheap.
Comparison is constant-time. Scopes: "write" (events) and "admin" (reload, forget users; implies write).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from pathlib import Path

SCOPES = ("write", "admin")


class KeyStoreError(ValueError):
    """A bad key request (unknown scope, duplicate name)."""


def _digest(salt: bytes, key: str) -> str:
    return hmac.new(salt, key.encode(), hashlib.sha256).hexdigest()


class KeyStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: list[dict[str, str]] = []
        self.reload()

    def reload(self) -> None:
        entries = json.loads(self.path.read_text()) if self.path.is_file() else []
        with self._lock:
            self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[dict[str, str]]:
        return [{"name": e["name"], "scope": e["scope"]} for e in self._entries]

    def create(self, name: str, scope: str) -> str:
        """A new key (returned once, never stored in clear)."""
        if scope not in SCOPES:
            raise KeyStoreError(f"scope must be one of {', '.join(SCOPES)}")
        if not name or len(name) > 100:
            raise KeyStoreError("a key needs a name of 1 to 100 characters")
        with self._lock:
            if any(e["name"] == name for e in self._entries):
                raise KeyStoreError(f"a key named {name!r} exists; revoke it first")
            key = "sm_" + secrets.token_urlsafe(32)
            salt = secrets.token_bytes(16)
            self._entries.append({"name": name, "scope": scope, "salt": salt.hex(), "hash": _digest(salt, key)})
            self._write()
        return key

    def revoke(self, name: str) -> bool:
        with self._lock:
            before = len(self._entries)
            self._entries = [e for e in self._entries if e["name"] != name]
            if len(self._entries) != before:
                self._write()
            return len(self._entries) != before

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # hashes only, still owner-only
        with os.fdopen(fd, "w") as f:
            json.dump(self._entries, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def check(self, key: str | None, scope: str) -> str | None:
        """The key's name when it is valid for `scope` (admin keys pass write checks), else None."""
        if not key or len(key) > 200:
            return None
        found = None
        for e in self._entries:  # no early exit: the time does not depend on which entry matched
            ok = hmac.compare_digest(_digest(bytes.fromhex(e["salt"]), key), e["hash"])
            if ok and (e["scope"] == scope or e["scope"] == "admin"):
                found = e["name"]
        return found
