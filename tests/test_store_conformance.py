"""One conformance suite for the store protocol, run on every backend (SQLite and PostgreSQL).

Every test here takes the `store` fixture, so it runs once per backend: a behaviour the
service relies on cannot exist in one backend only. The PostgreSQL runs use a real server
(tests/postgres_server.py). The last test feeds random filters to both backends at once and
requires the same answers.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import numpy as np
import psycopg
import pytest

from engram.domain.filters import MATCH_ALL, Cmp, conjoin, parse_filter
from engram.domain.records import Event, Job, JobError, Memory, iso, utcnow
from engram.errors import ServiceError
from engram.ids import new_event_id, new_job_id, new_memory_id
from engram.store.base import (
    JOB_ENDED, WITHHELD_CONTENT, WORK_READY, Idempotency, IdempotencyConflict, JobOutcome, NewJob, NewMemory,
)
from engram.store.postgres import PostgresStore
from engram.store.sqlite import SQLiteStore

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
ORG = "org-a"
OTHER = "org-b"
DIM = 384


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def pg_conformance_url(postgres: Any) -> Iterator[str]:
    url = postgres.create_database("engram_conformance")
    store = PostgresStore(url, pool_size=2)
    store.migrate()
    store.close()
    yield url
    postgres.drop_database(url)


def _empty_postgres(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'engram_migrations'")]
        conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY")


def _open(backend: str, request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    if backend.startswith("sqlite"):
        store = SQLiteStore(tmp_path / "engram.db", synchronous="OFF")
        if backend == "sqlite-fts":  # every scope through the FTS5 index, however small
            store.scoped_lexical_limit = -1
        store.migrate()
        return store
    url = request.getfixturevalue("pg_conformance_url")
    _empty_postgres(url)
    return PostgresStore(url, pool_size=6)


# "sqlite-fts": lexical search and term statistics of small scopes are computed in process
# (store/sqlite_lexicon.py); this runs the suite again with every scope going through FTS5.
@pytest.fixture(params=["sqlite", "sqlite-fts", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    s = _open(request.param, request, tmp_path)
    for org in (ORG, OTHER):
        s.ensure_org(org)
    yield s
    s.close()


# ---------------------------------------------------------------------- builders
def new_job(org: str, user: str, conv: str, texts: list[str], *, at: datetime = T0, metadata: dict | None = None,
            client_ids: list[str | None] | None = None, hashes: list[str | None] | None = None) -> NewJob:
    job = Job(id=new_job_id(), org_id=org, user_id=user, conv_id=conv, status="pending", created_at=at,
              updated_at=at, params={"agent_id": None, "extract_artifacts": False})
    events = [Event(id=new_event_id(), org_id=org, user_id=user, conv_id=conv, role="user", kind="user_message",
                    content=text, occurred_at=at - timedelta(days=1), received_at=at, name="Ann", dia_id=f"D{i}",
                    metadata=dict(metadata or {"z": 1, "a": "two"}),
                    client_event_id=(client_ids or [None] * len(texts))[i],
                    dedup_hash=(hashes or [None] * len(texts))[i])
              for i, text in enumerate(texts)]
    return NewJob(job, events)


def accept(store: Any, org: str = ORG, user: str = "u1", conv: str = "c1", texts: list[str] | None = None,
           **kw: Any) -> tuple[str, list[str]]:
    result = store.accept(org, [new_job(org, user, conv, texts or ["hello"], **kw)], dedup_since=None)
    return result.job_ids[0], result.event_ids


def unit(seed: int | str) -> np.ndarray:
    rng = np.random.default_rng(abs(hash(str(seed))) % 2**32 if isinstance(seed, str) else seed)
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def toward(base: np.ndarray, other: np.ndarray, w: float) -> np.ndarray:
    v = (1 - w) * base + w * other
    return (v / np.linalg.norm(v)).astype(np.float32)


def memory(org: str, user: str | None, text: str, *, type_: str = "fact", conv: str = "c1",
           metadata: dict | None = None, created_at: datetime | None = None, agent_id: str | None = None,
           sources: list[str] | None = None, key: str | None = None, details: dict | None = None,
           valid_at: datetime | None = None) -> Memory:
    at = created_at or utcnow()
    return Memory(id=new_memory_id(), org_id=org, type=type_, text=text, user_id=user, conv_id=conv, agent_id=agent_id,
                  created_at=at, updated_at=at, metadata=metadata or {}, categories=["c"],
                  details=details or {"fact_type": "fact", "supersedes": None, "episode_id": None},
                  source_event_ids=sources or [], key=key, valid_at=valid_at)


def run_job(store: Any, org: str, user: str, conv: str, memories: list[tuple[Memory, np.ndarray]] = (),
            **outcome: Any) -> tuple[str, list[str]]:
    """Accept a job, lease it and complete it with these memories (the pipeline's write path)."""
    job_id, event_ids = accept(store, org, user, conv, texts=["turn"])
    lease = store.lease("w", utcnow(), 30, 5)
    assert lease is not None and lease.job.id == job_id
    for m, _ in memories:
        if not m.source_event_ids:
            m.source_event_ids = list(event_ids)
    assert store.complete(lease, JobOutcome(created=[NewMemory(m, v) for m, v in memories],
                                            result={"object": "ingest_result", "stage_timings": {}}, **outcome))
    return job_id, event_ids


def ids(pairs: list[tuple[str, float]]) -> list[str]:
    return [p[0] for p in pairs]


# ---------------------------------------------------------------------- accept, events, jobs
def test_accept_writes_events_and_job_that_round_trip(store: Any) -> None:
    nj = new_job(ORG, "u1", "c1", ["one", "two", "three"], metadata={"zeta": 1, "alpha": [1, "x"], "mid": None})
    result = store.accept(ORG, [nj], dedup_since=None)
    assert result.event_ids == [e.id for e in nj.events] and result.job_ids == [nj.job.id]
    job = store.get_job(ORG, nj.job.id)
    assert (job.status, job.attempts, job.user_id, job.conv_id, job.kind) == ("pending", 0, "u1", "c1", "ingest")
    assert job.created_at == T0 and job.params == nj.job.params and job.result is None and job.error is None
    got = store.get_events(ORG, list(reversed(result.event_ids)))
    assert [e.id for e in got] == list(reversed(result.event_ids)), "in the order asked for"
    for mine, stored in zip(nj.events, reversed(got)):
        assert stored.content == mine.content and stored.occurred_at == mine.occurred_at
        assert stored.received_at == T0 and stored.name == "Ann" and stored.dia_id == mine.dia_id
        assert stored.metadata == {"zeta": 1, "alpha": [1, "x"], "mid": None}
        assert list(stored.metadata) == ["zeta", "alpha", "mid"], "metadata keeps its key order"
        assert stored.status == "pending" and stored.job_id == nj.job.id
    assert store.event_statuses(ORG, result.event_ids + ["nope"]) == {i: ("pending", None) for i in result.event_ids}
    assert store.get_job(OTHER, nj.job.id) is None and store.get_events(OTHER, result.event_ids) == []


def test_dedup_window_client_ids_and_duplicates_inside_one_batch(store: Any) -> None:
    first = new_job(ORG, "u1", "c1", ["a", "b"], hashes=["h-a", "h-b"], client_ids=["cid-1", None])
    r1 = store.accept(ORG, [first], dedup_since=T0 - timedelta(seconds=60))
    # Same hash inside the window, same client id forever, and a duplicate within the batch.
    again = new_job(ORG, "u1", "c1", ["a", "c", "c2", "c2"], at=T0 + timedelta(seconds=5),
                    hashes=["h-a", None, "h-c", "h-c"], client_ids=[None, "cid-1", None, None])
    r2 = store.accept(ORG, [again], dedup_since=T0 + timedelta(seconds=5) - timedelta(seconds=60))
    assert r2.event_ids[:2] == [r1.event_ids[0], r1.event_ids[0]]
    assert r2.event_ids[2] == again.events[2].id and r2.event_ids[3] == again.events[2].id
    assert r2.job_ids == [again.job.id]
    # All duplicates: no job. Outside the window: new events.
    dup = new_job(ORG, "u1", "c1", ["b"], at=T0 + timedelta(seconds=6), hashes=["h-b"])
    assert store.accept(ORG, [dup], dedup_since=T0 - timedelta(seconds=54)).job_ids == []
    late = new_job(ORG, "u1", "c1", ["b"], at=T0 + timedelta(seconds=120), hashes=["h-b"])
    r4 = store.accept(ORG, [late], dedup_since=T0 + timedelta(seconds=60))
    assert r4.event_ids == [late.events[0].id] and r4.job_ids == [late.job.id]
    # Dedup never crosses orgs.
    other = new_job(OTHER, "u1", "c1", ["a"], hashes=["h-a"], client_ids=["cid-1"])
    assert store.accept(OTHER, [other], dedup_since=T0 - timedelta(seconds=60)).event_ids == [other.events[0].id]


def test_idempotency_keys(store: Any) -> None:
    def key(body: str = "body-hash", at: datetime = T0) -> Idempotency:
        return Idempotency("key-1", body, at, at - timedelta(hours=24))

    nj = new_job(ORG, "u1", "c1", ["x"])
    first = store.accept(ORG, [nj], dedup_since=None, idempotency=key())
    assert first.job_ids == [nj.job.id] and first.replay_of is None
    # The same key and body again: the first job, and nothing written.
    again = new_job(ORG, "u1", "c1", ["x"])
    replay = store.accept(ORG, [again], dedup_since=None, idempotency=key(at=T0 + timedelta(hours=1)))
    assert replay.replay_of == nj.job.id and replay.job_ids == [] and store.get_job(ORG, again.job.id) is None
    # Another body: refused, nothing written.
    other_body = new_job(ORG, "u1", "c1", ["y"])
    with pytest.raises(IdempotencyConflict) as conflict:
        store.accept(ORG, [other_body], dedup_since=None, idempotency=key("other-hash", T0 + timedelta(hours=1)))
    assert conflict.value.job_id == nj.job.id and store.get_job(ORG, other_body.job.id) is None
    # Past its time to live the key is new again; keys never cross orgs.
    late = new_job(ORG, "u1", "c1", ["z"])
    assert store.accept(ORG, [late], dedup_since=None,
                        idempotency=key("other-hash", T0 + timedelta(hours=25))).job_ids == [late.job.id]
    elsewhere = new_job(OTHER, "u1", "c1", ["x"])
    assert store.accept(OTHER, [elsewhere], dedup_since=None, idempotency=key()).job_ids == [elsewhere.job.id]


# ---------------------------------------------------------------------- the queue
def test_lease_takes_the_oldest_ready_job_and_keeps_conversation_order(store: Any) -> None:
    a1, ev_a1 = accept(store, conv="a", texts=["a1 first", "a1 second"])
    a2, _ = accept(store, conv="a", texts=["a2"])
    b1, _ = accept(store, conv="b", texts=["b1"])
    now = utcnow()
    first = store.lease("w1", now, 30, 5)
    assert first.job.id == a1 and first.job.status == "running" and first.job.attempts == 1
    assert [e.id for e in first.events] == ev_a1 and [e.content for e in first.events] == ["a1 first", "a1 second"]
    second = store.lease("w2", now, 30, 5)
    assert second.job.id == b1, "a2 waits for a1: same conversation"
    assert store.lease("w3", now, 30, 5) is None
    assert store.queue_depth() == {"pending": 1, "running": 2}
    # A retried job still blocks its conversation's later jobs.
    assert store.retry_later(first, JobError("ingest_failed", "flaky"), now + timedelta(seconds=60))
    assert store.lease("w3", now, 30, 5) is None
    again = store.lease("w3", now + timedelta(seconds=61), 30, 5)
    assert again.job.id == a1 and again.job.attempts == 2 and again.job.error.message == "flaky"
    assert store.complete(again, JobOutcome(result={"ok": 1}))
    third = store.lease("w1", now + timedelta(seconds=61), 30, 5)
    assert third.job.id == a2
    assert store.get_job(ORG, a1).status == "succeeded" and store.get_job(ORG, a1).result == {"ok": 1}
    assert store.event_statuses(ORG, ev_a1) == {e: ("completed", None) for e in ev_a1}


def test_a_batch_lease_takes_one_ready_job_per_conversation_in_arrival_order(store: Any) -> None:
    a1, _ = accept(store, conv="a", texts=["a1"])
    a2, _ = accept(store, conv="a", texts=["a2"])
    b1, _ = accept(store, conv="b", texts=["b1"])
    c1, ev_c1 = accept(store, user="u2", conv="c", texts=["c1 first", "c1 second"])
    d1, _ = accept(store, conv="d", texts=["d1"])
    now = utcnow()
    batch = store.lease_many("w1", now, 30, 5, 3)
    assert [l.job.id for l in batch] == [a1, b1, c1], "a2 waits for a1; the limit stops at three"
    assert [e.id for e in batch[2].events] == ev_c1 and len({l.token for l in batch}) == 3
    assert all(store.get_job(ORG, l.job.id).status == "running" for l in batch)
    assert [l.job.id for l in store.lease_many("w2", now, 30, 5, 10)] == [d1], "what another worker finds"
    assert store.lease_many("w3", now, 30, 5, 10) == []
    later = now + timedelta(seconds=20)
    assert store.renew_many(batch + [batch[0]], later + timedelta(seconds=30)) == [True, True, True, True]
    taken_back = store.lease_many("w3", later + timedelta(seconds=15), 30, 5, 10)
    assert [l.job.id for l in taken_back] == [d1], "the batch's three renewed; w2's lease (not renewed) expired"
    assert store.retry_later(batch[1], JobError("ingest_failed", "flaky"), later)
    assert store.renew_many(batch, later) == [True, False, True], "a retried job's lease is over"


def test_a_batch_commit_keeps_each_jobs_writes_to_itself(store: Any) -> None:
    """Three jobs committed in one transaction: the stale one and the lost one write nothing,
    the others land whole, and the answers come back in the order given."""
    from engram.store.base import CommitResult

    fact = memory(ORG, "u2", "Bob keeps bees")
    run_job(store, ORG, "u2", "c0", [(fact, unit(1))])
    basis = store.user_version(ORG, "u2")
    jobs = {name: accept(store, user=user, conv=name, texts=[f"turn of {name}"])
            for name, user in (("ok", "u3"), ("stale", "u2"), ("lost", "u1"), ("also", "u1"))}
    leases = {l.job.conv_id: l for l in store.lease_many("w", utcnow(), 30, 5, 10)}
    assert set(leases) == set(jobs)
    made = {name: memory(ORG, leases[name].job.user_id, f"fact of {name}", sources=jobs[name][1]) for name in jobs}

    def outcome(name: str, **kw: Any) -> JobOutcome:
        return JobOutcome(created=[NewMemory(made[name], unit(name))], result={"object": "ingest_result"}, **kw)

    assert store.supersede_memory(ORG, fact.id, NewMemory(memory(ORG, "u2", "Bob sells honey"), unit(2)), utcnow())
    assert store.retry_later(leases["lost"], JobError("ingest_failed", "taken back"), utcnow())
    results = store.complete_many([(leases["ok"], outcome("ok")), (leases["stale"], outcome("stale", basis=basis)),
                                   (leases["lost"], outcome("lost")), (leases["also"], outcome("also"))])
    assert results == [CommitResult.COMMITTED, CommitResult.STALE, CommitResult.LOST, CommitResult.COMMITTED]
    for name in ("ok", "also"):
        assert store.get_memory(ORG, made[name].id).status == "active"
        assert store.get_job(ORG, jobs[name][0]).status == "succeeded"
        assert store.event_statuses(ORG, jobs[name][1]) == {jobs[name][1][0]: ("completed", None)}
    for name, status in (("stale", "running"), ("lost", "pending")):
        assert store.get_memory(ORG, made[name].id) is None, f"{name}: nothing written"
        assert store.get_job(ORG, jobs[name][0]).status == status
        assert store.event_statuses(ORG, jobs[name][1]) == {jobs[name][1][0]: ("pending", None)}
    assert store.user_version(ORG, "u2") == basis + 1, "only the PATCH moved it: the stale job's move rolled back"


def test_expired_lease_is_taken_back_and_the_old_token_is_dead(store: Any) -> None:
    job_id, event_ids = accept(store)
    now = utcnow()
    old = store.lease("dead-worker", now, 10, 5)
    assert store.lease("w2", now + timedelta(seconds=5), 10, 5) is None, "lease still valid"
    assert store.renew(old, now + timedelta(seconds=20))
    assert store.lease("w2", now + timedelta(seconds=15), 10, 5) is None, "renewed"
    new = store.lease("w2", now + timedelta(seconds=21), 10, 5)
    assert new.job.id == job_id and new.job.attempts == 2 and new.token != old.token
    m = memory(ORG, "u1", "never written")
    assert not store.renew(old, now + timedelta(seconds=60))
    assert not store.complete(old, JobOutcome(created=[NewMemory(m, unit(1))], result={"late": True}))
    assert not store.retry_later(old, JobError("ingest_failed", "x"), now)
    assert not store.fail(old, JobError("ingest_failed", "x"))
    assert store.get_memory(ORG, m.id) is None and store.get_job(ORG, job_id).status == "running"
    assert store.complete(new, JobOutcome(result={"winner": "w2"}))
    assert store.get_job(ORG, job_id).result == {"winner": "w2"}
    assert not store.complete(new, JobOutcome(result={"twice": True})), "a job ends exactly once"
    assert store.event_statuses(ORG, event_ids) == {event_ids[0]: ("completed", None)}


def test_fail_and_jobs_abandoned_too_often(store: Any) -> None:
    failing, failing_events = accept(store, conv="f")
    lease = store.lease("w", utcnow(), 30, 5)
    assert store.fail(lease, JobError("rate_limit_exceeded", "quota"))
    job = store.get_job(ORG, failing)
    assert job.status == "failed" and (job.error.code, job.error.message) == ("rate_limit_exceeded", "quota")
    assert store.event_statuses(ORG, failing_events) == {failing_events[0]: ("failed", "rate_limit_exceeded")}

    doomed, doomed_events = accept(store, conv="d")
    after, _ = accept(store, conv="d")
    now = utcnow()
    for attempt in range(2):  # two workers die holding it
        assert store.lease("w", now + timedelta(seconds=100 * attempt), 10, 2).job.id == doomed
    nxt = store.lease("w", now + timedelta(seconds=500), 10, 2)
    assert nxt.job.id == after, "the doomed job failed and unblocked its conversation"
    job = store.get_job(ORG, doomed)
    assert job.status == "failed" and job.error.code == "ingest_failed"
    assert store.event_statuses(ORG, doomed_events)[doomed_events[0]] == ("failed", "ingest_failed")


def test_recover_abandoned_leases(store: Any) -> None:
    job_id, _ = accept(store)
    store.lease("w", utcnow(), 300, 5)
    assert store.recover_abandoned_leases() == 1
    assert store.get_job(ORG, job_id).status == "pending"
    assert store.lease("w", utcnow(), 300, 5).job.id == job_id


def test_complete_writes_everything_together(store: Any) -> None:
    job_id, event_ids = accept(store, texts=["keep", "reject"])
    lease = store.lease("w", utcnow(), 30, 5)
    fact = memory(ORG, "u1", "Ann keeps bees", sources=[event_ids[0]], metadata={"b": 2, "a": 1})
    outcome = JobOutcome(created=[NewMemory(fact, unit(1))], event_failures={event_ids[1]: "content_rejected"},
                         result={"object": "ingest_result", "memories_created": [{"id": fact.id}],
                                 "stage_timings": {"extract": 0.1}})
    assert store.complete(lease, outcome)
    job = store.get_job(ORG, job_id)
    assert job.status == "succeeded" and job.result["memories_created"] == [{"id": fact.id}]
    assert "commit" in job.result["stage_timings"]
    assert store.event_statuses(ORG, event_ids) == {event_ids[0]: ("completed", None),
                                                   event_ids[1]: ("failed", "content_rejected")}
    got = store.get_memory(ORG, fact.id)
    assert got.text == fact.text and got.created_at == fact.created_at and got.source_event_ids == [event_ids[0]]
    assert list(got.metadata) == ["b", "a"] and got.details == fact.details and got.categories == ["c"]
    everyone = conjoin(Cmp("status", "eq", "active"))
    assert ids(store.dense_candidates(ORG, everyone, unit(1), 5)) == [fact.id]
    assert ids(store.lexical_candidates(ORG, everyone, "bees", 5)) == [fact.id]
    # A job that failed as a whole (every event rejected) commits its error and no memory.
    job2, events2 = accept(store, texts=["secret"])
    lease2 = store.lease("w", utcnow(), 30, 5)
    assert store.complete(lease2, JobOutcome(event_failures={events2[0]: "content_rejected"},
                                             error=JobError("content_rejected", "all rejected")))
    assert store.get_job(ORG, job2).status == "failed" and store.get_job(ORG, job2).error.code == "content_rejected"
    assert store.event_statuses(ORG, events2) == {events2[0]: ("failed", "content_rejected")}
    # A rejected event does not keep the secret it carried; the kept one is untouched.
    kept, withheld, whole = store.get_events(ORG, [event_ids[0], event_ids[1], events2[0]])
    assert kept.content == "keep"
    for event in (withheld, whole):
        assert event.content == WITHHELD_CONTENT and event.name is None and event.metadata == {}
        assert event.status == "failed" and event.fail_reason == "content_rejected"


def test_concurrent_workers_never_share_a_job_and_keep_conversation_order(store: Any) -> None:
    convs, per_conv = 5, 8
    accepted: dict[str, list[str]] = {}
    for n in range(per_conv):
        for c in range(convs):
            job_id, _ = accept(store, user=f"u{c % 2}", conv=f"conv-{c}", texts=[f"turn {n}"])
            accepted.setdefault(f"conv-{c}", []).append(job_id)
    finished: list[tuple[str, str]] = []
    running: dict[str, str] = {}
    problems: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 3.0:
            lease = store.lease(name, utcnow(), 60, 5)
            if lease is None:
                time.sleep(0.005)
                continue
            idle_since = time.monotonic()
            conv = lease.job.conv_id
            with lock:
                if conv in running:
                    problems.append(f"{lease.job.id} leased while {running[conv]} of {conv} runs")
                running[conv] = lease.job.id
            time.sleep(0.002)
            with lock:
                del running[conv]
                finished.append((conv, lease.job.id))
            assert store.complete(lease, JobOutcome(result={"by": name}))

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not problems
    assert sorted(j for _, j in finished) == sorted(j for js in accepted.values() for j in js), "each job once"
    for conv, jobs in accepted.items():
        assert [j for c, j in finished if c == conv] == jobs, f"{conv} ran in arrival order"


# ---------------------------------------------------------------------- memories
def test_list_memories_orders_and_pages_identically(store: Any) -> None:
    same = T0 + timedelta(seconds=1)
    made = [memory(ORG, "u1", f"fact {i}", created_at=same if i in (2, 3, 4) else T0 + timedelta(seconds=i))
            for i in range(7)]
    run_job(store, ORG, "u1", "c1", [(m, unit(i)) for i, m in enumerate(made)])
    expected = sorted(made, key=lambda m: (m.created_at, m.id))
    for ascending in (True, False):
        want = [m.id for m in (expected if ascending else list(reversed(expected)))]
        got, after = [], None
        while True:
            page = store.list_memories(ORG, Cmp("user_id", "eq", "u1"), ascending=ascending, after=after, limit=3)
            got += [m.id for m in page.items]
            if not page.has_more:
                break
            last = page.items[-1]
            after = (iso(last.created_at), last.id)
        assert got == want
    one = store.get_memory(ORG, made[3].id)
    assert one.created_at == same and iso(one.created_at) == iso(same) and one.created_at.utcoffset() == timedelta(0)
    assert set(store.get_memories(ORG, [made[0].id, made[1].id, "nope"])) == {made[0].id, made[1].id}


def test_sources_supersession_and_episodes_commit_with_the_job(store: Any) -> None:
    old = memory(ORG, "u1", "Ann lives in Porto", key="ann:lives_in",
                 details={"fact_type": "fact", "supersedes": None, "episode_id": None, "source_event_ids": []})
    twin = memory(ORG, "u1", "Ann likes tea")
    _, first_events = run_job(store, ORG, "u1", "c1", [(old, unit(1)), (twin, unit(2))])
    assert store.reconcile_candidates(ORG, "u1", ["ann:lives_in"], []) == [store.get_memory(ORG, old.id)]
    from engram.domain.text import text_hash
    assert [m.id for m in store.reconcile_candidates(ORG, "u1", [], [text_hash("ANN likes  tea")])] == [twin.id]
    assert store.reconcile_candidates(ORG, "u2", ["ann:lives_in"], []) == []

    new = memory(ORG, "u1", "Ann lives in Lisbon", key="ann:lives_in",
                 details={"fact_type": "fact", "supersedes": old.id, "episode_id": None})
    job_id, events = accept(store, texts=["I moved to Lisbon", "I like tea"])
    lease = store.lease("w", utcnow(), 30, 5)
    new.source_event_ids = [events[0]]
    episode = memory(ORG, "u1", "Ann moved", type_="episode", sources=[*first_events, *events],
                     details={"title": "move", "fact_ids": [old.id, new.id]})
    assert store.complete(lease, JobOutcome(
        created=[NewMemory(new, unit(3)), NewMemory(episode, unit(4))], added_sources={twin.id: [events[1]]},
        superseded={old.id: new.id}, episode_id=episode.id, episode_event_ids=[*first_events, *events],
        result={"object": "ingest_result"}))
    assert store.get_memory(ORG, old.id).status == "superseded"
    assert store.get_memory(ORG, twin.id).source_event_ids == [first_events[0], events[1]]
    assert store.get_memory(ORG, new.id).details["episode_id"] == episode.id
    assert store.get_memory(ORG, twin.id).details["episode_id"] == episode.id
    assert list(store.get_memory(ORG, new.id).details) == ["fact_type", "supersedes", "episode_id"]
    assert store.unepisoded_events(ORG, "u1", "c1") == []
    citing = {m.id for m in store.memories_citing(ORG, [events[1]])}
    assert citing == {twin.id, episode.id}, "active memories citing the event"
    assert store.reconcile_candidates(ORG, "u1", ["ann:lives_in"], [])[0].id == new.id


def test_delete_removes_a_memory_with_its_vectors_lexical_entries_and_tags(store: Any) -> None:
    fact = memory(ORG, "u1", "Ann keeps bees")
    episode = memory(ORG, "u1", "bee keeping chat", type_="episode", details={"title": "bees"})
    run_job(store, ORG, "u1", "c1", [(fact, unit(1)), (episode, unit(2))])
    group = store.create_group(ORG, "hives", None, utcnow(), max_active=10)
    assert store.retag_memory(ORG, fact.id, [group.id], [])
    assert not store.delete_memory(OTHER, fact.id, utcnow()), "another org's id is unknown"
    assert store.delete_memory(ORG, fact.id, utcnow())
    assert store.get_memory(ORG, fact.id) is None
    assert store.group_tags(ORG, [fact.id]) == {}, "its tags went with it"
    assert not store.delete_memory(ORG, fact.id, utcnow()), "a second delete finds nothing"
    assert store.delete_memory(ORG, episode.id, utcnow())
    assert store.get_memory(ORG, episode.id) is None
    for status in ("active", "retracted", "superseded"):
        where = Cmp("status", "eq", status)
        assert store.dense_candidates(ORG, where, unit(1), 5) == store.dense_candidates(ORG, where, unit(2), 5) == []
        assert store.lexical_candidates(ORG, where, "bees bee keeping", 5) == []


def test_tenancy_nothing_crosses_orgs(store: Any) -> None:
    mine = memory(ORG, "u1", "Ann keeps bees")
    theirs = memory(OTHER, "u1", "Bob keeps bees")
    run_job(store, ORG, "u1", "c1", [(mine, unit(1))])
    run_job(store, OTHER, "u1", "c1", [(theirs, unit(1))])
    for org, m in ((ORG, mine), (OTHER, theirs)):
        assert ids(store.dense_candidates(org, Cmp("user_id", "eq", "u1"), unit(1), 5)) == [m.id]
        assert ids(store.dense_candidates(org, MATCH_ALL, unit(1), 5)) == [m.id]
        assert ids(store.lexical_candidates(org, MATCH_ALL, "bees", 5)) == [m.id]
        assert [x.id for x in store.list_memories(org, MATCH_ALL, ascending=True, after=None, limit=10).items] == [m.id]
    assert store.get_memory(ORG, theirs.id) is None and store.get_memories(ORG, [theirs.id]) == {}
    assert store.memories_citing(ORG, theirs.source_event_ids) == []


# ---------------------------------------------------------------------- search candidates
def test_dense_candidates_are_exact_and_filtered(store: Any) -> None:
    q = unit("query")
    near = [(memory(ORG, "u1", f"near {i}", metadata={"rank": i}), toward(unit(100 + i), q, 0.9 - i * 0.1))
            for i in range(6)]
    other_user = [(memory(ORG, "u2", "closest but another user"), toward(unit(7), q, 0.99))]
    run_job(store, ORG, "u1", "c1", near)
    run_job(store, ORG, "u2", "c1", other_user)
    expected = sorted(near, key=lambda mv: -float(mv[1] @ q))
    got = store.dense_candidates(ORG, Cmp("user_id", "eq", "u1"), q, 4)
    assert ids(got) == [m.id for m, _ in expected[:4]]
    for (memory_id, score), (m, v) in zip(got, expected):
        assert abs(score - float(v @ q)) < 1e-4
    filtered = store.dense_candidates(ORG, conjoin(Cmp("user_id", "eq", "u1"), Cmp("rank", "gte", 3)), q, 10)
    assert ids(filtered) == [m.id for m, _ in expected if m.metadata["rank"] >= 3]
    org_wide = store.dense_candidates(ORG, MATCH_ALL, q, 3)
    assert ids(org_wide)[0] == other_user[0][0].id and len(org_wide) == 3
    # Scores of listed memories, whatever their rank org-wide (search asks this for lexical-only hits).
    listed = store.dense_candidates(ORG, Cmp("id", "in", (expected[-1][0].id, other_user[0][0].id)), q, 2)
    assert ids(listed) == [other_user[0][0].id, expected[-1][0].id]
    assert abs(listed[1][1] - float(expected[-1][1] @ q)) < 1e-4


def test_lexical_candidates_stem_rank_and_filter(store: Any) -> None:
    texts = ["Ann walks her dogs by the river every morning", "Ann bought a new kayak",
             "The river kayak trip was long", "Bob walked his dog"]
    made = [memory(ORG, "u1" if i < 3 else "u2", t) for i, t in enumerate(texts)]
    run_job(store, ORG, "u1", "c1", [(m, unit(i)) for i, m in enumerate(made[:3])])
    run_job(store, ORG, "u2", "c1", [(made[3], unit(9))])
    got = store.lexical_candidates(ORG, Cmp("user_id", "eq", "u1"), "walking dog", 10)
    assert ids(got) == [made[0].id] and got[0][1] > 0, "stemmed match, only the user's"
    both = store.lexical_candidates(ORG, Cmp("user_id", "eq", "u1"), "river kayak", 10)
    assert ids(both)[0] == made[2].id and set(ids(both)) == {made[0].id, made[1].id, made[2].id}
    assert all(s > 0 for _, s in both) and [s for _, s in both] == sorted((s for _, s in both), reverse=True)
    assert set(ids(store.lexical_candidates(ORG, MATCH_ALL, "dogs", 10))) == {made[0].id, made[3].id}
    assert store.lexical_candidates(ORG, MATCH_ALL, "?!", 10) == []
    assert store.lexical_candidates(ORG, MATCH_ALL, 'kayak" OR "x', 10)[0][0] in {made[1].id, made[2].id}


def test_document_frequencies_count_within_the_filter(store: Any) -> None:
    if not hasattr(store, "document_frequencies"):
        pytest.skip("this store offers no term statistics (an optional search capability)")
    made = [memory(ORG, "u1", "Ann walks her dogs"), memory(ORG, "u1", "Ann likes green tea"),
            memory(ORG, "u1", "Ann walked home", type_="episode"), memory(ORG, "u2", "Bob walks daily")]
    run_job(store, ORG, "u1", "c1", [(m, unit(i)) for i, m in enumerate(made[:3])])
    run_job(store, ORG, "u2", "c1", [(made[3], unit(9))])
    where = conjoin(Cmp("status", "eq", "active"), Cmp("user_id", "eq", "u1"), Cmp("type", "eq", "fact"))
    total, counts = store.document_frequencies(ORG, where, ["ann", "walking", "zebra", "?!"])
    assert total == 2 and counts == {"ann": 2, "walking": 1, "zebra": 0, "?!": 0}
    assert store.document_frequencies(OTHER, where, ["ann"]) == (0, {"ann": 0})


def test_a_search_scope_answers_as_its_filter_does(store: Any) -> None:
    """A scope resolved once gives what the filter-based calls give, and narrows by event time
    and admits by id within itself."""
    day = timedelta(days=1)
    made = [memory(ORG, "u1", f"Ann walks her dog on day {i}", valid_at=T0 + i * day) for i in range(6)]
    made.append(memory(ORG, "u1", "Ann has no date", valid_at=None))
    made.append(memory(ORG, "u2", "Bob walks his dog", valid_at=T0))
    run_job(store, ORG, "u1", "c1", [(m, unit(i)) for i, m in enumerate(made[:7])])
    run_job(store, ORG, "u2", "c1", [(made[7], unit(9))])
    where = conjoin(Cmp("status", "eq", "active"), Cmp("user_id", "eq", "u1"))
    scope = store.search_scope(ORG, where)
    q = unit(3)
    assert scope.dense(q, 10) == store.dense_candidates(ORG, where, q, 10)
    assert scope.lexical("walks dog", 10) == store.lexical_candidates(ORG, where, "walks dog", 10)
    assert scope.frequencies(["ann", "dog"]) == store.document_frequencies(ORG, where, ["ann", "dog"]) == \
        (7, {"ann": 7, "dog": 6})
    narrowed = scope.narrowed([(T0 + day, T0 + 3 * day), (T0 + 5 * day, T0 + 9 * day)])
    assert {i for i, _ in narrowed.dense(q, 10)} == {made[1].id, made[2].id, made[5].id}
    everyone = [m.id for m in made]
    assert narrowed.admits(everyone) == {made[1].id, made[2].id, made[5].id}
    assert scope.admits(everyone) == {m.id for m in made[:7]}, "Bob is outside u1's scope"
    exact = dict(store.dense_candidates(ORG, where, q, 10))
    assert scope.cosines(q, [made[0].id, made[4].id]) == pytest.approx({made[0].id: exact[made[0].id],
                                                                         made[4].id: exact[made[4].id]})
    assert store.search_scope(OTHER, where).dense(q, 10) == [] and scope.admits([]) == set()


def test_turn_context_names_the_memories_citing_adjacent_turns_of_one_conversation(store: Any) -> None:
    """Store.turn_context: which of the given memories cite the turn just before or after one of
    a memory's own turns, in its conversation's (occurred_at, received_at, id) order — never a
    turn of another conversation, user or org, however close in time."""

    def job(org: str, user: str, conv: str, texts: list[str], at: datetime = T0,
            rejected: tuple[int, ...] = ()) -> tuple[list[str], list[Memory]]:
        _, events = accept(store, org, user, conv, texts=texts, at=at)
        lease = store.lease("w", utcnow(), 30, 5)
        made = [memory(org, user, f"{user} {conv}: {t}", conv=conv, sources=[events[i]],
                       details={"fact_type": "fact", "source_role": "assistant" if t.startswith("bot") else "user"})
                for i, t in enumerate(texts) if i not in rejected]
        assert store.complete(lease, JobOutcome(created=[NewMemory(m, unit(m.text)) for m in made],
                                                event_failures={events[i]: "content_rejected" for i in rejected},
                                                result={"object": "ingest_result"}))
        return events, made

    _, (q1, a1, x1) = job(ORG, "u1", "c1", ["question", "bot answer", "aside"])
    _, (other_conv,) = job(ORG, "u1", "c2", ["meanwhile"])  # between c1's two jobs in time
    _, (other_user,) = job(ORG, "u2", "c1", ["same conversation id"])
    _, (theirs,) = job(OTHER, "u1", "c1", ["other org"])
    _, (late,) = job(ORG, "u1", "c1", ["next job"])
    _, (early,) = job(ORG, "u1", "c1", ["told of an earlier day"], at=T0 - timedelta(days=30))
    _, (p, r) = job(ORG, "u1", "c3", ["before a secret", "secret", "after it"], rejected=(1,))
    episode = memory(ORG, "u1", "a stretch", type_="episode", sources=[*q1.source_event_ids, *a1.source_event_ids])
    run_job(store, ORG, "u1", "c9", [(episode, unit(99))])  # its own job's turn is in another conversation

    asked = [q1, a1, x1, other_conv, other_user, theirs, late, early, p, r, episode]
    got = store.turn_context(ORG, [m.id for m in asked])
    assert theirs.id not in got and set(got) == {m.id for m in asked} - {theirs.id}, "another org's id is unknown"
    near = {m.id: got[m.id].neighbours for m in asked if m.id in got}
    assert near[q1.id] == {a1.id, early.id}, "the earlier day's turn comes first in c1's order"
    assert near[a1.id] == {q1.id, x1.id}
    assert near[x1.id] == {a1.id, late.id}, "c1's next turn, whatever was said elsewhere meanwhile"
    assert near[late.id] == {x1.id} and near[early.id] == {q1.id}
    assert near[other_conv.id] == near[other_user.id] == frozenset()
    assert near[p.id] == near[r.id] == frozenset(), "a withheld turn still stands between its neighbours"
    # the episode cites q1's and a1's turns, a whole stretch: it neither gives nor takes context
    assert near[episode.id] == frozenset()
    assert got[a1.id].before == {q1.id} and got[a1.id].after == {x1.id}
    assert got[q1.id].before == {early.id} and got[late.id].after == frozenset()
    assert got[a1.id].source_role == "assistant" and got[q1.id].source_role == "user"
    assert got[q1.id].type == "fact" and got[episode.id].type == "episode" and got[episode.id].source_role is None
    # what the recency step reads: the fact's type, user, text and when it was said
    assert (got[q1.id].fact_type, got[q1.id].user_id, got[q1.id].text) == ("fact", "u1", q1.text)
    assert got[q1.id].said_at == (q1.valid_at or q1.created_at) and got[q1.id].said_at.tzinfo is not None
    assert got[other_user.id].user_id == "u2"
    # only the memories asked about are neighbours
    assert store.turn_context(ORG, [q1.id, x1.id])[q1.id].neighbours == frozenset()
    assert store.turn_context(ORG, []) == {}


# ---------------------------------------------------------------------- the filter DSL
def _filter_data(store: Any) -> dict[str, Memory]:
    rows = {
        "m1": dict(user="u1", agent="a1", type_="fact", meta={"n": 1, "s": "abc", "d": "2024-05-01T10:00:00Z", "b": True}),
        "m2": dict(user="u1", agent=None, type_="fact", meta={"n": 2.5, "s": "abd", "d": "2024-06-01", "b": False}),
        "m3": dict(user="u2", agent="a2", type_="artifact", meta={"n": "1", "s": 5, "d": "not a date"}),
        "m4": dict(user="u2", agent=None, type_="fact", meta={"n": None, "x": [1, 2]}),
        "m5": dict(user="u3", agent="a1", type_="episode", meta={}),
    }
    made = {}
    for i, (name, r) in enumerate(rows.items()):
        made[name] = memory(ORG, r["user"], f"memory {name}", type_=r["type_"], metadata=r["meta"], agent_id=r["agent"],
                            created_at=T0 + timedelta(seconds=i), valid_at=T0 + timedelta(days=i) if i % 2 else None)
    run_job(store, ORG, "u1", "c1", [(m, unit(i)) for i, m in enumerate(made.values())])
    return made


FILTER_CASES = [
    ({"n": 1}, {"m1"}),
    ({"n": 1.0}, {"m1"}),
    ({"n": "1"}, {"m3"}),
    ({"n": {"$ne": 1}}, {"m2", "m3"}),
    ({"n": {"$nin": [1]}}, {"m2", "m3", "m4", "m5"}),
    ({"n": {"$in": [1, "1"]}}, {"m1", "m3"}),
    ({"n": {"$gt": 1}}, {"m2"}),
    ({"n": {"$gte": 1}}, {"m1", "m2"}),
    ({"n": {"$lt": 2}}, {"m1"}),
    ({"n": {"$between": [1, 2]}}, {"m1"}),
    ({"n": None}, {"m4", "m5"}),
    ({"n": {"$exists": True}}, {"m1", "m2", "m3"}),
    ({"n": {"$exists": False}}, {"m4", "m5"}),
    ({"d": {"$gt": "2024-05-15T00:00:00Z"}}, {"m2"}),
    ({"d": {"$lte": "2024-05-01T10:00:00+00:00"}}, {"m1"}),
    ({"d": {"$between": ["2024-05-01", "2024-05-02"]}}, {"m1"}),
    ({"s": {"$gt": "abc"}}, {"m2"}),
    ({"s": 5}, {"m3"}),
    ({"b": True}, {"m1"}),
    ({"b": False}, {"m2"}),
    ({"x": 1}, set()),
    ({"NOT": {"n": 1}}, {"m2", "m3", "m4", "m5"}),
    ({"NOT": {"n": {"$ne": 1}}}, {"m1", "m4", "m5"}),
    ({"OR": [{"n": 1}, {"s": "abd"}]}, {"m1", "m2"}),
    ({"AND": [{"user_id": "u1"}, {"NOT": {"b": True}}]}, {"m2"}),
    ({"agent_id": None}, {"m2", "m4"}),
    ({"agent_id": {"$ne": "a1"}}, {"m3"}),
    ({"agent_id": {"$nin": ["a1"]}}, {"m2", "m3", "m4"}),
    ({"NOT": {"agent_id": {"$ne": "a1"}}}, {"m1", "m2", "m4", "m5"}),
    ({"user_id": {"$in": ["u1", "u3"]}, "type": {"$ne": "episode"}}, {"m1", "m2"}),
    ({"user_id": {"$gt": "u1"}}, {"m3", "m4", "m5"}),
    ({"type": "artifact"}, {"m3"}),
    ({"created_at": {"$gte": iso(T0 + timedelta(seconds=3))}}, {"m4", "m5"}),
    ({"created_at": {"$lt": "2026-01-02T03:04:06.678901Z"}}, {"m1"}),
    ({"created_at": {"$between": [iso(T0 + timedelta(seconds=1)), iso(T0 + timedelta(seconds=2))]}}, {"m2", "m3"}),
    ({"valid_at": None}, {"m1", "m3", "m5"}),
    ({"valid_at": {"$gt": iso(T0)}}, {"m2", "m4"}),
    ({"missing": {"$nin": ["x"]}, "user_id": "u3"}, {"m5"}),
]


def test_filter_dsl_means_the_same_on_every_backend(store: Any) -> None:
    made = _filter_data(store)
    name_of = {m.id: name for name, m in made.items()}
    for filters, expected in FILTER_CASES:
        where = conjoin(Cmp("status", "eq", "active"), parse_filter(filters))
        page = store.list_memories(ORG, where, ascending=True, after=None, limit=100)
        assert {name_of[m.id] for m in page.items} == expected, filters
        dense = store.dense_candidates(ORG, where, unit(0), 100)
        assert {name_of[i] for i in ids(dense)} == expected, ("dense", filters)
        lexical = store.lexical_candidates(ORG, where, "memory", 100)
        assert {name_of[i] for i in ids(lexical)} == expected, ("lexical", filters)
    with pytest.raises(ServiceError) as err:
        store.list_memories(ORG, parse_filter({'we"ird': 1}), ascending=True, after=None, limit=5)
    assert err.value.code == "invalid_filter"


# ---------------------------------------------------------------------- idle conversations
def test_idle_conversations_get_one_episode_job(store: Any) -> None:
    run_job(store, ORG, "u1", "idle", [])
    run_job(store, ORG, "u1", "fresh", [])
    busy, _ = accept(store, user="u1", conv="busy")
    later = T0 + timedelta(hours=1)
    # `fresh` had a turn after the idle line; `busy` has an unfinished job; `idle` qualifies.
    with_turn_after = new_job(ORG, "u1", "fresh", ["again"], at=later)
    store.accept(ORG, [with_turn_after], dedup_since=None)
    assert store.enqueue_idle_episodes(T0 + timedelta(minutes=30), later) == 1
    assert store.enqueue_idle_episodes(T0 + timedelta(minutes=30), later) == 0, "not twice: its job is pending"
    leased = [store.lease("w", utcnow(), 30, 5) for _ in range(4)]
    assert leased[0].job.id == busy and (leased[1].job.kind, leased[1].job.conv_id) == ("ingest", "fresh")
    assert (leased[2].job.kind, leased[2].job.conv_id, leased[2].events) == ("episode", "idle", [])
    assert leased[3] is None


def test_a_failed_episode_job_is_not_queued_again_until_a_new_turn(store: Any) -> None:
    run_job(store, ORG, "u1", "stuck", [])
    later = T0 + timedelta(hours=1)
    assert store.enqueue_idle_episodes(T0 + timedelta(minutes=30), later) == 1
    lease = store.lease("w", utcnow(), 30, 5)
    assert lease is not None and lease.job.kind == "episode"
    assert store.fail(lease, JobError("ingest_failed", "the model provider is down"))
    assert store.enqueue_idle_episodes(later, later + timedelta(minutes=5)) == 0, "no retry loop every sweep"
    newer = T0 + timedelta(hours=2)
    job_id, _ = accept(store, user="u1", conv="stuck", at=newer)
    turn = store.lease("w", utcnow(), 30, 5)
    assert turn is not None and turn.job.id == job_id
    assert store.complete(turn, JobOutcome(result={"object": "ingest_result", "stage_timings": {}}))
    assert store.enqueue_idle_episodes(newer + timedelta(minutes=30), newer + timedelta(hours=1)) == 1


# ---------------------------------------------------------------------- notifications
def test_notifications_reach_other_processes_when_the_backend_has_them(store: Any, request: Any) -> None:
    """A backend that says it notifies must deliver: WORK_READY on accept, JOB_ENDED with the
    job's id when a *different* connection (standing in for another process) ends it."""
    heard: list[tuple[str, str]] = []
    got = threading.Event()

    def on_notice(kind: str, payload: str) -> None:
        heard.append((kind, payload))
        got.set()

    if not store.subscribe(on_notice):
        assert isinstance(store, SQLiteStore), "only the embedded store may poll instead"
        return
    other = PostgresStore(store.url, pool_size=2)
    try:
        time.sleep(0.2)
        heard.clear()
        job_id, _ = accept(other)
        _wait_for(lambda: (WORK_READY, "") in heard)
        lease = other.lease("w", utcnow(), 30, 5)
        assert other.complete(lease, JobOutcome(result={}))
        _wait_for(lambda: (JOB_ENDED, job_id) in heard)
    finally:
        other.close()


def _wait_for(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "no notification arrived"
        time.sleep(0.01)


# ---------------------------------------------------------------------- memory management
def test_supersede_merge_revisions_and_usage(store: Any) -> None:
    old = memory(ORG, "u1", "Ann lives in Porto", metadata={"k": 1, "a": 2})
    run_job(store, ORG, "u1", "c1", [(old, unit(1))])
    new = memory(ORG, "u1", "Ann lives in Lisbon", details={"fact_type": "fact", "supersedes": old.id})
    assert store.supersede_memory(ORG, old.id, NewMemory(new, unit(2)), utcnow())
    assert not store.supersede_memory(ORG, old.id, NewMemory(memory(ORG, "u1", "again"), unit(3)), utcnow())
    assert store.get_memory(ORG, old.id).status == "superseded"
    assert [m.id for m in store.memory_revisions(ORG, old.id)] == [old.id, new.id]
    assert [m.id for m in store.memory_revisions(ORG, new.id)] == [old.id, new.id]
    assert store.memory_revisions(OTHER, new.id) == []
    merged = store.merge_memory_metadata(ORG, old.id, {"z": 3, "k": 9}, utcnow())
    assert merged.metadata == {"k": 9, "a": 2, "z": 3} and list(merged.metadata) == ["k", "a", "z"]
    assert store.list_memories(ORG, parse_filter({"z": 3}), ascending=True, after=None, limit=5).items[0].id == old.id
    store.record_usage(ORG, T0, {"llm_requests": 2, "prompt_tokens": 10})
    store.record_usage(ORG, T0 + timedelta(days=1), {"llm_requests": 1})
    assert store.usage_totals(ORG) == {"llm_requests": 3, "prompt_tokens": 10}
    assert store.usage_totals(ORG, T0 + timedelta(days=1)) == {"llm_requests": 1}
    assert store.usage_totals(OTHER) == {}


# ---------------------------------------------------------------------- both backends at once
def _random_filter(rng: random.Random, depth: int = 0) -> dict:
    fields = ["n", "s", "d", "b", "x", "missing", "user_id", "agent_id", "type", "created_at", "valid_at"]
    values: dict[str, list[Any]] = {
        "n": [1, 1.0, 2.5, "1", 0, -3, True], "s": ["abc", "abd", "ab", 5, "zzz"],
        "d": ["2024-05-01", "2024-05-01T10:00:00Z", "2024-05-20T00:00:00+02:00", "not a date", 3],
        "b": [True, False, "true", 1], "x": [1, "x", 2], "missing": ["x", 1],
        "user_id": ["u1", "u2", "u3", "u0"], "agent_id": ["a1", "a2", "zz"], "type": ["fact", "artifact", "episode"],
        "created_at": [iso(T0 + timedelta(seconds=i)) for i in range(-1, 6)],
        "valid_at": [iso(T0 + timedelta(days=i)) for i in range(0, 5)],
    }
    if depth < 2 and rng.random() < 0.3:
        kind = rng.choice(["AND", "OR", "NOT"])
        if kind == "NOT":
            return {"NOT": _random_filter(rng, depth + 1)}
        return {kind: [_random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    field = rng.choice(fields)
    pool = values[field]
    op = rng.choice(["bare", "null", "$eq", "$ne", "$in", "$nin", "$exists", "$gt", "$gte", "$lt", "$lte", "$between"])
    if op == "bare":
        return {field: rng.choice(pool)}
    if op == "null":
        return {field: None}
    if op in ("$in", "$nin"):
        return {field: {op: rng.sample(pool, rng.randint(1, min(3, len(pool))))}}
    if op == "$exists":
        return {field: {op: rng.random() < 0.5}}
    if op == "$between":
        strings = [v for v in pool if isinstance(v, str)]
        numbers = [v for v in pool if isinstance(v, (int, float)) and not isinstance(v, bool)]
        kinds = [k for k in (strings, numbers) if len(k) >= 2]
        if not kinds:
            return {field: {"$exists": True}}
        low, high = sorted(rng.sample(rng.choice(kinds), 2))
        return {field: {op: [low, high]}}
    return {field: {op: rng.choice(pool)}}


def test_random_filters_agree_across_backends(request: pytest.FixtureRequest, tmp_path: Any) -> None:
    stores = [_open(backend, request, tmp_path) for backend in ("sqlite", "postgres")]
    try:
        made = [_filter_data(s) for s in stores]
        names = [{m.id: name for name, m in mm.items()} for mm in made]
        rng = random.Random(7)
        checked = 0
        for _ in range(400):
            filters = _random_filter(rng)
            try:
                where = parse_filter(filters)
            except ServiceError:
                continue  # both backends see the same parser
            answers = []
            for s, name_of in zip(stores, names):
                page = s.list_memories(ORG, where, ascending=True, after=None, limit=100)
                answers.append(sorted(name_of[m.id] for m in page.items))
            assert answers[0] == answers[1], filters
            checked += 1
        assert checked > 300
    finally:
        for s in stores:
            s.close()


# ---------------------------------------------------------------------- a job's reconcile vs its commit
# A job reads the user's facts, decides (repeat / supersede / new), and commits later. Whatever
# committed in between — another job of the user, a DELETE, a text PATCH — the commit must
# land as if the job had reconciled at its commit (store/base.py `CommitResult.STALE`).
class _ScriptedExtractor:
    """One fact per turn: the turn's text, with the key and llm-style hints the test gives."""

    name = "scripted"

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}
        self.supersedes: dict[str, str] = {}

    def extract(self, turns: Any, *, extract_artifacts: bool, context: Any = ()) -> Any:
        from engram.domain.extraction import Extraction, FactCandidate

        return Extraction(facts=[FactCandidate(text=t.content, fact_type="biographical", source_event_ids=(t.event_id,),
                                               source_role="user", key=self.keys.get(t.content),
                                               supersedes=self.supersedes.get(t.content)) for t in turns])

    def episode(self, turns: Any) -> None:
        return None


class _TextEmbedder:
    name = "test:text"
    dim = DIM

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([unit(t) for t in texts]) if texts else np.zeros((0, DIM), np.float32)


def _pipeline(store: Any) -> Any:
    from engram.config import load_settings
    from engram.pipeline.content_filter import ContentFilter
    from engram.pipeline.process import Pipeline

    return Pipeline(store, load_settings(env={}), _ScriptedExtractor(), _TextEmbedder(), ContentFilter())


def _in_flight(store: Any, pipeline: Any, conv: str, text: str, user: str = "u1") -> tuple[Any, JobOutcome]:
    """A job of `user` in `conv` stating `text`, leased and run up to (not including) its commit."""
    job_id, _ = accept(store, user=user, conv=conv, texts=[text])
    lease = store.lease("w", utcnow(), 60, 5)
    assert lease is not None and lease.job.id == job_id
    return lease, pipeline.process(lease)


def _commit(store: Any, lease: Any, outcome: JobOutcome, *, raced: bool = True) -> JobOutcome:
    """What the worker does: commit; when refused as stale, reconcile again and retry.
    `raced`: the first commit must be refused (something changed the user's facts since)."""
    result = store.complete(lease, outcome)
    assert bool(result) != raced, f"first commit of {lease.job.id}: {result}"
    for _ in range(5):
        redo = getattr(outcome, "redo", None)
        if result or redo is None:
            break
        outcome = redo()
        result = store.complete(lease, outcome)
    assert result, f"job {lease.job.id} did not commit: {result}"
    assert store.get_job(ORG, lease.job.id).status == "succeeded"
    return outcome


def _active_facts(store: Any, user: str = "u1") -> list[Memory]:
    where = conjoin(Cmp("user_id", "eq", user), Cmp("type", "eq", "fact"), Cmp("status", "eq", "active"))
    return store.list_memories(ORG, where, ascending=True, after=None, limit=100).items


def test_two_jobs_of_one_user_stating_one_fact_at_once_store_it_once(store: Any) -> None:
    pipeline = _pipeline(store)
    a, outcome_a = _in_flight(store, pipeline, "conv-a", "Ann keeps bees")
    b, outcome_b = _in_flight(store, pipeline, "conv-b", "Ann keeps bees")  # read before A committed
    _commit(store, a, outcome_a, raced=False)
    _commit(store, b, outcome_b)
    facts = _active_facts(store)
    assert [f.text for f in facts] == ["Ann keeps bees"], "one fact, not one per conversation"
    assert facts[0].source_event_ids == [a.events[0].id, b.events[0].id], "cited by both jobs' turns"
    result_b = store.get_job(ORG, b.job.id).result
    assert result_b["memories_created"] == [] and [m["id"] for m in result_b["memories_updated"]] == [facts[0].id]


def test_a_fact_deleted_while_a_job_restates_it_is_neither_revived_nor_swallowed(store: Any) -> None:
    pipeline = _pipeline(store)
    old = memory(ORG, "u1", "Ann keeps bees")
    run_job(store, ORG, "u1", "c0", [(old, unit("Ann keeps bees"))])
    lease, outcome = _in_flight(store, pipeline, "conv-a", "Ann keeps bees")  # decided: repeats `old`
    assert store.delete_memory(ORG, old.id, utcnow())  # DELETE /v1/memories/{id} before the job commits
    _commit(store, lease, outcome)
    assert store.get_memory(ORG, old.id) is None, "the deleted fact is not revived"
    facts = _active_facts(store)
    assert [(f.text, f.source_event_ids) for f in facts] == [("Ann keeps bees", [lease.events[0].id])], \
        "the restatement is new evidence after the delete: a new active fact"


def test_a_fact_deleted_while_a_job_supersedes_it_stays_deleted(store: Any) -> None:
    pipeline = _pipeline(store)
    pipeline.extractor.keys["Ann lives in Lisbon"] = "lives_in"  # the pipeline qualifies it: ann:lives_in
    old = memory(ORG, "u1", "Ann lives in Porto", key="ann:lives_in")
    run_job(store, ORG, "u1", "c0", [(old, unit("Ann lives in Porto"))])
    lease, outcome = _in_flight(store, pipeline, "conv-a", "Ann lives in Lisbon")
    assert outcome.superseded, "the job decided to supersede the fact"
    assert store.delete_memory(ORG, old.id, utcnow())
    _commit(store, lease, outcome)
    assert store.get_memory(ORG, old.id) is None, "a delete is never undone into `superseded`"
    (new,) = _active_facts(store)
    assert new.text == "Ann lives in Lisbon" and new.details["supersedes"] is None and new.key == "ann:lives_in"
    assert store.get_job(ORG, lease.job.id).result["memories_superseded_by"] == {}


def test_concurrent_changes_of_one_attribute_make_a_chain_never_a_fork(store: Any) -> None:
    pipeline = _pipeline(store)
    texts = ["Ann lives in Porto", "Ann lives in Lisbon", "Ann lives in Madrid", "Ann lives in Oslo"]
    pipeline.extractor.keys.update({t: "lives_in" for t in texts})
    old = memory(ORG, "u1", texts[0], key="ann:lives_in")
    run_job(store, ORG, "u1", "c0", [(old, unit(texts[0]))])
    in_flight = [_in_flight(store, pipeline, f"conv-{i}", t) for i, t in enumerate(texts[1:])]
    assert all(list(o.superseded) == [old.id] for _, o in in_flight), "all three read Porto as current"
    for n, (lease, outcome) in enumerate(in_flight):
        _commit(store, lease, outcome, raced=n > 0)
    (current,) = _active_facts(store)
    assert current.text == "Ann lives in Oslo"
    chain = store.memory_revisions(ORG, old.id)
    assert [m.text for m in chain] == texts and [m.status for m in chain] == ["superseded"] * 3 + ["active"]
    assert [m.details["supersedes"] for m in chain[1:]] == [m.id for m in chain[:-1]], "each supersedes the one before"


def test_a_change_whose_fact_was_patched_meanwhile_supersedes_the_patch(store: Any) -> None:
    pipeline = _pipeline(store)
    pipeline.extractor.keys["Ann lives in Lisbon"] = "lives_in"
    old = memory(ORG, "u1", "Ann lives in Porto", key="ann:lives_in")
    run_job(store, ORG, "u1", "c0", [(old, unit("Ann lives in Porto"))])
    lease, outcome = _in_flight(store, pipeline, "conv-a", "Ann lives in Lisbon")
    patched = memory(ORG, "u1", "Ann lives in Faro", key="ann:lives_in",
                     details={"fact_type": "fact", "supersedes": old.id, "episode_id": None})
    assert store.supersede_memory(ORG, old.id, NewMemory(patched, unit("Ann lives in Faro")), utcnow())  # PATCH text
    _commit(store, lease, outcome)
    chain = store.memory_revisions(ORG, old.id)
    assert [m.text for m in chain] == ["Ann lives in Porto", "Ann lives in Faro", "Ann lives in Lisbon"]
    assert [m.status for m in chain] == ["superseded", "superseded", "active"]


def test_a_hinted_supersede_of_a_fact_patched_meanwhile_follows_the_chain(store: Any) -> None:
    """The llm extractor names the fact it replaces (no key): when that fact was revised
    meanwhile, the change lands on the revision that is current at commit."""
    pipeline = _pipeline(store)
    old = memory(ORG, "u1", "Ann plans a trip to Rome")
    run_job(store, ORG, "u1", "c0", [(old, unit("Ann plans a trip to Rome"))])
    pipeline.extractor.supersedes["Ann cancelled the Rome trip"] = old.id
    lease, outcome = _in_flight(store, pipeline, "conv-a", "Ann cancelled the Rome trip")
    assert list(outcome.superseded) == [old.id]
    patched = memory(ORG, "u1", "Ann plans a trip to Rome in May",
                     details={"fact_type": "fact", "supersedes": old.id, "episode_id": None})
    assert store.supersede_memory(ORG, old.id, NewMemory(patched, unit(patched.text)), utcnow())
    _commit(store, lease, outcome)
    chain = store.memory_revisions(ORG, old.id)
    assert [m.text for m in chain] == [old.text, patched.text, "Ann cancelled the Rome trip"]
    assert [m.status for m in chain] == ["superseded", "superseded", "active"]


def test_the_worker_reconciles_again_when_a_delete_lands_before_its_commit(store: Any, caplog: Any) -> None:
    """The worker's own path: its commit is refused as stale, it reconciles again (no new
    extraction, no new embedding) and commits, all under its lease."""
    from engram.config import load_settings
    from engram.pipeline.worker import Worker

    pipeline = _pipeline(store)
    old = memory(ORG, "u1", "Ann keeps bees")
    run_job(store, ORG, "u1", "c0", [(old, unit("Ann keeps bees"))])
    job_id, _ = accept(store, user="u1", conv="conv-a", texts=["Ann keeps bees"])
    embedded: list[list[str]] = []
    process, embed = pipeline.process, pipeline.embedder.embed

    def process_then_delete(lease: Any) -> JobOutcome:
        outcome = process(lease)
        assert store.delete_memory(ORG, old.id, utcnow())  # lands between reconcile and commit
        return outcome

    pipeline.process = process_then_delete
    pipeline.embedder.embed = lambda texts: embedded.append(list(texts)) or embed(texts)
    store.record_vector_space(pipeline.embedder.name, utcnow())  # the worker's own: it takes jobs
    with caplog.at_level(logging.INFO, logger="engram.worker"):
        assert Worker(store, pipeline, load_settings(env={})).run_once()
    assert [r.getMessage() for r in caplog.records if "reconciling again" in r.getMessage()] == [
        f"job {job_id}: the user's memory changed before its commit; reconciling again (1)"]
    job = store.get_job(ORG, job_id)
    assert job.status == "succeeded" and len(job.result["memories_created"]) == 1
    assert store.get_memory(ORG, old.id) is None
    assert [f.id for f in _active_facts(store)] == [job.result["memories_created"][0]["id"]]
    assert embedded == [["Ann keeps bees"]], "embedded once: the second reconcile reuses the vectors"


def test_a_job_whose_commits_keep_going_stale_goes_back_to_the_queue(store: Any) -> None:
    """Bounded: a job overtaken before every one of its commits stops reconciling and is
    retried later (with backoff) like any transient failure, instead of spinning on its lease."""
    from engram.config import load_settings
    from engram.pipeline.worker import MAX_RECONCILES, Worker

    others = [memory(ORG, "u1", f"Ann fact {i}") for i in range(MAX_RECONCILES)]
    run_job(store, ORG, "u1", "c0", [(m, unit(i)) for i, m in enumerate(others)])
    job_id, events = accept(store, user="u1", conv="conv-a", texts=["Ann keeps bees"])
    bases: list[int | None] = []
    complete_many = store.complete_many  # what `complete` and the worker's batches commit through

    def overtaken(done: Any) -> Any:  # a DELETE of the user's lands first, every time
        for _, outcome in done:
            bases.append(outcome.basis)
            assert store.delete_memory(ORG, others[len(bases) - 1].id, utcnow())
        return complete_many(done)

    store.complete_many = overtaken
    store.record_vector_space(_TextEmbedder.name, utcnow())  # the worker's own: it takes jobs
    assert Worker(store, _pipeline(store), load_settings(env={})).run_once()
    assert len(bases) == MAX_RECONCILES and bases == sorted(set(bases)), "each reconcile read the newer version"
    job = store.get_job(ORG, job_id)
    assert job.status == "pending" and job.attempts == 1 and "changed before each" in job.error.message
    assert _active_facts(store) == [] and store.event_statuses(ORG, events) == {events[0]: ("pending", None)}


def test_the_worker_runs_a_batch_and_commits_it_at_once(store: Any, caplog: Any) -> None:
    """Jobs of several conversations leased and committed together. A user's second job in
    the batch runs after the first's commit (it reads what that wrote: no stale reconcile),
    and a job whose pipeline fails is retried alone while the rest commit."""
    from engram.config import load_settings
    from engram.pipeline.worker import Worker

    pipeline = _pipeline(store)
    first, _ = accept(store, user="u1", conv="conv-a", texts=["Ann keeps bees"])
    failing, failing_events = accept(store, user="u2", conv="conv-f", texts=["this one breaks"])
    second, second_events = accept(store, user="u1", conv="conv-b", texts=["Ann keeps bees"])
    other, _ = accept(store, user="u3", conv="conv-c", texts=["Cy plays chess"])
    process = pipeline.process

    def breaks(lease: Any) -> JobOutcome:
        if lease.job.id == failing:
            raise RuntimeError("a broken turn")
        return process(lease)

    pipeline.process = breaks
    commits: list[list[str]] = []
    complete_many = store.complete_many
    store.complete_many = lambda done: commits.append([l.job.id for l, _ in done]) or complete_many(done)
    store.record_vector_space(pipeline.embedder.name, utcnow())  # the worker's own: it takes jobs
    worker = Worker(store, pipeline, load_settings(env={}))
    assert worker.batch_size() == 1, "nothing run yet: one job"
    worker._pace(0.002)
    assert worker.batch_size() > 4
    with caplog.at_level(logging.INFO, logger="engram.worker"):
        assert worker.run_once()
    assert commits == [[first], [second, other]], "u1's second job waited for its first's commit"
    assert not [r for r in caplog.records if "reconciling again" in r.getMessage()]
    assert [store.get_job(ORG, j).status for j in (first, second, other)] == ["succeeded"] * 3
    assert store.get_job(ORG, failing).status == "pending" and "a broken turn" in store.get_job(ORG, failing).error.message
    assert store.event_statuses(ORG, failing_events) == {failing_events[0]: ("pending", None)}
    bees = _active_facts(store)
    assert [f.text for f in bees] == ["Ann keeps bees"], "stated twice, stored once"
    assert set(second_events) <= set(bees[0].source_event_ids), "the second job cited the first's fact"


def test_a_batch_whose_transaction_fails_commits_each_job_alone(store: Any, caplog: Any) -> None:
    """A batch's transaction that fails as a whole (on PostgreSQL: a deadlock detected against
    another transaction) loses nothing: every job of it commits alone."""
    from engram.config import load_settings
    from engram.pipeline.worker import Worker

    pipeline = _pipeline(store)
    jobs = [accept(store, user=f"u{i}", conv=f"conv-{i}", texts=[f"Fact number {i}"])[0] for i in range(3)]

    complete_many = store.complete_many

    def deadlocked(done: Any) -> Any:
        if len(done) > 1:
            raise RuntimeError("deadlock detected")
        return complete_many(done)  # `complete`, one job

    store.complete_many = deadlocked
    store.record_vector_space(pipeline.embedder.name, utcnow())
    worker = Worker(store, pipeline, load_settings(env={}))
    worker._pace(0.001)
    with caplog.at_level(logging.ERROR, logger="engram.worker"):
        assert worker.run_once()
    assert any("did not commit; committing each alone" in r.getMessage() for r in caplog.records)
    assert [store.get_job(ORG, j).status for j in jobs] == ["succeeded"] * 3
    assert [f.text for f in _active_facts(store, "u1")] == ["Fact number 1"]


def test_the_batch_follows_the_pace_of_recent_jobs() -> None:
    from engram.pipeline.worker import BATCH_WINDOW_S, MAX_BATCH, Worker

    worker = Worker.__new__(Worker)
    worker._job_s = None
    assert worker.batch_size() == 1
    worker._pace(0.0001)
    assert worker.batch_size() == MAX_BATCH, "millisecond jobs: as many as allowed"
    for _ in range(30):
        worker._pace(2.0)  # an llm job takes seconds
    assert worker.batch_size() == 1
    worker._job_s = BATCH_WINDOW_S / 4
    assert worker.batch_size() == 4


def test_a_commit_on_a_stale_basis_is_refused_and_writes_nothing(store: Any) -> None:
    from engram.store.base import CommitResult

    assert store.user_version(ORG, "u1") == 0
    fact = memory(ORG, "u1", "Ann keeps bees")
    run_job(store, ORG, "u1", "c0", [(fact, unit(1))])
    v1 = store.user_version(ORG, "u1")
    assert v1 > 0, "a commit that creates facts moves the user's version"
    assert store.user_version(ORG, "u2") == 0 and store.user_version(OTHER, "u1") == 0, "per org and user"
    store.merge_memory_metadata(ORG, fact.id, {"k": 1}, utcnow())
    assert store.user_version(ORG, "u1") == v1, "a metadata merge changes no reconcile decision"

    job_id, events = accept(store, user="u1", conv="c1", texts=["turn"])
    lease = store.lease("w", utcnow(), 60, 5)
    new = memory(ORG, "u1", "Ann sells honey", sources=events)
    outcome = JobOutcome(created=[NewMemory(new, unit(2))], added_sources={fact.id: events}, basis=v1,
                         result={"object": "ingest_result", "stage_timings": {}})
    other = memory(ORG, "u1", "Ann likes tea")
    assert store.supersede_memory(ORG, fact.id, NewMemory(other, unit(3)), utcnow())  # a PATCH meanwhile
    v2 = store.user_version(ORG, "u1")
    assert v2 > v1
    result = store.complete(lease, outcome)
    assert result is CommitResult.STALE and not result
    assert store.get_memory(ORG, new.id) is None
    assert store.get_memory(ORG, fact.id).source_event_ids == fact.source_event_ids
    assert store.get_job(ORG, job_id).status == "running" and store.event_statuses(ORG, events) == {
        events[0]: ("pending", None)}, "nothing written; the lease still holds"
    assert store.renew(lease, utcnow() + timedelta(seconds=60))
    fresh = JobOutcome(created=[NewMemory(new, unit(2))], basis=v2, result={"object": "ingest_result"})
    assert store.complete(lease, fresh) is CommitResult.COMMITTED
    assert store.get_memory(ORG, new.id).status == "active" and store.user_version(ORG, "u1") > v2
    v3 = store.user_version(ORG, "u1")
    assert store.delete_memory(ORG, new.id, utcnow()) and store.user_version(ORG, "u1") > v3, "a delete moves it"
    assert store.complete(lease, fresh) is CommitResult.LOST, "a job ends once"


def test_commits_of_one_user_built_on_one_basis_serialize(store: Any) -> None:
    from engram.store.base import CommitResult

    basis = store.user_version(ORG, "u1")
    leases = []
    for i in range(4):
        accept(store, user="u1", conv=f"conv-{i}", texts=["turn"])
        leases.append(store.lease("w", utcnow(), 60, 5))
    barrier = threading.Barrier(len(leases))
    results: list[Any] = [None] * len(leases)

    def commit(i: int) -> None:
        outcome = JobOutcome(created=[NewMemory(memory(ORG, "u1", "Ann keeps bees", conv=f"conv-{i}"), unit(1))],
                             basis=basis, result={"object": "ingest_result"})
        barrier.wait()
        results[i] = store.complete(leases[i], outcome)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(len(leases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.value for r in results) == ["committed", "stale", "stale", "stale"], results
    assert len(_active_facts(store)) == 1


def test_commit_refuses_to_supersede_or_cite_a_fact_that_is_no_longer_active(store: Any) -> None:
    """Defence in depth, whatever the caller's basis: a status change or a citation applies to
    an active memory only, or the whole commit is refused."""
    from engram.store.base import CommitResult

    fact = memory(ORG, "u1", "Ann lives in Porto")
    run_job(store, ORG, "u1", "c0", [(fact, unit(1))])
    assert store.delete_memory(ORG, fact.id, utcnow())
    for build in (lambda n, e: JobOutcome(created=[NewMemory(n, unit(2))], superseded={fact.id: n.id}),
                  lambda n, e: JobOutcome(added_sources={fact.id: e})):
        job_id, events = accept(store, user="u1", conv="c1", texts=["turn"])
        lease = store.lease("w", utcnow(), 60, 5)
        new = memory(ORG, "u1", "Ann lives in Lisbon", sources=events,
                     details={"fact_type": "fact", "supersedes": fact.id, "episode_id": None})
        assert store.complete(lease, build(new, events)) is CommitResult.STALE
        assert store.get_memory(ORG, new.id) is None and store.get_job(ORG, job_id).status == "running"
        assert store.get_memory(ORG, fact.id) is None
        assert store.fail(lease, JobError("ingest_failed", "test"))


# ---------------------------------------------------------------------- the vector space
def test_vector_space_is_recorded_and_a_reindex_switches_every_vector_at_once(store: Any) -> None:
    assert store.vector_space() is None and store.count_all_memories() == 0
    store.record_vector_space("local:one", T0)
    store.record_vector_space("local:two", T0 + timedelta(seconds=1))
    assert store.vector_space() == "local:two"  # one record, the latest

    a, b = unit(1), unit(2)
    first = [memory(ORG, "u1", f"fact {i}") for i in range(3)]
    other = memory(OTHER, "u9", "another org's fact")
    run_job(store, ORG, "u1", "c1", [(m, a) for m in first])
    run_job(store, OTHER, "u9", "c1", [(other, a)])
    where = Cmp("user_id", "eq", "u1")
    assert set(ids(store.dense_candidates(ORG, where, a, 10))) == {m.id for m in first}  # warms the caches

    # A pass: every org's memories in id order, a page at a time; search keeps the old vectors.
    store.begin_reindex("local:three", utcnow())
    pages, after = [], ""
    while page := store.memories_to_embed(after, 2):
        pages.append(page)
        assert store.write_reindex("local:three", [(m.id, b) for m in page], utcnow(), after_id=page[-1].id)
        after = page[-1].id
    assert [len(p) for p in pages] == [2, 2] and store.count_all_memories() == 4
    assert sorted(m.id for p in pages for m in p) == sorted(m.id for m in [*first, other])
    assert store.reindex_state().after_id == after
    assert dict(store.dense_candidates(ORG, where, a, 10))[first[0].id] == pytest.approx(1.0, abs=1e-5)
    # A memory written during the pass is found by what it lacks; the switch waits for it.
    late = memory(ORG, "u1", "written during the pass")
    run_job(store, ORG, "u1", "c2", [(late, a)])
    assert [m.id for m in store.memories_missing_reindex(10)] == [late.id]
    assert not store.switch_reindex("local:three", utcnow()), "a memory still lacks its new vector"
    assert store.vector_space() == "local:two"
    assert not store.write_reindex("local:other", [(late.id, b)], utcnow()), "only the pass's own embedder writes"
    assert store.write_reindex("local:three", [(late.id, b)], utcnow())
    assert store.switch_reindex("local:three", utcnow())
    assert store.vector_space() == "local:three" and store.reindex_state() is None
    scored = dict(store.dense_candidates(ORG, where, b, 10))
    assert all(v == pytest.approx(1.0, abs=1e-5) for v in scored.values()), "read again, not the cached vectors"
    assert len(scored) == 4 and store.memories_missing_reindex(10) != []  # the table beside is empty again


# ---------------------------------------------------------------------- the data lifecycle
def test_erasing_a_user_removes_their_rows_and_caches_and_ends_their_jobs(store: Any) -> None:
    a, b = unit("erase-a"), unit("erase-b")
    mine = [memory(ORG, "u1", f"fact {i} of u1") for i in range(3)]
    theirs = memory(ORG, "u2", "a fact of u2")
    elsewhere = memory(OTHER, "u1", "the same user id in another org")
    done, _ = run_job(store, ORG, "u1", "c1", [(m, a) for m in mine])
    run_job(store, ORG, "u2", "c1", [(theirs, a)])
    run_job(store, OTHER, "u1", "c1", [(elsewhere, a)])
    everyone = conjoin(Cmp("status", "eq", "active"))
    assert len(store.dense_candidates(ORG, everyone, a, 10)) == 4  # warms every cache
    store.accept(ORG, [new_job(ORG, "u1", "c2", ["pending turn"])], dedup_since=None,
                 idempotency=Idempotency("key-1", "h", T0, T0 - timedelta(days=1)))
    running, _ = accept(store, ORG, "u1", "c3", texts=["running turn"])
    lease = store.lease("w", utcnow(), 30, 5)
    assert lease is not None and lease.job.conv_id == "c2"
    epoch = store.erasure_epoch()

    erased = store.erase_user(ORG, "u1", utcnow())
    assert erased.events == 3 and erased.memories == {"fact": 3} and erased.memories_by_status == {"active": 3}
    assert erased.jobs_deleted == 1 and erased.jobs_failed == 2 and erased.idempotency_keys == 1
    assert store.erasure_epoch() == epoch + 1
    assert store.get_job(ORG, done) is None
    for job_id in (lease.job.id, running):
        job = store.get_job(ORG, job_id)
        assert job is not None and job.status == "failed" and job.error.code == "resource_deleted"
        assert job.params == {} and job.result is None
    # The worker holding a lease cannot commit afterwards: nothing of the user comes back.
    assert store.complete(lease, JobOutcome(created=[NewMemory(memory(ORG, "u1", "late"), a)],
                                            result={"object": "ingest_result"})).name == "LOST"
    assert ids(store.dense_candidates(ORG, everyone, a, 10)) == [theirs.id]
    assert store.lexical_candidates(ORG, everyone, "fact", 10) == store.lexical_candidates(
        ORG, Cmp("user_id", "eq", "u2"), "fact", 10)
    assert store.get_memories(ORG, [m.id for m in mine]) == {}
    assert store.export_events(ORG, "u1", None, "", 10) == [] and store.export_memories(ORG, "u1", None, "", 10) == []
    assert store.get_memory(OTHER, elsewhere.id) is not None  # another org's user of that id is another user
    assert store.user_version(ORG, "u1") == 0
    if isinstance(store, SQLiteStore):  # the in-process caches dropped what they read
        rows = store.dialect.index.rows
        assert not any(memory_id in {m.id for m in mine} for _, memory_id, _ in rows._rows.values())
        assert "u1" not in " ".join(rows.analyzer._ids)  # the vocabulary starts over too
    again = store.erase_user(ORG, "u1", utcnow())
    assert again.events == 0 and again.memories == {} and again.jobs_deleted == 2  # the failed ones, now finished


def test_retracting_a_conversation_keeps_what_other_turns_support(store: Any) -> None:
    a = unit("retract")
    only = memory(ORG, "u1", "only from c1")
    episode = memory(ORG, "u1", "an episode of c1", type_="episode", details={"title": "t"})
    _, c1_events = run_job(store, ORG, "u1", "c1", [(only, a), (episode, a)])
    _, c2_events = accept(store, ORG, "u1", "c2", texts=["turn"])
    lease = store.lease("w", utcnow(), 30, 5)
    shared = memory(ORG, "u1", "said in c1 and in c2", sources=[*c1_events, *c2_events])
    assert store.complete(lease, JobOutcome(created=[NewMemory(shared, a)], result={"object": "ingest_result"}))
    other_user = memory(ORG, "u2", "u2's c1")
    run_job(store, ORG, "u2", "c1", [(other_user, a)])
    queued, queued_events = accept(store, ORG, "u1", "c1", texts=["queued turn"])

    done = store.retract_conversation(ORG, "u1", "c1", utcnow())
    assert done.memories_retracted == [only.id] and done.memories_removed == [episode.id]
    assert done.memories_updated == [shared.id] and done.events_deleted == 2 and done.jobs_failed == 1
    assert store.get_memory(ORG, only.id).status == "retracted"
    assert store.get_memory(ORG, episode.id) is None
    kept = store.get_memory(ORG, shared.id)
    assert kept.status == "active" and kept.source_event_ids == c2_events and kept.conv_id == "c2"
    assert store.memories_citing(ORG, c1_events) == []
    assert store.event_statuses(ORG, [*c1_events, *queued_events]) == {
        e: ("deleted", "resource_deleted") for e in [*c1_events, *queued_events]}
    assert store.get_job(ORG, queued).error.code == "resource_deleted"
    assert store.get_memory(ORG, other_user.id).status == "active"  # another user's c1 is another conversation
    assert store.event_statuses(ORG, c2_events) == {c2_events[0]: ("completed", None)}


def test_export_pages_and_import_keeps_ids_once(store: Any) -> None:
    from engram.store.lifecycle import ExportedEvent, ExportedMemory, IdsHeldElsewhere

    a, b = unit("export-a"), unit("export-b")
    old = memory(ORG, "u1", "lives in Denver", key="lives_in")
    new = memory(ORG, "u1", "lives in Boston", key="lives_in", details={"fact_type": "fact", "supersedes": old.id})
    run_job(store, ORG, "u1", "c1", [(old, a)])
    run_job(store, ORG, "u1", "c2", [(new, b)], superseded={old.id: new.id})
    events = store.export_events(ORG, "u1", None, "", 10)
    rows = store.export_memories(ORG, "u1", None, "", 10)
    assert [x.event.id for x in events] == sorted(x.event.id for x in events) and len(events) == 2
    assert {x.memory.id: x.memory.status for x in rows} == {old.id: "superseded", new.id: "active"}
    assert all(np.allclose(x.vector, {old.id: a, new.id: b}[x.memory.id], atol=1e-6) for x in rows)
    first = store.export_memories(ORG, "u1", None, "", 1)
    assert len(first) == 1 and store.export_memories(ORG, "u1", None, first[0].memory.id, 10)[0].memory.id != first[0].memory.id
    part = store.export_events(ORG, "u1", "c2", "", 10)
    assert [x.event.conv_id for x in part] == ["c2"]
    assert [x.memory.id for x in store.export_memories(ORG, "u1", "c2", "", 10)] == [new.id]

    # Into an org that has them already: nothing twice. Into one that never had them: as they were.
    assert store.import_batch(ORG, events, rows)[0].existing == 2
    with pytest.raises(IdsHeldElsewhere):
        store.import_batch(OTHER, events, rows)
    store.erase_user(ORG, "u1", utcnow())
    pending = ExportedEvent(replace_event(events[0].event, status="pending"), None)
    counts = store.import_batch(ORG, [pending, *events[1:]], [ExportedMemory(x.memory, x.vector) for x in rows])
    assert counts[0].created == 2 and counts[1].created == 2
    assert store.memory_revisions(ORG, new.id)[0].id == old.id
    assert store.get_memory(ORG, new.id).job_id is None
    assert set(ids(store.dense_candidates(ORG, Cmp("user_id", "eq", "u1"), b, 10))) == {old.id, new.id}
    lease = store.lease("w", utcnow(), 30, 5)  # the pending turn is extracted here too
    assert lease is not None and [e.id for e in lease.events] == [events[0].event.id]
    assert store.import_batch(ORG, events, rows)[1].existing == 2


def replace_event(event: Event, **changes: Any) -> Event:
    from dataclasses import replace

    return replace(event, **changes)


def test_another_process_erasing_makes_this_one_drop_its_caches(store: Any, request: pytest.FixtureRequest,
                                                                tmp_path: Any) -> None:
    """Two store objects on one database stand for two processes: when one erases, the other
    learns it from the erasure epoch (within a second) and drops what it cached."""
    other = SQLiteStore(store.path) if isinstance(store, SQLiteStore) else PostgresStore(store.url, pool_size=2)
    try:
        a = unit("forget")
        gone = memory(ORG, "u1", "soon erased")
        run_job(store, ORG, "u1", "c1", [(gone, a)])
        forgotten: list[int] = []
        store.on_forget(lambda: forgotten.append(1))
        assert ids(store.dense_candidates(ORG, Cmp("user_id", "eq", "u1"), a, 5)) == [gone.id]  # cached
        assert not store.forget_if_erased(now=1e9)  # first look: nothing to drop
        other.erase_user(ORG, "u1", utcnow())
        assert not store.forget_if_erased(now=1e9 + 0.5)  # looks at most once a second
        assert store.forget_if_erased(now=1e9 + 2) and forgotten == [1]
        if isinstance(store, SQLiteStore):
            assert store.dialect.index.rows._rows == {} and store._vectors._used == 0
        assert not store.forget_if_erased(now=1e9 + 4)
    finally:
        other.close()


def test_a_replay_writes_only_what_the_current_extractor_finds_differently(store: Any) -> None:
    """A conversation extracted once, then replayed with an extractor that words one fact
    differently and no longer finds another: the reworded one supersedes its old self (it
    comes from its turn), the lost one is retracted, an unchanged one stays as it was, and
    the conversation's own history (a superseded value) and other conversations are not touched."""
    pipeline = _pipeline(store)
    pipeline.extractor.keys.update({"Ann lives in Porto": "lives_in", "Ann lives in Lisbon": "lives_in"})

    def ingest(conv: str, texts: list[str]) -> None:
        accept(store, conv=conv, texts=texts)
        lease = store.lease("w", utcnow(), 60, 5)
        assert store.complete(lease, pipeline.process(lease))

    ingest("c1", ["Ann keeps bees", "Ann owns a boat", "Ann lives in Porto"])
    ingest("c1", ["Ann lives in Lisbon"])
    ingest("c2", ["Ann likes tea"])
    before = {f.text: f for f in _active_facts(store)}
    assert set(before) == {"Ann keeps bees", "Ann owns a boat", "Ann lives in Lisbon", "Ann likes tea"}

    class Changed(_ScriptedExtractor):
        def extract(self, turns: Any, *, extract_artifacts: bool, context: Any = ()) -> Any:
            out = super().extract([t for t in turns if t.content != "Ann owns a boat"],
                                  extract_artifacts=extract_artifacts, context=context)
            out.facts = [replace_fact(f, text="Ann keeps honey bees") if f.text == "Ann keeps bees" else f
                         for f in out.facts]
            return out

    replayer = _pipeline(store)
    replayer.extractor = Changed()
    replayer.extractor.keys = pipeline.extractor.keys
    job = store.enqueue_replay(ORG, "u1", "c1", utcnow())
    lease = store.lease("w", utcnow(), 60, 5)
    assert lease is not None and lease.job.id == job.id and lease.job.kind == "replay"
    assert [e.content for e in lease.events] == ["Ann keeps bees", "Ann owns a boat", "Ann lives in Porto",
                                                 "Ann lives in Lisbon"]
    outcome = replayer.process(lease)
    assert store.complete(lease, outcome)
    result = store.get_job(ORG, job.id).result
    honey = [m for m in result["memories_created"]]
    assert [m["text"] for m in honey] == ["Ann keeps honey bees"]
    assert result["memories_superseded_by"] == {before["Ann keeps bees"].id: honey[0]["id"]}
    assert result["memories_retracted"] == [before["Ann owns a boat"].id]
    assert result["replay"] == {"turns": 4, "facts_before": 3, "facts_unchanged": 1}
    after = {f.text: f for f in _active_facts(store)}
    assert set(after) == {"Ann keeps honey bees", "Ann lives in Lisbon", "Ann likes tea"}
    assert after["Ann lives in Lisbon"].id == before["Ann lives in Lisbon"].id
    assert after["Ann likes tea"].id == before["Ann likes tea"].id
    assert [m.id for m in store.memory_revisions(ORG, honey[0]["id"])] == [before["Ann keeps bees"].id, honey[0]["id"]]
    porto = [m for m in store.memory_revisions(ORG, before["Ann lives in Lisbon"].id) if m.text == "Ann lives in Porto"]
    assert len(porto) == 1 and porto[0].status == "superseded", "the history is not written twice"


def replace_fact(fact: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(fact, **changes)
