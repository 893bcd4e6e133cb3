"""The data lifecycle's operations, for the HTTP API and the CLI alike: erase a user, retract
a conversation, export a user or a conversation as JSON Lines and import that back, compact
the store's files (docs/lifecycle.md). The rules are the store's (store/lifecycle.py); this
checks what callers name, streams the format (lifecycle/jsonl.py) and makes vectors again
when an export comes from another embedder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterator

import numpy as np

from engram.config import Settings
from engram.domain.records import Job, utcnow
from engram.domain.validation import FieldChecks
from engram.embed import Embedder
from engram.errors import ServiceError
from engram.lifecycle import jsonl
from engram.pipeline import vector_space
from engram.store.base import Store
from engram.store.lifecycle import Erasure, ExportedEvent, ExportedMemory, IdsHeldElsewhere, Retraction

EXPORT_PAGE = 500  # rows read per query while exporting
IMPORT_BATCH = 500  # records written per transaction while importing


@dataclass(slots=True)
class ImportReport:
    """What an import wrote: counts per record kind, and whether the file was whole."""

    events_created: int = 0
    events_existing: int = 0
    memories_created: int = 0
    memories_existing: int = 0
    memories_embedded: int = 0  # vectors made again here (the export's embedder is not this store's)
    lines: int = 0
    complete: bool = False  # the export's `end` line was read
    exporter: str | None = None  # the embedder the header names

    def wire(self) -> dict[str, Any]:
        return {"object": "import_result", **asdict(self)}


class Lifecycle:
    def __init__(self, store: Store, settings: Settings, embedder: Callable[[], Embedder],
                 embedder_name: Callable[[], str], wake: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self._wake = wake  # tells the workers there is work (a replay)
        self.settings = settings
        self._embedder = embedder  # loaded only when an import must make vectors again
        self._embedder_name = embedder_name  # the configured one's, known without loading it

    @property
    def embedder_name(self) -> str:
        return self._embedder_name()

    def _check_ids(self, where: str, **ids: str | None) -> None:
        """The ids a request names obey the id rule, as ingested ids do; 422 naming each that does not."""
        check = FieldChecks(self.settings.limits)
        for name, value in ids.items():
            check.id((where, name), value, required=True)
        check.raise_if_any()

    # ------------------------------------------------------------------ erase and retract
    def erase_user(self, org_id: str, user_id: str) -> Erasure:
        self._check_ids("path", user_id=user_id)
        return self.store.erase_user(org_id, user_id, utcnow())

    def retract_conversation(self, org_id: str, user_id: str | None, conv_id: str) -> Retraction:
        self._check_ids("query", user_id=user_id, conv_id=conv_id)
        assert user_id is not None
        return self.store.retract_conversation(org_id, user_id, conv_id, utcnow())

    def compact(self) -> dict[str, Any]:
        return self.store.compact()

    # ------------------------------------------------------------------ replay
    def replay(self, org_id: str, user_id: str | None, conv_id: str) -> Job:
        """A job that extracts the conversation's remembered turns again with the current
        extractor; its old facts are superseded by what it finds (pipeline/process.py)."""
        self._check_ids("query", user_id=user_id, conv_id=conv_id)
        assert user_id is not None
        if not self.store.export_events(org_id, user_id, conv_id, "", 1):
            raise ServiceError("not_found", f"user {user_id!r} has no conversation {conv_id!r} in this org")
        job = self.store.enqueue_replay(org_id, user_id, conv_id, utcnow())
        self._wake()
        return job

    # ------------------------------------------------------------------ export
    def export(self, org_id: str, user_id: str, conv_id: str | None = None) -> Iterator[bytes]:
        """The user's (or the conversation's) events and memories as JSON Lines, read a page at
        a time while the lines are sent (never the whole export in memory)."""
        if conv_id is None:
            self._check_ids("path", user_id=user_id)
        else:
            self._check_ids("query", user_id=user_id, conv_id=conv_id)
        return self._lines(org_id, user_id, conv_id)

    def _lines(self, org_id: str, user_id: str, conv_id: str | None) -> Iterator[bytes]:
        first = self.store.export_memories(org_id, user_id, conv_id, "", 1)
        dim = int(first[0].vector.size) if first and first[0].vector is not None else None
        yield jsonl.dumps(jsonl.header(org_id, user_id, conv_id, self.store.vector_space(), dim, utcnow()))
        events = memories = 0
        after = ""
        while page := self.store.export_events(org_id, user_id, conv_id, after, EXPORT_PAGE):
            yield b"".join(jsonl.dumps(jsonl.event_record(x)) for x in page)
            events += len(page)
            after = page[-1].event.id
        after = ""
        while rows := self.store.export_memories(org_id, user_id, conv_id, after, EXPORT_PAGE):
            yield b"".join(jsonl.dumps(jsonl.memory_record(x)) for x in rows)
            memories += len(rows)
            after = rows[-1].memory.id
        yield jsonl.dumps(jsonl.end(events, memories))

    # ------------------------------------------------------------------ import
    def importer(self, org_id: str) -> "Importer":
        return Importer(self, org_id)


class Importer:
    """Reads an export line by line (`add`) and writes it in batches (`flush`, when `ready`),
    so that a file of any size is imported in bounded memory. Not thread-safe: one per import."""

    def __init__(self, lifecycle: Lifecycle, org_id: str) -> None:
        self._lifecycle = lifecycle
        self._org_id = org_id
        self._events: list[ExportedEvent] = []
        self._memories: list[ExportedMemory] = []
        self._dim: int | None = None
        self._header_seen = False
        self._ended = False
        self._space_checked = False
        self.report = ImportReport()

    @property
    def ready(self) -> bool:
        return len(self._events) + len(self._memories) >= IMPORT_BATCH

    def add(self, line: bytes | str) -> None:
        """One line of the export; a bad one raises ServiceError `invalid_import` naming it."""
        self.report.lines += 1
        number = self.report.lines
        if not line.strip():
            return
        try:
            record = jsonl.parse(number, line)
            kind = record["record"]
            if not self._header_seen:
                if kind != "header":
                    raise jsonl.BadLine(number, "an export starts with its header line")
                jsonl.check_header(number, record)
                self._header_seen = True
                self.report.exporter = record.get("embedder")
                dim = record.get("dim")
                self._dim = dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None
                return
            if self._ended:
                raise jsonl.BadLine(number, "nothing may follow the `end` line")
            if kind == "header":
                raise jsonl.BadLine(number, "a second header")
            if kind == "end":
                self._ended = True
                return
            if kind == "event":
                event = jsonl.to_event(number, record)
                self._check(number, event.event.id, event.event.user_id, event.event.conv_id, event.event.agent_id,
                            event.event.app_id, event.event.client_event_id, event.episode_id)
                self._events.append(event)
            else:
                memory = jsonl.to_memory(number, record, self._dim)
                m = memory.memory
                self._check(number, m.id, m.user_id, m.conv_id, m.agent_id, m.app_id, *m.source_event_ids)
                self._memories.append(memory)
        except jsonl.BadLine as exc:
            raise ServiceError("invalid_import", str(exc), extra={"line": exc.number}) from None

    def _check(self, number: int, *ids: str | None) -> None:
        limit = self._lifecycle.settings.limits.max_id_chars
        for value in ids:
            if value is not None and len(value) > limit:
                raise jsonl.BadLine(number, f"an id is longer than {limit} characters")

    def flush(self) -> None:
        """Write what was read since the last flush, in one transaction."""
        if not self._events and not self._memories:
            return
        events, memories = self._events, self._memories
        self._events, self._memories = [], []
        memories = self._in_this_space(memories)
        try:
            event_counts, memory_counts = self._lifecycle.store.import_batch(self._org_id, events, memories)
        except IdsHeldElsewhere as exc:
            raise ServiceError("id_conflict", f"{exc}; nothing of this batch was imported (earlier batches were)",
                               extra={"ids": exc.ids[:20]}) from None
        r = self.report
        r.events_created += event_counts.created
        r.events_existing += event_counts.existing
        r.memories_created += memory_counts.created
        r.memories_existing += memory_counts.existing

    def finish(self) -> ImportReport:
        if not self._header_seen:
            raise ServiceError("invalid_import", "the body holds no export (no header line)", extra={"line": 0})
        self.flush()
        self.report.complete = self._ended
        return self.report

    def _in_this_space(self, memories: list[ExportedMemory]) -> list[ExportedMemory]:
        """Vectors of this store's embedder: kept when the export's embedder is the one this
        store records, made again from the text otherwise (or where a line has none)."""
        lifecycle = self._lifecycle
        space = lifecycle.embedder_name
        if not self._space_checked:
            try:
                vector_space.check(lifecycle.store, space)  # records it in a store that has no vectors yet
            except vector_space.VectorSpaceMismatch as exc:
                raise ServiceError("unavailable", str(exc)) from None
            self._space_checked = True
        ours = self.report.exporter == space
        again = [i for i, x in enumerate(memories) if not ours or x.vector is None]
        if not again:
            return memories
        vectors = lifecycle._embedder().embed([vector_space.embedding_text(memories[i].memory.type, memories[i].memory.text,
                                                                           memories[i].memory.details) for i in again])
        out = list(memories)
        for i, vector in zip(again, vectors):
            out[i] = replace(memories[i], vector=np.asarray(vector, dtype=np.float32))
        self.report.memories_embedded += len(again)
        return out

