"""Shared pieces of the PyTorch models' training loops: TensorBoard logs, validation, early stopping.

Every trained run can write TensorBoard event files (loss per epoch, validation NDCG@10, epoch time) to
`log_dir`; `tensorboard --logdir <dir>` shows them. Early stopping checks validation NDCG@10 on at most
`valid_max` users (a fixed seeded sample), keeps the best weights and the epoch count that produced them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np


class Tracker:
    """Scalars to TensorBoard when a log folder is given; a no-op otherwise (and when tensorboard is missing)."""

    def __init__(self, log_dir: str | Path | None, run_name: str) -> None:
        self._writer = None
        self.path: Path | None = None
        if log_dir:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is a declared dependency; tolerate a trimmed install
                return
            self.path = Path(log_dir) / run_name
            self._writer = SummaryWriter(str(self.path))

    def log(self, step: int, values: dict[str, float]) -> None:
        if self._writer is not None:
            for key, value in values.items():
                if key != "epoch":
                    self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()


def valid_sample(histories: Sequence[np.ndarray], targets: np.ndarray, users: np.ndarray | None,
                 limit: int, seed: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
    """At most `limit` validation cases (a fixed random subset), so early stopping on big datasets stays cheap."""
    if len(targets) <= limit:
        return list(histories), targets, users
    keep = np.sort(np.random.default_rng(seed).choice(len(targets), limit, replace=False))
    return [histories[i] for i in keep], targets[keep], None if users is None else users[keep]


def ndcg_at_10(score: Callable[[Sequence[np.ndarray], np.ndarray | None], np.ndarray],
               histories: Sequence[np.ndarray], targets: np.ndarray, users: np.ndarray | None = None) -> float:
    """Full-ranking NDCG@10 (pessimistic ties, history not masked) of a scoring function."""
    total = 0.0
    for s in range(0, len(targets), 1024):
        scores = score(histories[s:s + 1024], None if users is None else users[s:s + 1024])
        t = targets[s:s + 1024]
        ranks = (scores >= scores[np.arange(len(t)), t][:, None]).sum(1) - 1
        total += float(np.where(ranks < 10, 1 / np.log2(ranks + 2), 0).sum())
    return total / max(len(targets), 1)


class EarlyStopping:
    """Keeps the best state seen and says when `patience` epochs passed without improvement."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best, self.best_epoch, self.state = -1.0, 0, None

    def update(self, epoch: int, value: float, state: dict[str, Any]) -> bool:
        """Record `value` at `epoch`; True when training should stop."""
        if value > self.best:
            self.best, self.best_epoch, self.state = value, epoch, copy.deepcopy(state)
            return False
        return epoch - self.best_epoch >= self.patience
