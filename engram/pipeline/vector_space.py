"""Which embedder made the stored vectors, and making them again when it changes.

Vectors of two embedders are never compared (`Embedder.name` names the space). The store
records the name of the embedder that made its vectors, and every process that writes or
compares vectors looks at it when it starts:

- nothing recorded and no memories yet: this embedder is recorded;
- nothing recorded but memories exist (a database written before engram recorded it): they
  were made by the embedder configured then: `ENGRAM_EMBEDDER=openai` is taken at its word
  (its name carries its model), and otherwise they are `LEGACY_LOCAL`'s, engram's only other
  embedder before the record existed;
- the recorded embedder is this one: nothing to do;
- another one: every memory's vector is made again with this embedder (`align`) before
  anything reads them. The embedded server does that at start, holding its data directory's
  lock (so no other process serves the file: an API process caches vectors as written once).
  On PostgreSQL several processes share the database, so `engram migrate` does it, and a
  server or worker refuses to start until it has (`check`).

Re-embedding is a page of memories at a time, committed page by page; a crash in the middle
leaves the record unchanged, and the next start makes every vector again (the same result).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from engram.config import ConfigError
from engram.domain.records import utcnow
from engram.embed import Embedder
from engram.store.base import Store

log = logging.getLogger("engram.vector_space")

# The embedder name of engram's local model before the vector space was recorded.
LEGACY_LOCAL = "local:all-MiniLM-L6-v2-int8"
PAGE = 512  # memories embedded and committed together


class VectorSpaceMismatch(ConfigError):
    """The store's vectors were made by another embedder than the configured one."""


def recorded(store: Store, embedder_name: str) -> str | None:
    """The embedder that made the store's vectors: recorded, or inferred for a database written
    before the record existed; None when there are no memories and nothing is recorded."""
    return store.vector_space() or _inferred(store, embedder_name)


def _inferred(store: Store, embedder_name: str) -> str | None:
    """Who made the vectors of a store that recorded no one (module docstring)."""
    if store.count_all_memories() == 0:
        return None
    return embedder_name if embedder_name.startswith("openai:") else LEGACY_LOCAL


def check(store: Store, embedder_name: str) -> None:
    """Record `embedder_name` when that needs no work; raise VectorSpaceMismatch when the
    stored vectors are another embedder's."""
    other = _other_embedder(store, embedder_name)
    if other is not None:
        raise VectorSpaceMismatch(
            f"ENGRAM_EMBEDDER: the stored vectors were made by {other!r}, not by the configured "
            f"{embedder_name!r}; run `engram migrate` to embed every memory again with it "
            f"(or configure {other!r} again)")


def align(store: Store, embedder_name: str, load: Callable[[], Embedder],
          progress: Callable[[int, int, float], None] | None = None) -> int:
    """Make the store's vectors this embedder's, re-embedding every memory if they were
    another's. `load` builds the embedder only when there is work. The number of memories
    embedded again (0 when the space was already this one)."""
    made_by = _other_embedder(store, embedder_name)
    if made_by is None:
        return 0
    total = store.count_all_memories()
    log.warning("the stored vectors were made by %r; embedding %d memories again with %r",
                made_by, total, embedder_name)
    embedder = load()
    if embedder.name != embedder_name:
        raise ConfigError(f"the embedder calls itself {embedder.name!r}, expected {embedder_name!r}")
    started, done, after = time.monotonic(), 0, ""
    while page := store.memory_texts_after(after, PAGE):
        vectors = embedder.embed([text for _, text in page])
        store.replace_vectors([(memory_id, vector) for (memory_id, _), vector in zip(page, vectors)])
        done, after = done + len(page), page[-1][0]
        elapsed = time.monotonic() - started
        (progress or _log_progress)(done, total, elapsed)
    store.record_vector_space(embedder_name, utcnow())
    log.warning("embedded %d memories again in %.1f s", done, time.monotonic() - started)
    return done


def _other_embedder(store: Store, embedder_name: str) -> str | None:
    """The other embedder whose vectors the store holds; None when they are this one's (or
    there are none), in which case this one is recorded if it was not yet."""
    stored = store.vector_space()
    if stored == embedder_name:
        return None
    made_by = stored or _inferred(store, embedder_name)
    if made_by is not None and made_by != embedder_name:
        return made_by
    store.record_vector_space(embedder_name, utcnow())
    return None


def _log_progress(done: int, total: int, elapsed_s: float) -> None:
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    log.info("re-embedding: %d / %d memories (%.0f/s)", done, max(total, done), rate)
