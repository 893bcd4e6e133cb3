"""Embeddings from an OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, vLLM, Ollama,
llama.cpp server, LM Studio, text-embeddings-inference …).

Requests go through `engram.llm.provider.Provider`, so they follow the same retry policy
as the llm extractor and are metered per job. Rows are L2-normalised here: some servers
return raw vectors.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from engram.llm.provider import Provider, RetryPolicy


class OpenAIEmbedder:
    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, dimensions: int | None = None,
                 batch_size: int = 64, timeout_s: float = 60.0, retry: RetryPolicy = RetryPolicy()) -> None:
        self.provider = Provider(base_url, api_key, timeout_s=timeout_s, retry=retry)
        self.model = model
        self.dimensions = dimensions
        self.batch_size = batch_size
        # The vector space: the same model asked for another size is another space.
        self.name = f"openai:{model}" + (f"@{dimensions}" if dimensions else "")
        self._dim = dimensions

    @property
    def dim(self) -> int:
        """The vector size: as configured, else learned from the server (one request, once)."""
        if self._dim is None:
            self.embed(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [t if t.strip() else " " for t in texts[start:start + self.batch_size]]  # servers refuse ""
            rows.extend(self.provider.embed(self.model, batch, dimensions=self.dimensions))
        vectors = np.asarray(rows, dtype=np.float32)
        if self._dim is None:
            self._dim = int(vectors.shape[1])
        elif vectors.shape[1] != self._dim:
            raise ValueError(f"the embeddings server returned {vectors.shape[1]}-dimensional vectors, "
                             f"expected {self._dim}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1.0, norms)
