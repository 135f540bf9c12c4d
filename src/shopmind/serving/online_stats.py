"""Online evaluation from logged events: impressions, clicks, carts and purchases attributed by token.

`OnlineStats.observe` is fed every logged event, in log order, by `Service._apply`, so every worker holds
the same numbers and a restart (or a forget, which rewrites the log) rebuilds them by the replay. Only
counts are kept, never a user id. Events are attributed to a recommendation list by their `rec_id` (a
signed token, online.py) and to a position, and so to a source, by the hash of their item id.

Groups: overall ("all"), per source, per artifact version, per arm, explore slot vs the rest. Each group
has counters, and two position histograms of the lists it appears in (the first impressed position, and
the later of that and the first clicked or bought position), from which hit rate@k is read for any
k <= MAX_K. Counters exist in total and per time bucket of the list's serving time.

Caps (memory is bounded): MAX_RECS lists are remembered for dedup and positions (least recently used
first out; an event for a list forgotten by then is counted as if it were the list's first);
MINUTE_BUCKETS one-minute buckets, the oldest merged into hour buckets; HOUR_BUCKETS hour buckets, the
oldest dropped from the time series (the totals keep them).
"""

from __future__ import annotations

import threading
import zlib
from collections import Counter, OrderedDict
from typing import Any, Callable, Iterable

import numpy as np

from .online import MAX_POSITIONS, Token, decode_token, mean_interval, wilson

MAX_RECS = 50_000
MINUTE_BUCKETS = 360  # six hours of minutes
HOUR_BUCKETS = 14 * 24  # two weeks of hours
MAX_K = MAX_POSITIONS
COUNTED = ("impression", "click", "add_to_cart", "purchase")
Group = tuple[str, str]  # (dimension, value)


class Cell:
    """The counters of one group (in total or in one time bucket)."""

    __slots__ = ("impressions", "clicks", "add_to_cart", "purchases", "revenue", "revenue_sq", "first_imp",
                 "first_hit")

    def __init__(self) -> None:
        self.impressions = self.clicks = self.add_to_cart = self.purchases = 0
        self.revenue = self.revenue_sq = 0.0
        self.first_imp = np.zeros(MAX_K, np.int64)  # lists by their first impressed position
        self.first_hit = np.zeros(MAX_K, np.int64)  # lists by max(first impression, first click or purchase)

    def merge(self, other: "Cell") -> None:
        for name in ("impressions", "clicks", "add_to_cart", "purchases", "revenue", "revenue_sq"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.first_imp += other.first_imp
        self.first_hit += other.first_hit

    def metrics(self, k: int) -> dict[str, Any]:
        """Counts, and every rate with its 95 % interval."""
        lists, hits = int(self.first_imp[:k].sum()), int(self.first_hit[:k].sum())
        n = self.impressions

        def rate(x: float, m: float) -> dict[str, float | None]:
            low, high = wilson(min(x, m), m)
            return {"value": round(x / m, 6) if m else None, "low": round(low, 6), "high": round(high, 6)}

        low, high = mean_interval(self.revenue, self.revenue_sq, n)
        return {"impressions": n, "clicks": self.clicks, "add_to_cart": self.add_to_cart,
                "purchases": self.purchases, "revenue": round(self.revenue, 2), "lists": lists, "hits": hits,
                "ctr": rate(self.clicks, n), "hit_rate": rate(hits, lists), "conversion": rate(self.purchases, n),
                "revenue_per_impression": {"value": round(self.revenue / n, 6) if n else None,
                                           "low": round(low, 6), "high": round(high, 6)}}


class _Rec:
    """What is remembered of one recommendation list: its token and which positions saw what."""

    __slots__ = ("token", "minute", "imp", "hit", "clk", "other_imp", "other_clk")

    def __init__(self, token: Token) -> None:
        self.token = token
        self.minute = token.served // 60 * 60
        self.imp = self.hit = self.clk = 0  # position bit masks
        self.other_imp: set[int] = set()  # item hashes of events on items not in the token (dedup)
        self.other_clk: set[int] = set()

    def groups(self, pos: int | None) -> list[tuple[Group, int]]:
        """The groups an event at this position counts for, with the positions each group covers."""
        t = self.token
        whole = (1 << len(t.sources)) - 1
        out: list[tuple[Group, int]] = [(("all", "all"), whole), (("version", t.version), whole),
                                        (("arm", t.arm), whole)]
        if pos is not None:
            src = t.sources[pos]
            same = sum(1 << p for p, s in enumerate(t.sources) if s == src)
            explore = sum(1 << p for p, s in enumerate(t.sources) if s == "explore")
            out += [(("source", src), same), (("slot", "explore" if src == "explore" else "rest"),
                                              explore if src == "explore" else whole & ~explore)]
        return out

    def firsts(self, mask: int) -> tuple[int | None, int | None]:
        """(first impressed position, max of it and the first hit position) within the mask."""
        imp, hit = self.imp & mask, self.hit & mask
        first = (imp & -imp).bit_length() - 1 if imp else None
        if first is None or not hit:
            return first, None
        return first, max(first, (hit & -hit).bit_length() - 1)


class OnlineStats:
    """The accumulator: feed it every logged event (`observe`), read it with `report`."""

    def __init__(self, key: bytes, price: Callable[[str], float | None] | None = None) -> None:
        self.key = key
        self.price = price or (lambda item: None)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget everything (the whole log is observed again next)."""
        with self._lock:
            self.totals: dict[Group, Cell] = {}
            self.minutes: dict[int, dict[Group, Cell]] = {}
            self.hours: dict[int, dict[Group, Cell]] = {}
            self.horizon = 0  # minutes before this were merged into hours
            self.recs: OrderedDict[str, _Rec] = OrderedDict()
            self.unattributed: Counter[str] = Counter()  # events whose rec_id is not a valid token
            self.evicted = 0

    def observe(self, event: dict[str, Any]) -> None:
        """Count one logged event (only those of a counted type that carry a rec_id)."""
        rec_id, kind = event.get("rec_id"), event.get("type")
        if not rec_id or kind not in COUNTED:
            return
        with self._lock:
            rec = self.recs.get(rec_id)
            if rec is None:
                token = decode_token(self.key, str(rec_id))
                if token is None:
                    self.unattributed[kind] += 1
                    return
                rec = self.recs[rec_id] = _Rec(token)
                if len(self.recs) > MAX_RECS:
                    self.recs.popitem(last=False)
                    self.evicted += 1
            else:
                self.recs.move_to_end(rec_id)
            self._count(rec, kind, event)

    def _count(self, rec: _Rec, kind: str, event: dict[str, Any]) -> None:
        item = event.get("item_id")
        pos = rec.token.position(str(item)) if item is not None else None
        bit = 0 if pos is None else 1 << pos
        other = zlib.crc32(str(item).encode()) if pos is None else 0
        if kind == "impression" or kind == "click":  # one per (list, item)
            seen, extra = (rec.imp, rec.other_imp) if kind == "impression" else (rec.clk, rec.other_clk)
            if (seen & bit) if bit else (other in extra):
                return
            if not bit:
                extra.add(other)
            elif kind == "click":
                rec.clk |= bit
        groups = rec.groups(pos)
        before = [rec.firsts(m) for _, m in groups]
        if kind == "impression":
            rec.imp |= bit
        elif kind in ("click", "purchase"):
            rec.hit |= bit
        value = 0.0
        if kind == "purchase":
            v = event.get("value")
            v = v if isinstance(v, (int, float)) and not isinstance(v, bool) else self.price(str(item))
            value = float(v) if v is not None and np.isfinite(v) else 0.0
        for cells in self._cells(rec.minute):
            for (group, mask), old in zip(groups, before):
                cell = cells.get(group)
                if cell is None:
                    cell = cells[group] = Cell()
                self._update(cell, kind, value, old, rec.firsts(mask))

    @staticmethod
    def _update(cell: Cell, kind: str, value: float, old: tuple[int | None, int | None],
                new: tuple[int | None, int | None]) -> None:
        if kind == "impression":
            cell.impressions += 1
        elif kind == "click":
            cell.clicks += 1
        elif kind == "add_to_cart":
            cell.add_to_cart += 1
        else:
            cell.purchases += 1
            cell.revenue += value
            cell.revenue_sq += value * value
        for hist, a, b in ((cell.first_imp, old[0], new[0]), (cell.first_hit, old[1], new[1])):
            if a != b:
                if a is not None:
                    hist[a] -= 1
                if b is not None:
                    hist[b] += 1

    def _cells(self, minute: int) -> Iterable[dict[Group, Cell]]:
        """The cell maps an event of a list served in this minute updates: the totals and its time bucket."""
        yield self.totals
        if minute >= self.horizon:
            if minute not in self.minutes:
                self.minutes[minute] = {}
                while len(self.minutes) > MINUTE_BUCKETS:  # the oldest minute goes into its hour
                    oldest = min(self.minutes)
                    self.horizon = max(self.horizon, oldest + 60)
                    self._merge(self.hours, oldest // 3600 * 3600, self.minutes.pop(oldest))
            if minute in self.minutes:
                yield self.minutes[minute]
                return
        hour = minute // 3600 * 3600
        if hour not in self.hours and len(self.hours) >= HOUR_BUCKETS and hour < min(self.hours):
            return  # older than the time series reaches
        yield self.hours.setdefault(hour, {})
        self._trim_hours()

    def _merge(self, into: dict[int, dict[Group, Cell]], at: int, cells: dict[Group, Cell]) -> None:
        target = into.setdefault(at, {})
        for group, cell in cells.items():
            target.setdefault(group, Cell()).merge(cell)
        self._trim_hours()

    def _trim_hours(self) -> None:
        while len(self.hours) > HOUR_BUCKETS:
            del self.hours[min(self.hours)]

    # -- reading -----------------------------------------------------------------------------------------------
    def _buckets(self) -> list[tuple[int, int, dict[Group, Cell]]]:
        return sorted([(t, 3600, c) for t, c in self.hours.items()] + [(t, 60, c) for t, c in self.minutes.items()],
                      key=lambda x: x[0])

    def report(self, since: float | None = None, k: int = 10) -> dict[str, Any]:
        """Every breakdown with its intervals, and the overall time series. since: only lists served since
        then (at the resolution of the buckets: a bucket counts when it ends after `since`)."""
        k = max(1, min(int(k), MAX_K))
        with self._lock:
            buckets = [b for b in self._buckets() if since is None or b[0] + b[1] > since]
            if since is None:
                cells = self.totals
            else:
                cells = {}
                for _, _, bucket in buckets:
                    for group, cell in bucket.items():
                        cells.setdefault(group, Cell()).merge(cell)
            groups: dict[str, dict[str, Any]] = {}
            for (dim, value), cell in cells.items():
                groups.setdefault(dim, {})[value] = cell.metrics(k)
            arms = sorted(groups.get("arm", {})) if len(groups.get("arm", {})) > 1 else []
            series = [{"start": start, "width": width, "all": _point(bucket.get(("all", "all")), k),
                       "arms": {a: _point(bucket.get(("arm", a)), k) for a in arms}}
                      for start, width, bucket in buckets]
            out = {"k": k, "since": since, "overall": groups.get("all", {}).get("all") or Cell().metrics(k)}
            for dim, name in (("source", "by_source"), ("version", "by_version"), ("arm", "by_arm"),
                              ("slot", "by_slot")):
                found = groups.get(dim, {})
                out[name] = dict(sorted(found.items(), key=lambda kv: (-kv[1]["impressions"], kv[0])))
            out["series"] = series
            out["unattributed"] = dict(self.unattributed)
            out["lists_remembered"] = len(self.recs)
            out["lists_evicted"] = self.evicted
            out["caps"] = {"lists": MAX_RECS, "minute_buckets": MINUTE_BUCKETS, "hour_buckets": HOUR_BUCKETS,
                           "max_k": MAX_K}
            return out

    def gauges(self) -> dict[str, Any]:
        """The few numbers /metrics exports: overall impressions and clicks, CTR per source."""
        with self._lock:
            overall = self.totals.get(("all", "all")) or Cell()
            ctr = {value: c.clicks / c.impressions for (dim, value), c in self.totals.items()
                   if dim == "source" and c.impressions}
            return {"impressions": overall.impressions, "clicks": overall.clicks, "ctr": ctr}


def _point(cell: Cell | None, k: int) -> dict[str, Any]:
    """One time-series point: counts and CTR / hit rate with their intervals."""
    m = (cell or Cell()).metrics(k)
    return {"impressions": m["impressions"], "clicks": m["clicks"], "purchases": m["purchases"],
            "lists": m["lists"], "ctr": m["ctr"], "hit_rate": m["hit_rate"]}
