"""The data lifecycle's store rules, written once over a SQL dialect: erasing a user,
retracting a conversation, reading a user's or a conversation's rows out page by page
(export) and writing them back keeping their ids (import), and compacting the files.

A mixin of `RelationalStore` (store/relational.py), so the rules share its transactions,
its lock order — job rows, then the user's version row, then memory rows by id — and its
statements in `queries/common.sql` ("the data lifecycle"). docs/lifecycle.md says what each
operation promises and why.

Jobs of an erased user or a retracted conversation that are still pending or running end
`failed` with `resource_deleted` in the same transaction, their leases cleared: a worker
holding one finds its lease gone when it commits (`CommitResult.LOST`) and writes nothing.
Every erasure and retraction moves the store's erasure epoch; a process that caches what
it read (the SQLite index's vectors and terms, the service's query vectors, the dedup
window) drops those caches when it sees the epoch moved (`forget_if_erased`), so what was
erased does not linger in another process's memory either.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from engram.domain.records import Event, JobError, Memory, utcnow
from engram.store import codec
from engram.store.base import WORK_READY, NewMemory, job_error_dict
from engram.store.dialect import Tx

if TYPE_CHECKING:
    from engram.store.dialect import Dialect

DELETED = JobError("resource_deleted", "the user or conversation this job belongs to was deleted")
UNFINISHED = frozenset({"pending", "running"})
EPOCH_CHECK_S = 1.0  # how often a process looks whether another one erased something


@dataclass(slots=True)
class Erasure:
    """What erasing a user removed."""

    events: int = 0
    memories: dict[str, int] = field(default_factory=dict)  # by type
    memories_by_status: dict[str, int] = field(default_factory=dict)
    jobs_deleted: int = 0  # finished jobs: removed with their results
    jobs_failed: int = 0  # unfinished ones: ended `failed` with `resource_deleted`, their payload cleared
    idempotency_keys: int = 0


@dataclass(slots=True)
class Retraction:
    """What retracting a conversation changed."""

    memories_retracted: list[str] = field(default_factory=list)  # facts derived only from it
    memories_removed: list[str] = field(default_factory=list)  # episodes and artifact versions derived only from it
    memories_updated: list[str] = field(default_factory=list)  # memories that also cite other turns: lost these
    events_deleted: int = 0
    jobs_failed: int = 0


@dataclass(slots=True)
class ImportCounts:
    created: int = 0
    existing: int = 0  # the same id is already in this org: nothing written


@dataclass(slots=True)
class ExportedEvent:
    event: Event
    episode_id: str | None  # the episode that covers it, if one does


@dataclass(slots=True)
class ExportedMemory:
    memory: Memory
    vector: np.ndarray | None  # None only for a memory stored without one
    group_ids: tuple[str, ...] = ()  # its group tags (engram/groups.py)


class IdsHeldElsewhere(Exception):
    """An imported id belongs to another org in this database; nothing of the batch was written."""

    def __init__(self, kind: str, ids: Sequence[str]) -> None:
        super().__init__(f"{len(ids)} {kind} id(s) belong to another org: {', '.join(ids[:3])}")
        self.kind = kind
        self.ids = list(ids)


class LifecycleRules:
    """Erase, retract, export and import: the rules (mixed into RelationalStore)."""

    dialect: "Dialect"
    _move_version: Callable[..., int]
    _announce_end: Callable[[Tx, str], None]
    _insert_sources: Callable[[Tx, Sequence[NewMemory]], None]
    _remove_memories: Callable[[Tx, str, Sequence[str]], None]
    _tag: Callable[[Tx, str, Mapping[str, Sequence[str]]], None]
    group_tags: Callable[[str, Sequence[str]], dict[str, list[str]]]
    _add_usage: Callable[..., None]
    _forget_callbacks: list[Callable[[], None]]
    _epoch_seen: list[Any]
    _one: Callable[..., Any]
    _all: Callable[..., list[Any]]

    # ------------------------------------------------------------------ caches and the epoch
    def erasure_epoch(self) -> int:
        row = self._one("erasure_epoch")
        return int(row["epoch"]) if row else 0

    def on_forget(self, callback: Callable[[], None]) -> None:
        """Have `callback` called when this process learns of an erasure (its own, or another
        process's: `forget_if_erased`) — for caches kept above the store."""
        self._forget_callbacks.append(callback)

    def forget_if_erased(self, *, now: float | None = None) -> bool:
        """Drop every in-process cache when the erasure epoch moved since this process last
        looked; looks at most once per EPOCH_CHECK_S. True when caches were dropped."""
        now = time.monotonic() if now is None else now
        state = self._epoch_seen
        if now - state[1] < EPOCH_CHECK_S:
            return False
        state[1] = now
        epoch = self.erasure_epoch()
        if state[0] is None:
            state[0] = epoch
            return False
        if epoch == state[0]:
            return False
        state[0] = epoch
        self._forget()
        return True

    def _forget(self) -> None:
        self.dialect.forget()
        for callback in self._forget_callbacks:
            callback()

    def _erased(self, tx: Tx) -> None:
        """Inside an erasing transaction: move the epoch (other processes drop their caches)."""
        tx.run("next_erasure", {})

    # ------------------------------------------------------------------ erase a user
    def erase_user(self, org_id: str, user_id: str, at: datetime) -> Erasure:
        """Remove everything of the user in the org, in one transaction: events, memories of
        every type and status (with vectors, lexical entries and sources), finished jobs with
        their results, idempotency records and the user's version. Unfinished jobs end
        `failed` with `resource_deleted`, params and results cleared (polling clients learn
        what happened); their workers can no longer commit."""
        d = self.dialect
        report = Erasure()
        with d.erasing() as tx:
            jobs = tx.all("user_jobs", {"org_id": org_id, "user_id": user_id})  # job rows first: the lock order
            self._move_version(tx, org_id, user_id, bump=True)
            memories = tx.all("user_memories", {"org_id": org_id, "user_id": user_id})
            unfinished = [j["id"] for j in jobs if j["status"] in UNFINISHED]
            finished = [j["id"] for j in jobs if j["status"] not in UNFINISHED]
            all_jobs = d.array([j["id"] for j in jobs])
            report.idempotency_keys = tx.run("delete_idempotency_of_jobs", {"org_id": org_id, "ids": all_jobs})
            self._end_deleted_jobs(tx, org_id, unfinished, at, clear_payload=True)
            report.jobs_failed = len(unfinished)
            if finished:
                report.jobs_deleted = tx.run("delete_jobs", {"ids": d.array(finished)})
            ids = [m["id"] for m in memories]
            for m in memories:
                report.memories[m["type"]] = report.memories.get(m["type"], 0) + 1
                report.memories_by_status[m["status"]] = report.memories_by_status.get(m["status"], 0) + 1
            if ids:
                self._remove_memories(tx, org_id, ids)
            # Events of the user's jobs and imported ones (no job); an accept committing
            # meanwhile brought new turns, with their own job, which run as usual.
            report.events = tx.run("delete_user_events", {"org_id": org_id, "user_id": user_id, "job_ids": all_jobs})
            tx.run("delete_user_version", {"org_id": org_id, "user_id": user_id})
            tx.run("delete_deliveries_of_user", {"org_id": org_id, "user_id": user_id})  # they name the user
            self._erased(tx)
        self._forget()
        return report

    def _end_deleted_jobs(self, tx: Tx, org_id: str, job_ids: Sequence[str], at: datetime, *,
                          clear_payload: bool) -> None:
        if not job_ids:
            return
        d = self.dialect
        tx.run("end_deleted_jobs", {"ids": d.array(list(job_ids)), "error": d.json(job_error_dict(DELETED)),
                                    "now": d.time(at), "clear": clear_payload, "empty": d.json({})})
        self._add_usage(tx, org_id, at, {"jobs_failed": len(job_ids), f"jobs_failed:{DELETED.code}": len(job_ids)})
        for job_id in job_ids:
            self._announce_end(tx, job_id)

    # ------------------------------------------------------------------ retract a conversation
    def retract_conversation(self, org_id: str, user_id: str, conv_id: str, at: datetime) -> Retraction:
        """Every memory derived only from the conversation's turns is retracted (facts, kept
        for their history) or removed (episodes, artifact versions); a memory that also cites
        other turns loses these and keeps the others (and names the conversation of its first
        remaining turn). The turns are marked `deleted`; unfinished jobs of the conversation
        end `failed` with `resource_deleted`."""
        d = self.dialect
        report = Retraction()
        scope = {"org_id": org_id, "user_id": user_id, "conv_id": conv_id}
        with d.erasing() as tx:
            jobs = tx.all("conversation_unfinished_jobs", scope)  # job rows first: the lock order
            self._move_version(tx, org_id, user_id, bump=True)
            turns = {r["id"] for r in tx.all("conversation_event_ids", scope)}
            memories = tx.all("conversation_memories", scope)
            removed: list[str] = []
            for m in memories:
                sources = codec.json_value(m["source_event_ids"])
                remaining = [e for e in sources if e not in turns]
                if remaining:
                    home = m["conv_id"]
                    if home == conv_id:
                        row = tx.one("conversation_of_event", {"id": remaining[0]})
                        home = row["conv_id"] if row else home
                    tx.run("set_memory_sources_and_conversation", {"id": m["id"], "sources": d.json(remaining),
                                                                   "conv_id": home, "now": d.time(at)})
                    tx.run("drop_memory_sources", {"memory_id": m["id"], "event_ids": d.array(sorted(turns))})
                    report.memories_updated.append(m["id"])
                elif m["type"] == "fact":
                    if m["status"] != "retracted":
                        tx.run("retract_fact", {"id": m["id"], "org_id": org_id, "at": d.time(at)})
                        report.memories_retracted.append(m["id"])
                else:
                    removed.append(m["id"])
            if removed:
                self._remove_memories(tx, org_id, removed)
                report.memories_removed = removed
            report.events_deleted = tx.run("mark_conversation_deleted", scope)
            unfinished = [j["id"] for j in jobs]
            self._end_deleted_jobs(tx, org_id, unfinished, at, clear_payload=False)
            report.jobs_failed = len(unfinished)
            self._erased(tx)
        self._forget()
        return report

    # ------------------------------------------------------------------ export: pages by id
    def export_events(self, org_id: str, user_id: str, conv_id: str | None, after: str,
                      limit: int) -> list[ExportedEvent]:
        """A page of the user's (or the conversation's) events in id order."""
        name, scope = self._scope("export_events", org_id, user_id, conv_id)
        return [ExportedEvent(codec.event(r), r["episode_id"])
                for r in self._all(name, **scope, after=after, limit=limit)]

    def export_memories(self, org_id: str, user_id: str, conv_id: str | None, after: str,
                        limit: int) -> list[ExportedMemory]:
        """A page of the user's (or the conversation's) memories of every type and status, in
        id order, each with its vector. A conversation's memories are those citing one of its
        turns, and those that name it."""
        name, scope = self._scope("export_memories", org_id, user_id, conv_id)
        memories = [codec.memory(r) for r in self._all(name, **scope, after=after, limit=limit)]
        with self.dialect.reader() as tx:
            vectors = self.dialect.vectors_of(tx, [m.id for m in memories])
        tags = self.group_tags(org_id, [m.id for m in memories])
        return [ExportedMemory(m, vectors.get(m.id), tuple(tags.get(m.id, ()))) for m in memories]

    @staticmethod
    def _scope(query: str, org_id: str, user_id: str, conv_id: str | None) -> tuple[str, dict[str, Any]]:
        if conv_id is None:
            return f"{query}_of_user", {"org_id": org_id, "user_id": user_id}
        return f"{query}_of_conversation", {"org_id": org_id, "user_id": user_id, "conv_id": conv_id}

    # ------------------------------------------------------------------ import: ids kept
    def import_batch(self, org_id: str, events: Sequence[ExportedEvent],
                     memories: Sequence[ExportedMemory]) -> tuple[ImportCounts, ImportCounts]:
        """Write exported rows back into the org in one transaction, keeping their ids: a row
        whose id the org already holds is left as it is (importing twice writes nothing
        twice); an id held by another org refuses the batch (`IdsHeldElsewhere`). Pending
        events get a new job per conversation, so they are extracted here too. Every memory
        must come with a vector of this store's space. Returns the (events, memories) counts."""
        d = self.dialect
        event_counts, memory_counts = ImportCounts(), ImportCounts()
        with d.transaction() as tx:
            held_events = self._held(tx, "events_held", org_id, [x.event.id for x in events])
            held_memories = self._held(tx, "memories_held", org_id, [x.memory.id for x in memories])
            new_events = [x for x in events if x.event.id not in held_events]
            fresh = [NewMemory(replace(x.memory, org_id=org_id, job_id=None), x.vector)  # type: ignore[arg-type]
                     for x in memories if x.memory.id not in held_memories]
            if any(n.vector is None for n in fresh):
                raise ValueError("every imported memory needs a vector of this store's space")
            now = d.time(utcnow())
            jobs: dict[tuple[str, str], str] = {}
            for x in new_events:
                if x.event.status == "pending":
                    jobs.setdefault((x.event.user_id, x.event.conv_id), "job_" + secrets.token_hex(16))
            tx.many("insert_job", [{"id": job_id, "org_id": org_id, "user_id": user_id, "conv_id": conv_id,
                                    "kind": "ingest", "params": d.json({}), "available_at": now,
                                    "created_at": now, "updated_at": now}
                                   for (user_id, conv_id), job_id in sorted(jobs.items())])
            for x in new_events:
                e = x.event
                event_counts.created += tx.run("import_event", {
                    "id": e.id, "org_id": org_id, "user_id": e.user_id, "conv_id": e.conv_id,
                    "agent_id": e.agent_id, "app_id": e.app_id, "role": e.role, "kind": e.kind, "name": e.name,
                    "content": e.content, "dia_id": e.dia_id, "metadata": d.json(e.metadata),
                    "occurred_at": d.time(e.occurred_at), "received_at": d.time(e.received_at),
                    "job_id": jobs.get((e.user_id, e.conv_id)) if e.status == "pending" else None,
                    "client_event_id": e.client_event_id, "dedup_hash": e.dedup_hash, "status": e.status,
                    "fail_reason": e.fail_reason, "episode_id": x.episode_id})
            event_counts.existing = len(events) - event_counts.created
            if fresh:
                d.insert_memories(tx, d.encode_memories(fresh))
                self._insert_sources(tx, fresh)
                # Tags of groups this org has (any status); another org's group ids mean nothing here.
                named = {g for x in memories for g in x.group_ids}
                if named:
                    known = {r["id"] for r in tx.all("groups_by_id", {"org_id": org_id, "ids": d.array(sorted(named))})}
                    kept = {x.memory.id: [g for g in x.group_ids if g in known] for x in memories
                            if x.memory.id not in held_memories}
                    self._tag(tx, org_id, {m: gs for m, gs in kept.items() if gs})
                # Jobs of these users that are reconciling now must read again.
                for user_id in sorted({n.memory.user_id or "" for n in fresh
                                       if n.memory.status == "active" and n.memory.type != "episode"}):
                    self._move_version(tx, org_id, user_id, bump=True)
            memory_counts.created = len(fresh)
            memory_counts.existing = len(memories) - len(fresh)
            if jobs:
                d.notify(tx, WORK_READY, "")
        return event_counts, memory_counts

    def _held(self, tx: Tx, query: str, org_id: str, ids: Sequence[str]) -> set[str]:
        """Which of these ids the org holds already; IdsHeldElsewhere if another org holds any."""
        if not ids:
            return set()
        rows = tx.all(query, {"ids": self.dialect.array(list(ids))})
        elsewhere = sorted(r["id"] for r in rows if r["org_id"] != org_id)
        if elsewhere:
            raise IdsHeldElsewhere(query.split("_")[0], elsewhere)
        return {r["id"] for r in rows}

    # ------------------------------------------------------------------ compaction
    def compact(self) -> dict[str, Any]:
        """Purge what deletes leave behind in the files (SQLite: the lexical index's old
        segments, free pages, the write-ahead log; PostgreSQL: dead row versions)."""
        started = time.perf_counter()
        done = self.dialect.compact()
        return {**done, "seconds": round(time.perf_counter() - started, 3)}

