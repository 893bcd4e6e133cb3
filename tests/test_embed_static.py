"""The static embedder (engram/embed/static.py): its table derived from the transformer,
the cache file that keeps it, and the vectors it gives."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tokenizers import Tokenizer

from engram.config import load_settings
from engram.embed import Embedder, available_embedders, make_embedder
from engram.embed import static
from engram.embed.static import (
    DEFAULT_RECIPE,
    Recipe,
    StaticEmbedder,
    TableFileError,
    Teacher,
    cache_path,
    derive_table,
    load_or_derive,
    read_table,
    token_vectors,
    write_table,
)
from engram.runtime import build_embedder


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(static.default_teacher().tokenizer_path))


class FakeSession:
    """A stand-in transformer: hidden states a fixed function of the token ids, with a
    common component every position shares (as a real one has), 16 dimensions."""

    dim = 16

    def __init__(self) -> None:
        self.runs = 0

    def get_inputs(self):
        return [SimpleNamespace(name="input_ids"), SimpleNamespace(name="attention_mask")]

    def run(self, _outputs, feeds):
        self.runs += 1
        ids = feeds["input_ids"].astype(np.float64)[..., None]
        k = np.arange(self.dim, dtype=np.float64)
        return [(np.sin(ids * (k + 1) * 0.37 + k) + 2.0).astype(np.float32)]


def fake_teacher(tokenizer: Tokenizer, sessions: list[FakeSession], identity: str = "fake-teacher") -> Teacher:
    def load():
        sessions.append(FakeSession())
        return sessions[-1], tokenizer

    return Teacher(identity, static.default_teacher().tokenizer_path, load)


# ---------------------------------------------------------------------- derivation
def test_derivation_is_deterministic_on_the_real_transformer(tokenizer):
    session, tok = static.default_teacher().load()
    ids = list(range(1990, 2250))  # 'the', 'of', 'and', … and a few characters before them
    a, empty_a = token_vectors(session, tok, pooling="token", ids=ids)
    b, empty_b = token_vectors(session, tok, pooling="token", ids=ids)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(empty_a, empty_b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-9)
    table_a, _ = derive_table(None, tok, DEFAULT_RECIPE, ids=ids, raw=(a, empty_a))
    table_b, _ = derive_table(None, tok, DEFAULT_RECIPE, ids=ids, raw=(b, empty_b))
    np.testing.assert_array_equal(table_a, table_b)
    assert table_a.dtype == np.float32 and table_a.shape == (len(ids), static.table_dim(384, DEFAULT_RECIPE))


def test_pooling_choices_differ(tokenizer):
    session = FakeSession()
    mean, _ = token_vectors(session, tokenizer, pooling="mean", ids=[2000, 2001])
    token, _ = token_vectors(session, tokenizer, pooling="token", ids=[2000, 2001])
    assert not np.allclose(mean, token)


def test_weights_follow_frequency_and_skip_special_tokens(tokenizer):
    w = static.token_weights(tokenizer, DEFAULT_RECIPE)
    vocab = tokenizer.get_vocab()
    assert w[vocab["[PAD]"]] == w[vocab["[CLS]"]] == w[vocab["[SEP]"]] == 0.0
    assert w[vocab["the"]] < w[vocab["dog"]] < w[vocab["raven"]]  # frequent words weigh less
    assert w[vocab["."]] < 0.05 and w[vocab["raven"]] > 0.9


def test_centering_removes_the_common_component(tokenizer):
    """Uncentered, the fake teacher's rows all share +2.0: every pair comes out similar."""
    raw = token_vectors(FakeSession(), tokenizer, pooling="token")
    cos = {}
    for center in (False, True):
        recipe = Recipe(dims=None, center=center, common_components=int(center), whiten=0.0)
        table, _ = derive_table(None, tokenizer, recipe, raw=raw)
        rows = table[2000:3000] / np.linalg.norm(table[2000:3000], axis=1, keepdims=True)
        cos[center] = float(np.mean(rows[:500] @ rows[500:].T))
    assert cos[False] > 0.8
    assert abs(cos[True]) < 0.2


def test_whitening_evens_out_the_principal_axes(tokenizer):
    raw = token_vectors(FakeSession(), tokenizer, pooling="token")
    freq = np.zeros(tokenizer.get_vocab_size())
    ranks = static.zipf_ranks(tokenizer)
    freq[ranks > 0] = 1 / ranks[ranks > 0]
    spread = {}
    for whiten in (0.0, 0.5, 1.0):
        table, _ = derive_table(None, tokenizer, Recipe(whiten=whiten, weighting="none", common_components=0), raw=raw)
        second = (freq[:, None] * table.astype(np.float64) ** 2).sum(axis=0)  # per axis, as texts use them
        spread[whiten] = second.max() / second.min()
    assert spread[0.0] > 10  # the fake teacher's axes are far from even ...
    assert spread[0.5] == pytest.approx(spread[0.0] ** 0.5, rel=1e-3)  # ... half-whitened: the square root
    assert spread[1.0] == pytest.approx(1.0, rel=1e-3)  # ... fully whitened: even


def test_pca_keeps_the_asked_dimensions(tokenizer):
    raw = token_vectors(FakeSession(), tokenizer, pooling="token")
    table, empty = derive_table(None, tokenizer, Recipe(dims=5), raw=raw)
    assert table.shape == (tokenizer.get_vocab_size(), 5) and empty.shape == (5,)


# ---------------------------------------------------------------------- cache file
def test_table_file_round_trip_and_hash_check(tmp_path):
    rng = np.random.default_rng(1)
    table, empty = rng.standard_normal((50, 8)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    path = tmp_path / "t.table"
    digest = write_table(path, table, empty, {"teacher": "x"})
    got, got_empty, header = read_table(path)
    np.testing.assert_array_equal(got, table)
    np.testing.assert_array_equal(got_empty, empty)
    assert header["sha256"] == digest == static.table_digest(table, empty)
    assert not list(tmp_path.glob("*.tmp"))  # the temporary file was renamed, not left behind

    data = bytearray(path.read_bytes())
    data[-7] ^= 0x01  # one bit of one float of the table
    path.write_bytes(bytes(data))
    with pytest.raises(TableFileError, match="sha256"):
        read_table(path)
    path.write_bytes(bytes(data[:-4]))  # truncated
    with pytest.raises(TableFileError, match="bytes"):
        read_table(path)
    path.write_bytes(b"something else")
    with pytest.raises(TableFileError):
        read_table(path)


def test_cache_derives_once_then_reads_and_derives_again_when_the_file_is_damaged(tokenizer, tmp_path, caplog):
    sessions: list[FakeSession] = []
    teacher = fake_teacher(tokenizer, sessions)
    recipe = Recipe(dims=8)
    first, empty, digest = load_or_derive(teacher, recipe, tmp_path)
    assert len(sessions) == 1 and first.shape == (tokenizer.get_vocab_size(), 8)
    again, _, digest_again = load_or_derive(teacher, recipe, tmp_path)
    assert len(sessions) == 1  # read from the file: the teacher was not loaded
    np.testing.assert_array_equal(again, first)
    assert digest_again == digest

    path = cache_path(tmp_path, teacher, recipe)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="engram"):
        rebuilt, _, digest_rebuilt = load_or_derive(teacher, recipe, tmp_path)
    assert len(sessions) == 2 and "does not match" in caplog.text
    np.testing.assert_array_equal(rebuilt, first)  # the same derivation, the same bytes
    assert digest_rebuilt == digest
    read_table(path)  # and the file is whole again


def test_cache_file_is_keyed_by_teacher_and_recipe(tokenizer, tmp_path):
    sessions: list[FakeSession] = []
    a = cache_path(tmp_path, fake_teacher(tokenizer, sessions, "teacher-a"), Recipe())
    b = cache_path(tmp_path, fake_teacher(tokenizer, sessions, "teacher-b"), Recipe())
    c = cache_path(tmp_path, fake_teacher(tokenizer, sessions, "teacher-a"), Recipe(dims=128))
    assert len({a, b, c}) == 3


def test_embedder_name_carries_the_table_digest(tokenizer, tmp_path):
    sessions: list[FakeSession] = []
    one = StaticEmbedder(Recipe(dims=8), cache_dir=tmp_path, teacher=fake_teacher(tokenizer, sessions))
    two = StaticEmbedder(Recipe(dims=8, sif_a=1e-2), cache_dir=tmp_path, teacher=fake_teacher(tokenizer, sessions))
    assert one.name != two.name and one.sha256[:12] in one.name
    assert one.dim == 8


# ---------------------------------------------------------------------- the real table
@pytest.fixture(scope="module")
def real_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("static-cache")


@pytest.fixture(scope="module")
def emb(real_cache) -> StaticEmbedder:
    return StaticEmbedder(cache_dir=real_cache)  # derived from the transformer (~20 s)


SENTENCES = [
    "I adopted a puppy",
    "I got a new dog",
    "The stock market fell",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "",
    "Ünïcödé and UPPER case are normalised the way BERT uncased does it.",
    "word " * 400,  # longer than the transformer's 256 tokens: a sum of rows has no limit
    "the the the",  # only the most frequent tokens
    "[CLS] [SEP]",
]


def test_protocol_shape_dtype_and_unit_rows(emb):
    assert isinstance(emb, Embedder)
    v = emb.embed(SENTENCES)
    assert v.shape == (len(SENTENCES), emb.dim) and v.dtype == np.float32
    assert np.all(np.isfinite(v))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert emb.embed([]).shape == (0, emb.dim)
    with pytest.raises(TypeError):
        emb.embed("a string is not a list of strings")
    np.testing.assert_array_equal(emb.embed(SENTENCES[:3]), emb.embed(SENTENCES)[:3])  # alone or batched


def test_related_sentences_are_closer_than_unrelated(emb):
    puppy, dog, stocks, food, bread = emb.embed(SENTENCES[:5])
    assert puppy @ dog > puppy @ stocks + 0.2
    assert food @ bread > food @ stocks + 0.2
    facts = emb.embed(["Caroline paints landscapes in her spare time", "Caroline moved to Lisbon last year",
                       "Caroline's son plays the violin", "Caroline works as a nurse at the hospital"])
    queries = emb.embed(["what does she like to paint", "where does she live now",
                         "which instrument does her child play", "what is her job"])
    assert list((queries @ facts.T).argmax(axis=1)) == [0, 1, 2, 3]


def test_cosines_are_not_compressed(emb):
    """Centering: unrelated texts near 0, as the transformer has them, not all around 0.4."""
    v = emb.embed(["The stock market fell", "I adopted a puppy", "Photosynthesis needs light",
                   "He repaired the bicycle chain", "The recipe calls for two eggs"])
    off = (v @ v.T)[~np.eye(len(v), dtype=bool)]
    assert off.mean() < 0.2


def test_registered_and_built_from_settings(real_cache):
    assert "static" in available_embedders()
    built = build_embedder(load_settings({"ENGRAM_EMBEDDER": "static", "ENGRAM_MODEL_CACHE": str(real_cache)}))
    assert isinstance(built, StaticEmbedder)
    assert built.name.startswith("static:") and built.dim == static.table_dim(384, DEFAULT_RECIPE)
    assert make_embedder("static", cache_dir=real_cache).name == built.name  # the same table
