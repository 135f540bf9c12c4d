"""User interest profiles: time-decayed, event-weighted sums of item embeddings, keywords and categories.

A profile is exact under exponential decay with half-life h: weight(e) = w(type, value) * 2^(-(now - t_e)/h).
Updating from one event is O(dimension + terms of the item): instead of decaying every stored weight,
weights are kept relative to a reference time and rescaled only on read or when the scale gets large
(the usual "forward decay" trick), so an update is a few microseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

# How much an action says about interest. Ratings and reviews scale with the stars (1 -> 0.2, 5 -> 1.8).
EVENT_WEIGHTS = {"view": 1.0, "click": 1.5, "add_to_cart": 3.0, "purchase": 4.0, "rating": 2.0, "review": 2.5,
                 "search": 0.0, "impression": 0.0}


def event_weight(event_type: str, value: float | None = None) -> float:
    base = EVENT_WEIGHTS.get(event_type, 1.0)
    if event_type in ("rating", "review") and value is not None and not math.isnan(value):
        return base * max(0.1, (value - 0.5) / 2.5)
    return base


@dataclass
class UserProfile:
    """Interest state of one user. `time` is seconds (or sequence positions for untimed data)."""

    dim: int
    half_life: float
    vector: np.ndarray = field(init=False)
    keywords: dict[str, float] = field(default_factory=dict)
    categories: dict[str, float] = field(default_factory=dict)
    events: int = 0
    ref_time: float | None = None  # weights are stored as w * 2^((t - ref_time)/half_life)
    last_time: float | None = None

    def __post_init__(self) -> None:
        self.vector = np.zeros(self.dim, np.float32)

    def _rebase(self, t: float) -> None:
        factor = 2.0 ** (-(t - self.ref_time) / self.half_life) if self.ref_time is not None else 1.0
        self.vector *= factor
        for d in (self.keywords, self.categories):
            for k in d:
                d[k] *= factor
        self.ref_time = t

    def update(self, item_vector: np.ndarray, weight: float, time: float,
               keywords: Sequence[str] = (), categories: Sequence[str] = ()) -> None:
        """Add one event. Events may arrive slightly out of order; older ones simply count less."""
        if self.ref_time is None:
            self.ref_time = time
        exponent = (time - self.ref_time) / self.half_life
        if exponent > 30:  # keep the stored scale bounded: fold the decay in, O(size) but rare
            self._rebase(time)
            exponent = 0.0
        w = weight * 2.0 ** exponent
        self.vector += w * item_vector
        for k in keywords:
            self.keywords[k] = self.keywords.get(k, 0.0) + w
        for c in categories:
            self.categories[c] = self.categories.get(c, 0.0) + w
        self.events += 1
        self.last_time = time if self.last_time is None else max(self.last_time, time)

    def scale(self, now: float | None = None) -> float:
        now = self.last_time if now is None else now
        if self.ref_time is None or now is None:
            return 1.0
        return 2.0 ** (-(now - self.ref_time) / self.half_life)

    def embedding(self) -> np.ndarray:
        """The unit-length interest vector (direction only; decay scales all weights alike)."""
        n = float(np.linalg.norm(self.vector))
        return self.vector / n if n > 0 else self.vector.copy()

    def top_keywords(self, k: int = 10, now: float | None = None) -> list[tuple[str, float]]:
        s = self.scale(now)
        return [(w, round(v * s, 4)) for w, v in sorted(self.keywords.items(), key=lambda kv: -kv[1])[:k]]

    def top_categories(self, k: int = 5, now: float | None = None) -> list[tuple[str, float]]:
        s = self.scale(now)
        return [(c, round(v * s, 4)) for c, v in sorted(self.categories.items(), key=lambda kv: -kv[1])[:k]]


def build_profiles(events: Iterable[tuple[str, str, str, float | None, float]], item_index: dict[str, int],
                   item_vectors: np.ndarray, item_keywords: Sequence[Sequence[str]],
                   item_categories: Sequence[Sequence[str]], half_life: float) -> dict[str, UserProfile]:
    """Profiles from events (user, item, type, value, time), which must come sorted by (user, time)."""
    profiles: dict[str, UserProfile] = {}
    dim = item_vectors.shape[1]
    for user, item, etype, value, time in events:
        row = item_index.get(item)
        if row is None:
            continue
        w = event_weight(etype, value)
        if w <= 0:
            continue
        p = profiles.get(user)
        if p is None:
            p = profiles[user] = UserProfile(dim, half_life)
        p.update(item_vectors[row], w, time, item_keywords[row], item_categories[row])
    return profiles
