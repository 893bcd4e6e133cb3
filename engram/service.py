"""The operations both API families call. Routes translate wire shapes; rules live here."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator, Mapping, Sequence

import anyio
import anyio.to_thread

from engram import __version__
from engram.config import Settings
from engram.domain.cursors import Cursors, query_scope
from engram.domain.details import FactDetails
from engram.domain.filters import GROUP_FIELD, MATCH_ALL, Cmp, Node, conjoin, mentions
from engram.domain.inputs import (
    RESERVED_METADATA_KEYS, ROLE_BY_KIND, AcceptOptions, Grouping, SearchQuery, Turn, dedup_hash, kind_for_role,
)
from engram.domain.records import TERMINAL_JOB_STATUSES, Event, Job, Memory, iso, parse_iso, utcnow
from engram.domain.text import unstorable
from engram.domain.validation import FieldChecks
from engram.embed import Embedder
from engram.errors import ServiceError
from engram.ids import new_event_ids, new_job_id, new_memory_id
from engram import metrics, usage
from engram.admin import Admin
from engram.memsy_console import Console
from engram.groups import Groups
from engram.onboarding import Onboarding
from engram.lifecycle import Lifecycle
from engram.pipeline.vector_space import SpaceGate
from engram.search.engine import HybridRanker, ScoreParts
from engram.search.query_vectors import QueryVectors
from engram.ratelimit import RateLimiter
from engram.webhooks import Webhooks
from engram.usage import UsageMeter
from engram.store.base import (
    JOB_ENDED, AcceptResult, Idempotency, IdempotencyConflict, NewJob, NewMemory, Store, SubmitsAccepts,
)


# Search pages reach at most this far (a cursor is signed, so only engram writes one; this
# bounds what a leaked secret could ask for: the ranking reads 2 × offset candidates).
MAX_SEARCH_OFFSET = 10_000

# Metadata keys PATCH refuses with `immutable_field`: they name a core field of the memory.
# The other reserved keys (tag1–tag5, kb_type, status, …) are refused with `reserved_field`.
IMMUTABLE_FIELDS = frozenset({"id", "org_id", "user_id", "agent_id", "conv_id", "app_id", "type", "created_at"})


@dataclass(slots=True)
class StatusReport:
    completed: list[str]
    pending: list[str]
    failed: list[str]
    statuses: dict[str, str]
    reasons: dict[str, str]


@dataclass(slots=True)
class SearchHit:
    memory: Memory
    score: float
    source_events: list[Event] | None = None
    parts: ScoreParts | None = None  # with SearchQuery.with_score_parts


@dataclass(slots=True)
class SearchResults:
    hits: list[SearchHit]
    has_more: bool
    next_cursor: str | None
    timings: dict[str, float] = field(default_factory=dict)
    context_prompt: str | None = None


@dataclass(slots=True)
class MemoryPage:
    items: list[Memory]
    has_more: bool
    next_cursor: str | None


@dataclass(slots=True)
class AcceptOutcome:
    event_ids: list[str]  # per input turn, in input order: its new event, or the stored one it repeats
    jobs: list[Job]  # the jobs created (none when every turn repeated a stored event, or on a replay)
    replayed: Job | None = None  # the job an idempotency key already named: nothing was written


@dataclass(slots=True)
class AcceptPlan:
    """Checked turns as the store writes them: what `plan_accept` returns."""

    jobs: list[NewJob]
    event_ids: list[str]  # the new id of each input turn, in input order
    dedup_since: datetime | None
    idempotency: Idempotency | None

    def resolved_event_ids(self, result: AcceptResult) -> list[str]:
        """Each input turn's event id once the store resolved repeats to the stored events."""
        resolved = dict(zip((e.id for job in self.jobs for e in job.events), result.event_ids))
        return [resolved[i] for i in self.event_ids]

    def created_jobs(self, result: AcceptResult) -> list[Job]:
        created = set(result.job_ids)
        return [new.job for new in self.jobs if new.job.id in created]


def _embedder_name(settings: Settings) -> str:
    from engram.runtime import embedder_name  # assembling parts is the runtime's; imported when needed

    return embedder_name(settings)


def search_slots_default() -> int:
    """Searches at once when ENGRAM_SEARCH_CONCURRENCY is 0: a core is left to the accept path."""
    return max(1, (os.cpu_count() or 1) - 1)


class Service:
    def __init__(self, store: Store, settings: Settings, embedder: Callable[[], Embedder], *,
                 on_accept: Callable[[], None] | None = None,
                 worker_health: Callable[[], dict[str, Any]] | None = None) -> None:
        self.store = store
        self._cursors = Cursors(store.server_secret())
        self.settings = settings
        self._embedder = embedder  # loaded on first search, never on the accept path
        self._query_vectors = QueryVectors(lambda texts: self._embedder().embed(texts))
        self._on_accept = on_accept or (lambda: None)  # wakes the workers
        self._worker_health = worker_health or (lambda: {"status": "unknown"})
        self._submits_accepts = isinstance(store, SubmitsAccepts)  # a protocol check is slow: once
        self._search_slots: anyio.CapacityLimiter | None = None  # made on the event loop, at first use
        self.lifecycle = Lifecycle(store, settings, embedder, lambda: _embedder_name(settings), wake=self._on_accept)
        self.admin = Admin(store, settings)
        self.groups = Groups(store, settings)
        self.usage = UsageMeter(store).start()  # requests, messages, searches: added to the store each second
        self.onboarding = Onboarding(store, settings, self.admin, self.usage)  # memsy's orgs, roles, teams
        self.console = Console(store, settings)  # memsy's console reads
        self.rate = RateLimiter(settings)
        self.webhooks = Webhooks(store, settings)
        # Vectors are compared and written only while they are this process's embedder's.
        self._space = SpaceGate(store, lambda: _embedder_name(settings))
        if hasattr(store, "on_forget"):  # an erasure anywhere: queries may quote what was erased
            store.on_forget(self._query_vectors.clear)

    # ------------------------------------------------------------------ accept
    async def accept(self, org_id: str, turns: Sequence[Turn], options: AcceptOptions, *,
                     idempotency_key: str | None = None, key_id: str | None = None) -> AcceptOutcome:
        """Both families' accept, on the event loop: check the turns and group them into jobs
        (`plan_accept`), write events and jobs in one transaction — on the store's
        group-commit thread where it has one, else on a worker thread — and wake the workers.

        An `idempotency_key` is looked up inside that transaction: seen (within
        `idempotency_ttl_s`) with the same body, the call writes nothing and answers the job
        it created then; with another body it is `idempotency_key_reused`. Errors name neutral
        locations (`("turns", 0, "content")`, `("idempotency_key",)`) that each route renames
        to its wire names (`validation.relocate`)."""
        if options.group_ids:  # which named groups are active decides what the job may tag
            kept, ignored = await anyio.to_thread.run_sync(self.groups.for_ingest, org_id, options.group_ids)
            options = replace(options, group_ids=tuple(options.group_ids), active_group_ids=tuple(kept))
        plan = plan_accept(org_id, turns, options, self.settings, idempotency_key=idempotency_key)
        self.rate.events(org_id, key_id, len(turns))  # 429 before anything is written
        try:
            if self._submits_accepts:
                result = await asyncio.wrap_future(self.store.submit_accept(
                    org_id, plan.jobs, dedup_since=plan.dedup_since, idempotency=plan.idempotency))
            else:
                result = await anyio.to_thread.run_sync(lambda: self.store.accept(
                    org_id, plan.jobs, dedup_since=plan.dedup_since, idempotency=plan.idempotency))
        except IdempotencyConflict:
            raise ServiceError("idempotency_key_reused",
                               "this Idempotency-Key was used with a different body within "
                               f"{_span(self.settings.idempotency_ttl_s)}",
                               extra={"loc": ["idempotency_key"]}) from None
        if result.replay_of is not None:
            return AcceptOutcome([], [], await anyio.to_thread.run_sync(self.get_job, org_id, result.replay_of))
        if result.job_ids:
            self._on_accept()
        resolved = plan.resolved_event_ids(result)
        written = sum(1 for new, stored in zip(plan.event_ids, resolved) if new == stored)  # not repeats
        self.usage.add(org_id, {usage.MESSAGES: written}, key_id)
        metrics.EVENTS_ACCEPTED.labels("x" if options.grouping is Grouping.PER_CALL else "m").inc(written)
        return AcceptOutcome(resolved, plan.created_jobs(result))

    def check_scope(self, fields: Mapping[str, str | Sequence[str] | None], where: str = "body") -> None:
        """Ids a request names as its scope (a search's actor, session, user, roles…) obey the
        id rule like ids being ingested; 422 naming each field that does not."""
        check = FieldChecks(self.settings.limits)
        for name, value in fields.items():
            if isinstance(value, str) or value is None:
                check.id((where, name), value)
            else:
                for i, item in enumerate(value):
                    check.id((where, name, i), item)
        check.raise_if_any()

    def _could_exist(self, some_id: str) -> bool:
        """Whether a memory or job id named in a path could be stored at all: one that could
        not is simply not found, without a query (PostgreSQL refuses NUL in a parameter)."""
        return len(some_id) <= self.settings.limits.max_id_chars and unstorable(some_id) is None

    # ------------------------------------------------------------------ jobs and status
    def get_job(self, org_id: str, job_id: str) -> Job:
        job = self.store.get_job(org_id, job_id) if self._could_exist(job_id) else None
        if job is None:
            raise ServiceError("job_not_found", f"no job {job_id!r} in this org")
        return job

    async def wait_for_job(self, org_id: str, job_id: str, budget_s: float | None = None) -> Job:
        """Wait until the job ends or the budget runs out; the work goes on either way.

        Where the store announces job ends (PostgreSQL's NOTIFY), the wait wakes the moment
        a worker in any process commits, and re-reads the job every second only as a safety
        net; otherwise it polls, backing off from 5 ms to 100 ms."""
        budget = self.settings.wait_budget_s if budget_s is None else budget_s
        deadline = time.monotonic() + budget
        endings = self.__dict__.setdefault("_job_endings", JobEndings(self.store))
        live = await endings.subscribe()
        with endings.watch(job_id) as ended:  # registered before the first read: no ending is missed
            pause = 0.005
            while True:
                job = await anyio.to_thread.run_sync(self.get_job, org_id, job_id)
                if job.status in TERMINAL_JOB_STATUSES or time.monotonic() >= deadline:
                    return job
                try:
                    await asyncio.wait_for(ended.wait(), min(pause, max(0.0, deadline - time.monotonic())))
                except asyncio.TimeoutError:
                    pass
                ended.clear()
                pause = min(pause * 2, 1.0 if live else 0.1)

    def event_status(self, org_id: str, event_ids: Sequence[str]) -> StatusReport:
        check = FieldChecks(self.settings.limits)
        check.count(("body", "event_ids"), len(event_ids), self.settings.limits.max_status_ids)
        for i, event_id in enumerate(event_ids):
            check.id(("body", "event_ids", i), event_id)
        check.raise_if_any()
        known = self.store.event_statuses(org_id, event_ids)
        report = StatusReport([], [], [], {}, {})
        for event_id in dict.fromkeys(event_ids):
            status, reason = known.get(event_id, ("failed", "not_found"))
            if status == "completed":
                report.completed.append(event_id)
            elif status == "pending":
                report.pending.append(event_id)
            else:  # failed, deleted
                report.failed.append(event_id)
                report.reasons[event_id] = reason or status
                status = "failed"
            report.statuses[event_id] = status
        return report

    # ------------------------------------------------------------------ memories
    def get_memory(self, org_id: str, memory_id: str) -> Memory:
        memory = self.store.get_memory(org_id, memory_id) if self._could_exist(memory_id) else None
        if memory is None:
            raise ServiceError("memory_not_found", f"no memory {memory_id!r} in this org")
        return memory

    def delete_memory(self, org_id: str, memory_id: str) -> None:
        if not self._could_exist(memory_id) or not self.store.delete_memory(org_id, memory_id, utcnow()):
            raise ServiceError("memory_not_found", f"no memory {memory_id!r} in this org (or it was already deleted)")

    def update_memory(self, org_id: str, memory_id: str, text: str | None, metadata: dict[str, Any] | None, *,
                      add_group_ids: Sequence[str] | None = None,
                      remove_group_ids: Sequence[str] | None = None) -> Memory:
        """PATCH: `metadata` merges into the memory in place (any type); `text` (facts only)
        writes a new active fact with `details.supersedes = <old id>`, carrying the merged
        metadata and tags, and marks the old one `superseded` (it keeps its own metadata).
        Group tags change first when either list is given (v1.0's PATCH; `Groups.retag`)."""
        if add_group_ids is not None or remove_group_ids is not None:
            self.groups.retag(org_id, memory_id, add_group_ids or [], remove_group_ids or [])
            if text is None and not metadata:
                return self.get_memory(org_id, memory_id)
        if text is None and not metadata:
            raise ServiceError("invalid_request", "nothing to change: send `text`, `metadata` or both")
        if text is not None:
            text = text.replace("\x00", "")
            if not text.strip():
                raise ServiceError("empty_text_field", "text must not be empty or only whitespace")
            check = FieldChecks(self.settings.limits)
            text = check.text(("body", "text"), text, self.settings.limits.max_content_chars_x, name="text")
            check.raise_if_any()
        metadata = metadata or {}
        immutable = sorted(set(metadata) & IMMUTABLE_FIELDS)
        if immutable:
            raise ServiceError("immutable_field", f"{', '.join(immutable)} cannot be changed (a core field of the memory,"
                                                  f" not metadata)")
        reserved = sorted(set(metadata) & RESERVED_METADATA_KEYS)
        if reserved:
            raise ServiceError("reserved_field", f"{', '.join(reserved)} is reserved for engram's own use")
        memory = self.store.get_memory(org_id, memory_id) if self._could_exist(memory_id) else None
        if memory is None or memory.status == "retracted":
            raise ServiceError("memory_not_found", f"no memory {memory_id!r} in this org (or it was deleted)")
        if text is not None and memory.type != "fact":
            raise ServiceError("invalid_request", f"text can be changed on facts only; this memory is an {memory.type}"
                               " (its metadata can be changed)", status=422)
        if text is not None and text.strip() == memory.text:
            text = None  # the same text again is no revision
            if not metadata:
                return memory
        check = FieldChecks(self.settings.limits)
        check.metadata(("body", "metadata"), metadata)  # what this request adds, located in it
        check.raise_if_any()
        merged = {**memory.metadata, **metadata}
        check.metadata(("body", "metadata"), merged)  # and the size of the result
        check.raise_if_any()
        now = utcnow()
        if text is None:
            updated = self.store.merge_memory_metadata(org_id, memory_id, metadata, now)
            if updated is None:
                raise ServiceError("memory_not_found", f"no memory {memory_id!r} in this org (or it was deleted)")
            return updated
        if memory.status != "active":
            raise ServiceError("invalid_request", f"this fact was superseded; change its newest revision instead"
                               f" (GET /v1/memories/{memory_id}/revisions)", status=422)
        new = Memory(
            id=new_memory_id(), org_id=org_id, type="fact", text=text.strip(), user_id=memory.user_id,
            conv_id=memory.conv_id, agent_id=memory.agent_id, app_id=memory.app_id, metadata=merged,
            categories=list(memory.categories), details=replace(FactDetails.of(memory), supersedes=memory.id).to_wire(),
            key=memory.key, valid_at=memory.valid_at, source_event_ids=list(memory.source_event_ids),
            created_at=now, updated_at=now,
        )
        self._vectors_usable()
        vector = self._embedder().embed([new.text])[0]
        if not self.store.supersede_memory(org_id, memory.id, NewMemory(new, vector), now):
            raise ServiceError("invalid_request", "this fact was changed or deleted meanwhile; fetch it again",
                               status=422)
        return new

    def memory_revisions(self, org_id: str, memory_id: str) -> list[Memory]:
        """The memory's revision chain, oldest first (itself alone when it was never revised)."""
        chain = self.store.memory_revisions(org_id, memory_id) if self._could_exist(memory_id) else []
        if not chain:
            raise ServiceError("memory_not_found", f"no memory {memory_id!r} in this org")
        return chain

    def list_memories(self, org_id: str, scope: Mapping[str, str | None], *, ascending: bool, cursor: str | None,
                      limit: int, in_group: str | None = None) -> MemoryPage:
        """One page of memories matching every field of `scope` that is set (exact match), and
        tagged with group `in_group` when it is set."""
        check = FieldChecks(self.settings.limits)
        for name, value in scope.items():
            check.id(("query", name), value)
        check.id(("query", "group_id"), in_group)
        check.raise_if_any()
        where = conjoin(*(Cmp(name, "eq", value) for name, value in scope.items() if value is not None),
                        Cmp(GROUP_FIELD, "eq", in_group) if in_group is not None else MATCH_ALL)
        where = _default_to_active(where)
        cursor_scope = query_scope("list", ascending)
        after = tuple(self._cursors.decode(cursor, org_id, cursor_scope, _is_list_position)) if cursor else None
        page = self.store.list_memories(org_id, where, ascending=ascending, after=after, limit=limit)
        next_cursor = None
        if page.has_more and page.items:
            last = page.items[-1]
            next_cursor = self._cursors.encode(org_id, cursor_scope, [_iso(last.created_at), last.id])
        return MemoryPage(page.items, page.has_more, next_cursor)

    def group_tags(self, org_id: str, memory_ids: Sequence[str]) -> dict[str, list[str]]:
        """The groups each memory is tagged with (absent: none)."""
        return self.store.group_tags(org_id, memory_ids)

    def source_events(self, org_id: str, memories: Sequence[Memory]) -> dict[str, list[Event]]:
        wanted = [e for m in memories for e in m.source_event_ids]
        by_id = {e.id: e for e in self.store.get_events(org_id, wanted)}
        return {m.id: [by_id[e] for e in m.source_event_ids if e in by_id] for m in memories}

    async def run_search(self, org_id: str, query: SearchQuery, *, key_id: str | None = None) -> SearchResults:
        """`search` on a worker thread, at most `search_concurrency` at once: the rest wait
        on the event loop, which stays free for accepts (see Settings.search_concurrency)."""
        if self._search_slots is None:
            self._search_slots = anyio.CapacityLimiter(self.settings.search_concurrency or search_slots_default())
        results = await anyio.to_thread.run_sync(self.search, org_id, query, limiter=self._search_slots)
        self.usage.add(org_id, {usage.SEARCHES: 1}, key_id)
        return results

    def _vectors_usable(self) -> None:
        """503 `unavailable` when the stored vectors are another embedder's (vector_space.py)."""
        problem = self._space.problem()
        if problem is not None:
            raise ServiceError("unavailable", f"search is unavailable: {problem}")

    def search(self, org_id: str, query: SearchQuery) -> SearchResults:
        self._vectors_usable()
        check = FieldChecks(self.settings.limits)
        query.text = check.text(("body", "query"), query.text, self.settings.limits.max_query_chars, name="query")
        check.raise_if_any()
        where = _default_to_active(query.where)
        scope = query_scope("search", query.text, repr(where), query.threshold)
        offset = self._cursors.decode(query.cursor, org_id, scope, _is_offset) if query.cursor else 0
        started = time.perf_counter()
        depth = max(50, 2 * (offset + query.limit))
        ranking = HybridRanker(self.store, self._query_vectors).rank(
            org_id, where, query.text, depth, explain=query.with_score_parts)
        timings = ranking.timings
        # scores go out rounded to 6 places: a threshold copied from a result admits that result
        ranked = [(m, s) for m, s in ranking.scored if round(s, 6) >= query.threshold]
        window = ranked[offset:offset + query.limit]
        memories = self.store.get_memories(org_id, [m for m, _ in window])
        parts = ranking.parts or {}
        hits = [SearchHit(memories[m], s, parts=parts.get(m)) for m, s in window if m in memories]
        if query.with_source_events:
            sources = self.source_events(org_id, [h.memory for h in hits])
            for hit in hits:
                hit.source_events = sources[hit.memory.id]
        # pages end at MAX_SEARCH_OFFSET results
        has_more = len(ranked) > offset + query.limit and offset + query.limit <= MAX_SEARCH_OFFSET
        next_cursor = self._cursors.encode(org_id, scope, offset + query.limit) if has_more else None
        results = SearchResults(hits, has_more, next_cursor, timings)
        if query.with_context_prompt:
            results.context_prompt = context_prompt(query.text, hits)
        timings["total"] = time.perf_counter() - started
        return results

    def warm_up(self) -> None:
        """Load the query embedder ahead of the first search."""
        self._embedder().embed(["warm up"])

    # ------------------------------------------------------------------ health
    def health(self) -> dict[str, Any]:
        components: dict[str, Any] = {}
        try:
            depth = self.store.queue_depth()
            components["store"] = {"status": "ok"}
            components["queue"] = {"status": "ok", **depth}
        except Exception as exc:  # the health endpoint reports, it does not fail
            components["store"] = {"status": "error", "message": type(exc).__name__}
            components["queue"] = {"status": "unknown"}
        components["embedder"] = {"status": "ok", "name": self.settings.embedder}
        components["extractor"] = {"status": "ok", "name": self.settings.extractor}
        components["workers"] = self._worker_health()
        healthy = all(c.get("status") in ("ok", "unknown") for c in components.values())
        return {"status": "ok" if healthy else "degraded", "version": __version__, "components": components}


class JobEndings:
    """Wakes `wait_for_job` waiters of this process when the store announces that a job
    ended. The store calls back from its own thread; each waiter is woken on its loop."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._live: bool | None = None

    async def subscribe(self) -> bool:
        """Subscribe once per process; False while (or when) the store cannot notify."""
        if self._live is None:
            self._live = False
            self._live = await anyio.to_thread.run_sync(self._store.subscribe, self._on_notice)
        return self._live

    def _on_notice(self, kind: str, job_id: str) -> None:
        if kind != JOB_ENDED:
            return
        with self._lock:
            targets = list(self._waiters.get(job_id, ()))
        for loop, event in targets:
            loop.call_soon_threadsafe(event.set)

    @contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Event]:
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                waiting = self._waiters.get(job_id)
                if waiting is not None:
                    waiting.discard(entry)
                    if not waiting:
                        del self._waiters[job_id]


def context_prompt(query: str, hits: Sequence[SearchHit]) -> str:
    """A markdown block of the results, ready to paste into a model's context."""
    lines = [f"## Relevant memories for: {query}", ""]
    for hit in hits:
        m = hit.memory
        when = f" ({m.valid_at.date().isoformat()})" if m.valid_at else ""
        lines.append(f"- [{m.type}]{when} {m.text}")
    if not hits:
        lines.append("- (no relevant memories)")
    return "\n".join(lines)


# ---------------------------------------------------------------------- helpers
def _default_to_active(where: Node) -> Node:
    """Only active memories, unless the filter itself says which statuses it wants."""
    return where if mentions(where, "status") else conjoin(Cmp("status", "eq", "active"), where)


def plan_accept(org_id: str, turns: Sequence[Turn], options: AcceptOptions, settings: Settings, *,
                idempotency_key: str | None = None, now: datetime | None = None) -> AcceptPlan:
    """The one check of an accept call, and its grouping into jobs.

    Checks every field with `FieldChecks` under neutral locations — `("turns",)` for the
    list, `("turns", i, <Turn field>)`, `("group_ids", i)`, `("idempotency_key",)` — and
    raises everything it found at once (`ValidationFailed`). Metadata sent as text over the
    limit is refused before anything else; an empty list too. Content has NUL stripped;
    metadata loses its reserved keys and gains the turn's role and team ids.

    Grouping: `PER_CALL` makes the call one job (its turns must name one user, conversation,
    agent, app and metadata; the job carries the agent and app ids); `PER_CONVERSATION` makes
    one job per (user, conversation) in first-seen order. With `dedup`, each event carries its
    dedup hash and repeats within `dedup_window_s` resolve to the stored event. Event ids are
    ULIDs in input order."""
    limits = settings.limits
    check = FieldChecks(limits)
    for i, turn in enumerate(turns):
        if turn.metadata_chars is not None and turn.metadata_chars > limits.max_metadata_chars:
            check.metadata_text(("turns", i, "metadata"), turn.metadata_chars)
            check.raise_if_any()
    if not turns:
        check.fail(("turns",), "turns must be a non-empty list", "too_short")
        check.raise_if_any()
    check.count(("turns",), len(turns), limits.max_items_per_call)
    one_call = options.grouping is Grouping.PER_CALL
    if idempotency_key is not None and not one_call:
        raise ValueError("an idempotency key names one job: it needs Grouping.PER_CALL")
    first = turns[0]
    max_chars = options.max_content_chars
    contents: list[str] = []
    metadatas: list[dict[str, Any]] = []
    shared: dict[str, Any] | None = None  # the last metadata object checked, its result and its errors
    shared_clean: dict[str, Any] = {}
    shared_errors: list[dict[str, Any]] = []
    for i, turn in enumerate(turns):
        if one_call and turn is not first and (
                turn.user_id != first.user_id or turn.conv_id != first.conv_id or turn.agent_id != first.agent_id
                or turn.app_id != first.app_id
                or turn.metadata is not first.metadata and turn.metadata != first.metadata):
            raise ValueError("Grouping.PER_CALL: every turn names the call's user, conversation, agent, app and metadata")
        kind = turn.kind
        if kind is not None and kind not in ROLE_BY_KIND:
            check.fail(("turns", i, "kind"), f"kind must be one of {', '.join(ROLE_BY_KIND)}", "enum")
        check.id(("turns", i, "user_id"), turn.user_id, required=True)
        check.id(("turns", i, "conv_id"), turn.conv_id, required=True)
        for name in _OPTIONAL_IDS:
            value = getattr(turn, name)
            if value is not None:
                check.id(("turns", i, name), value)
        contents.append(check.text(("turns", i, "content"), turn.content, max_chars))
        if kind is None:
            if turn.role is None:
                check.fail(("turns", i, "role"), "field required", "missing")
            else:
                check.label(("turns", i, "role"), turn.role, blank_ok=False)
        if turn.name is not None:
            check.label(("turns", i, "name"), turn.name)
        if turn.dia_id is not None:
            check.label(("turns", i, "dia_id"), turn.dia_id)
        loc = ("turns", i, "metadata")
        if turn.metadata is not shared or not turn.metadata:
            before = len(check.errors)
            shared, shared_clean = turn.metadata, check.metadata(loc, turn.metadata)
            shared_errors = check.errors[before:]
        else:  # a call's one metadata object, given to each of its turns: checked once
            check.errors.extend({**e, "loc": [*loc, *e["loc"][3:]]} for e in shared_errors)
        metadata = shared_clean
        if turn.role_id or turn.team_id:
            metadata = {**metadata, **{k: v for k, v in (("role_id", turn.role_id), ("team_id", turn.team_id)) if v}}
        metadatas.append(metadata)
    for i, group_id in enumerate(options.group_ids):
        check.id(("group_ids", i), group_id)
    check.label(("idempotency_key",), idempotency_key, blank_ok=False)
    check.raise_if_any()

    now = now or utcnow()
    params: dict[str, Any] = {"agent_id": first.agent_id, "app_id": first.app_id} if one_call else {}
    params["extract_artifacts"] = options.extract_artifacts
    if options.group_ids:
        active = set(options.active_group_ids)
        named = list(dict.fromkeys(options.group_ids))
        params["group_ids"] = [g for g in named if g in active]
        params["ignored_group_ids"] = [g for g in named if g not in active]
    groups: dict[tuple[str, str], NewJob] = {}
    event_ids = new_event_ids(len(turns))
    dedup = options.dedup
    for turn, event_id, content, metadata in zip(turns, event_ids, contents, metadatas):
        group = (turn.user_id, turn.conv_id)
        job = groups.get(group)
        if job is None:
            job = groups[group] = NewJob(
                Job(id=new_job_id(), org_id=org_id, user_id=turn.user_id, conv_id=turn.conv_id, status="pending",
                    created_at=now, updated_at=now, params=dict(params)), [])
        if turn.kind is not None:
            kind, role = turn.kind, ROLE_BY_KIND[turn.kind]
        else:
            role = turn.role or ""
            kind = kind_for_role(role)
        job.events.append(Event(
            id=event_id, org_id=org_id, user_id=turn.user_id, conv_id=turn.conv_id, role=role, kind=kind,
            content=content, occurred_at=turn.occurred_at or now, received_at=now, agent_id=turn.agent_id,
            app_id=turn.app_id, name=turn.name, dia_id=turn.dia_id, metadata=metadata,
            client_event_id=turn.client_event_id,
            dedup_hash=dedup_hash(turn.user_id, turn.conv_id, kind, content) if dedup else None,
        ))
    idempotency = None if idempotency_key is None else Idempotency(
        idempotency_key, _body_hash(turns, contents, options), now,
        now - timedelta(seconds=settings.idempotency_ttl_s))
    return AcceptPlan(list(groups.values()), event_ids,
                      now - timedelta(seconds=settings.dedup_window_s) if dedup else None, idempotency)


_OPTIONAL_IDS = ("agent_id", "app_id", "role_id", "team_id", "client_event_id")


def _body_hash(turns: Sequence[Turn], contents: Sequence[str], options: AcceptOptions) -> str:
    """What an idempotency key is bound to: a `PER_CALL` call's fields (its turns share their
    ids and metadata; the metadata as sent, reserved keys included) and each turn's, content
    with NUL stripped. The same JSON as before turns were neutral, so a key stored by an older
    server still replays; fields family X cannot send are added only when a turn has them."""
    first = turns[0]
    messages: list[list[Any]] = []
    for turn, content in zip(turns, contents):
        role = ROLE_BY_KIND.get(turn.kind, turn.kind) if turn.kind is not None else turn.role
        message: list[Any] = [role, content, turn.name, turn.occurred_at.isoformat() if turn.occurred_at else None,
                              turn.dia_id]
        extra = {k: v for k in ("kind", "role_id", "team_id", "client_event_id") if (v := getattr(turn, k)) is not None}
        if extra:
            message.append(extra)
        messages.append(message)
    raw = json.dumps(
        {"user_id": first.user_id, "conv_id": first.conv_id, "agent_id": first.agent_id, "app_id": first.app_id,
         "metadata": first.metadata, "extract_artifacts": options.extract_artifacts,
         **({"group_ids": list(options.group_ids)} if options.group_ids else {}),
         "messages": messages},
        sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def _iso(ts: datetime) -> str:
    return iso(ts) or ""


def _is_list_position(position: Any) -> bool:
    """A list cursor's position: [created_at as engram writes it, a memory id]."""
    if not (isinstance(position, list) and len(position) == 2 and all(isinstance(p, str) for p in position)):
        return False
    created, memory_id = position
    return len(created) == 27 and _parses(created) and 0 < len(memory_id) <= 64


def _is_offset(position: Any) -> bool:
    """A search cursor's position: how many results the earlier pages showed."""
    return isinstance(position, int) and not isinstance(position, bool) and 0 < position <= MAX_SEARCH_OFFSET


def _parses(text: str) -> bool:
    try:
        parse_iso(text)
    except (ValueError, OverflowError):
        return False
    return True


def _span(seconds: float) -> str:
    """A configured time span as people say it: "24 hours", "90 minutes", "45 seconds"."""
    for unit, size in (("hours", 3600), ("minutes", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} seconds"
