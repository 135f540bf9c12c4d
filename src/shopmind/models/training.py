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

from ..data.interactions import Interactions
from .base import Recommender


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


class Parallel:
    """How a training loop runs: alone (this default, every hook a no-op) or as one of `world` data-parallel
    workers (models/ray_train.py: DDP on Ray Train). The loops call these hooks and are otherwise the same."""

    rank, world = 0, 1

    def wrap(self, module: Any) -> Any:
        """The module whose forward computes the batch loss, wrapped for gradient synchronisation."""
        return module

    def shard(self, batch: np.ndarray) -> np.ndarray:
        """This worker's rows of a training batch."""
        return batch

    def ndcg(self, score: Callable[[Sequence[np.ndarray], np.ndarray | None], np.ndarray],
             histories: Sequence[np.ndarray], targets: np.ndarray) -> float:
        """Validation NDCG@10 over all cases (every worker gets the same value, so all stop together)."""
        return ndcg_at_10(score, histories, targets)

    def epoch_end(self, record: dict[str, float]) -> None:
        """Called once per epoch with its record (loss, seconds, validation metric when measured)."""


LOCAL = Parallel()


def loss_module(net: Any, batch_loss: Callable[[Any, Any], Any]) -> Any:
    """`batch_loss(x, y)` as the forward of a module that holds `net`: DistributedDataParallel synchronises the
    gradients of work done inside forward only."""
    import torch

    class BatchLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return batch_loss(x, y)

    return BatchLoss()


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


class SequenceNetModel(Recommender):
    """Shared by the PyTorch models over item sequences (SASRec, two-tower): padding, the fit entry points
    and persistence of the network's state dict (loaded tensors-only: no code runs on load). Subclasses
    set `max_len` and implement `_build(n_items, text)` and `_train(data, item_features, valid)`."""

    max_len: int
    _parallel: Parallel = LOCAL  # set on a data-parallel worker (models/ray_train.py)

    def _pad(self, seqs: Sequence[np.ndarray]) -> np.ndarray:
        """Left-padded (index + 1) arrays of the last max_len items; 0 is padding."""
        out = np.zeros((len(seqs), self.max_len), np.int64)
        for r, s in enumerate(seqs):
            s = np.asarray(s[-self.max_len:], np.int64) + 1
            if len(s):
                out[r, -len(s):] = s
        return out

    def fit(self, data: Interactions, item_features: np.ndarray | None = None) -> "SequenceNetModel":
        return self._train(data, item_features, None)

    def fit_validated(self, data: Interactions, item_features: np.ndarray | None,
                      valid_histories: Sequence[np.ndarray], valid_targets: np.ndarray,
                      valid_users: np.ndarray | None = None) -> "SequenceNetModel":
        """Train up to `epochs` with early stopping on validation NDCG@10; keep the best weights and record
        their epoch count in `tuned` for a refit."""
        return self._train(data, item_features, (valid_histories, valid_targets))

    def _build(self, n_items: int, text: np.ndarray | None) -> Any:
        raise NotImplementedError

    def _train(self, data: Interactions, item_features: np.ndarray | None,
               valid: tuple[Sequence[np.ndarray], np.ndarray] | None) -> "SequenceNetModel":
        raise NotImplementedError

    def save(self, path):  # type: ignore[override]
        import torch

        super().save(path)
        torch.save(self._net.state_dict(), Path(path) / "net.pt")

    @classmethod
    def load(cls, path):  # type: ignore[override]
        import torch

        model = super().load(path)
        model._restore_net(torch.load(Path(path) / "net.pt", weights_only=True))
        return model

    def _restore_net(self, state: dict[str, Any]) -> None:
        """The network from a state dict (the item text vectors are one of its buffers), ready to score."""
        text = state["text_vectors"][1:].numpy() if "text_vectors" in state else None
        self._net = self._build(self._require_data().n_items, text)
        self._net.load_state_dict(state)
        self._net.eval()
