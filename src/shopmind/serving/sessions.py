"""Shopper sessions: signed, expiring tokens bound to one user id, for browsers that cannot hold an API key.

A token is `base64(claims).base64(HMAC-SHA256(secret, claims))` with claims {u: user id, exp: expiry,
iat: issue time, k: the name of the API key that minted it, or null for the demo storefront}. A session
may read and write its own shopper only. In production the shop's backend mints them (`POST /sessions`
with a key of scope `session`) after its own login; revoking that key ends every session it minted. The
secret lives in the state folder, so every worker process accepts every worker's tokens. This is the
tenant-token idea of Meilisearch: a short-lived credential derived from a key, narrower than the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..fsutil import secret_key

MAX_TOKEN = 1000  # characters; a token is far shorter


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    key: str | None  # the minting key's name; None for a demo session
    expires: int


def load_secret(state_dir: Path) -> bytes:
    """The session secret (created once, owner-only)."""
    return secret_key(Path(state_dir) / "storefront.secret")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def mint(secret: bytes, user: str, ttl_s: int, key: str | None = None, now: float | None = None) -> tuple[str, Session]:
    """(token, session) for `user`, valid for ttl_s seconds."""
    now = time.time() if now is None else now
    claims = {"u": user, "iat": int(now), "exp": int(now + ttl_s), "k": key}
    payload = json.dumps(claims, separators=(",", ":")).encode()
    sig = hmac.new(secret, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(sig)}", Session(user, key, claims["exp"])


def verify(secret: bytes, token: str | None, now: float | None = None) -> Session | None:
    """The session of a valid, unexpired token; None otherwise (the caller checks the minting key)."""
    if not token or len(token) > MAX_TOKEN or "." not in token:
        return None
    body, _, sig = token.partition(".")
    try:
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        given = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    except ValueError:
        return None
    if not hmac.compare_digest(hmac.new(secret, payload, hashlib.sha256).digest(), given):
        return None
    try:
        claims = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("u"), str) or not isinstance(claims.get("exp"), int):
        return None
    if claims["exp"] < (time.time() if now is None else now):
        return None
    key = claims.get("k")
    return Session(claims["u"], key if isinstance(key, str) else None, claims["exp"])
