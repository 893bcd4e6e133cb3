"""Which embedder made the stored vectors, and `engram reindex`, which makes them again.

Vectors of two embedders are never compared (`Embedder.name` names the space). The store
records the name of the embedder that made its vectors:

- nothing recorded and no memories yet: the first process to look records its embedder;
- nothing recorded but memories exist (a database written before engram recorded it): they
  were made by the embedder configured then: `ENGRAM_EMBEDDER=openai` is taken at its word
  (its name carries its model), and otherwise they are `LEGACY_LOCAL`'s, engram's only other
  embedder before the record existed;
- the recorded embedder is the process's own: nothing to do;
- another one: the process starts, but does not compare or write vectors — search answers
  `503 unavailable` saying what to run (`SpaceGate`), workers leave the queue alone, and a
  commit whose vectors are of another space is refused — until `engram reindex` has made every
  vector with the configured embedder.

`reindex` embeds every memory again into a table beside the vectors search reads (the service
keeps serving from the old ones meanwhile), a page at a time, its progress recorded with each
page: stopped, it resumes where it was. Memories written during the pass are embedded after
it. One transaction then switches every vector and records the new embedder
(store/reindex.py). Processes still configured with the old embedder refuse from then on;
restart them with the new one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from engram.config import ConfigError
from engram.domain.records import utcnow
from engram.embed import Embedder
from engram.store.base import Store

log = logging.getLogger("engram.vector_space")

# The embedder name of engram's local model before the vector space was recorded.
LEGACY_LOCAL = "local:all-MiniLM-L6-v2-int8"
PAGE = 512  # memories embedded and written together
CHECK_EVERY_S = 1.0  # how often a serving process looks at the record again


class VectorSpaceMismatch(ConfigError):
    """The store's vectors were made by another embedder than the configured one."""


def embedding_text(memory_type: str, text: str, details: Mapping[str, Any] | None = None,
                   rationale: str | None = None) -> str:
    """What is embedded for a memory: its text; an artifact's title with its rationale (as the
    pipeline embeds a new one, pipeline/process.py)."""
    if memory_type == "artifact":
        why = rationale if rationale is not None else (details or {}).get("rationale")
        return text + "\n" + str(why or "")
    return text


def recorded(store: Store, embedder_name: str) -> str | None:
    """The embedder that made the store's vectors: recorded, or inferred for a database written
    before the record existed; None when there are no memories and nothing is recorded."""
    return store.vector_space() or _inferred(store, embedder_name)


def _inferred(store: Store, embedder_name: str) -> str | None:
    """Who made the vectors of a store that recorded no one (module docstring)."""
    if store.count_all_memories() == 0:
        return None
    return embedder_name if embedder_name.startswith("openai:") else LEGACY_LOCAL


def other_embedder(store: Store, embedder_name: str) -> str | None:
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


def mismatch(other: str, embedder_name: str) -> str:
    """What to tell the operator: whose vectors these are and what to run."""
    return (f"the stored vectors were made by {other!r}, not by the configured {embedder_name!r}: run "
            f"`engram reindex` to embed every memory again with {embedder_name!r} (the service keeps "
            f"serving meanwhile), or configure {other!r} again (ENGRAM_EMBEDDER)")


def check(store: Store, embedder_name: str) -> None:
    """Record `embedder_name` when that needs no work; raise VectorSpaceMismatch when the
    stored vectors are another embedder's."""
    other = other_embedder(store, embedder_name)
    if other is not None:
        raise VectorSpaceMismatch(f"ENGRAM_EMBEDDER: {mismatch(other, embedder_name)}")


class SpaceGate:
    """A serving process's view of the record, looked at again at most once per CHECK_EVERY_S:
    `problem()` is None while the stored vectors are this process's embedder's, else what to
    tell the caller. An `engram reindex` that switches the store while this process runs
    closes the gate within a second."""

    def __init__(self, store: Store, embedder_name: Callable[[], str]) -> None:
        self._store = store
        self._name = embedder_name
        self._lock = threading.Lock()
        self._checked = -CHECK_EVERY_S
        self._problem: str | None = None

    def problem(self, *, now: float | None = None) -> str | None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if now - self._checked >= CHECK_EVERY_S:
                self._checked = now
                name = self._name()
                other = other_embedder(self._store, name)
                self._problem = None if other is None else mismatch(other, name)
            return self._problem


# ---------------------------------------------------------------------- reindex
@dataclass(slots=True)
class Reindexed:
    embedded: int  # memories embedded by this run
    resumed_after: str | None  # the id a stopped pass resumed after (None: from the start)
    switched: bool  # the store's vectors are now the embedder's
    seconds: float


def reindex(store: Store, embedder_name: str, load: Callable[[], Embedder],
            progress: Callable[[int, int], None] | None = None) -> Reindexed:
    """Make every stored vector `embedder_name`'s (module docstring). `load` builds the
    embedder only when there is work; `progress(done, total)` after every page."""
    started = time.monotonic()
    state = store.reindex_state()
    if other_embedder(store, embedder_name) is None and (state is None or state.embedder != embedder_name):
        return Reindexed(0, None, False, 0.0)  # already this embedder's
    embedder = load()
    if embedder.name != embedder_name:
        raise ConfigError(f"the embedder calls itself {embedder.name!r}, expected {embedder_name!r}")
    if state is not None and state.embedder == embedder_name:
        after, resumed = state.after_id, state.after_id or None
        log.warning("resuming the re-embedding with %r after memory %s", embedder_name, after or "(start)")
    else:
        store.begin_reindex(embedder_name, utcnow())
        after, resumed = "", None
    total = store.count_all_memories()
    done = 0

    def write(page: list[Any], advance: bool) -> None:
        nonlocal done
        vectors = embedder.embed([embedding_text(m.type, m.text, rationale=m.rationale) for m in page])
        if not store.write_reindex(embedder_name, [(m.id, v) for m, v in zip(page, vectors)], utcnow(),
                                   after_id=page[-1].id if advance else None):
            raise ConfigError("another `engram reindex` with another embedder took the pass over; stopping")
        done += len(page)
        if progress is not None:
            progress(done, max(total, done))

    while page := store.memories_to_embed(after, PAGE):
        write(page, advance=True)
        after = page[-1].id
    while True:  # memories written during the pass, then the switch (which checks none is left)
        while missing := store.memories_missing_reindex(PAGE):
            write(missing, advance=False)
        if store.switch_reindex(embedder_name, utcnow()):
            break
    seconds = time.monotonic() - started
    log.warning("embedded %d memories again with %r in %.1f s; the store now serves them", done, embedder_name,
                seconds)
    return Reindexed(done, resumed, True, round(seconds, 3))
