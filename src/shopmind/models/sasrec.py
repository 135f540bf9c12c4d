"""SASRec-class sequential transformer trained with softmax cross-entropy over the items.

Item representation = ID embedding + a learned projection of the item's LM text embedding (when item
features are given), shared between the input and the output layer, so an item with no interactions still
has a usable vector from its text. Causal self-attention over the last `max_len` items; every position
predicts the next item with a softmax over the whole catalog up to `full_softmax_items` items; above that,
a sampled softmax whose negatives are the batch's other targets (logQ-corrected, as in the two-tower model),
computing only the batch's rows of the item table.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from ..data.interactions import Interactions
from .training import EarlyStopping, SequenceNetModel, Tracker, loss_module, valid_sample


class SASRec(SequenceNetModel):
    name = "sasrec"
    supports_cold_items = True

    def __init__(self, dim: int = 64, layers: int = 2, heads: int = 2, max_len: int = 50, dropout: float = 0.2,
                 epochs: int = 50, batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 0.0,
                 use_text: bool = True, eval_every: int = 2, patience: int = 6, valid_max: int = 5000,
                 full_softmax_items: int = 50_000, log_dir: str | None = None, seed: int = 0) -> None:
        super().__init__(seed)
        self.full_softmax_items = full_softmax_items
        self.eval_every, self.patience, self.valid_max, self.log_dir = eval_every, patience, valid_max, log_dir
        self.tuned: dict[str, int] = {}
        self.dim, self.layers, self.heads, self.max_len = dim, layers, heads, max_len
        self.dropout, self.epochs, self.batch_size, self.lr = dropout, epochs, batch_size, lr
        self.weight_decay, self.use_text = weight_decay, use_text
        self.history: list[dict[str, float]] = []

    def _build(self, n_items: int, text: np.ndarray | None):
        import torch
        from torch import nn

        dim, max_len, heads, layers, dropout = self.dim, self.max_len, self.heads, self.layers, self.dropout

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.frozen: torch.Tensor | None = None
                self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
                nn.init.normal_(self.items.weight, std=0.02)
                self.text = None
                if text is not None:
                    self.register_buffer("text_vectors", torch.cat([torch.zeros(1, text.shape[1]),
                                                                    torch.as_tensor(text, dtype=torch.float32)]))
                    self.text = nn.Linear(text.shape[1], dim)
                self.pos = nn.Embedding(max_len, dim)
                layer = nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout, batch_first=True,
                                                   norm_first=True, activation="gelu")
                self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
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

            def hidden(self, seqs: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
                length = seqs.shape[1]
                # Positions count back from the end, so the latest item always has the same position.
                pos = self.pos(torch.arange(max_len - length, max_len, device=seqs.device))
                x = self.drop(table[seqs] * (dim ** 0.5) + pos)
                # Blocked: future positions and padding keys; every position may always see itself, so no
                # attention row is empty (an empty row gives NaN, which then leaks through later layers).
                causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seqs.device), 1)
                blocked = (causal[None] | (seqs == 0)[:, None, :]) & ~torch.eye(length, dtype=torch.bool,
                                                                                  device=seqs.device)[None]
                mask = torch.zeros(blocked.shape, device=seqs.device).masked_fill(blocked, float("-inf"))
                return self.norm(self.encoder(x, mask=mask.repeat_interleave(heads, dim=0)))

            def forward(self, seqs: torch.Tensor) -> torch.Tensor:
                """Logits over all real items (index 0 is padding) for the last position of each row."""
                table = self.item_table()
                return self.hidden(seqs, table)[:, -1, :] @ table[1:].T

        return Net()

    def _train(self, data: Interactions, item_features: np.ndarray | None,
               valid: tuple[Sequence[np.ndarray], np.ndarray] | None) -> "SASRec":
        import torch

        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.data = data
        text = item_features if (self.use_text and item_features is not None and item_features.shape[1] > 1) else None
        self._net = self._build(data.n_items, text)
        opt = torch.optim.AdamW(self._net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        # Training windows: inputs s[:-1] -> targets s[1:], last max_len + 1 items of each user.
        seqs = [s[-(self.max_len + 1):] for s in data.sequences if len(s) >= 2]
        inputs = self._pad([s[:-1] for s in seqs])
        targets = self._pad([s[1:] for s in seqs]) - 1  # -1 marks padding
        # Above full_softmax_items, a sampled softmax over the batch's targets with the logQ correction (as the
        # two-tower model): the full softmax costs batch x n_items per step, hopeless at a million items.
        full = data.n_items <= self.full_softmax_items
        counts = np.bincount(targets[targets >= 0], minlength=data.n_items) + 1.0
        log_q = torch.as_tensor(np.log(counts / counts.sum()), dtype=torch.float32)

        def batch_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            real = y >= 0
            if full:
                table = self._net.item_table()
                h = self._net.hidden(x, table)
                logits = h[real] @ table[1:].T  # only real positions: full softmax over all items
                return torch.nn.functional.cross_entropy(logits, y[real])
            yy = y[real]  # the batch's own rows of the item table; the other targets are the negatives
            ids = torch.unique(torch.cat([torch.zeros(1, dtype=x.dtype), x.flatten(), yy + 1]))
            rows = self._net.item_rows(ids)
            h = self._net.hidden(torch.searchsorted(ids, x), rows)[real]  # ids[0] = 0: padding stays 0
            logits = h @ rows[torch.searchsorted(ids, yy + 1)].T - log_q[yy][None, :]
            same = (yy[:, None] == yy[None, :]) & ~torch.eye(len(yy), dtype=torch.bool)
            return torch.nn.functional.cross_entropy(logits.masked_fill(same, float("-inf")), torch.arange(len(yy)))

        par = self._parallel
        step = par.wrap(loss_module(self._net, batch_loss))
        # Batches of similar length, each cut to its longest sequence: most users have a few items, so
        # padding every batch to max_len would waste most of the work.
        lengths = np.array([len(s) - 1 for s in seqs])
        order = np.argsort(lengths, kind="stable")
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if valid is not None:
            valid = valid_sample(valid[0], valid[1], None, self.valid_max, self.seed)[:2]
        tracker = Tracker(self.log_dir, f"{self.name}-{time.strftime('%Y%m%d-%H%M%S')}-{'valid' if valid else 'fit'}")
        stopper = EarlyStopping(self.patience)
        self.history = []
        for epoch in range(self.epochs):
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
            record = {"epoch": epoch + 1, "loss": total / max(n, 1), "seconds": time.perf_counter() - t0}
            stop = False
            if valid is not None and ((epoch + 1) % self.eval_every == 0 or epoch + 1 == self.epochs):
                self._net.eval()
                record["valid_ndcg@10"] = par.ndcg(self.score, *valid)
                stop = stopper.update(epoch + 1, record["valid_ndcg@10"], self._net.state_dict())
            self.history.append(record)
            tracker.log(epoch + 1, record)
            par.epoch_end(record)
            if stop:
                break
        tracker.close()
        if valid is not None and stopper.state is not None:
            self._net.load_state_dict(stopper.state)
            self.tuned = {"epochs": stopper.best_epoch}
        self._net.eval()
        # Items without interactions were only pushed down by the softmax; a zero ID vector leaves their text.
        unseen = torch.as_tensor(data.item_popularity() == 0)
        with torch.no_grad():
            self._net.items.weight[1:][unseen] = 0.0
        self._net.frozen = None
        return self

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> np.ndarray:
        import torch

        padded = self._pad(histories)
        empty = (padded == 0).all(axis=1)
        padded[empty, -1] = 1  # a placeholder item keeps attention defined; those rows are zeroed below
        width = max(1, min(self.max_len, max((len(h) for h in histories), default=1)))
        with torch.no_grad():
            out = self._net(torch.as_tensor(padded[:, -width:])).numpy().astype(np.float32)
        out[empty] = 0.0
        return out


    def factor_parts(self) -> tuple[np.ndarray, None]:
        """Item vectors: score = hidden state @ table[1:].T (no bias)."""
        import torch

        with torch.no_grad():
            return self._net.item_table()[1:].numpy().astype(np.float32), None

    def factor_users(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> np.ndarray:
        """The last hidden state per history (zero for an empty one, as `score` gives it all-zero scores)."""
        import torch

        padded = self._pad(histories)
        empty = (padded == 0).all(axis=1)
        padded[empty, -1] = 1
        width = max(1, min(self.max_len, max((len(h) for h in histories), default=1)))
        with torch.no_grad():
            table = self._net.item_table()
            out = self._net.hidden(torch.as_tensor(padded[:, -width:]), table)[:, -1, :].numpy().astype(np.float32)
        out[empty] = 0.0
        return out


class SASRecID(SASRec):
    """The same transformer with ID embeddings only (no LM text): the baseline for the text's effect."""

    name = "sasrec-id"
    supports_cold_items = False

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("use_text", False)
        super().__init__(**kwargs)  # type: ignore[arg-type]
