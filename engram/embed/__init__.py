"""Sentence embedders, chosen by a config string.

    >>> emb = make_embedder("local")          # offline default
    >>> vecs = emb.embed(["I got a new dog"])  # (1, emb.dim) float32, unit rows
"""

from __future__ import annotations

from typing import Any, Callable

from engram.embed.base import Embedder

__all__ = ["Embedder", "make_embedder", "available_embedders"]


def _local(**opts: Any) -> Embedder:
    # Imported here so that importing engram.embed does not load onnxruntime
    # (nor does choosing a remote embedder).
    from engram.embed.local import LocalEmbedder

    return LocalEmbedder(**opts)


def _static(**opts: Any) -> Embedder:
    from engram.embed.static import StaticEmbedder

    return StaticEmbedder(**opts)


def _openai(**opts: Any) -> Embedder:
    from engram.embed.openai import OpenAIEmbedder

    return OpenAIEmbedder(**opts)


# Config string -> factory taking the backend's keyword options.
_FACTORIES: dict[str, Callable[..., Embedder]] = {
    "local": _local,
    "static": _static,  # token vectors distilled from "local" (embed/static.py): a sum of rows per text
    "openai": _openai,  # any OpenAI-compatible /v1/embeddings (base_url, model, api_key, …)
}


def available_embedders() -> list[str]:
    return sorted(_FACTORIES)


def make_embedder(name: str, **opts: Any) -> Embedder:
    """Build the embedder registered under ``name`` with backend ``opts``."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(
            f"unknown embedder {name!r}; available: {', '.join(available_embedders())}"
        ) from None
    return factory(**opts)
