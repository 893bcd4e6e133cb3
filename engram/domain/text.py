"""Text normalisation shared by the pipeline and the stores."""

from __future__ import annotations

import hashlib
import re

from engram.domain.stopwords import ENGLISH_STOPWORDS

_WORD = re.compile(r"\w+")


def text_hash(text: str) -> str:
    """Equal for texts that differ only in case and whitespace."""
    normal = " ".join(text.lower().split())
    return hashlib.sha256(normal.encode()).hexdigest()[:32]


def query_words(text: str) -> list[str]:
    """The words a search query is matched by: lower-cased, once each, in order; single
    letters only when they are digits; no English stop word (domain/stopwords.py: the words
    PostgreSQL's lexical index drops). Every store's lexical side and the ranking's term
    statistics read a query this way."""
    return list(dict.fromkeys(t for t in _WORD.findall(text.lower())
                              if (len(t) > 1 or t.isdigit()) and t not in ENGLISH_STOPWORDS))


def unstorable(text: str) -> str | None:
    """Why `text` cannot be stored and searched as it is, or None when it can.

    Every string engram keeps must be well-formed Unicode (a lone UTF-16 surrogate cannot be
    encoded as UTF-8: not in SQLite, not in PostgreSQL, not in a JSON response) and free of
    NUL (PostgreSQL's text and jsonb refuse it). The JSON reader already refuses lone
    surrogates in request bodies; this is the rule for whatever else carries text."""
    if "\x00" in text:
        return "must not contain NUL characters"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "must be well-formed Unicode (it contains a lone surrogate)"
    return None
