"""The store's rules, written once over a SQL dialect (`store/dialect.py`).

Every operation of the store protocol (`store/base.py`) is here: accepting events and jobs,
leasing and finishing jobs, committing a job's outcome, deleting and revising memories, the
revision walk, the idle-conversation sweep, keys, orgs and usage. Each statement is a named
query of the dialect's rule file (`queries/<dialect>.sql`); what is physically different —
binding, locks, notifications, vectors and the lexical index — is the dialect's.

Concurrency is written for the stricter of the two: PostgreSQL, where many processes write
at once. Rows a rule will change are read `FOR UPDATE` in PostgreSQL's statements, in one
order (the job row, then the user's version row, then memory rows by id); on SQLite the
same rules run inside `BEGIN IMMEDIATE`, which already admits one writer at a time.
"""

from __future__ import annotations

import secrets
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from engram.domain.details import supersedes, with_episode
from engram.domain.filters import Node
from engram.domain.records import ApiKey, Event, Job, JobError, Memory, Org, utcnow
from engram.store import codec
from engram.store.console import ConsoleReads
from engram.store.base import (
    JOB_ENDED, WITHHELD_CONTENT, WORK_READY, AcceptResult, CommitResult, Idempotency, JobOutcome, Lease, NewJob,
    NewMemory, Page, SearchScope, TurnContext, changes_active_memories, job_error_dict, replayed_job,
    resolve_batch,
)
from engram.store.dialect import Dialect, Tx
from engram.store.memsy_console import MemsyConsoleRules
from engram.store.groups import GroupRules
from engram.store.lifecycle import LifecycleRules
from engram.store.onboarding import OnboardingRules
from engram.store.reindex import ReindexRules
from engram.store.webhooks import COMPLETED, FAILED, WebhookRules, completed_payload, failed_payload

ACCEPT_RETRIES = 5  # a client event id stored by a concurrent accept makes this one run again


class ClientIdConflict(Exception):
    """Another transaction stored the same client event id first; the accept runs again."""


class _Stale(Exception):
    """Raised inside a committing transaction to roll it back: a decision no longer holds."""


class _Unchanged(Exception):
    """Raised inside a transaction to roll back what it wrote: there was nothing to change."""


def conversation_lock(org_id: str, user_id: str, conv_id: str) -> str:
    return "conv\x1f" + "\x1f".join((org_id, user_id, conv_id))


class RelationalStore(LifecycleRules, ReindexRules, WebhookRules, GroupRules, OnboardingRules, MemsyConsoleRules,
                      ConsoleReads):
    """The store protocol over one dialect (the data lifecycle's rules: store/lifecycle.py;
    re-embedding: store/reindex.py; memsy's onboarding records and console reads:
    store/onboarding.py, store/memsy_console.py)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._forget_callbacks: list[Callable[[], None]] = []  # store/lifecycle.py on_forget
        self._epoch_seen: list[Any] = [None, float("-inf")]  # (erasure epoch, when it was read)

    # ------------------------------------------------------------------ helpers
    def _one(self, query: str, /, **named: Any) -> Any | None:
        with self.dialect.reader() as tx:
            return tx.one(query, named)

    def _all(self, query: str, /, **named: Any) -> list[Any]:
        with self.dialect.reader() as tx:
            return tx.all(query, named)

    # ------------------------------------------------------------------ lifecycle
    def migrate(self) -> list[str]:
        return self.dialect.migrate()

    def close(self) -> None:
        self.dialect.close()

    def subscribe(self, callback: Callable[[str, str], None]) -> bool:
        return self.dialect.subscribe(callback)

    def recover_abandoned_leases(self) -> int:
        """Hand back every running job. Only safe when no worker of this store is alive (the
        embedded server holds the data directory's lock when it calls this)."""
        with self.dialect.transaction() as tx:
            return tx.run("recover_abandoned_leases", {"now": self.dialect.time(utcnow())})

    # ------------------------------------------------------------------ orgs, keys, secrets
    def ensure_org(self, name: str, org_id: str | None = None) -> Org:
        """The org of that name, or of that id (an org renamed through the onboarding API keeps
        its id, so `default` and `--org <its first name>` still find it); made if neither is."""
        row = self._one("org_by_name", name=name) or self._one("org_by_id", id=org_id or name)
        if row is None:
            with self.dialect.transaction() as tx:
                tx.run("insert_org", {"id": org_id or name, "name": name, "created_at": self.dialect.time(utcnow())})
                row = tx.one("org_by_name", {"name": name})
        if row is None:  # the id was taken by an org of another name
            raise ValueError(f"org id {org_id or name!r} is in use")
        return codec.org(row)

    def get_org(self, org_id: str) -> Org | None:
        row = self._one("org_by_id", id=org_id)
        return codec.org(row) if row else None

    def list_orgs(self) -> list[Org]:
        return [codec.org(r) for r in self._all("list_orgs")]

    def create_key(self, key: ApiKey, key_hash: str) -> None:
        d = self.dialect
        with d.transaction() as tx:
            tx.run("insert_key", {"id": key.id, "org_id": key.org_id, "name": key.name, "prefix": key.prefix,
                                  "key_hash": key_hash, "scopes": d.json(list(key.scopes)),
                                  "created_at": d.time(key.created_at), "expires_at": d.time(key.expires_at)})

    def find_key(self, key_hash: str) -> ApiKey | None:
        row = self._one("key_by_hash", key_hash=key_hash)
        return codec.api_key(row) if row else None

    def list_keys(self, org_id: str | None = None) -> list[ApiKey]:
        rows = self._all("list_keys") if org_id is None else self._all("list_keys_of_org", org_id=org_id)
        return [codec.api_key(r) for r in rows]

    def revoke_key(self, key_id: str, at: datetime, org_id: str | None = None) -> bool:
        """Revoke a key (of `org_id` only, when given); False when there is no such active key."""
        with self.dialect.transaction() as tx:
            if org_id is None:
                return tx.run("revoke_key", {"id": key_id, "at": self.dialect.time(at)}) == 1
            return tx.run("revoke_key_of_org", {"id": key_id, "org_id": org_id, "at": self.dialect.time(at)}) == 1

    def count_keys(self, org_id: str) -> int:
        """The org's keys that are not revoked (expired ones included)."""
        return int(self._one("count_keys_of_org", org_id=org_id)["n"])

    def count_active_keys(self) -> int:
        return int(self._one("count_active_keys")["n"])

    def server_secret(self) -> bytes:
        """This database's random secret, created by whichever process asks first."""
        d = self.dialect
        with d.transaction() as tx:
            tx.run("insert_secret", {"name": "server_secret", "value": d.blob(secrets.token_bytes(32)),
                                     "now": d.time(utcnow())})
            return bytes(tx.one("secret", {"name": "server_secret"})["value"])

    # ------------------------------------------------------------------ the vector space
    def vector_space(self) -> str | None:
        row = self._one("vector_space")
        return row["embedder"] if row else None

    def record_vector_space(self, embedder: str, at: datetime) -> None:
        with self.dialect.transaction() as tx:
            tx.run("record_vector_space", {"embedder": embedder, "at": self.dialect.time(at)})

    def count_all_memories(self) -> int:
        return int(self._one("count_all_memories")["n"])


    # ------------------------------------------------------------------ accept
    def accept(self, org_id: str, jobs: Sequence[NewJob], *, dedup_since: datetime | None,
               idempotency: Idempotency | None = None) -> AcceptResult:
        """See Store.accept."""
        for attempt in range(ACCEPT_RETRIES):
            try:
                return self.dialect.run_accept(lambda tx: self._accept_in(tx, org_id, jobs, dedup_since, idempotency))
            except ClientIdConflict:
                if attempt == ACCEPT_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _accept_in(self, tx: Tx, org_id: str, jobs: Sequence[NewJob], since: datetime | None,
                   idempotency: Idempotency | None) -> AcceptResult:
        d = self.dialect
        if idempotency is not None:
            # One key's requests take turns here, so two of them never both create a job.
            d.lock(tx, f"idempotency\x1f{org_id}\x1f{idempotency.key}")
            seen = tx.one("idempotency_seen", {"org_id": org_id, "key": idempotency.key,
                                               "since": d.time(idempotency.since)})
            replay = replayed_job((seen["job_id"], seen["body_hash"]) if seen else None, idempotency)
            if replay is not None:
                return AcceptResult(event_ids=[], job_ids=[], replay_of=replay)
        # Conversation locks: dedup is race-free across API processes, and within a
        # conversation `seq` order is commit order (a later job is never leased first).
        d.lock(tx, *(conversation_lock(org_id, j.job.user_id, j.job.conv_id) for j in jobs))
        client_ids = list({e.client_event_id for j in jobs for e in j.events if e.client_event_id})
        by_client = {r["client_event_id"]: r["id"] for r in tx.all(
            "events_by_client_id", {"org_id": org_id, "client_ids": d.array(client_ids)})} if client_ids else {}
        hashes = {e.dedup_hash for j in jobs for e in j.events if e.dedup_hash}
        by_hash = d.recent_duplicates(tx, org_id, hashes, since) if since is not None and hashes else {}
        event_ids, fresh_jobs = resolve_batch(jobs, by_client, by_hash, since is not None)
        times: dict[datetime, Any] = {}  # a batch's events mostly share one or two times

        def at(ts: datetime) -> Any:
            bound = times.get(ts)
            if bound is None:
                bound = times[ts] = d.time(ts)
            return bound

        empty = d.json({})
        tx.many("insert_event", [
            {"id": e.id, "org_id": org_id, "user_id": e.user_id, "conv_id": e.conv_id, "agent_id": e.agent_id,
             "app_id": e.app_id, "role": e.role, "kind": e.kind, "name": e.name, "content": e.content,
             "dia_id": e.dia_id, "metadata": d.json(e.metadata) if e.metadata else empty,
             "occurred_at": at(e.occurred_at), "received_at": at(e.received_at), "job_id": job.id,
             "client_event_id": e.client_event_id, "dedup_hash": e.dedup_hash}
            for job, fresh in fresh_jobs for e in fresh])
        with_client_id = [e.id for _, fresh in fresh_jobs for e in fresh if e.client_event_id]
        if with_client_id and tx.one("count_events", {"ids": d.array(with_client_id)})["n"] != len(with_client_id):
            raise ClientIdConflict()  # a concurrent accept stored one of these client ids first
        tx.many("insert_job", [
            {"id": job.id, "org_id": org_id, "user_id": job.user_id, "conv_id": job.conv_id, "kind": job.kind,
             "params": d.json(job.params), "available_at": at(job.created_at), "created_at": at(job.created_at),
             "updated_at": at(job.updated_at)} for job, _ in fresh_jobs])
        job_ids = [job.id for job, _ in fresh_jobs]
        if job_ids:
            d.notify(tx, WORK_READY, "")
        if idempotency is not None and job_ids:
            tx.run("remember_idempotency", {"org_id": org_id, "key": idempotency.key,
                                            "body_hash": idempotency.body_hash, "job_id": job_ids[0],
                                            "created_at": d.time(idempotency.at)})
        d.accepted(org_id, fresh_jobs)
        return AcceptResult(event_ids=event_ids, job_ids=job_ids)

    # ------------------------------------------------------------------ jobs and events
    def get_job(self, org_id: str, job_id: str) -> Job | None:
        row = self._one("job_by_id", org_id=org_id, id=job_id)
        return codec.job(row) if row else None

    def event_statuses(self, org_id: str, event_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        rows = self._all("event_statuses", org_id=org_id, ids=self.dialect.array(list(dict.fromkeys(event_ids))))
        return {r["id"]: (r["status"], r["fail_reason"]) for r in rows}

    def get_events(self, org_id: str, event_ids: Sequence[str]) -> list[Event]:
        rows = self._all("events_by_id", org_id=org_id, ids=self.dialect.array(list(dict.fromkeys(event_ids))))
        found = {r["id"]: codec.event(r) for r in rows}
        return [found[i] for i in event_ids if i in found]

    # ------------------------------------------------------------------ the queue
    def lease(self, owner: str, now: datetime, lease_for_s: float, max_attempts: int) -> Lease | None:
        """Lease the oldest ready job whose conversation has no earlier unfinished job.

        A running job whose lease expired counts as ready again (its worker died); a job
        that has used up its attempts that way fails instead of running forever.
        """
        leases = self.lease_many(owner, now, lease_for_s, max_attempts, 1)
        return leases[0] if leases else None

    def lease_many(self, owner: str, now: datetime, lease_for_s: float, max_attempts: int,
                   limit: int) -> list[Lease]:
        """See Store.lease_many. A job just leased is running, so the next `next_ready_job`
        of this transaction passes it and skips its conversation's later jobs."""
        d = self.dialect
        leases: list[Lease] = []
        with d.transaction() as tx:
            while len(leases) < limit:
                with d.walking_the_queue(tx):
                    row = tx.one("next_ready_job", {"now": d.time(now)})
                if row is None:
                    break
                if row["attempts"] >= max_attempts:
                    error = JobError("ingest_failed", "the job was abandoned by its worker too many times")
                    self._finish_failed(tx, codec.job(row), error, now)
                    continue
                token = secrets.token_hex(16)
                leased = tx.one("lease_job", {"owner": owner, "token": token, "seq": row["seq"], "now": d.time(now),
                                              "expires_at": d.time(now + timedelta(seconds=lease_for_s))})
                job = codec.job(leased)
                if job.kind == "replay":  # the conversation's turns as they stand, not turns of its own
                    rows = tx.all("replayed_events", {"org_id": job.org_id, "user_id": job.user_id,
                                                      "conv_id": job.conv_id})
                else:
                    rows = tx.all("job_events", {"job_id": job.id})
                leases.append(Lease(job=job, events=[codec.event(r) for r in rows], token=token))
        return leases

    @staticmethod
    def _holds(tx: Tx, lease: Lease) -> bool:
        row = tx.one("lease_of_job", {"id": lease.job.id})
        return row is not None and row["status"] == "running" and row["lease_token"] == lease.token

    def renew(self, lease: Lease, until: datetime) -> bool:
        return self.renew_many([lease], until)[0]

    def renew_many(self, leases: Sequence[Lease], until: datetime) -> list[bool]:
        with self.dialect.transaction() as tx:
            return [tx.run("renew_lease", {"id": lease.job.id, "token": lease.token,
                                           "until": self.dialect.time(until)}) == 1 for lease in leases]

    def retry_later(self, lease: Lease, error: JobError, at: datetime) -> bool:
        d = self.dialect
        with d.transaction() as tx:
            if not self._holds(tx, lease):
                return False
            tx.run("retry_job", {"id": lease.job.id, "at": d.time(at), "error": d.json(job_error_dict(error)),
                                 "now": d.time(utcnow())})
            return True

    def fail(self, lease: Lease, error: JobError) -> bool:
        with self.dialect.transaction() as tx:
            if not self._holds(tx, lease):
                return False
            self._finish_failed(tx, lease.job, error, utcnow())
            return True

    def _finish_failed(self, tx: Tx, job: Job, error: JobError, now: datetime) -> None:
        d = self.dialect
        tx.run("fail_job", {"id": job.id, "error": d.json(job_error_dict(error)), "now": d.time(now)})
        tx.run("fail_pending_events", {"job_id": job.id, "reason": error.code})
        self._tell(tx, job, FAILED, lambda: failed_payload(job, error, now), now)
        self._announce_end(tx, job.id)

    def _announce_end(self, tx: Tx, job_id: str) -> None:
        """Delivered at commit: waiters learn the job ended; idle workers learn that the
        conversation's next job (if any) is unblocked."""
        d = self.dialect
        if not d.notifies:
            return
        d.notify(tx, JOB_ENDED, job_id)
        if tx.one("next_job_waits", {"job_id": job_id}):
            d.notify(tx, WORK_READY, "")

    def oldest_pending_age_s(self) -> float | None:
        """Seconds since the oldest pending job was accepted; None when none is pending."""
        row = self._one("oldest_pending")
        oldest = codec.time_value(row["oldest"]) if row else None
        return (utcnow() - oldest).total_seconds() if oldest is not None else None

    def queue_depth(self) -> dict[str, int]:
        depth = {"pending": 0, "running": 0}
        depth.update({r["status"]: int(r["n"]) for r in self._all("queue_depth")})
        return depth

    # ------------------------------------------------------------------ committing a job
    def complete(self, lease: Lease, outcome: JobOutcome) -> CommitResult:
        """Commit memories (with their vectors and lexical entries), sources, event states and
        the job result together, once the lease is still held and the user's version is still
        the one the outcome was reconciled against (`outcome.basis`). STALE, with nothing
        written, when it moved, or when a memory the outcome supersedes or cites is no longer
        active (base.CommitResult)."""
        return self.complete_many([(lease, outcome)])[0]

    def complete_many(self, done: Sequence[tuple[Lease, JobOutcome]]) -> list[CommitResult]:
        """See Store.complete_many: each job's writes in a savepoint of one transaction."""
        d = self.dialect
        # Encoded before the transaction: on SQLite, accepts wait while a commit holds the lock.
        encoded = [d.encode_memories(outcome.created) for _, outcome in done]
        results: dict[int, CommitResult] = {}  # by position in `done`, whatever the commit order
        # In (org, user) order: two batches take their users' version rows (PostgreSQL locks
        # them) in one order, so they wait for each other instead of deadlocking.
        order = sorted(range(len(done)), key=lambda i: (done[i][0].job.org_id, done[i][0].job.user_id or ""))
        with d.transaction() as tx:
            for i in order:
                (lease, outcome), memories = done[i], encoded[i]
                tx.run("savepoint_job", {})
                try:
                    results[i] = self._commit(tx, lease, outcome, memories)
                except _Stale:  # this job's writes undone; the others' stay
                    tx.run("rollback_to_job", {})
                    results[i] = CommitResult.STALE
                tx.run("release_job", {})
        return [results[i] for i in range(len(done))]

    def _commit(self, tx: Tx, lease: Lease, outcome: JobOutcome, encoded: Any) -> CommitResult:
        """One job's commit inside `tx`; raises _Stale (its savepoint is rolled back)."""
        d = self.dialect
        now = utcnow()
        org_id, job_id = lease.job.org_id, lease.job.id
        started = time.perf_counter()
        if not self._holds(tx, lease):
            return CommitResult.LOST
        if outcome.space is not None and outcome.created:
            space = tx.one("vector_space_for_commit", {})
            if space is not None and space["embedder"] != outcome.space:
                raise _Stale()  # `engram reindex` switched the store to another embedder meanwhile
        bump = changes_active_memories(outcome)
        if outcome.basis is not None or bump:
            before = self._move_version(tx, org_id, lease.job.user_id, bump)
            if outcome.basis is not None and before != outcome.basis:
                raise _Stale()  # the savepoint undoes the move; nothing else was written
        if outcome.created:
            d.insert_memories(tx, encoded)
            self._insert_sources(tx, outcome.created)
        if outcome.group_tags:
            self._tag(tx, org_id, outcome.group_tags)
        # Rows other jobs may touch too are changed in id order: no deadlock between jobs.
        for memory_id in sorted(outcome.added_sources):
            self._add_sources(tx, org_id, memory_id, outcome.added_sources[memory_id], now)
        for old_id in sorted(outcome.superseded):
            if tx.run("supersede_active", {"id": old_id, "org_id": org_id, "now": d.time(now)}) != 1:
                raise _Stale()  # retracted or superseded meanwhile
        for old_id in sorted(outcome.retracted):
            if tx.run("retract_active", {"id": old_id, "org_id": org_id, "now": d.time(now)}) != 1:
                raise _Stale()
        if outcome.episode_id and outcome.episode_event_ids:
            self._mark_episode(tx, org_id, outcome.episode_id, outcome.episode_event_ids)
        if outcome.usage:
            self._add_usage(tx, org_id, now, outcome.usage)
        for event_id, reason in outcome.event_failures.items():
            tx.run("fail_event", {"id": event_id, "job_id": job_id, "reason": reason})
            if reason == "content_rejected":  # engram keeps no secret it refused to remember
                tx.run("withhold_event", {"id": event_id, "job_id": job_id, "content": WITHHELD_CONTENT})
        tx.run("complete_pending_events", {"job_id": job_id})
        if "stage_timings" in outcome.result:  # the writes above; the COMMIT itself is not in it
            outcome.result["stage_timings"]["commit"] = round(time.perf_counter() - started, 6)
        tx.run("finish_job", {
            "id": job_id, "status": "failed" if outcome.error else "succeeded", "now": d.time(now),
            "result": None if outcome.error else d.json(outcome.result),
            "error": d.json(job_error_dict(outcome.error)) if outcome.error else None})
        if outcome.error:
            self._tell(tx, lease.job, FAILED, lambda: failed_payload(lease.job, outcome.error, now), now)  # type: ignore[arg-type]
        else:
            self._tell(tx, lease.job, COMPLETED, lambda: completed_payload(
                lease.job, [{"id": n.memory.id, "type": n.memory.type} for n in outcome.created],
                [{"id": m["id"], "type": m["type"]} for m in outcome.result.get("memories_updated", [])], now), now)
        self._announce_end(tx, job_id)
        return CommitResult.COMMITTED

    def user_version(self, org_id: str, user_id: str) -> int:
        row = self._one("user_version", org_id=org_id, user_id=user_id or "")
        return int(row["version"]) if row else 0

    def _move_version(self, tx: Tx, org_id: str, user_id: str | None, bump: bool) -> int:
        """Move the user's version by one when `bump` (creating it at 0 first); the version
        before. On PostgreSQL this locks the row: one user's commits, deletes and text
        PATCHes take turns here."""
        step = 1 if bump else 0
        row = tx.one("move_user_version", {"org_id": org_id, "user_id": user_id or "", "step": step})
        return int(row["version"]) - step

    def _remove_memories(self, tx: Tx, org_id: str, ids: Sequence[str]) -> None:
        """Memories gone for good: their source links, group tags, vectors and lexical entries."""
        d = self.dialect
        tx.run("delete_memory_sources", {"ids": d.array(list(ids))})
        tx.run("delete_memory_tags", {"org_id": org_id, "ids": d.array(list(ids))})
        d.delete_memories(tx, org_id, ids)

    def _insert_sources(self, tx: Tx, created: Sequence[NewMemory]) -> None:
        tx.many("insert_memory_source", [{"memory_id": n.memory.id, "event_id": e}
                                         for n in created for e in n.memory.source_event_ids])

    def _add_sources(self, tx: Tx, org_id: str, memory_id: str, event_ids: list[str], now: datetime) -> None:
        d = self.dialect
        row = tx.one("active_memory_sources", {"org_id": org_id, "id": memory_id})
        if row is None:
            raise _Stale()  # deleted, retracted or superseded meanwhile: the job must decide again
        sources = list(dict.fromkeys([*codec.json_value(row["source_event_ids"]), *event_ids]))
        tx.run("set_memory_sources", {"id": memory_id, "sources": d.json(sources), "now": d.time(now)})
        tx.many("insert_memory_source", [{"memory_id": memory_id, "event_id": e} for e in event_ids])

    def _mark_episode(self, tx: Tx, org_id: str, episode_id: str, event_ids: list[str]) -> None:
        d = self.dialect
        ids = d.array(event_ids)
        tx.run("mark_events_episode", {"episode_id": episode_id, "ids": ids})
        # The facts' details are edited here rather than in SQL, so that their keys keep their order.
        updates = [{"id": fact["id"], "details": d.json(with_episode(codec.json_value(fact["details"]), episode_id))}
                   for fact in tx.all("facts_citing_events", {"org_id": org_id, "ids": ids})]
        tx.many("set_memory_details", updates)

    # ------------------------------------------------------------------ idle conversations
    def enqueue_idle_episodes(self, idle_before: datetime, now: datetime) -> int:
        """Create an episode job for every conversation whose newest un-summarised turn is older
        than `idle_before` and which has no unfinished job, nor an episode job that failed since
        that turn. One sweeper at a time: a process that finds the sweep taken skips its turn."""
        d = self.dialect
        created = 0
        with d.transaction() as tx:
            if not d.try_lock(tx, "idle sweep"):
                return 0
            rows = tx.all("idle_conversations", {"idle_before": d.time(idle_before)})
            rows.sort(key=lambda r: conversation_lock(r["org_id"], r["user_id"], r["conv_id"]))
            for row in rows:
                d.lock(tx, conversation_lock(row["org_id"], row["user_id"], row["conv_id"]))
                if tx.one("conversation_busy", {"org_id": row["org_id"], "user_id": row["user_id"],
                                                "conv_id": row["conv_id"], "since": row["last_turn"]}):
                    continue
                tx.run("insert_job", {"id": "job_" + secrets.token_hex(16), "org_id": row["org_id"],
                                      "user_id": row["user_id"], "conv_id": row["conv_id"], "kind": "episode",
                                      "params": d.json({}), "available_at": d.time(now), "created_at": d.time(now),
                                      "updated_at": d.time(now)})
                created += 1
            if created:
                d.notify(tx, WORK_READY, "")
        return created

    def enqueue_replay(self, org_id: str, user_id: str, conv_id: str, at: datetime) -> Job:
        """See Store.enqueue_replay."""
        d = self.dialect
        job = Job(id="job_" + secrets.token_hex(16), org_id=org_id, user_id=user_id, conv_id=conv_id,
                  status="pending", created_at=at, updated_at=at, kind="replay")  # type: ignore[arg-type]
        with d.transaction() as tx:
            d.lock(tx, conversation_lock(org_id, user_id, conv_id))  # `seq` order is commit order
            tx.run("insert_job", {"id": job.id, "org_id": org_id, "user_id": user_id, "conv_id": conv_id,
                                  "kind": job.kind, "params": d.json({}), "available_at": d.time(at),
                                  "created_at": d.time(at), "updated_at": d.time(at)})
            d.notify(tx, WORK_READY, "")
        return job

    # ------------------------------------------------------------------ pipeline reads
    def unepisoded_events(self, org_id: str, user_id: str, conv_id: str) -> list[Event]:
        return [codec.event(r) for r in self._all("unepisoded_events", org_id=org_id, user_id=user_id,
                                                  conv_id=conv_id)]

    def reconcile_candidates(self, org_id: str, user_id: str, keys: Sequence[str],
                             text_hashes: Sequence[str]) -> list[Memory]:
        d = self.dialect
        return [codec.memory(r) for r in self._all("reconcile_candidates", org_id=org_id, user_id=user_id,
                                                   keys=d.array(list(keys)), text_hashes=d.array(list(text_hashes)))]

    def memories_citing(self, org_id: str, event_ids: Sequence[str], *, any_status: bool = False) -> list[Memory]:
        return [codec.memory(r) for r in self._all("memories_citing", org_id=org_id, any_status=any_status,
                                                   event_ids=self.dialect.array(list(event_ids)))]

    # ------------------------------------------------------------------ memories
    def get_memory(self, org_id: str, memory_id: str) -> Memory | None:
        row = self._one("memory_by_id", org_id=org_id, id=memory_id)
        return codec.memory(row) if row else None

    def get_memories(self, org_id: str, memory_ids: Sequence[str]) -> dict[str, Memory]:
        rows = self._all("memories_by_id", org_id=org_id, ids=self.dialect.array(list(memory_ids)))
        return {r["id"]: codec.memory(r) for r in rows}

    def delete_memory(self, org_id: str, memory_id: str, at: datetime) -> bool:
        """Remove a memory outright, with its vectors, lexical entries, sources and group tags
        (docs/design.md, "Deleting a memory"); an artifact goes with all its versions (every row
        of its `root_id`). A revision chain through a deleted fact stops where it was. False when
        there is no such memory (any more)."""
        owner = self._one("memory_owner", org_id=org_id, id=memory_id)
        if owner is None:
            return False
        d = self.dialect
        try:
            with d.transaction() as tx:
                self._move_version(tx, org_id, owner["user_id"], bump=True)  # before the memory row: lock order
                row = tx.one("memory_to_delete", {"org_id": org_id, "id": memory_id})
                if row is None:
                    raise _Unchanged()  # rolls the move back
                ids = [memory_id]
                if row["type"] == "artifact" and row["root_id"]:
                    ids += [r["id"] for r in tx.all("other_versions", {"org_id": org_id, "id": memory_id,
                                                                       "root_id": row["root_id"]})]
                self._remove_memories(tx, org_id, ids)
                return True
        except _Unchanged:
            return False

    def supersede_memory(self, org_id: str, old_id: str, new: NewMemory, at: datetime) -> bool:
        """See Store.supersede_memory (a text PATCH)."""
        owner = self._one("memory_owner", org_id=org_id, id=old_id)
        if owner is None:
            return False
        d = self.dialect
        encoded = d.encode_memories([new])
        try:
            with d.transaction() as tx:
                self._move_version(tx, org_id, owner["user_id"], bump=True)  # before the memory row: lock order
                if tx.one("active_fact", {"org_id": org_id, "id": old_id}) is None:
                    raise _Unchanged()  # rolls the move back
                d.insert_memories(tx, encoded)
                self._insert_sources(tx, [new])
                tx.run("copy_memory_tags", {"org_id": org_id, "old_id": old_id, "new_id": new.memory.id})
                tx.run("supersede_active", {"id": old_id, "org_id": org_id, "now": d.time(at)})
                return True
        except _Unchanged:
            return False

    def merge_memory_metadata(self, org_id: str, memory_id: str, metadata: Mapping[str, Any],
                              at: datetime) -> Memory | None:
        d = self.dialect
        with d.transaction() as tx:
            row = tx.one("live_memory_metadata", {"org_id": org_id, "id": memory_id})
            if row is None:
                return None
            merged = {**codec.json_value(row["metadata"]), **metadata}  # merged here: key order kept
            updated = tx.one("set_memory_metadata", {"id": memory_id, "metadata": d.json(merged), "at": d.time(at)})
            return codec.memory(updated) if updated else None

    def memory_revisions(self, org_id: str, memory_id: str) -> list[Memory]:
        """The `details.supersedes` chain through the memory, oldest first."""
        first = self.get_memory(org_id, memory_id)
        if first is None:
            return []
        chain, seen = [first], {memory_id}
        while (back := supersedes(chain[0])) and back not in seen:  # older revisions
            older = self.get_memory(org_id, back)
            if older is None:
                break
            seen.add(back)
            chain.insert(0, older)
        while True:  # newer revisions
            row = self._one("successor_of", org_id=org_id, id=chain[-1].id)
            if row is None or row["id"] in seen:
                break
            seen.add(row["id"])
            chain.append(codec.memory(row))
        return chain

    def list_memories(self, org_id: str, where: Node, *, ascending: bool,
                      after: tuple[str, str] | None, limit: int) -> Page:
        d = self.dialect
        params = d.params(org_id=org_id, limit=limit + 1)
        condition = d.compile_filter(where, params)
        after_sql = ""
        if after is not None:
            after_sql = d.queries.get("list_after", cmp=">" if ascending else "<")
            params.update(after_created_at=d.time(codec.time_value(after[0])), after_id=after[1])
        sql = d.queries.get("list_memories", where=condition, after=after_sql,
                            direction="ASC" if ascending else "DESC")
        with d.reader() as tx:
            rows = tx.sql(sql, params)
        return Page(items=[codec.memory(r) for r in rows[:limit]], has_more=len(rows) > limit)

    # ------------------------------------------------------------------ search (the dialect's index)
    def search_scope(self, org_id: str, where: Node) -> SearchScope:
        self.forget_if_erased()
        return self.dialect.index.scope(org_id, where)

    def turn_context(self, org_id: str, memory_ids: Sequence[str]) -> dict[str, TurnContext]:
        """See Store.turn_context: one statement, whatever the number of ids."""
        if not memory_ids:
            return {}
        asked = list(dict.fromkeys(memory_ids))
        rows = self._all("turn_context", org_id=org_id, ids=self.dialect.array(asked))
        found: dict[str, Any] = {}
        previous: dict[str, set[str]] = {}  # memory -> the turns just before its turns
        citing: dict[str, set[str]] = {}  # turn -> the asked memories citing it
        for r in rows:
            found.setdefault(r["id"], r)
            if r["event_id"] is not None:
                citing.setdefault(r["event_id"], set()).add(r["id"])
                if r["previous_id"] is not None:
                    previous.setdefault(r["id"], set()).add(r["previous_id"])
        before = {i: frozenset(n for e in previous.get(i, ()) for n in citing.get(e, ()) if n != i) for i in found}
        after: dict[str, set[str]] = {i: set() for i in found}
        for i, earlier in before.items():
            for b in earlier:
                after[b].add(i)  # "just after" is "just before" read the other way
        return {i: TurnContext(r["type"], r["source_role"], before[i], frozenset(after[i]),
                               fact_type=r["fact_type"], user_id=r["user_id"], text=r["text"],
                               said_at=codec.time_value(r["said_at"]))
                for i, r in found.items()}

    def dense_candidates(self, org_id: str, where: Node, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        self.forget_if_erased()
        return self.dialect.index.dense_candidates(org_id, where, query, k)

    def lexical_candidates(self, org_id: str, where: Node, query: str, k: int) -> list[tuple[str, float]]:
        self.forget_if_erased()
        return self.dialect.index.lexical_candidates(org_id, where, query, k)

    def document_frequencies(self, org_id: str, where: Node, terms: Sequence[str]) -> tuple[int, dict[str, int]]:
        self.forget_if_erased()
        return self.dialect.index.document_frequencies(org_id, where, terms)

    # ------------------------------------------------------------------ usage counters
    def record_usage(self, org_id: str, at: datetime, counts: Mapping[str, int]) -> None:
        if not any(counts.values()):
            return
        with self.dialect.transaction() as tx:
            self._add_usage(tx, org_id, at, counts)

    def _add_usage(self, tx: Tx, org_id: str, at: datetime, counts: Mapping[str, int]) -> None:
        day = self.dialect.day(at)
        tx.many("add_usage", [{"org_id": org_id, "day": day, "name": name, "value": int(value)}
                              for name, value in sorted(counts.items()) if value])

    def usage_days(self, org_id: str, since: datetime, until: datetime) -> list[tuple[date, str, int]]:
        """The org's counters per UTC day from `since`'s day to `until`'s, as (day, name, value)."""
        rows = self._all("usage_days", org_id=org_id, since=self.dialect.day(since), until=self.dialect.day(until))
        return [(_as_date(r["day"]), r["name"], int(r["value"])) for r in rows]

    def memory_counts(self, org_id: str) -> dict[tuple[str, str], int]:
        """The org's memories now, by (type, status)."""
        return {(r["type"], r["status"]): int(r["n"]) for r in self._all("memory_counts", org_id=org_id)}

    def usage_totals(self, org_id: str, since: datetime | None = None) -> dict[str, int]:
        since_day = self.dialect.day(since or datetime(1, 1, 1, tzinfo=timezone.utc))
        return {r["name"]: int(r["total"]) for r in self._all("usage_totals", org_id=org_id, since=since_day)}


def _as_date(value: Any) -> date:
    """A usage day as stored: text `YYYY-MM-DD` on SQLite, a `date` on PostgreSQL."""
    return value if isinstance(value, date) else date.fromisoformat(value)
