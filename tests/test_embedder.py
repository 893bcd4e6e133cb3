"""Real-model tests for the offline embedder (all-MiniLM-L6-v2, derived int8 per-channel graph)."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest

from engram.embed import Embedder, make_embedder, minilm_graph
from engram.embed.local import (
    DIM,
    MODEL_FILE,
    MODEL_SHA256,
    EmbedderFileError,
    LocalEmbedder,
    _session_options,
    default_tokenizer_path,
    derived_model_path,
    upstream_dir,
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

# Varied texts for the quality bounds: short facts, chat turns, a summary, edge cases.
_PEOPLE = ["Caroline", "Melanie", "John", "Maria", "the user"]
_THINGS = ["a new bike", "pottery classes", "a trip to Lisbon", "pad see ew", "a job interview",
           "her sister's wedding", "the marathon", "a vegetarian diet"]
VARIED = SENTENCES[:7] + [
    f"{p} {verb} {t}." for i, (p, verb, t) in enumerate(
        (p, v, t) for p in _PEOPLE for v in ("talked about", "is excited about", "wants to try")
        for t in _THINGS) if i % 3 == 0
] + [
    "ok", "Thanks!", "See you tomorrow :)", "2023-05-08 13:56",
    "Hey Mel! Good to see you! How have you been?",
    "Wow, that sounds amazing. I'd love to hear more about how the painting class went.",
    "Caroline and Melanie had a conversation on 8 May 2023. Caroline mentioned that she attended a "
    "support group and was inspired by the stories she heard; Melanie praised her empathy and said "
    "she painted a lake sunrise last year as a way of expressing herself.",
]


def _fp32_embedder() -> LocalEmbedder:
    """The float32 graph of the same weights, with the embedder's tokenizer and pooling."""
    import onnxruntime as ort

    model = minilm_graph.build_fp32_model(upstream_dir())
    fp32 = LocalEmbedder.on_session(ort.InferenceSession(model.SerializeToString(), sess_options=_session_options(1),
                                                         providers=["CPUExecutionProvider"]))
    return fp32


@pytest.fixture(scope="module")
def fp32() -> LocalEmbedder:
    return _fp32_embedder()


def test_protocol_and_registry(emb):
    assert isinstance(emb, Embedder)
    assert emb.name == "local:all-MiniLM-L6-v2-int8pc"
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


def test_a_text_gets_the_same_vector_alone_and_among_others(emb):
    # Dynamic quantisation scales a run's whole activation tensor at once: batched, a text's
    # vector would depend on its neighbours and padding. Each text is its own run instead.
    texts = SENTENCES * 3 + [f"note number {i} about topic {i % 7}" for i in range(40)]
    small = LocalEmbedder(batch_size=5)
    single = np.stack([emb.embed([t])[0] for t in texts])
    np.testing.assert_array_equal(emb.embed(texts), single)
    np.testing.assert_array_equal(small.embed(texts), single)
    np.testing.assert_array_equal(emb.embed(texts[::-1])[::-1], single)


def test_threads_option_gives_same_vectors(emb):
    two = LocalEmbedder(threads=2)
    np.testing.assert_allclose(two.embed(SENTENCES), emb.embed(SENTENCES), atol=1e-5)


# ------------------------------------------------------------------------- quality
def test_the_float32_graph_is_all_minilm_l6_v2(fp32):
    # 0.7553 is upstream all-MiniLM-L6-v2's cosine for this pair (float32, any runtime).
    food, bread = fp32.embed(SENTENCES[3:5])
    assert abs(float(food @ bread) - 0.7553) < 5e-4


def test_the_graph_matches_a_numpy_forward_pass(fp32):
    w = minilm_graph.load_weights(upstream_dir())
    for text in ["I adopted a puppy", "A man is eating a piece of bread."]:
        ids = fp32._tokenizer.encode(text).ids
        expected = _numpy_bert(w, ids)
        got = fp32._session.run(None, {"input_ids": np.array([ids]), "attention_mask": np.ones((1, len(ids)), np.int64)})[0][0]
        np.testing.assert_allclose(got, expected, atol=2e-4)


def _numpy_bert(w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    from math import erf, sqrt

    def ln(x, p):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * w[p + ".weight"] + w[p + ".bias"]

    def lin(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / sqrt(2))))
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: len(ids)]
    x = ln(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm").astype(np.float64)
    for i in range(6):
        p = f"encoder.layer.{i}."
        q, k, v = (lin(x, p + f"attention.self.{n}").reshape(len(ids), 12, 32).transpose(1, 0, 2)
                   for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 2, 1) / sqrt(32)
        a = np.exp(s - s.max(-1, keepdims=True))
        ctx = ((a / a.sum(-1, keepdims=True)) @ v).transpose(1, 0, 2).reshape(len(ids), 384)
        x = ln(lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        x = ln(lin(gelu(lin(x, p + "intermediate.dense")), p + "output.dense") + x, p + "output.LayerNorm")
    return x


def test_fused_attention_and_smoothing_leave_the_function_unchanged(fp32):
    import onnxruntime as ort

    w = minilm_graph.load_weights(upstream_dir())
    plain = minilm_graph.build_fp32_graph(w, fused_attention=False, smoothing={})
    session = ort.InferenceSession(plain.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.array([fp32._tokenizer.encode(SENTENCES[6]).ids] * 2)
    mask = np.ones_like(ids)
    mask[1, 8:] = 0  # the second row is padded after 8 tokens
    ref = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    got = fp32._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    np.testing.assert_allclose(got, ref, atol=1e-5)
    alone = fp32._session.run(None, {"input_ids": ids[1:, :8], "attention_mask": mask[1:, :8]})[0]
    np.testing.assert_allclose(got[1, :8], alone[0], atol=1e-5)  # padding keys are masked


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def test_int8_vectors_stay_close_to_float32(emb, fp32):
    # Measured on these texts: min 0.968 ("Thanks!"), mean 0.995; bench/embedder.py has the
    # figures on 200 LoCoMo texts (real sentences >= 0.99).
    c = _cosines(emb.embed(VARIED), fp32.embed(VARIED))
    assert c.min() >= 0.96, (c.min(), VARIED[int(c.argmin())])
    assert c.mean() >= 0.993


# ----------------------------------------------------------------------- the derived graph
def test_derivation_is_deterministic_and_has_the_pinned_hash(tmp_path):
    minilm_graph.derive(upstream_dir(), tmp_path / "a.onnx")
    minilm_graph.derive(upstream_dir(), tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert minilm_graph.sha256_file(tmp_path / "a.onnx") == MODEL_SHA256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]  # no temporary left


def test_upstream_files_are_checked(tmp_path):
    src = tmp_path / "upstream"
    shutil.copytree(upstream_dir(), src)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 5}))
    with pytest.raises(minilm_graph.GraphSourceError, match="config.json"):
        minilm_graph.load_weights(src)
    (src / "model.safetensors").unlink()
    with pytest.raises(minilm_graph.GraphSourceError, match="not found"):
        minilm_graph.load_weights(src)


def _derive_in(cache: str) -> str:
    return str(derived_model_path(cache))


def test_concurrent_first_starts_derive_one_good_file(tmp_path):
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        paths = pool.map(_derive_in, [str(cache)] * 3)
    assert set(paths) == {str(cache / MODEL_FILE)}
    assert minilm_graph.sha256_file(cache / MODEL_FILE) == MODEL_SHA256
    assert sorted(p.name for p in cache.iterdir()) == sorted([MODEL_FILE, f".{MODEL_FILE}.lock"])


def test_a_damaged_cached_graph_is_derived_again(tmp_path):
    (tmp_path / MODEL_FILE).write_bytes(b"not a model")
    path = derived_model_path(tmp_path)
    assert minilm_graph.sha256_file(path) == MODEL_SHA256


def test_a_derivation_that_is_not_the_pinned_one_says_what_to_do(tmp_path, monkeypatch):
    import engram.embed.local as local

    monkeypatch.setattr(local, "MODEL_SHA256", "0" * 64)
    with pytest.raises(EmbedderFileError, match=r"onnx==1\.23\.2 onnxruntime==1\.32\.0.*pip install"):
        derived_model_path(tmp_path)
    assert not (tmp_path / MODEL_FILE).exists()


def test_an_unusable_cache_names_the_setting(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(EmbedderFileError, match="ENGRAM_MODEL_CACHE"):
        LocalEmbedder(cache_dir=tmp_path / "file" / "cache")


def test_tampered_model_is_rejected(tmp_path):
    bad = tmp_path / "model.onnx"
    shutil.copyfile(derived_model_path(), bad)
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


def test_the_session_runs_int8_kernels_without_the_slow_fusion(tmp_path, monkeypatch):
    # onnxruntime silently ignores unknown names in disabled_optimizers: if the
    # fusion were renamed, its slow kernel would come back without an error. And every
    # weight MatMul must run as int8 arithmetic (no float MatMul left).
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
        ops = [e["args"]["op_name"] for e in json.load(f) if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    assert "SkipLayerNormalization" not in ops
    assert "LayerNormalization" in ops
    assert ops.count("DynamicQuantizeMatMul") == 24
    assert "MatMul" not in ops
    assert ops.count("MultiHeadAttention") == 6 and ops.count("Gelu") == 6


def test_the_query_embedder_may_use_every_core_and_workers_one_thread_each(tmp_path) -> None:
    import os

    from engram.config import load_settings
    from engram.runtime import build_embedder

    default = load_settings(env={})
    assert build_embedder(default).threads == 1
    assert build_embedder(default, for_queries=True).threads == min(os.cpu_count() or 1, 4)
    pinned = load_settings(env={"ENGRAM_QUERY_EMBED_THREADS": "1", "ENGRAM_EMBED_THREADS": "2"})
    assert build_embedder(pinned, for_queries=True).threads == 1
    assert build_embedder(pinned).threads == 2
    cached = load_settings(env={"ENGRAM_MODEL_CACHE": str(tmp_path / "models")})
    build_embedder(cached)
    assert (tmp_path / "models" / Path(MODEL_FILE)).is_file()
