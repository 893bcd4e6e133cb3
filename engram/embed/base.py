"""The interface every sentence embedder implements."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length vectors.

    ``name`` identifies the vector space (e.g. ``"local:all-MiniLM-L6-v2-int8"``):
    vectors from embedders with different names must never be compared, so
    stores should record it next to the vectors they keep.
    """

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in order.

        Returns a float32 array of shape ``(len(texts), dim)`` whose rows are
        L2-normalised, so cosine similarity is a plain dot product. An empty
        input gives shape ``(0, dim)``.
        """
        ...
