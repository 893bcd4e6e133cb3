"""Embedding every memory again with another embedder while search keeps the old vectors: the
store's rules of `engram reindex` (engram/pipeline/vector_space.py), written once over a SQL
dialect. A mixin of `RelationalStore`, like store/lifecycle.py.

The new vectors go to `reindex_vectors`, beside the ones search reads, a page at a time, the
pass's progress recorded with each page (`reindex.after_id`: a pass that stops resumes after
it). Memories written during the pass are found by what they lack and embedded too. Then one
transaction switches: it records the new embedder first (on PostgreSQL that row lock makes a
job committing meanwhile wait, and then see that its vectors are of the old space), checks
that no memory lacks a new vector, replaces every vector, and moves the erasure epoch so that
every process drops the vectors it cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from engram.store import codec

if TYPE_CHECKING:
    from engram.store.dialect import Dialect, Tx


@dataclass(frozen=True, slots=True)
class ReindexState:
    embedder: str  # the embedder the pass embeds with
    after_id: str  # memories up to this id (in id order) have their new vector
    started_at: datetime | None


@dataclass(frozen=True, slots=True)
class ToEmbed:
    """A memory as the embedder reads it (pipeline: `vector_space.embedding_text`)."""

    id: str
    type: str
    text: str
    rationale: str | None  # an artifact's


class _NotYet(Exception):
    """Raised inside the switching transaction: a memory still lacks its new vector."""


class ReindexRules:
    dialect: "Dialect"
    _one: Callable[..., Any]
    _all: Callable[..., list[Any]]
    _erased: Callable[["Tx"], None]
    _forget: Callable[[], None]

    def reindex_state(self) -> ReindexState | None:
        row = self._one("reindex_state")
        return ReindexState(row["embedder"], row["after_id"], codec.time_value(row["started_at"])) if row else None

    def begin_reindex(self, embedder: str, at: datetime) -> None:
        """Start a pass for `embedder` from the first memory (what an earlier pass wrote goes)."""
        d = self.dialect
        with d.transaction() as tx:
            tx.run("begin_reindex", {"embedder": embedder, "at": d.time(at)})
            tx.run("clear_reindex_vectors", {})

    def memories_to_embed(self, after_id: str, limit: int) -> list[ToEmbed]:
        """Memories of every org with ids after `after_id`, in id order."""
        return [_to_embed(r) for r in self._all("memories_to_embed", after=after_id, limit=limit)]

    def memories_missing_reindex(self, limit: int) -> list[ToEmbed]:
        """Memories without a new vector (written after the pass went by them), in id order."""
        return [_to_embed(r) for r in self._all("memories_missing_reindex", limit=limit)]

    def write_reindex(self, embedder: str, vectors: Sequence[tuple[str, np.ndarray]], at: datetime,
                      after_id: str | None = None) -> bool:
        """New vectors, and the pass's progress; False (nothing written) when the pass under way
        is no longer this embedder's (another `engram reindex` started over)."""
        d = self.dialect
        with d.transaction() as tx:
            if tx.run("advance_reindex", {"embedder": embedder, "at": d.time(at), "after": after_id}) != 1:
                return False
            tx.many("write_reindex_vector", [{"id": memory_id, "vec": d.vector(v)} for memory_id, v in vectors])
        return True

    def switch_reindex(self, embedder: str, at: datetime) -> bool:
        """Make the new vectors the ones search reads and record their embedder, in one
        transaction; False when a memory still lacks its new vector (embed it, then again)."""
        d = self.dialect
        try:
            with d.erasing() as tx:
                if tx.one("reindex_state_for_switch", {"embedder": embedder}) is None:
                    return False
                tx.run("record_vector_space", {"embedder": embedder, "at": d.time(at)})  # first: the lock order
                if tx.one("memories_missing_reindex", {"limit": 1}) is not None:
                    raise _NotYet()
                d.switch_vectors(tx)
                tx.run("clear_reindex_vectors", {})
                tx.run("end_reindex", {})
                self._erased(tx)  # every process drops the vectors it cached
        except _NotYet:
            return False
        self._forget()
        return True


def _to_embed(row: Any) -> ToEmbed:
    return ToEmbed(row["id"], row["type"], row["text"], row["rationale"])
