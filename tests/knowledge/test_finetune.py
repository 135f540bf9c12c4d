"""Encoder fine-tuning on graded pairs: the saved model is a loadable SentenceTransformer folder and it
orders each training query's items by grade better than the base model did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shopmind.knowledge.encoders import Encoder, EncoderError
from shopmind.knowledge.finetune import fingerprint, finetune_encoder

# Queries whose best item is not the one the base model prefers: the graded pairs must teach it.
PAIRS = {
    "cheap option": [("Budget plastic garden hose, 15 m", 2.0), ("Premium brass garden hose, 30 m", 0.0)],
    "luxury pick": [("Premium brass garden hose, 30 m", 2.0), ("Budget plastic garden hose, 15 m", 0.0)],
    "for kids": [("Small blue rain boots, size 28", 2.0), ("Steel toe work boots, size 44", 0.3)],
    "for the site": [("Steel toe work boots, size 44", 2.0), ("Small blue rain boots, size 28", 0.3)],
    "quiet one": [("Brushless cordless drill with low noise", 1.7), ("Hammer drill, 110 dB, corded", 0.0)],
    "demolition": [("Hammer drill, 110 dB, corded", 2.0), ("Brushless cordless drill with low noise", 0.0)],
}


def _margin(model: str) -> float:
    enc = Encoder(model, "torch", max_length=64)
    total = 0.0
    for q, items in PAIRS.items():
        v = enc.encode([q] + [t for t, _ in items])
        s = v[1:] @ v[0]
        total += float(s[0] - s[1])  # the first item has the higher grade
    return total / len(PAIRS)


def test_finetune_learns_the_graded_order(tmp_path: Path) -> None:
    out = tmp_path / "ft"
    report = finetune_encoder("default", PAIRS, out, steps=30, queries_per_step=4, learning_rate=1e-4,
                              max_length=64, seed=0)
    assert (out / "shopmind_finetune.json").is_file() and not (tmp_path / "ft.tmp").exists()
    assert json.loads((out / "shopmind_finetune.json").read_text())["steps"] == 30 == report["steps"]
    before, after = _margin("default"), _margin(str(out))
    assert after > before + 0.1, (before, after)
    assert after > 0


def test_fingerprint_changes_with_pairs_and_parameters() -> None:
    a = fingerprint("default", PAIRS, steps=10)
    assert a == fingerprint("default", dict(reversed(list(PAIRS.items()))), steps=10)  # order does not matter
    assert a != fingerprint("default", PAIRS, steps=11)
    changed = {**PAIRS, "quiet one": [(t, 0.0) for t, _ in PAIRS["quiet one"]]}
    assert a != fingerprint("default", changed, steps=10)


def test_finetune_needs_relevant_pairs(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="at least two queries"):
        finetune_encoder("default", {"q": [("item", 0.0)]}, tmp_path / "x", steps=1)
