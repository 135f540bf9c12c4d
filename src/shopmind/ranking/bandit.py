"""Exploration for items with little data: Beta-Bernoulli Thompson sampling on click-through.

Each item keeps impressions and clicks (from served recommendations and the events that reference them).
An exploration slot samples p ~ Beta(a0 + clicks, b0 + impressions - clicks) for every eligible candidate
with fewer than `max_impressions` impressions and shows the best sample: uncertain items get shown, items
that keep failing stop being picked. The prior (a0, b0) is the catalog-wide CTR with a small weight, so a new
item starts near the average rather than at 50 %.
"""

from __future__ import annotations

import threading

import numpy as np


class ThompsonExplorer:
    def __init__(self, n_items: int, prior_ctr: float = 0.05, prior_weight: float = 20.0,
                 max_impressions: int = 200, seed: int = 0) -> None:
        self.impressions = np.zeros(n_items, np.float64)
        self.clicks = np.zeros(n_items, np.float64)
        self.prior_ctr, self.prior_weight, self.max_impressions = prior_ctr, prior_weight, max_impressions
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def record(self, row: int, impressions: int = 0, clicks: int = 0) -> None:
        with self._lock:
            if 0 <= row < len(self.impressions):
                self.impressions[row] += impressions
                self.clicks[row] += clicks
                # a click on an item whose impression was never reported still means it was shown
                self.impressions[row] = max(self.impressions[row], self.clicks[row])

    def _beta(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior Beta(a, b) of each row's click-through."""
        a = self.prior_ctr * self.prior_weight + self.clicks[rows]
        b = (1 - self.prior_ctr) * self.prior_weight + np.maximum(self.impressions[rows] - self.clicks[rows], 0)
        return a, b

    def posterior_mean(self, rows: np.ndarray) -> np.ndarray:
        a, b = self._beta(rows)
        return a / (a + b)

    def eligible(self, rows: np.ndarray) -> np.ndarray:
        return rows[self.impressions[rows] < self.max_impressions]

    def pick(self, rows: np.ndarray) -> int | None:
        """The candidate row to explore (a Thompson sample among the eligible ones), or None."""
        rows = self.eligible(np.asarray(rows, np.int64))
        if not len(rows):
            return None
        a, b = self._beta(rows)
        with self._lock:
            sample = self._rng.beta(a, b)
        return int(rows[int(np.argmax(sample))])
