"""Encoders on the packaged all-MiniLM-L6-v2: normalised vectors, semantics, fast path agreement, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopmind.knowledge.encoders import Encoder, EncoderError


@pytest.fixture(scope="module")
def torch_encoder() -> Encoder:
    return Encoder(backend="torch")


def test_torch_vectors_normalised_and_semantic(torch_encoder: Encoder) -> None:
    v = torch_encoder.encode(["cordless power drill with battery", "18V drill driver kit", "organic green tea bags"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    assert np.allclose(torch_encoder.encode(["18V drill driver kit"])[0], v[1], atol=1e-5)


def test_auto_picks_int8_only_after_measuring_agreement(onnx_dir: Path, scientific_texts: list[str],
                                                        torch_encoder: Encoder) -> None:
    auto = Encoder(backend="auto", onnx_dir=onnx_dir)
    assert auto.prepare(scientific_texts[:256]) == "onnx-int8"
    assert auto.agreement is not None and auto.agreement >= 0.99
    held_out = scientific_texts[3000:3200]  # texts the calibration never saw
    cos = (auto.encode(held_out) * torch_encoder.encode(held_out)).sum(1)
    assert cos.mean() >= 0.99 and cos.min() > 0.95
    assert "onnx-int8" in auto.model_id


def test_fp32_onnx_matches_torch(onnx_dir: Path, scientific_texts: list[str], torch_encoder: Encoder) -> None:
    onnx = Encoder(backend="onnx", onnx_dir=onnx_dir)
    texts = scientific_texts[:64]
    assert ((onnx.encode(texts) * torch_encoder.encode(texts)).sum(1)).min() > 0.9999


def test_auto_refuses_int8_when_agreement_is_too_low(onnx_dir: Path, scientific_texts: list[str]) -> None:
    strict = Encoder(backend="auto", onnx_dir=onnx_dir, min_agreement=0.99999)
    assert strict.prepare(scientific_texts[:64]) == "onnx"


def test_chinese_text_runs_through_the_encoder(onnx_dir: Path) -> None:
    # No multilingual model ships offline here; this checks the pipeline handles CJK text end to end.
    enc = Encoder(backend="onnx-int8", onnx_dir=onnx_dir)
    v = enc.encode(["不锈钢保温杯 500ml 大容量", "不锈钢保温杯 500ml 大容量", "儿童益智积木玩具"])
    assert np.isfinite(v).all() and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > 0.9999


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="unknown encoder backend"):
        Encoder(backend="tpu")
    with pytest.raises(EncoderError, match="cannot load model"):
        Encoder(model=str(tmp_path / "no-such-model"), backend="torch").encode(["x"])
