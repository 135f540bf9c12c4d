"""API keys, stored hashed, scoped, watched: a revocation or rotation reaches every worker within a second.

A key is 32 random bytes (urlsafe base64, prefixed "sm_"), shown once when created or rotated. The file
keeps name, scopes and HMAC-SHA256(salt, key) per key; a fast hash is right here because the keys are
random 256-bit secrets, not passwords (nothing to brute-force), and it keeps every request cheap.
Comparison is constant-time.

Scopes (as Meilisearch's key actions and Gorse's API/admin split; "admin" holds all of them):
- read: search, items, similar items, recommendations without their private parts, stats, dashboard;
- read_private: also what reveals a shopper's history (explanations, known_user, history sizes,
  personalised search, the shopper list);
- write: post events for any shopper;
- session: mint storefront sessions (`POST /sessions`), each bound to one shopper and expiring;
- admin: everything, plus reload and forgetting users.

Every worker process stats the key file at most every `WATCH_S` seconds on the request path (the file
is replaced atomically by `create`, `revoke` and `rotate`), so a change takes effect everywhere within
about that long, without a restart. A key file that cannot be read fails closed: no key is accepted
until it is fixed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

SCOPES = ("read", "read_private", "write", "session", "admin")
IMPLIES = {"admin": set(SCOPES), "read_private": {"read", "read_private"}}
WATCH_S = 0.25  # how often the key file is checked for changes (revocation latency bound)
log = logging.getLogger("shopmind.serving")


class KeyStoreError(ValueError):
    """A bad key request (unknown scope, duplicate or unknown name)."""


def _digest(salt: bytes, key: str) -> str:
    return hmac.new(salt, key.encode(), hashlib.sha256).hexdigest()


def granted(scopes: Iterable[str]) -> frozenset[str]:
    """Every scope a key with `scopes` holds (admin and read_private imply others)."""
    out: set[str] = set()
    for s in scopes:
        out |= IMPLIES.get(s, {s})
    return frozenset(out)


def _scopes_of(entry: dict[str, Any]) -> list[str]:
    """Entries written before scopes were lists hold one "scope" string."""
    raw = entry.get("scopes") or [entry.get("scope", "")]
    return [s for s in raw if s in SCOPES]


class KeyStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self.reload()

    # -- the file ----------------------------------------------------------------------------------------
    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def reload(self) -> None:
        stamp = self._stat()
        try:
            entries = json.loads(self.path.read_text()) if stamp is not None else []
            if not isinstance(entries, list):
                raise ValueError("not a list of keys")
        except (OSError, ValueError) as e:
            log.error("API key file %s cannot be read (%s): no key is accepted until it is fixed", self.path, e)
            entries = []
        with self._lock:
            self._entries, self._stamp, self._checked = entries, stamp, time.monotonic()

    def watch(self) -> None:
        """Reload when the file changed since the last look (at most one stat per WATCH_S)."""
        now = time.monotonic()
        if now - self._checked < WATCH_S:
            return
        self._checked = now
        if self._stat() != self._stamp:
            self.reload()

    @contextmanager
    def _mutating(self) -> Iterator[None]:
        """Around create/revoke/rotate (under self._lock): the file store rewrites the whole file atomically; a
        shared store (PgKeyStore) locks and re-reads its row first, so changes made on two hosts at once both stay."""
        yield

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # hashes only, still owner-only
        with os.fdopen(fd, "w") as f:
            json.dump(self._entries, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)  # atomic: a worker reads the old file or the new one, never half
        self._stamp = self._stat()

    # -- managing keys -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[dict[str, Any]]:
        now = time.time()
        return [{"name": e["name"], "scopes": _scopes_of(e), "created": e.get("created"),
                 "previous_valid_until": e["previous"]["until"] if e.get("previous") and
                 e["previous"]["until"] > now else None} for e in self._entries]

    def exists(self, name: str) -> bool:
        self.watch()
        return any(e["name"] == name for e in self._entries)

    def create(self, name: str, scopes: str | Iterable[str]) -> str:
        """A new key (returned once, never stored in clear)."""
        scopes = [scopes] if isinstance(scopes, str) else list(dict.fromkeys(scopes))
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise KeyStoreError(f"scope must be one or more of {', '.join(SCOPES)} (got {', '.join(bad) or 'none'})")
        if not name or len(name) > 100 or not name.isprintable():
            raise KeyStoreError("a key needs a name of 1 to 100 printable characters")
        with self._lock, self._mutating():
            if any(e["name"] == name for e in self._entries):
                raise KeyStoreError(f"a key named {name!r} exists; revoke or rotate it")
            key, entry = self._new_secret()
            self._entries.append({"name": name, "scopes": scopes, "created": int(time.time()), **entry})
            self._write()
        return key

    @staticmethod
    def _new_secret() -> tuple[str, dict[str, str]]:
        key = "sm_" + secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        return key, {"salt": salt.hex(), "hash": _digest(salt, key)}

    def revoke(self, name: str) -> bool:
        with self._lock, self._mutating():
            before = len(self._entries)
            self._entries = [e for e in self._entries if e["name"] != name]
            if len(self._entries) != before:
                self._write()
            return len(self._entries) != before

    def rotate(self, name: str, grace_s: float = 0.0) -> str:
        """A new secret for the key `name` (same scopes); the old one keeps working for `grace_s` seconds,
        so the clients can switch over without a failed request."""
        if not 0 <= grace_s <= 30 * 86400:
            raise KeyStoreError("the grace period is 0 to 30 days (in seconds)")
        with self._lock, self._mutating():
            entry = next((e for e in self._entries if e["name"] == name), None)
            if entry is None:
                raise KeyStoreError(f"no key named {name!r}")
            key, fresh = self._new_secret()
            entry["previous"] = {"salt": entry["salt"], "hash": entry["hash"], "until": time.time() + grace_s}
            entry.update(fresh, rotated=int(time.time()))
            self._write()
        return key

    # -- checking ----------------------------------------------------------------------------------------
    def identify(self, key: str | None) -> tuple[str, frozenset[str]] | None:
        """(name, granted scopes) of a valid key, else None. Constant time in which entry matched."""
        self.watch()
        if not key or len(key) > 200:
            return None
        found = None
        now = time.time()
        with self._lock:
            entries = self._entries
        for e in entries:  # no early exit: the time does not depend on which entry matched
            ok = hmac.compare_digest(_digest(bytes.fromhex(e["salt"]), key), e["hash"])
            old = e.get("previous")
            if old is not None:
                ok_old = hmac.compare_digest(_digest(bytes.fromhex(old["salt"]), key), old["hash"])
                ok = ok or (ok_old and old["until"] > now)
            if ok:
                found = (e["name"], granted(_scopes_of(e)))
        return found

    def check(self, key: str | None, scope: str) -> str | None:
        """The key's name when it is valid for `scope`, else None."""
        who = self.identify(key)
        return who[0] if who is not None and scope in who[1] else None
