"""A small cache of query embeddings.

Agents ask the same things again and again ("what does the user prefer", the same
question on every turn of a conversation), and embedding a query is most of a search's
time on a CPU. Vectors are kept by exact text for the process's life, least recently
used first out; a cache hit returns the very vector a miss would have computed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Sequence

import numpy as np


class QueryVectors:
    def __init__(self, embed: Callable[[Sequence[str]], np.ndarray], capacity: int = 4096) -> None:
        self._embed = embed
        self._capacity = capacity
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget every query (after an erasure: a query may quote what was erased)."""
        with self._lock:
            self._vectors.clear()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for text in texts:
                vector = self._vectors.get(text)
                if vector is not None:
                    self._vectors.move_to_end(text)
                    found[text] = vector
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            fresh = self._embed(missing)
            with self._lock:
                for text, vector in zip(missing, fresh):
                    vector.setflags(write=False)  # shared between searches: nobody may change it
                    found[text] = self._vectors[text] = vector
                while len(self._vectors) > self._capacity:
                    self._vectors.popitem(last=False)
        return np.stack([found[t] for t in texts])
