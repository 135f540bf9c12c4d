"""The embedding cache: unchanged texts are never encoded twice; a changed text is encoded alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopmind.data.store import open_store
from shopmind.knowledge.tables import EmbeddingCache


class CountingEncoder:
    """A stand-in that records what it was asked to encode (the cache logic is what is tested here)."""

    model_id = "counting|test"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def prepare(self, texts) -> str:
        return "test"

    def encode(self, texts, progress=None) -> np.ndarray:
        self.seen.extend(texts)
        rng = np.random.default_rng(abs(hash(tuple(texts))) % 2**32)
        v = rng.normal(size=(len(texts), 8)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cache_encodes_only_new_texts(store_at, tmp_path: Path, dtype: str) -> None:
    with open_store(store_at("s")) as store:
        cache, enc = EmbeddingCache(store, dtype), CountingEncoder()
        texts = ["red mug", "blue mug", "red mug", "teapot"]
        first, n = cache.encode(enc, texts)
        assert n == 3 and enc.seen == ["red mug", "blue mug", "teapot"]  # duplicates encoded once
        assert np.allclose(first[0], first[2])
        again, n2 = cache.encode(enc, texts)
        assert n2 == 0 and np.allclose(again, first, atol=1e-3)
        changed, n3 = cache.encode(enc, ["red mug", "blue mug (large)", "teapot"])
        assert n3 == 1 and enc.seen[-1] == "blue mug (large)"
        assert np.allclose(changed[0], first[0], atol=1e-3)


def test_cache_keys_by_model(store_at, tmp_path: Path) -> None:
    with open_store(store_at("s")) as store:
        cache, a, b = EmbeddingCache(store), CountingEncoder(), CountingEncoder()
        b.model_id = "other|model"
        cache.encode(a, ["x"])
        _, n = cache.encode(b, ["x"])
        assert n == 1
    with pytest.raises(ValueError, match="float32 or float16"):
        EmbeddingCache(open_store(store_at("t")), "int4")
