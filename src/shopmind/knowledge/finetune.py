"""Fine-tuning a sentence encoder on graded (query, item text) pairs: in-batch negatives plus graded pairs.

Each step takes `queries_per_step` training queries and `items_per_query` of their judged items (the best
one and random others), encodes all of them with the encoder being trained, and minimises
1. a softmax cross-entropy of each query over every item in the batch (the other queries' items are the
   in-batch negatives; the target spreads over the query's own items in proportion to their gain), which
   teaches retrieval, plus
2. a logistic loss on each pair of the query's own items with different grades, which teaches the graded
   order among items that all look relevant — what re-ranking a judged list needs and what the in-batch
   negatives alone never see.
The loop is written here rather than with sentence-transformers' trainer because (2) needs the grades of
several positives per query, which none of its losses take; the model itself is a plain SentenceTransformer
and is saved as one, so `Encoder(model=folder)` (torch or ONNX) loads it like any other.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .encoders import EncoderError, resolve_model_path

GradedPairs = Mapping[str, Sequence[tuple[str, float]]]  # query -> [(item text, gain >= 0)]
ProgressFn = Callable[[int, int, float], None]  # (step, steps, running loss)


def fingerprint(base_model: str, pairs: GradedPairs, **params: object) -> str:
    """A short hash of everything the fine-tuned weights depend on (names the output folder)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{base_model}|{json.dumps(params, sort_keys=True)}".encode())
    for q in sorted(pairs):
        h.update(q.encode())
        for text, gain in sorted(pairs[q]):
            h.update(f"\x1f{text}\x1e{gain:.3f}".encode())
    return h.hexdigest()


def _batch(rng: random.Random, queries: list[str], pairs: GradedPairs, n_queries: int, per_query: int
           ) -> tuple[list[str], list[str], list[list[float]]]:
    qs = rng.sample(queries, min(n_queries, len(queries)))
    texts, gains = [], []
    for q in qs:
        items = list(pairs[q])
        best = max(items, key=lambda t: t[1])
        rest = [t for t in items if t is not best]
        chosen = [best] + rng.sample(rest, min(per_query - 1, len(rest)))
        while len(chosen) < per_query:  # a query with one judged item: repeat it (same text, same gain)
            chosen.append(best)
        texts += [t for t, _ in chosen]
        gains.append([g for _, g in chosen])
    return qs, texts, gains


def finetune_encoder(base_model: str, pairs: GradedPairs, out_dir: str | Path, steps: int = 400,
                     queries_per_step: int = 32, items_per_query: int = 2, learning_rate: float = 2e-5,
                     temperature: float = 0.05, pair_weight: float = 1.0, max_length: int = 128, seed: int = 0,
                     progress: ProgressFn | None = None) -> dict[str, object]:
    """Fine-tune `base_model` on the graded pairs and save it to out_dir (a SentenceTransformer folder).
    Only queries with at least one item of positive gain are used. Returns a report (steps, losses, time)."""
    import torch
    from sentence_transformers import SentenceTransformer

    usable = sorted(q for q, items in pairs.items() if items and max(g for _, g in items) > 0)
    if len(usable) < 2:
        raise EncoderError("fine-tuning needs at least two queries with a relevant item")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = SentenceTransformer(resolve_model_path(base_model), device="cpu")
    model.max_seq_length = max_length
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then linear decay to zero
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))

    def embed(texts: list[str]) -> "torch.Tensor":
        features = model.tokenize(texts) if not hasattr(model, "preprocess") else model.preprocess(texts)
        return torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)

    t0 = time.perf_counter()
    losses: list[float] = []
    running = None
    for step in range(steps):
        qs, texts, gains = _batch(rng, usable, pairs, queries_per_step, items_per_query)
        q, d = embed(qs), embed(texts)
        logits = q @ d.T / temperature
        g = torch.tensor(gains, dtype=torch.float32)  # (queries, per_query)
        target = torch.zeros_like(logits)
        for i in range(len(qs)):  # the query's own items, weighted by gain
            target[i, i * items_per_query:(i + 1) * items_per_query] = g[i] / g[i].sum()
        retrieval = -(target * torch.log_softmax(logits, dim=1)).sum(1).mean()
        own = logits.reshape(len(qs), len(qs), items_per_query)[torch.arange(len(qs)), torch.arange(len(qs))]
        diff_s = own.unsqueeze(2) - own.unsqueeze(1)  # s_a - s_b for every ordered pair of own items
        better = (g.unsqueeze(2) - g.unsqueeze(1)) > 1e-6
        graded = torch.nn.functional.softplus(-diff_s[better]).mean() if better.any() else logits.new_zeros(())
        loss = retrieval + pair_weight * graded
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        running = value if running is None else 0.95 * running + 0.05 * value
        losses.append(round(value, 4))
        if progress:
            progress(step + 1, steps, running)
    model.eval()
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    model.save(str(tmp))
    report = {"base_model": base_model, "steps": steps, "queries": len(usable), "queries_per_step": queries_per_step,
              "items_per_query": items_per_query, "learning_rate": learning_rate, "temperature": temperature,
              "pair_weight": pair_weight, "max_length": max_length, "seed": seed,
              "loss_first_50": round(float(np.mean(losses[:50])), 4), "loss_last_50": round(float(np.mean(losses[-50:])), 4),
              "seconds": round(time.perf_counter() - t0, 1)}
    (tmp / "shopmind_finetune.json").write_text(json.dumps(report, indent=1))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)  # complete folders only: a crash mid-save leaves the .tmp, never a half model
    return report
