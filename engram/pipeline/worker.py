"""The worker: lease a job, run the pipeline, commit the outcome; forever.

Leases carry a visibility timeout that a heartbeat extends while the job runs. A worker
that dies simply stops renewing; its job becomes ready again when the lease expires (or
at once when the embedded server restarts and knows no worker of the old one survives).

A worker leases several ready jobs at once, of different conversations, and commits the
ones it has run together: one write transaction (and on SQLite one fsync beside the accept
path's) for the lot instead of two per job. How many: as many as it has lately run within
`BATCH_WINDOW_S` — single-turn rules jobs of a few milliseconds lease three or four at once, an
llm job that takes seconds leases one, so neither a job's visibility nor another worker's share
of the queue waits long behind a batch. Before it runs a job of a user whose earlier job in
the batch is not committed yet, it commits what it has: the user's next job reconciles
against the memory its predecessor left.

A commit refused as stale (the user's memory changed after the job's reconcile read it:
another job of the user, a DELETE, a PATCH; see store/base.py `CommitResult`) is reconciled
again with fresh reads and committed again, still under the lease, up to
`MAX_RECONCILES` times; past that the job is retried later like any transient failure.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from datetime import timedelta

from engram.config import Settings
from engram.domain.records import JobError, utcnow
from engram.pipeline.process import Pipeline
from engram.pipeline.vector_space import SpaceGate
from engram import metrics, usage
from engram.usage import UsageMeter
from engram.store.base import CommitResult, JobOutcome, Lease, Store

log = logging.getLogger("engram.worker")

IDLE_SWEEP_EVERY_S = 5.0
# Reconciles of one job per lease. Each refusal means another write of the same user
# committed first, so the user's memory as a whole always progresses; a job refused this
# many times in a row goes back to the queue (with backoff) instead of spinning.
MAX_RECONCILES = 10
# Batches (see above): the time a batch of jobs should take, judged by the recent jobs, and
# the most leased at once. The batch's commit holds the write lock for all its jobs' writes,
# and an accept arriving meanwhile waits for it: measured over many conversations' single-turn
# jobs (docs/benchmarks.md), batches of three or four (25 ms of such jobs) cut the accept
# path's p99 and batches of 16 did not.
BATCH_WINDOW_S = 0.025
MAX_BATCH = 16
_PACE_WEIGHT = 0.2  # the share of a job's own time in the running estimate of a job's time


class StaleCommits(Exception):
    """A job's commit kept being refused as stale: its user's memory changed before each."""

    job_code = "ingest_failed"


class Worker:
    def __init__(self, store: Store, pipeline: Pipeline, settings: Settings, *, name: str | None = None) -> None:
        self.store = store
        self.pipeline = pipeline
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.wake = threading.Event()
        self._last_sweep = 0.0
        self._space = SpaceGate(store, lambda: pipeline.embedder.name)
        self.usage = UsageMeter(store)  # job outcomes, added to the store each second while running
        self._warned = -60.0
        self._job_s: float | None = None  # running estimate of one job's time (batch_size)

    def run(self, stop: threading.Event, poll_s: float = 0.5) -> None:
        log.info("worker %s started", self.name)
        self.usage.start()
        metrics.initialise("worker")
        while not stop.is_set():
            try:
                if self.run_once():
                    continue
                self._sweep_idle_conversations()
            except Exception:
                log.exception("worker loop error; backing off")
                stop.wait(1.0)
            self.wake.wait(poll_s)
            self.wake.clear()
        self.usage.close()
        log.info("worker %s stopped", self.name)

    def run_once(self) -> bool:
        """Lease a batch of jobs, run and commit them; False when the queue had nothing ready
        (or this worker's embedder is not the one the stored vectors come from: it leaves
        the queue alone)."""
        problem = self._space.problem()
        if problem is not None:
            if time.monotonic() - self._warned >= 60:
                log.warning("worker %s is not processing jobs: %s", self.name, problem)
                self._warned = time.monotonic()
            return False
        leases = self.store.lease_many(self.name, utcnow(), self.settings.lease_timeout_s,
                                       self.settings.max_attempts, self.batch_size())
        if not leases:
            return False
        heartbeat = _Heartbeat(self.store, leases, self.settings.lease_timeout_s)
        heartbeat.start()
        try:  # the heartbeat runs until every commit is done: reconciling again happens under the lease
            ran: list[tuple[Lease, JobOutcome]] = []
            for lease in leases:
                if any(_same_user(lease, earlier) for earlier, _ in ran):
                    self._commit_batch(ran)  # this job must read what its user's earlier job wrote
                    ran = []
                started = time.perf_counter()
                try:
                    outcome = self.pipeline.process(lease)
                except Exception as exc:  # any failure of the pipeline is retried, then reported
                    self._retry_or_fail(lease, exc)
                    continue
                finally:
                    self._pace(time.perf_counter() - started)
                ran.append((lease, outcome))
            self._commit_batch(ran)
        finally:
            heartbeat.stop()
        return True

    def batch_size(self) -> int:
        """How many jobs to lease: as many as recent jobs took to fill BATCH_WINDOW_S."""
        if self._job_s is None:
            return 1  # nothing run yet: a first job of unknown cost goes alone
        return max(1, min(MAX_BATCH, int(BATCH_WINDOW_S / max(self._job_s, 1e-4))))

    def _pace(self, seconds: float) -> None:
        self._job_s = seconds if self._job_s is None else (1 - _PACE_WEIGHT) * self._job_s + _PACE_WEIGHT * seconds

    def _commit_batch(self, ran: list[tuple[Lease, JobOutcome]]) -> None:
        """Commit the batch's outcomes in one transaction; those refused as stale reconcile
        again and commit alone. Should the batch's transaction itself fail, each job commits
        alone, so one job's fault fails only that job."""
        if not ran:
            return
        try:
            firsts: list[CommitResult | None] = list(self.store.complete_many(ran))
        except Exception:
            log.exception("a batch of %d job(s) did not commit; committing each alone", len(ran))
            firsts = [None] * len(ran)
        for (lease, outcome), first in zip(ran, firsts):
            try:
                outcome, result = self._commit(lease, outcome, first)
            except Exception as exc:
                self._retry_or_fail(lease, exc)
                continue
            self._finished(lease, outcome, result)

    def _finished(self, lease: Lease, outcome: JobOutcome, result: CommitResult) -> None:
        if result is CommitResult.COMMITTED:
            failed = outcome.error  # the job failed as a whole (every turn rejected), committed as such
            self.usage.add(lease.job.org_id, {usage.JOBS_FAILED: 1, f"{usage.JOBS_FAILED}:{failed.code}": 1}
                           if failed else {usage.JOBS_SUCCEEDED: 1})
            metrics.observe_job(lease.job.kind, "failed" if failed else "succeeded", failed.code if failed else "",
                                outcome.result, int((outcome.result or {}).get("embedded_texts", 0)), outcome.usage)
        if result is CommitResult.LOST:
            log.warning("job %s: lease lost before commit (taken back, or the job was ended: its user or "
                        "conversation deleted); nothing written", lease.job.id)

    def _commit(self, lease: Lease, outcome: JobOutcome,
                first: CommitResult | None = None) -> tuple[JobOutcome, CommitResult]:
        """Commit (`first`: what the batch's commit already answered); while refused as
        stale, reconcile again (fresh reads, same extraction and vectors) and commit again.
        The outcome committed and the result; raises StaleCommits when that never succeeds."""
        for attempt in range(1, MAX_RECONCILES + 1):
            result = first if attempt == 1 and first is not None else self.store.complete(lease, outcome)
            if result is not CommitResult.STALE:
                return outcome, result
            if outcome.redo is None or attempt == MAX_RECONCILES:
                break
            log.info("job %s: the user's memory changed before its commit; reconciling again (%d)",
                     lease.job.id, attempt)
            outcome = outcome.redo()
        exc = StaleCommits(f"the user's memory changed before each of {MAX_RECONCILES} commits")
        exc.usage = outcome.usage  # type: ignore[attr-defined]  # what the extraction spent, recorded on retry
        raise exc

    def _retry_or_fail(self, lease: Lease, exc: Exception) -> None:
        """A failed attempt is retried later (backoff with jitter) unless it used the last
        attempt or its exception says `retryable = False` (the llm provider's errors do: their
        retries already happened around each request, see engram/llm/provider.py)."""
        spent = getattr(exc, "usage", None)  # provider tokens a failed attempt still cost the org
        if spent:
            self.store.record_usage(lease.job.org_id, utcnow(), spent)
        code = getattr(exc, "job_code", "ingest_failed")
        message = f"{type(exc).__name__}: {exc}"[:500]
        error = JobError(code=code, message=message)
        if lease.job.attempts >= self.settings.max_attempts or not getattr(exc, "retryable", True):
            log.error("job %s failed for good after %d attempt(s): %s", lease.job.id, lease.job.attempts, message)
            if self.store.fail(lease, error):
                self.usage.add(lease.job.org_id, {usage.JOBS_FAILED: 1, f"{usage.JOBS_FAILED}:{code}": 1})
                metrics.observe_job(lease.job.kind, "failed", code, None, 0, spent or {})
                if getattr(exc, "provider", False):
                    metrics.LLM_ERRORS.labels(code).inc()
            return
        backoff = self.settings.retry_base_s * 2 ** (lease.job.attempts - 1)
        delay = backoff * (0.5 + random.random())  # jitter keeps retries of many jobs apart
        log.warning("job %s attempt %d failed (%s); retrying in %.1fs", lease.job.id, lease.job.attempts, message, delay)
        self.store.retry_later(lease, error, utcnow() + timedelta(seconds=delay))

    def _sweep_idle_conversations(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < min(IDLE_SWEEP_EVERY_S, self.settings.episode_idle_s / 2):
            return
        self._last_sweep = now
        at = utcnow()
        created = self.store.enqueue_idle_episodes(at - timedelta(seconds=self.settings.episode_idle_s), at)
        if created:
            log.info("queued %d episode job(s) for idle conversations", created)


def _same_user(a: Lease, b: Lease) -> bool:
    return (a.job.org_id, a.job.user_id) == (b.job.org_id, b.job.user_id)


class _Heartbeat:
    """Extends a batch's leases every third of their timeout while its jobs run."""

    def __init__(self, store: Store, leases: list[Lease], timeout_s: float) -> None:
        self.store, self.leases, self.timeout_s = store, leases, timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        held = list(self.leases)
        while held and not self._stop.wait(self.timeout_s / 3):
            # a lease that no longer renews was ended (committed, retried, failed) or taken back
            renewed = self.store.renew_many(held, utcnow() + timedelta(seconds=self.timeout_s))
            held = [lease for lease, ok in zip(held, renewed) if ok]
