"""Fuse dense and lexical candidates into one score in [0, 1].

The score is absolute rather than rank-based so a `threshold` means the same thing from
one query to the next: cosine similarity (clipped at 0) blended with a saturating
transform of BM25, which maps any positive BM25 into [0, 1).
"""

from __future__ import annotations

from typing import Sequence

DENSE_WEIGHT = 0.7
BM25_HALF_POINT = 6.0  # the BM25 score that counts as half a lexical match


def lexical_strength(bm25: float) -> float:
    return bm25 / (bm25 + BM25_HALF_POINT) if bm25 > 0 else 0.0


def fuse(dense: Sequence[tuple[str, float]], lexical: Sequence[tuple[str, float]],
         dense_of: dict[str, float] | None = None) -> list[tuple[str, float]]:
    """Rank the union of both candidate lists, best first.

    `dense_of` may give the cosine of lexical-only candidates (their vectors were scored
    exactly but fell outside the dense top-k); otherwise they count as 0 on that side.
    """
    cos = dict(dense)
    if dense_of:
        cos.update({k: v for k, v in dense_of.items() if k not in cos})
    lex = {memory_id: lexical_strength(s) for memory_id, s in lexical}
    scores = {
        memory_id: DENSE_WEIGHT * max(cos.get(memory_id, 0.0), 0.0) + (1 - DENSE_WEIGHT) * lex.get(memory_id, 0.0)
        for memory_id in {*cos, *lex}
    }
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))
