"""Token-bucket rate limits per client (API key, shopper session, or address), for requests and events.

Written here rather than taken from a library because a request and an event batch draw from two
different buckets with a cost each (a batch of 50 events costs 50), and the answer needs the exact wait
for `Retry-After`; that is twenty lines over a bounded LRU table, with no store to run. The limits are per
worker process: with N workers a client can reach N times the rate in the worst case, so the server divides
the configured rates by the number of workers (docs/security.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

MAX_CLIENTS = 100_000  # buckets kept; the least recently seen client is forgotten first (bounded memory)


class Limited(Exception):
    """Over the limit; retry_after is the whole number of seconds until the cost fits again."""

    def __init__(self, what: str, retry_after: int) -> None:
        super().__init__(f"too many {what}; retry after {retry_after} s")
        self.retry_after = retry_after


class RateLimiter:
    """rate tokens per second up to burst, per client; rate 0 turns the limit off."""

    def __init__(self, rate: float, burst: float, what: str = "requests") -> None:
        self.rate, self.burst, self.what = float(rate), max(float(burst), 1.0), what
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, client: str, cost: float = 1.0, now: float | None = None) -> None:
        """Spend `cost` tokens of the client's bucket or raise Limited (nothing is spent then)."""
        if self.rate <= 0:
            return
        cost = min(cost, self.burst)  # a batch larger than the burst costs a full bucket (the batch size is capped apart)
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if cost > tokens:
                self._buckets[client] = (tokens, now)
                self._trim()
                raise Limited(self.what, max(1, math.ceil((cost - tokens) / self.rate)))
            self._buckets[client] = (tokens - cost, now)
            self._trim()

    def _trim(self) -> None:
        while len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)
