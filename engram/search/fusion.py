"""One relevance score in [0, 1] from the dense and lexical evidence about a memory.

The score is absolute rather than rank-based, so a `threshold` means the same thing from
one query to the next:

    base  = DENSE_WEIGHT · max(cosine, 0) + (1 − DENSE_WEIGHT) · bm25 / (bm25 + BM25_HALF_POINT)
    score = base + TIME_BOOST · (1 − base)   when the memory's event time is inside a date
                                             range the query names, else base

The saturating transform maps any positive BM25 into [0, 1); the time boost closes a fixed
share of the gap to 1, so scores stay in [0, 1] and keep their order within each group.
The constants were chosen on the LoCoMo dev split (docs/benchmarks.md); the score is flat
around them (±0.1 in the weight or ×2 in the half point moves recall@10 by < 1 point).
"""

from __future__ import annotations

DENSE_WEIGHT = 0.6
BM25_HALF_POINT = 12.0  # the BM25 score that counts as half a lexical match
TIME_BOOST = 0.2


def lexical_strength(bm25: float) -> float:
    return bm25 / (bm25 + BM25_HALF_POINT) if bm25 > 0 else 0.0


def relevance(cosine: float, bm25: float, in_time_range: bool = False) -> float:
    base = DENSE_WEIGHT * max(cosine, 0.0) + (1 - DENSE_WEIGHT) * lexical_strength(bm25)
    return base + TIME_BOOST * (1 - base) if in_time_range else base
