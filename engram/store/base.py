"""The store protocol: events, jobs-as-queue, memories, vectors and the lexical index.

Every backend implements this one protocol and passes the same conformance tests. The
store executes rules atomically (dedup inside the accepting transaction, lease checks
inside the committing one) but decides nothing about extraction or ranking.
"""

from __future__ import annotations

import enum
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from engram.domain.filters import Node
from engram.domain.records import ApiKey, Event, Job, JobError, Memory, Org

# What `Store.subscribe` callbacks are told: (WORK_READY, "") when jobs may have become ready
# (accepted, or unblocked by the end of an earlier job of their conversation), and
# (JOB_ENDED, job_id) when a job reached succeeded or failed — in any process.
WORK_READY = "work_ready"
JOB_ENDED = "job_ended"


@dataclass(frozen=True, slots=True)
class TurnContext:
    """What search's context step reads about a candidate memory (Store.turn_context)."""

    type: str
    source_role: str | None  # details.source_role: the role of the turn a fact came from
    before: frozenset[str]  # the other asked-about memories citing the turn just before one of its turns
    after: frozenset[str]  # ... citing the turn just after one of its turns
    fact_type: str | None = None  # details.fact_type of a fact
    user_id: str | None = None
    text: str = ""
    said_at: datetime | None = None  # valid_at, else created_at: when it was true / said

    @property
    def neighbours(self) -> frozenset[str]:
        return self.before | self.after


@dataclass(slots=True)
class NewJob:
    """A job to create with its events, if at least one of them is new."""

    job: Job
    events: list[Event]


@dataclass(slots=True)
class AcceptResult:
    event_ids: list[str]  # in input order; duplicates resolve to the original id
    job_ids: list[str]  # jobs created (a group whose events were all duplicates creates none)
    replay_of: str | None = None  # the job an Idempotency-Key already named: nothing was written


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A family-X `Idempotency-Key` and the body it came with. A key seen since `since` with
    the same body replays its job; with another body it is `IdempotencyConflict`."""

    key: str
    body_hash: str
    at: datetime
    since: datetime


class IdempotencyConflict(Exception):
    """The key was used with another body within its time to live; nothing was written."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"idempotency key already used for job {job_id} with another body")
        self.job_id = job_id


def replayed_job(seen: tuple[str, str] | None, idempotency: Idempotency) -> str | None:
    """The accept rule for a key, applied inside the accepting transaction: `seen` is the
    (job id, body hash) stored for it since `idempotency.since`, if any."""
    if seen is None:
        return None
    job_id, body_hash = seen
    if body_hash != idempotency.body_hash:
        raise IdempotencyConflict(job_id)
    return job_id


def resolve_batch(jobs: Sequence[NewJob], by_client: dict[str, str], by_hash: dict[str, str],
                  dedup: bool) -> tuple[list[str], list[tuple[Job, list[Event]]]]:
    """The accept rule every store applies inside its transaction.

    Each event resolves to a stored one when its client id is known, or (with `dedup`) when
    its dedup hash was seen in the window; later copies inside the same batch resolve to the
    first. Returns the event ids in input order and, for each job with at least one new
    event, the job with its new events. `by_client`/`by_hash` hold the stored matches and
    are extended with the batch's own events.
    """
    event_ids: list[str] = []
    fresh_jobs: list[tuple[Job, list[Event]]] = []
    for new in jobs:
        fresh: list[Event] = []
        for event in new.events:
            existing = by_client.get(event.client_event_id) if event.client_event_id else None
            if existing is None and dedup and event.dedup_hash:
                existing = by_hash.get(event.dedup_hash)
            if existing is not None:
                event_ids.append(existing)
                continue
            if event.client_event_id:
                by_client[event.client_event_id] = event.id
            if event.dedup_hash:
                by_hash[event.dedup_hash] = event.id
            event_ids.append(event.id)
            fresh.append(event)
        if fresh:
            fresh_jobs.append((new.job, fresh))
    return event_ids, fresh_jobs


# What a rejected event keeps of its turn (SPEC §6.3): engram refused to remember a secret, so
# it does not keep it in the raw log either. Status, reason, ids and times stay.
WITHHELD_CONTENT = "[withheld: the content filter found a secret in this event]"


def job_error_dict(error: JobError | None) -> dict[str, str] | None:
    """A job error as stored (and as the family-X wire shows it)."""
    if error is None:
        return None
    return {"type": error.type, "code": error.code, "message": error.message}


@dataclass(slots=True)
class Lease:
    job: Job
    events: list[Event]  # the job's events, in arrival order
    token: str  # proves ownership at commit; a reclaimed lease fails its commit


@dataclass(slots=True)
class NewMemory:
    memory: Memory
    vector: np.ndarray  # float32, L2-normalised


@dataclass(slots=True)
class JobOutcome:
    """Everything a finished job writes, committed in one transaction with the job result.

    `basis` is the user's memory version (`Store.user_version`) the pipeline read before
    it reconciled: the commit goes ahead only if it still is (see `CommitResult`). `redo`
    is the pipeline's own way to rebuild the outcome against fresh reads when the commit is
    refused as stale (the store never calls it).
    """

    created: list[NewMemory] = field(default_factory=list)
    added_sources: dict[str, list[str]] = field(default_factory=dict)  # memory id -> new event ids
    superseded: dict[str, str] = field(default_factory=dict)  # old memory id -> new memory id
    group_tags: dict[str, list[str]] = field(default_factory=dict)  # memory id -> groups it joins (engram/groups.py)
    retracted: list[str] = field(default_factory=list)  # active facts a replay no longer finds in their turns
    event_failures: dict[str, str] = field(default_factory=dict)  # event id -> reason
    episode_event_ids: list[str] = field(default_factory=list)  # events now covered by an episode
    episode_id: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    error: JobError | None = None  # set when the job as a whole failed (e.g. all events rejected)
    usage: dict[str, int] = field(default_factory=dict)  # provider requests and tokens, added to the org's counters
    basis: int | None = None  # the user_version reconciled against; None: no check (nothing was read)
    space: str | None = None  # the embedder that made `created`'s vectors: the commit checks the store's is it
    redo: Callable[[], "JobOutcome"] | None = None  # reconcile again with fresh reads (same extraction and vectors)


class CommitResult(enum.Enum):
    """What `Store.complete` did. Only COMMITTED is true, so `if store.complete(...)` reads
    as "it committed".

    Why STALE exists (optimistic concurrency per user): a job reads the user's active facts,
    decides for each candidate (repeat / supersede / new), and commits later. Between the
    read and the commit another job of the same user (another conversation, another worker
    process), a DELETE (retract) or a text PATCH (supersede) may change those facts; applying
    the stale decisions would turn a retracted fact into `superseded`, add sources to a
    retracted row, store a fact twice, or fork a revision chain. So every write that changes
    which of a user's facts and artifacts are active moves a per-(org, user) version in its
    own transaction, the pipeline records the version it read first, and `complete` compares
    it inside the committing transaction (commits of one user serialize there: SQLite's
    writer lock, a row lock on PostgreSQL). A moved version refuses the commit without
    writing anything and the worker reconciles again — reads only, the extraction and
    vectors are reused — so the outcome lands as if reconcile had run at its commit.
    Chosen over holding a lock from read to commit because the accept path shares SQLite's
    one writer lock and must never wait on a job's reads; a refusal costs a few reads.
    Independently of the basis, a commit whose status change or citation targets a memory
    that is no longer active is refused the same way (defence in depth).
    """

    COMMITTED = "committed"
    LOST = "lost"  # the lease was taken back (expired, reclaimed) or the job already ended: nothing written
    STALE = "stale"  # the user's memory changed since `outcome.basis`: nothing written, the lease still holds

    def __bool__(self) -> bool:
        return self is CommitResult.COMMITTED


def changes_active_memories(outcome: JobOutcome) -> bool:
    """Whether committing `outcome` changes which facts or artifacts of the user are active
    (what another job's reconcile reads): it then moves the user's version. Adding sources
    to an active memory, or writing an episode, changes no one's decision."""
    return bool(outcome.superseded) or bool(outcome.retracted) or any(n.memory.type != "episode"
                                                                       for n in outcome.created)


@dataclass(slots=True)
class Page:
    items: list[Memory]
    has_more: bool


class Store(Protocol):
    # lifecycle
    def migrate(self) -> None: ...
    def close(self) -> None: ...
    def recover_abandoned_leases(self) -> int: ...

    # notifications across processes
    def subscribe(self, callback: Callable[[str, str], None]) -> bool:
        """Have `callback(kind, payload)` called from a background thread on WORK_READY and
        JOB_ENDED. False when the backend cannot notify: callers poll (the embedded store,
        whose server wakes its own workers through their stdin)."""
        ...

    # orgs and keys
    def ensure_org(self, name: str) -> Org: ...
    def get_org(self, org_id: str) -> Org | None: ...
    def list_orgs(self) -> list[Org]: ...
    def create_key(self, key: ApiKey, key_hash: str) -> None: ...
    def find_key(self, key_hash: str) -> ApiKey | None: ...
    def list_keys(self, org_id: str | None = None) -> list[ApiKey]: ...
    def revoke_key(self, key_id: str, at: datetime, org_id: str | None = None) -> bool: ...
    def count_keys(self, org_id: str) -> int: ...
    def count_active_keys(self) -> int: ...
    def server_secret(self) -> bytes:
        """A random secret created once per database and the same for every process (cursors
        are signed with it)."""
        ...

    # the vector space (engram/pipeline/vector_space.py)
    def vector_space(self) -> str | None:
        """The name of the embedder recorded as the maker of every stored vector; None
        before one is."""
        ...
    def record_vector_space(self, embedder: str, at: datetime) -> None: ...
    def count_all_memories(self) -> int: ...
    def reindex_state(self) -> Any: ...
    def begin_reindex(self, embedder: str, at: datetime) -> None: ...
    def memories_to_embed(self, after_id: str, limit: int) -> list[Any]: ...
    def memories_missing_reindex(self, limit: int) -> list[Any]: ...
    def write_reindex(self, embedder: str, vectors: Sequence[tuple[str, np.ndarray]], at: datetime,
                      after_id: str | None = None) -> bool: ...
    def switch_reindex(self, embedder: str, at: datetime) -> bool:
        """store/reindex.py: the new vectors become the ones search reads, in one transaction."""
        ...

    # accept path
    def accept(self, org_id: str, jobs: Sequence[NewJob], *, dedup_since: datetime | None,
               idempotency: Idempotency | None = None) -> AcceptResult:
        """Write new events and their jobs in one transaction. An event whose client id is
        known, or whose dedup hash was seen since `dedup_since`, resolves to the stored event
        (`resolve_batch`); with `idempotency`, a key already seen replays its job
        (`replayed_job`) — the lookup and the write are one transaction."""
        ...

    # jobs and events
    def get_job(self, org_id: str, job_id: str) -> Job | None: ...
    def event_statuses(self, org_id: str, event_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]: ...
    def get_events(self, org_id: str, event_ids: Sequence[str]) -> list[Event]: ...

    # the queue
    def lease(self, owner: str, now: datetime, lease_for_s: float, max_attempts: int) -> Lease | None: ...
    def lease_many(self, owner: str, now: datetime, lease_for_s: float, max_attempts: int,
                   limit: int) -> list[Lease]:
        """Up to `limit` leases in one transaction, in the order `lease` would give them one
        by one: each of another conversation (a conversation's next job waits for its
        earlier one), so a worker may run them in any order."""
        ...
    def renew(self, lease: Lease, until: datetime) -> bool: ...
    def renew_many(self, leases: Sequence[Lease], until: datetime) -> list[bool]:
        """`renew` for each lease, in one transaction."""
        ...
    def retry_later(self, lease: Lease, error: JobError, at: datetime) -> bool: ...
    def fail(self, lease: Lease, error: JobError) -> bool: ...
    def complete(self, lease: Lease, outcome: JobOutcome) -> CommitResult:
        """Commit the outcome with the job's result in one transaction, if the lease still
        holds (else LOST) and the user's version still equals `outcome.basis` when that is
        set, and every memory it supersedes or adds sources to is still active (else STALE).
        Moves the user's version when `changes_active_memories(outcome)`."""
        ...
    def complete_many(self, done: Sequence[tuple[Lease, JobOutcome]]) -> list[CommitResult]:
        """`complete` for each (lease, outcome), in one transaction: one write lock and one
        fsync for the lot. Each job's writes stand or fall alone (a savepoint each): a LOST
        or STALE job writes nothing and the others commit. Raises, with nothing written, only
        when the transaction itself fails."""
        ...

    def user_version(self, org_id: str, user_id: str) -> int:
        """The user's memory version: 0 at first, moved by every commit that changes which of
        the user's facts or artifacts are active (a job that creates or supersedes, a delete,
        a text PATCH); never by accepts, metadata merges or added sources."""
        ...
    def enqueue_idle_episodes(self, idle_before: datetime, now: datetime) -> int: ...
    def enqueue_replay(self, org_id: str, user_id: str, conv_id: str, at: datetime) -> Job:
        """A job that extracts the conversation's completed turns again (kind `replay`); it runs
        after the conversation's earlier jobs, and its lease carries those turns."""
        ...
    def queue_depth(self) -> dict[str, int]: ...
    def oldest_pending_age_s(self) -> float | None: ...

    # pipeline reads
    def unepisoded_events(self, org_id: str, user_id: str, conv_id: str) -> list[Event]: ...
    def reconcile_candidates(self, org_id: str, user_id: str, keys: Sequence[str],
                             text_hashes: Sequence[str]) -> list[Memory]: ...

    def memories_citing(self, org_id: str, event_ids: Sequence[str], *, any_status: bool = False) -> list[Memory]:
        """The org's memories citing one of these events: active ones, or every status."""
        ...

    # memories
    def get_memory(self, org_id: str, memory_id: str) -> Memory | None: ...
    def get_memories(self, org_id: str, memory_ids: Sequence[str]) -> dict[str, Memory]: ...
    def delete_memory(self, org_id: str, memory_id: str, at: datetime) -> bool:
        """Retract a fact, remove an episode or an artifact (all its versions); moves the
        owner's version. False when there is no such memory or it is already retracted."""
        ...
    def list_memories(self, org_id: str, where: Node, *, ascending: bool,
                      after: tuple[str, str] | None, limit: int) -> Page: ...
    def dense_candidates(self, org_id: str, where: Node, query: np.ndarray, k: int) -> list[tuple[str, float]]: ...
    def lexical_candidates(self, org_id: str, where: Node, query: str, k: int) -> list[tuple[str, float]]: ...
    def search_scope(self, org_id: str, where: Node) -> SearchScope:
        """The memories `where` admits, resolved once for a search's every step."""
        ...
    def turn_context(self, org_id: str, memory_ids: Sequence[str]) -> dict[str, "TurnContext"]:
        """For each of these memories of the org (unknown ids are left out): its type, the role of
        its source turn, and which of the *other* given memories cite the turn just before, and
        just after, one of its own — the events next to it in its conversation (same user and
        conversation; events in (occurred_at, received_at, id) order, whatever their status).
        Episodes cite a whole stretch and take no part in this: an episode has no neighbours and
        is nobody's. One statement."""
        ...

    # memory management (PATCH, revisions)
    def supersede_memory(self, org_id: str, old_id: str, new: NewMemory, at: datetime) -> bool:
        """In one transaction: if `old_id` is an active fact, insert `new` (its vector and
        lexical entry too), mark the old one `superseded` and move the user's version. False
        (and no write) otherwise."""
        ...

    def merge_memory_metadata(self, org_id: str, memory_id: str, metadata: Mapping[str, Any],
                              at: datetime) -> Memory | None:
        """Merge keys into a memory's metadata (atomically); the updated memory, or None when
        there is no such memory or it was retracted."""
        ...

    def memory_revisions(self, org_id: str, memory_id: str) -> list[Memory]:
        """The revision chain through `memory_id`, oldest first: the memories linked to it
        by `details.supersedes`, backwards and forwards. [] for an unknown id."""
        ...

    # usage counters (per org, per UTC day)
    def record_usage(self, org_id: str, at: datetime, counts: Mapping[str, int]) -> None:
        """Add to the org's counters of the day of `at` (e.g. llm_requests, prompt_tokens)."""
        ...

    def usage_totals(self, org_id: str, since: datetime | None = None) -> dict[str, int]:
        """The org's counters summed over the days since `since` (all days when None)."""
        ...


@runtime_checkable
class SubmitsAccepts(Protocol):
    """An optional capability: `accept` as a future, for callers on an event loop.

    A store that serialises its accept writes on a thread of its own (SQLite's group
    commit) offers this so that the API can hand the write over without first hopping
    to a thread-pool thread only to block there.
    """

    def submit_accept(self, org_id: str, jobs: Sequence[NewJob], *, dedup_since: datetime | None,
                      idempotency: Idempotency | None = None) -> Future[AcceptResult]:
        """What `accept` does; the future resolves once the write is committed."""
        ...


class SearchScope(Protocol):
    """The memories one search may return, resolved once (store/sqlite_index.py,
    store/postgres_index.py); every step of the ranking asks it."""

    def frequencies(self, terms: Sequence[str]) -> tuple[int, dict[str, int]]:
        """(how many memories the scope holds, {term: in how many of them it occurs})."""
        ...

    def dense(self, query: np.ndarray, k: int) -> list[tuple[str, float]]: ...
    def lexical(self, text: str, k: int) -> list[tuple[str, float]]: ...

    def narrowed(self, ranges: Sequence[tuple[datetime, datetime]]) -> "SearchScope":
        """The scope's memories whose event time falls in one of the half-open ranges."""
        ...

    def admits(self, ids: Sequence[str]) -> set[str]: ...

    def cosines(self, query: np.ndarray, ids: Sequence[str]) -> dict[str, float]:
        """The exact cosine of these memories (ids the scope admitted)."""
        ...


@runtime_checkable
class DocumentFrequencies(Protocol):
    """An optional search capability of a store: term statistics over a filter's scope.

    Search uses it, when the store has it, to find the query words that occur in a large
    share of the searched memories (a speaker's name in that speaker's memory) and to embed
    the query a second time without them (search/engine.py). A store without it still
    searches; its ranking only lacks that blend.
    """

    def document_frequencies(self, org_id: str, where: Node, terms: Sequence[str]) -> tuple[int, dict[str, int]]:
        """(how many memories `where` admits, {term: in how many of them the term occurs}),
        a term matching as `lexical_candidates` matches the query's words."""
        ...
