"""The one percentile every benchmark here reports."""

from __future__ import annotations


def percentile(values: list[float], q: float) -> float:
    """The value below which a share `q` of `values` lies (nearest rank; NaN for no values)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")
