"""What calls to a model provider cost: requests and tokens, counted per job.

The pipeline opens a meter around one job (`metering()`); every request the provider
client sends while it is open is added to it, from any thread that runs in a copy of
the job's context. The worker puts the totals in the job result and the org's counters.
"""

from __future__ import annotations

import contextvars
import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

COUNTERS = ("llm_requests", "prompt_tokens", "completion_tokens", "embedding_requests", "embedding_tokens")


@dataclass
class Usage:
    """Counts of one job (or any other metered stretch of work). Thread-safe."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                self.counts[name] = self.counts.get(name, 0) + int(amount)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def __bool__(self) -> bool:
        return any(self.snapshot().values())


_current: contextvars.ContextVar[Usage | None] = contextvars.ContextVar("engram_usage", default=None)


@contextmanager
def metering() -> Iterator[Usage]:
    """Count every provider request made in this context (and copies of it) until exit."""
    usage = Usage()
    token = _current.set(usage)
    try:
        yield usage
    finally:
        _current.reset(token)


def record(**amounts: int) -> None:
    """Add to the open meter, if any (a search in the API process has none)."""
    usage = _current.get()
    if usage is not None:
        usage.add(**amounts)


def estimate_tokens(text: str) -> int:
    """A tokenizer-free, deliberately high estimate: one token per 3 bytes of UTF-8.

    English BPE averages about 4 characters a token, so this over-counts English by about
    a third; CJK text (3 bytes a character, about 1 token each) comes out close. Chunking
    uses it to stay under a budget without knowing the model's tokenizer.
    """
    return math.ceil(len(text.encode("utf-8")) / 3)
