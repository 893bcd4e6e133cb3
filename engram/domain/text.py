"""Text normalisation shared by the pipeline and the stores."""

from __future__ import annotations

import hashlib
import re

_WORD = re.compile(r"\w+")


def text_hash(text: str) -> str:
    """Equal for texts that differ only in case and whitespace."""
    normal = " ".join(text.lower().split())
    return hashlib.sha256(normal.encode()).hexdigest()[:32]


def query_words(text: str) -> list[str]:
    """The words a search query is matched by: lower-cased, once each, in order; single
    letters only when they are digits. Every store's lexical side and the ranking's term
    statistics read a query this way."""
    return list(dict.fromkeys(t for t in _WORD.findall(text.lower()) if len(t) > 1 or t.isdigit()))
