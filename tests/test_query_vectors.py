"""The query-embedding cache returns exactly what the embedder would, and embeds each text once."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from engram.search.query_vectors import QueryVectors


class CountingEmbedder:
    """A deterministic stand-in that counts what it is asked to embed (the cache's contract
    is about calls and identity of results, not about any model)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.asked.extend(texts)
        return np.stack([np.full(4, float(len(t)), dtype=np.float32) + i for i, t in enumerate(texts)])


def test_hits_return_the_first_vector_and_misses_are_batched() -> None:
    embed = CountingEmbedder()
    cache = QueryVectors(embed, capacity=2)
    first = cache(["alpha", "beta"])
    assert embed.asked == ["alpha", "beta"]
    again = cache(["beta", "alpha", "beta"])
    assert embed.asked == ["alpha", "beta"], "no new embedding for cached texts"
    assert np.array_equal(again[0], first[1]) and np.array_equal(again[1], first[0])
    assert np.array_equal(again[2], first[1])


def test_least_recently_used_text_leaves_first() -> None:
    embed = CountingEmbedder()
    cache = QueryVectors(embed, capacity=2)
    cache(["a"]); cache(["b"]); cache(["a"]); cache(["c"])  # "b" is the least recent: evicted
    embed.asked.clear()
    cache(["a", "c", "b"])
    assert embed.asked == ["b"]


def test_cached_vectors_cannot_be_changed_by_a_caller() -> None:
    cache = QueryVectors(CountingEmbedder())
    cache(["x"])
    stored = cache._vectors["x"]
    assert not stored.flags.writeable
