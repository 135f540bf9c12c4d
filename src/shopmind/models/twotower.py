"""Two-tower softmax recommender: P(i | u) = softmax(a_i . f(u) + b_i), trained with cross-entropy.

Item tower: a_i = ID embedding + a learned projection of the item's LM text embedding, so an item with no
interactions still gets a vector from its text (cold items). User tower f(u): the user's history encoded
as (1) a recency-weighted mean of the history items' vectors, with one learned weight per distance from
the end (a learned, decayed interest profile, the same forward-decay idea as knowledge/profiles.py), and
(2) the latest item's vector, mixed by a two-layer MLP with a residual connection. A user with no history
gets f(u) = 0, so the item bias b_i (learned popularity) ranks for them: cold users are served.

Every position of every training sequence predicts its next item. The loss is the full softmax over the
catalog when it has at most `full_softmax_items` items; above that, a sampled softmax whose negatives are
the other targets in the batch, with the logQ correction (subtract log of the item's sampling
probability, its share of training targets) that removes the popularity bias of in-batch sampling.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from ..data.interactions import Interactions
from .training import EarlyStopping, SequenceNetModel, Tracker, loss_module, valid_sample


class TwoTower(SequenceNetModel):
    name = "twotower"
    supports_cold_users = True
    supports_cold_items = True

    def __init__(self, dim: int = 64, max_len: int = 50, dropout: float = 0.4, epochs: int = 60,
                 batch_size: int = 256, lr: float = 2e-3, weight_decay: float = 0.1, use_text: bool = True,
                 full_softmax_items: int = 50_000, eval_every: int = 2, patience: int = 6,
                 valid_max: int = 5000, log_dir: str | None = None, seed: int = 0) -> None:
        super().__init__(seed)
        self.dim, self.max_len, self.dropout, self.epochs = dim, max_len, dropout, epochs
        self.batch_size, self.lr, self.weight_decay, self.use_text = batch_size, lr, weight_decay, use_text
        self.full_softmax_items, self.eval_every, self.patience = full_softmax_items, eval_every, patience
        self.valid_max, self.log_dir = valid_max, log_dir
        self.tuned: dict[str, int] = {}
        self.history: list[dict[str, float]] = []

    def _build(self, n_items: int, text: np.ndarray | None):
        import torch
        from torch import nn

        dim, max_len, dropout = self.dim, self.max_len, self.dropout

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.frozen: torch.Tensor | None = None
                self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
                nn.init.normal_(self.items.weight, std=0.02)
                self.bias = nn.Parameter(torch.zeros(n_items))
                self.text = None
                if text is not None:
                    self.register_buffer("text_vectors", torch.cat([torch.zeros(1, text.shape[1]),
                                                                    torch.as_tensor(text, dtype=torch.float32)]))
                    self.text = nn.Linear(text.shape[1], dim)
                # Recency weights: logit per distance from the latest item (0 = latest), starting as a decay.
                self.recency = nn.Parameter(-0.3 * torch.arange(max_len, dtype=torch.float32))
                self.mlp = nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.GELU(), nn.Dropout(dropout),
                                         nn.Linear(2 * dim, dim))
                self.norm = nn.LayerNorm(dim)
                self.drop = nn.Dropout(dropout)

            def item_table(self) -> torch.Tensor:
                # At inference the table is constant: computed once (the text projection of every item
                # costs milliseconds per request); any train()/eval() switch or weight edit drops it.
                if not self.training and not torch.is_grad_enabled() and self.frozen is not None:
                    return self.frozen
                table = self.items.weight
                if self.text is not None:
                    table = table + self.text(self.text_vectors)
                if not self.training and not torch.is_grad_enabled():
                    # detach: without text the table *is* the ID embedding's Parameter, and assigning a
                    # Parameter would register "frozen" as a parameter (then saved, and refused on load).
                    self.frozen = table.detach()
                return table

            def train(self, mode: bool = True) -> "Net":
                self.frozen = None
                return super().train(mode)

            def item_rows(self, ids: torch.Tensor) -> torch.Tensor:
                """table[ids] without computing the whole table (the text projection of a million items)."""
                rows = self.items(ids)
                return rows + self.text(self.text_vectors[ids]) if self.text is not None else rows

            def users(self, seqs: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
                """f(u) at every position of left-padded sequences (B, L) -> (B, L, dim)."""
                length = seqs.shape[1]
                x = self.drop(table[seqs])
                pos = torch.arange(length, device=seqs.device)
                dist = (pos[:, None] - pos[None, :]).clamp(min=0)  # (L, L): distance of key j from query t
                logits = self.recency[dist].expand(seqs.shape[0], length, length).clone()
                blocked = (pos[None, :] > pos[:, None])[None] | (seqs == 0)[:, None, :]
                blocked &= ~torch.eye(length, dtype=torch.bool, device=seqs.device)[None]  # never an empty row
                weights = torch.softmax(logits.masked_fill(blocked, float("-inf")), dim=-1)
                pooled = weights @ x
                return self.norm(pooled + self.mlp(torch.cat([pooled, x], dim=-1)))

            def forward(self, seqs: torch.Tensor) -> torch.Tensor:
                table = self.item_table()
                return self.users(seqs, table)[:, -1, :] @ table[1:].T + self.bias

        return Net()

    def _train(self, data: Interactions, item_features: np.ndarray | None,
               valid: tuple[Sequence[np.ndarray], np.ndarray] | None) -> "TwoTower":
        import torch

        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.data = data
        text = item_features if (self.use_text and item_features is not None and item_features.shape[1] > 1) else None
        self._net = self._build(data.n_items, text)
        opt = torch.optim.AdamW(self._net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        seqs = [s[-(self.max_len + 1):] for s in data.sequences if len(s) >= 2]
        inputs = self._pad([s[:-1] for s in seqs])
        targets = self._pad([s[1:] for s in seqs]) - 1
        full = data.n_items <= self.full_softmax_items
        # logQ correction for in-batch negatives: q(i) = share of training targets that are item i.
        counts = np.bincount(targets[targets >= 0], minlength=data.n_items) + 1.0
        log_q = torch.as_tensor(np.log(counts / counts.sum()), dtype=torch.float32)
        lengths = np.array([len(s) - 1 for s in seqs])
        order = np.argsort(lengths, kind="stable")
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if valid is not None:
            valid = valid_sample(valid[0], valid[1], None, self.valid_max, self.seed)[:2]

        def batch_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            real = y >= 0
            if full:
                table = self._net.item_table()
                h, y = self._net.users(x, table)[real], y[real]
                return torch.nn.functional.cross_entropy(h @ table[1:].T + self._net.bias, y)
            y = y[real]  # only the batch's rows of the item table (history items and targets)
            ids = torch.unique(torch.cat([torch.zeros(1, dtype=x.dtype), x.flatten(), y + 1]))
            rows = self._net.item_rows(ids)
            h = self._net.users(torch.searchsorted(ids, x), rows)[real]  # ids[0] = 0: padding stays 0
            logits = h @ rows[torch.searchsorted(ids, y + 1)].T + (self._net.bias[y] - log_q[y])[None, :]
            same = (y[:, None] == y[None, :]) & ~torch.eye(len(y), dtype=torch.bool)
            return torch.nn.functional.cross_entropy(logits.masked_fill(same, float("-inf")), torch.arange(len(y)))

        par = self._parallel
        step = par.wrap(loss_module(self._net, batch_loss))
        tracker = Tracker(self.log_dir, f"{self.name}-{time.strftime('%Y%m%d-%H%M%S')}-{'valid' if valid else 'fit'}")
        stopper = EarlyStopping(self.patience)
        self.history = []
        for epoch in range(1, self.epochs + 1):
            self._net.train()
            t0, total, n = time.perf_counter(), 0.0, 0
            for bi in rng.permutation(len(batches)):
                b = par.shard(batches[bi])
                if not len(b):
                    continue
                width = int(lengths[b].max())
                x, y = torch.as_tensor(inputs[b, -width:]), torch.as_tensor(targets[b, -width:])
                loss = step(x, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                real = int((y >= 0).sum())
                total, n = total + loss.item() * real, n + real
            record = {"epoch": epoch, "loss": total / max(n, 1), "seconds": time.perf_counter() - t0}
            stop = False
            if valid is not None and (epoch % self.eval_every == 0 or epoch == self.epochs):
                self._net.eval()
                record["valid_ndcg@10"] = par.ndcg(self.score, *valid)
                stop = stopper.update(epoch, record["valid_ndcg@10"], self._net.state_dict())
            self.history.append(record)
            tracker.log(epoch, record)
            par.epoch_end(record)
            if stop:
                break
        tracker.close()
        if valid is not None and stopper.state is not None:
            self._net.load_state_dict(stopper.state)
            self.tuned = {"epochs": stopper.best_epoch}
        self._net.eval()
        self._reset_unseen(data)
        return self

    def _reset_unseen(self, data: Interactions) -> None:
        """Items without interactions were only ever pushed down by the softmax: their ID vector and bias carry
        no information. Give them a zero ID vector and the mean bias of the items with interactions (the prior
        of an average item), so their text ranks them."""
        import torch

        pop = data.item_popularity()
        unseen = pop == 0
        if not unseen.any():
            return
        with torch.no_grad():
            self._net.items.weight[1:][torch.as_tensor(unseen)] = 0.0
            fill = self._net.bias[torch.as_tensor(~unseen)].mean()
            self._net.bias[torch.as_tensor(unseen)] = fill
        self._net.frozen = None

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> np.ndarray:
        import torch

        f = torch.as_tensor(self.factor_users(histories, users))
        with torch.no_grad():
            return (f @ self._net.item_table()[1:].T + self._net.bias).numpy().astype(np.float32)

    def factor_parts(self) -> tuple[np.ndarray, np.ndarray]:
        """score = user vector @ item table[1:].T + bias."""
        import torch

        with torch.no_grad():
            return self._net.item_table()[1:].numpy().astype(np.float32), self._net.bias.numpy().astype(np.float32)

    def factor_users(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> np.ndarray:
        import torch

        padded = self._pad(histories)
        empty = (padded == 0).all(axis=1)
        width = max(1, min(self.max_len, max((len(h) for h in histories), default=1)))
        with torch.no_grad():
            table = self._net.item_table()
            f = self._net.users(torch.as_tensor(padded[:, -width:]), table)[:, -1, :]
            f[torch.as_tensor(empty)] = 0.0  # cold user: the item bias (learned popularity) ranks
            return f.numpy().astype(np.float32)

    def item_vectors(self) -> np.ndarray:
        """The item tower's vectors a_i (for an ANN index); rows follow data.item_ids."""
        import torch

        with torch.no_grad():
            return self._net.item_table()[1:].numpy().copy()


class TwoTowerID(TwoTower):
    """The same two-tower model with ID embeddings only: the baseline for the LM text's effect."""

    name = "twotower-id"
    supports_cold_items = False

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("use_text", False)
        super().__init__(**kwargs)  # type: ignore[arg-type]
