"""The continuous trainer's status file (`<state_dir>/<dataset>/trainer.json`), read tolerantly and cached.

Another process (the trainer) writes it; here it is only read, at most once a second, for the dashboard
and /metrics. Whatever is in it is checked field by field: a missing file is None, a garbled one
{"readable": False}, a partial one gives the fields it has; text is shortened and paths are masked, so
nothing from the file can break the dashboard or reveal the server's folders.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

FILE = "trainer.json"
STATES = ("idle", "shipping", "training", "evaluating", "promoting", "failed", "stopped")
OUTCOMES = ("promoted", "rejected", "deferred", "failed")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][^\s/\\'\"]+)+[/\\]?")


def _text(v: Any, n: int = 200) -> str | None:
    return _PATH.sub("<path>", v)[:n] if isinstance(v, str) else None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) < 1e15 else None


def _count(v: Any) -> int | None:
    x = _num(v)
    return int(x) if x is not None and x >= 0 else None


def _scores(v: Any) -> dict[str, float | None] | None:
    return {m: _num(v.get(m)) for m in ("ndcg@10", "hit@10")} if isinstance(v, dict) else None


def parse(raw: Any) -> dict[str, Any]:
    """The status with every field checked (None where missing or of the wrong type)."""
    if not isinstance(raw, dict):
        return {"readable": False}
    state = raw.get("state")
    out: dict[str, Any] = {"readable": True, "state": state if state in STATES else None, "step": _text(raw.get("step")),
                           "updated": _num(raw.get("updated")),
                           **{k: _count(raw.get(k)) for k in ("runs", "promotions", "failures", "deferred",
                                                              "lag_records", "pending_events")},
                           "last": None}
    last = raw.get("last")
    if isinstance(last, dict):
        kind = last.get("kind")
        promoted = last.get("promoted")
        out["last"] = {"finished": _num(last.get("finished")), "kind": kind if kind in ("cheap", "full") else None,
                       "promoted": promoted if isinstance(promoted, bool) else None,
                       "outcome": last.get("outcome") if last.get("outcome") in OUTCOMES else None,
                       "reason": _text(last.get("reason")),
                       "candidate": _scores(last.get("candidate")), "serving": _scores(last.get("serving")),
                       "cases": _count(last.get("cases")), "seconds": _num(last.get("seconds")),
                       "error": _text(last.get("error"), 300)}
    return out


class TrainerStatus:
    """Reads a state folder's trainer.json at most once per `ttl_s` (per folder)."""

    def __init__(self, ttl_s: float = 1.0) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[float, dict[str, Any] | None]] = {}

    def read(self, state_dir: Path, log: Any = None) -> dict[str, Any] | None:
        """The parsed status; None when there is none. `log`: the service's event log; a PostgreSQL one
        (pglog.PgEventLog) also has the status a trainer on another host wrote (`trainer_status()`)."""
        path = Path(state_dir) / FILE
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(path)
            if hit is not None and now - hit[0] < self.ttl_s:
                return hit[1]
        try:
            status: dict[str, Any] | None = parse(json.loads(path.read_bytes()))
        except FileNotFoundError:
            status = None
            remote = getattr(log, "trainer_status", None)
            if remote is not None:
                try:
                    raw = remote()
                    status = parse(json.loads(raw)) if raw is not None else None
                except (ValueError, RecursionError):
                    status = {"readable": False}
                except Exception:  # noqa: BLE001 - the database does not answer: no status this time
                    status = None
        except (OSError, ValueError, RecursionError):  # unreadable, not UTF-8, not JSON (half-written, say)
            status = {"readable": False}
        with self._lock:
            self._cache[path] = (now, status)
        return status
