"""Signed, self-describing attribution tokens (the `rec_id` of a recommendation), item origins, intervals.

A token says what was served, so any worker can attribute an event that carries it without asking the
worker that served it: format, artifact version, arm, serving time, a nonce, and per position the code of
the source that put the item there and a hash of the item id; HMAC-SHA256 under a key in the state folder
(shared by every worker), truncated to MAC_BYTES; base64url without padding. Layout (big-endian):

    B format | 4s artifact version | I served (unix s) | 4s nonce | B len(arm) | arm (ASCII)
    | B positions n | B hash bytes w | ceil(n/2) source codes (4 bits each) | n * w item hashes | MAC

w is 4 (the crc32 of the item id) when the token stays within TOKEN_BUDGET bytes, else 3 or 2 (its low
bytes); at most MAX_POSITIONS positions are encoded. docs/online.md has the rest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..fsutil import secret_key

FORMAT = 1
MAC_BYTES = 10
MAX_POSITIONS = 50  # positions beyond this are not in the token: their events count for the list only
TOKEN_BUDGET = 180  # bytes before base64 (240 characters); w shrinks to stay within it
MAX_TOKEN_CHARS = 256  # what POST /events accepts as a rec_id
KEY_FILE = "online.key"
ARM = re.compile(r"^[a-z0-9][a-z0-9_-]{0,15}$")
# Fixed source codes (4 bits): stable across artifacts and restarts, so an old token still decodes to the
# right names. Codes 0-3 are roles, the rest every candidate model in shopmind.models; a source that is
# not in this table is "other". Append only.
CODES: tuple[str, ...] = ("other", "ranker", "search", "explore", "pop", "itemknn", "sasrec", "twotower",
                          "pop-cat", "als", "bpr", "lightgcn", "twotower-id", "sasrec-id", "hybrid")
CODE = {name: i for i, name in enumerate(CODES)}
RANKER, SEARCH, EXPLORE = CODE["ranker"], CODE["search"], CODE["explore"]
_HEAD = struct.Struct(">B4sI4s")


@dataclass(frozen=True, slots=True)
class Token:
    """A decoded attribution token."""

    version: str  # artifact version, 8 hex digits
    arm: str
    served: int  # unix seconds
    nonce: str
    sources: tuple[str, ...]  # per position
    hashes: tuple[int, ...]  # per position, `width` bytes of the item id's crc32
    width: int

    def position(self, item_id: str) -> int | None:
        """The first position whose item hash matches this item id, else None."""
        h = item_hash(item_id, self.width)
        for p, x in enumerate(self.hashes):
            if x == h:
                return p
        return None


def load_key(state_dir: str | Path) -> bytes:
    """The token key of a state folder (created once; every worker sharing the folder reads the same)."""
    return secret_key(Path(state_dir) / KEY_FILE)


def artifact_version(created: str, dataset: str) -> str:
    """8 hex digits naming a served artifact: a hash of its creation time and dataset."""
    return hashlib.blake2b(f"{created}|{dataset}".encode(), digest_size=4).hexdigest()


def item_hash(item_id: str, width: int = 4) -> int:
    """The low `width` bytes of the crc32 of an item id."""
    return zlib.crc32(str(item_id).encode()) & ((1 << (8 * width)) - 1)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def encode_token(key: bytes, version: str, items: Sequence[str], sources: Sequence[int], arm: str = "main",
                 served: float = 0.0, nonce: bytes | None = None) -> str:
    """A signed token for a list of item ids with their source codes (see the module docstring)."""
    if not ARM.match(arm):
        raise ValueError(f"arm {arm!r}: 1-16 of a-z 0-9 _ -, starting with a letter or digit")
    n = min(len(items), MAX_POSITIONS)
    base = _HEAD.size + 1 + len(arm) + 2 + (n + 1) // 2 + MAC_BYTES
    width = next((w for w in (4, 3, 2) if base + n * w <= TOKEN_BUDGET), 2)
    codes = [int(c) & 0xF for c in sources[:n]] + [0]
    packed = bytes((codes[i] << 4) | codes[i + 1] for i in range(0, n, 2))
    body = (_HEAD.pack(FORMAT, bytes.fromhex(version), int(served) & 0xFFFFFFFF, nonce or secrets.token_bytes(4))
            + bytes([len(arm)]) + arm.encode() + bytes([n, width]) + packed
            + b"".join(item_hash(i, width).to_bytes(width, "big") for i in items[:n]))
    return _b64(body + hmac.new(key, body, hashlib.sha256).digest()[:MAC_BYTES])


def decode_token(key: bytes, token: str | None) -> Token | None:
    """The token's content when it is well-formed and its MAC is right; None for anything else."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, binascii.Error):
        return None
    body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    if len(body) < _HEAD.size + 3 or not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest()[:MAC_BYTES], mac):
        return None
    fmt, version, served, nonce = _HEAD.unpack_from(body)
    at = _HEAD.size
    arm_len = body[at]
    arm = body[at + 1:at + 1 + arm_len]
    at += 1 + arm_len
    if fmt != FORMAT or len(body) < at + 2:
        return None
    n, width = body[at], body[at + 1]
    at += 2
    packed = body[at:at + (n + 1) // 2]
    hashes = body[at + (n + 1) // 2:]
    if width not in (2, 3, 4) or len(packed) != (n + 1) // 2 or len(hashes) != n * width:
        return None
    codes = [c for b in packed for c in (b >> 4, b & 0xF)][:n]
    return Token(version.hex(), arm.decode("ascii", "replace"), served, nonce.hex(),
                 tuple(CODES[c] if c < len(CODES) else "other" for c in codes),
                 tuple(int.from_bytes(hashes[i:i + width], "big") for i in range(0, n * width, width)), width)


def origins(rows: np.ndarray, source_scores: Mapping[str, np.ndarray], blocked: np.ndarray | None,
            depth: int) -> np.ndarray:
    """Per ranked row, the code of the source under which it ranks best among the items not blocked (its
    rank: how many such items that source scores strictly higher); ties go to the earlier source. A row
    no source scores (finite) is the ranker's."""
    rows = np.asarray(rows, np.int64)
    best = np.full(len(rows), RANKER, np.int8)
    if not len(rows):
        return best
    best_rank = np.full(len(rows), np.iinfo(np.int64).max, np.int64)
    for name, scores in source_scores.items():
        s = np.where(blocked, -np.inf, scores) if blocked is not None else np.asarray(scores, np.float64)
        d = max(1, min(depth, len(s)))
        top = np.sort(-s[np.argpartition(-s, d - 1)[:d]])  # the d best, negated, ascending
        vals = -s[rows]
        rank = np.searchsorted(top, vals, side="left").astype(np.int64)  # strictly better among the top d
        beyond = (rank == d) & np.isfinite(vals)  # past the top d: its exact rank, for these few rows only
        if beyond.any():
            rank[beyond] = (s[None, :] > -vals[beyond][:, None]).sum(1)
        rank[~np.isfinite(vals)] = np.iinfo(np.int64).max
        better = rank < best_rank
        best[better], best_rank[better] = CODE.get(name, CODE["other"]), rank[better]
    return best


def origins_from_ranks(n: int, ranks: Mapping[str, np.ndarray], beyond: int) -> np.ndarray:
    """`origins` when the pipeline gave each row's rank per source (large catalogs; `beyond`: the rank of a row
    outside a source's candidates): the source that ranks it best; ties go to the earlier source; a row no
    source listed is the ranker's."""
    best = np.full(n, RANKER, np.int8)
    best_rank = np.full(n, np.iinfo(np.int64).max, np.int64)
    for name, rank in ranks.items():
        better = (rank < best_rank) & (rank < beyond)
        best[better], best_rank[better] = CODE.get(name, CODE["other"]), rank[better]
    return best


def in_share(user: str, share: float, salt: str = "") -> bool:
    """Whether a user falls in the first `share` of users, by a hash of their id (the same on every worker
    and every restart; salt: e.g. the experiment's artifact version, so each experiment draws anew)."""
    h = hashlib.blake2b(f"{salt}|{user}".encode(), digest_size=8, person=b"shopmind-arm").digest()
    return int.from_bytes(h, "big") / 2.0 ** 64 < share


def wilson(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (successes out of n); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = min(max(successes / n, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(total: float, total_sq: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """The normal-approximation interval of a mean from the sum and sum of squares of n values."""
    if n <= 0:
        return 0.0, 0.0
    mean = total / n
    var = max(total_sq / n - mean * mean, 0.0) * (n / (n - 1) if n > 1 else 0.0)
    half = z * math.sqrt(var / n)
    return mean - half, mean + half
