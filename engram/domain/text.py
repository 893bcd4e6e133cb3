"""Text normalisation shared by the pipeline and the stores."""

from __future__ import annotations

import hashlib


def text_hash(text: str) -> str:
    """Equal for texts that differ only in case and whitespace."""
    normal = " ".join(text.lower().split())
    return hashlib.sha256(normal.encode()).hexdigest()[:32]
