"""Real-model tests for the offline embedder (all-MiniLM-L6-v2 int8 ONNX)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from engram.embed import Embedder, make_embedder
from engram.embed.local import (
    DIM,
    EmbedderFileError,
    LocalEmbedder,
    _session_options,
    default_model_path,
    default_tokenizer_path,
)


@pytest.fixture(scope="module")
def emb() -> Embedder:
    return make_embedder("local")


SENTENCES = [
    "I adopted a puppy",
    "I got a new dog",
    "The stock market fell",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "",
    "Ünïcödé and UPPER case are normalised the way BERT uncased does it.",
    "word " * 400,  # longer than the model's 256 tokens: truncated, not an error
]


def test_protocol_and_registry(emb):
    assert isinstance(emb, Embedder)
    assert emb.name == "local:all-MiniLM-L6-v2-int8"
    assert emb.dim == DIM == 384
    with pytest.raises(ValueError, match="unknown embedder"):
        make_embedder("nope")


def test_shape_dtype_and_unit_norm(emb):
    v = emb.embed(SENTENCES)
    assert v.shape == (len(SENTENCES), 384)
    assert v.dtype == np.float32
    assert np.all(np.isfinite(v))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_empty_input(emb):
    v = emb.embed([])
    assert v.shape == (0, 384) and v.dtype == np.float32


def test_rejects_bare_string(emb):
    with pytest.raises(TypeError):
        emb.embed("a string is not a list of strings")


def test_semantic_sanity(emb):
    puppy, dog, stocks, food, bread = emb.embed(SENTENCES[:5])
    assert puppy @ dog > puppy @ stocks + 0.3
    assert food @ bread > 0.7  # fp32 all-MiniLM-L6-v2 gives 0.755 for this pair
    assert dog @ stocks < 0.3


def test_deterministic(emb):
    a = emb.embed(SENTENCES)
    b = emb.embed(SENTENCES)
    np.testing.assert_array_equal(a, b)


def test_batched_matches_one_by_one_and_keeps_order(emb):
    texts = SENTENCES * 3 + [f"note number {i} about topic {i % 7}" for i in range(40)]
    small = LocalEmbedder(batch_size=5)  # many batches with mixed padding
    batched = small.embed(texts)
    whole = emb.embed(texts)
    single = np.stack([emb.embed([t])[0] for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    np.testing.assert_allclose(whole, single, atol=1e-5)


def test_threads_option_gives_same_vectors(emb):
    two = LocalEmbedder(threads=2)
    np.testing.assert_allclose(two.embed(SENTENCES), emb.embed(SENTENCES), atol=1e-5)


def test_tampered_model_is_rejected(tmp_path):
    bad = tmp_path / "model.onnx"
    shutil.copyfile(default_model_path(), bad)
    with bad.open("r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(EmbedderFileError, match="model.onnx"):
        LocalEmbedder(model_path=bad)


def test_tampered_tokenizer_is_rejected(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_bytes(default_tokenizer_path().read_bytes().replace(b"puppy", b"pupyp", 1))
    with pytest.raises(EmbedderFileError, match="tokenizer.json"):
        LocalEmbedder(tokenizer_path=bad)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(EmbedderFileError, match="not found"):
        LocalEmbedder(model_path=tmp_path / "absent.onnx")


def test_long_text_does_not_pad_a_batch_of_short_ones(emb):
    ids = [[0] * 10] * 20 + [[0] * 256]
    batches = list(emb._batches(list(range(len(ids))), ids))
    assert batches == [list(range(20)), [20]]


def test_a_batch_stays_within_its_token_budget(emb):
    from engram.embed.local import BATCH_TOKENS

    ids = [[0] * 10] * 100 + [[0] * 100] * 10
    batches = list(emb._batches(list(range(len(ids))), ids))
    assert sorted(i for b in batches for i in b) == list(range(110))  # every text, once
    for batch in batches:
        assert len(batch) * max(len(ids[i]) for i in batch) <= BATCH_TOKENS
    assert len(batches[0]) == BATCH_TOKENS // 10  # full up to the budget, not smaller


def test_slow_skip_layer_norm_fusion_stays_off(tmp_path, monkeypatch):
    # onnxruntime silently ignores unknown names in disabled_optimizers: if the
    # fusion were renamed, its slow kernel would come back without an error.
    import engram.embed.local as local

    def profiled(threads: int):
        opts = _session_options(threads)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(tmp_path / "profile")
        return opts

    monkeypatch.setattr(local, "_session_options", profiled)
    emb = LocalEmbedder()
    emb.embed(["I adopted a puppy"])
    with open(emb._session.end_profiling()) as f:
        ops = [e["args"]["op_name"] for e in json.load(f) if e.get("cat") == "Node"]
    assert "SkipLayerNormalization" not in ops
    assert "LayerNormalization" in ops


def test_the_query_embedder_may_use_every_core_and_workers_one_thread_each() -> None:
    import os

    from engram.config import load_settings
    from engram.runtime import build_embedder

    default = load_settings(env={})
    assert build_embedder(default).threads == 1
    assert build_embedder(default, for_queries=True).threads == min(os.cpu_count() or 1, 4)
    pinned = load_settings(env={"ENGRAM_QUERY_EMBED_THREADS": "1", "ENGRAM_EMBED_THREADS": "2"})
    assert build_embedder(pinned, for_queries=True).threads == 1
    assert build_embedder(pinned).threads == 2
