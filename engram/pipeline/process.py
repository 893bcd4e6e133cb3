"""Turn one leased job into a JobOutcome: filter → extract → embed → reconcile.

Nothing here writes: the worker commits the outcome in one transaction, so a job either
lands whole or not at all.

Reconcile reads the user's memory after reading the user's version (`Store.user_version`)
and records it in `outcome.basis`; if anything changed the user's facts before the commit,
the store refuses it as stale and the worker calls `outcome.redo()`, which reconciles the
same extraction and vectors again against fresh reads (no new extraction, no new
embedding). So a job's decisions are those its reconcile would make at its commit
(store/base.py `CommitResult` has the reasoning). In particular:

- a fact another job of the user committed meanwhile is repeated (sources added), not
  stored twice;
- a change whose old fact was superseded meanwhile supersedes the current end of the chain
  (found by its key, or, for an extractor's hint, by following the revisions forward);
- a fact the user retracted meanwhile is never touched again: a job that restates it
  writes a new active fact citing only its own turns, and one that changes it writes the
  new value as a new fact that supersedes nothing. The retraction was the user's word about
  what was known then; the job's turns are evidence that arrived with it, and dropping them
  silently (or citing them from a row no one can see) would lose what the user just said.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from engram.config import Settings
from engram.domain.details import ArtifactDetails
from engram.domain.extraction import ArtifactCandidate, Extraction, EpisodeCandidate, Turn
from engram.domain.filters import Cmp, conjoin
from engram.domain.records import Event, JobError, Memory, iso, utcnow
from engram.domain.text import text_hash
from engram.embed import Embedder
from engram.ids import new_memory_id
from engram.llm.usage import metering
from engram.pipeline.content_filter import ContentFilter
from engram.pipeline.reconcile import reconcile
from engram.store.base import JobOutcome, Lease, NewMemory, Store


CONTEXT_TURNS = 10  # earlier turns shown to the extractor (e.g. to know who "you" is)
RECALL_PER_TURN = 5  # stored memories looked up per turn for an extractor that sees memories


class Extractor(Protocol):
    """Turns into candidate memories.

    An extractor whose class sets `sees_memories = True` is also given
    `recall=<callable>`: `recall(turns)` returns the user's stored active memories most
    related to those turns, so that it can say in its candidates which one a fact
    repeats or supersedes (`FactCandidate.repeats / supersedes`, `ArtifactCandidate.revises`).
    """

    name: str

    def extract(self, turns: Sequence[Turn], *, extract_artifacts: bool, context: Sequence[Turn] = ()) -> Extraction: ...

    def episode(self, turns: Sequence[Turn]) -> EpisodeCandidate | None: ...


def to_turn(event: Event) -> Turn:
    return Turn(event_id=event.id, role=event.role, content=event.content, date=event.occurred_at,
                name=event.name, dia_id=event.dia_id)


class Pipeline:
    def __init__(self, store: Store, settings: Settings, extractor: Extractor, embedder: Embedder,
                 content_filter: ContentFilter) -> None:
        self.store = store
        self.settings = settings
        self.extractor = extractor
        self.embedder = embedder
        self.content_filter = content_filter

    def process(self, lease: Lease) -> JobOutcome:
        """Run one job. Provider requests and tokens it spends land in `outcome.usage` and
        `result.usage`; when it raises, in the exception's `usage` attribute instead (the
        worker records them for the org either way)."""
        with metering() as usage:
            try:
                outcome = self._episode_only(lease) if lease.job.kind == "episode" else self._ingest(lease)
            except Exception as exc:
                exc.usage = usage.snapshot()  # type: ignore[attr-defined]
                raise
        outcome.usage = usage.snapshot()
        if outcome.result:
            outcome.result["usage"] = outcome.usage
        return outcome

    # ------------------------------------------------------------------ ingest jobs
    def _ingest(self, lease: Lease) -> JobOutcome:
        job, outcome, timings = lease.job, JobOutcome(), {}

        with _timed(timings, "filter"):
            for event in lease.events:
                # every string the event would carry into a memory: its text, speaker name, metadata
                rejection = self.content_filter.check_event(event.content, name=event.name, metadata=event.metadata)
                if rejection is not None:
                    outcome.event_failures[event.id] = "content_rejected"
            accepted = [e for e in lease.events if e.id not in outcome.event_failures]
        if not accepted:
            outcome.error = JobError("content_rejected",
                                     "every message was rejected by the content filter (it appears to carry a secret)")
            return outcome

        with _timed(timings, "extract"):
            turns = [to_turn(e) for e in accepted]
            earlier = self.store.unepisoded_events(job.org_id, job.user_id, job.conv_id)
            context = [to_turn(e) for e in earlier[-CONTEXT_TURNS:]]
            extra: dict[str, Any] = {}
            if getattr(self.extractor, "sees_memories", False):
                extra["recall"] = self._recall(lease)
            extraction = self.extractor.extract(turns, extract_artifacts=bool(job.params.get("extract_artifacts")),
                                                context=context, **extra)
            _qualify_keys(extraction, accepted)
            episode = None
            if len(earlier) + len(accepted) >= self.settings.episode_every_turns:
                episode = self.extractor.episode([to_turn(e) for e in earlier] + turns)

        with _timed(timings, "embed"):
            texts = [f.text for f in extraction.facts] + [a.title + "\n" + a.rationale for a in extraction.artifacts]
            if episode is not None:
                texts.append(episode.summary)
            vectors = self.embedder.embed(texts) if texts else np.zeros((0, self.embedder.dim), np.float32)

        draft = _Draft(extraction, vectors, episode, earlier + accepted, dict(outcome.event_failures), timings)
        return self._reconciled(lease, draft)

    def _reconciled(self, lease: Lease, draft: "_Draft") -> JobOutcome:
        """The reconcile stage of an ingest job: its outcome against the user's memory as it
        is now. Runs again (as `outcome.redo`) when the commit finds it stale."""
        extraction, vectors, episode = draft.extraction, draft.vectors, draft.episode
        outcome, timings = JobOutcome(event_failures=dict(draft.event_failures)), draft.timings
        with _timed(timings, "reconcile"):
            if extraction.facts or extraction.artifacts or episode is not None:
                # Read before anything it decides on: a write after this read moves it.
                outcome.basis = self.store.user_version(lease.job.org_id, lease.job.user_id)
            fact_vectors = vectors[: len(extraction.facts)]
            self._reconcile_facts(lease, extraction, fact_vectors, outcome)
            self._add_artifacts(lease, extraction, vectors[len(extraction.facts):], outcome)
            if episode is not None:
                self._add_episode(lease, episode, vectors[-1], draft.events, outcome)

        outcome.result = {
            "object": "ingest_result",
            "memories_created": [_ref(n.memory) for n in outcome.created],
            "memories_updated": outcome.result.get("memories_updated", []),
            "memories_superseded_by": dict(outcome.superseded),
            "stage_timings": {k: round(v, 6) for k, v in timings.items()},
        }
        if draft.usage is not None:  # a redo: what the first run spent (reconcile spends nothing)
            outcome.usage = dict(draft.usage)
            outcome.result["usage"] = outcome.usage
        outcome.redo = lambda: self._redo(lease, draft, outcome)
        return outcome

    def _redo(self, lease: Lease, draft: "_Draft", stale: JobOutcome) -> JobOutcome:
        draft.usage = stale.usage
        return self._reconciled(lease, draft)

    def _base_memory(self, lease: Lease, type_: str, text: str, sources: Sequence[str]) -> Memory:
        """A memory carries the metadata of the events it came from (family X gives every
        event of a call the call's metadata; family M gives each event its own)."""
        job, now = lease.job, utcnow()
        by_id = {e.id: e for e in lease.events}
        metadata: dict[str, Any] = {}
        for event_id in sources:
            if event_id in by_id:
                metadata.update(by_id[event_id].metadata)
        return Memory(
            id=new_memory_id(), org_id=job.org_id, type=type_, text=text, user_id=job.user_id, conv_id=job.conv_id,
            agent_id=job.params.get("agent_id"), app_id=job.params.get("app_id"),
            metadata=metadata, created_at=now, updated_at=now,
            source_event_ids=list(dict.fromkeys(sources)), job_id=job.id,
        )

    def _recall(self, lease: Lease) -> Callable[[Sequence[Turn]], list[Memory]]:
        """The user's active facts and artifacts nearest to any of the given turns, best first."""
        job = lease.job
        where = conjoin(Cmp("user_id", "eq", job.user_id), Cmp("status", "eq", "active"),
                        Cmp("type", "in", ["fact", "artifact"]))
        limit = self.settings.llm_recall_limit

        def recall(turns: Sequence[Turn]) -> list[Memory]:
            texts = [t.content[:2000] for t in turns if t.content.strip()]
            if not texts or not limit:
                return []
            best: dict[str, float] = {}
            for vector in self.embedder.embed(texts):
                for memory_id, score in self.store.dense_candidates(job.org_id, where, vector, RECALL_PER_TURN):
                    best[memory_id] = max(score, best.get(memory_id, -1.0))
            ranked = sorted(best, key=lambda m: -best[m])[:limit]
            found = self.store.get_memories(job.org_id, ranked)
            return [found[m] for m in ranked if m in found]

        return recall

    def _reconcile_facts(self, lease: Lease, extraction: Extraction, vectors: np.ndarray, outcome: JobOutcome) -> None:
        job, facts = lease.job, extraction.facts
        if not facts:
            return
        existing = self.store.reconcile_candidates(
            job.org_id, job.user_id, [f.key for f in facts if f.key], [text_hash(f.text) for f in facts])
        # Facts the extractor says a candidate repeats or supersedes count only if they are
        # still active facts of this user (the job may run long after the model saw them).
        hinted = {ref for f in facts for ref in (f.repeats, f.supersedes) if ref} - {m.id for m in existing}
        if hinted:
            found = self.store.get_memories(job.org_id, sorted(hinted))
            existing += [m for m in found.values()
                         if m.type == "fact" and m.status == "active" and m.user_id == job.user_id]
            # A fact the extractor says this one replaces may have been revised since it saw it
            # (another job, a PATCH): the change replaces the revision that is current now.
            current = {ref: end for ref, end in ((m.id, self._current_revision(job, m)) for m in found.values()
                                                 if m.status == "superseded" and m.user_id == job.user_id)
                       if end is not None}
            if current:
                known = {m.id for m in existing}
                existing += [m for m in {m.id: m for m in current.values()}.values() if m.id not in known]
                facts = [replace(f, supersedes=current[f.supersedes].id) if f.supersedes in current else f
                         for f in facts]
        user_facts = conjoin(Cmp("user_id", "eq", job.user_id), Cmp("type", "eq", "fact"), Cmp("status", "eq", "active"))

        def nearest(vector: np.ndarray) -> tuple[str, str, float] | None:
            found = self.store.dense_candidates(job.org_id, user_facts, vector, 1)
            if not found:
                return None
            memory = self.store.get_memory(job.org_id, found[0][0])
            return (memory.id, memory.text, found[0][1]) if memory else None

        plan = reconcile(facts, vectors, existing, nearest)
        created_by_index: dict[int, Memory] = {}
        updated: dict[str, Memory | None] = {}

        def resolve(ref: str) -> str:
            return created_by_index[int(ref[1:])].id if ref.startswith("#") else ref

        for index, decision in enumerate(plan.decisions):
            fact = decision.candidate  # reconcile may have given it the key of the fact it supersedes
            if decision.repeats is not None:
                target = resolve(decision.repeats)
                if decision.repeats.startswith("#"):
                    mem = created_by_index[int(decision.repeats[1:])]
                    mem.source_event_ids = list(dict.fromkeys([*mem.source_event_ids, *fact.source_event_ids]))
                else:
                    outcome.added_sources.setdefault(target, [])
                    outcome.added_sources[target].extend(fact.source_event_ids)
                    updated.setdefault(target, next((m for m in existing if m.id == target), None))
                continue
            memory = self._base_memory(lease, "fact", fact.text, fact.source_event_ids)
            # Event time: the date the text gives, else when the turn it came from happened
            # (SPEC §3: a message's `date` is what time filters use).
            memory.key, memory.valid_at = fact.key, fact.valid_at or _turn_time(lease, fact.source_event_ids)
            memory.details = {"fact_type": fact.fact_type, "supersedes": None, "source_role": fact.source_role,
                              "episode_id": None, "artifact_ids": []}
            if decision.supersedes is not None:
                old = resolve(decision.supersedes)
                memory.details["supersedes"] = old
                outcome.superseded[old] = memory.id
            created_by_index[index] = memory
            outcome.created.append(NewMemory(memory, decision.vector))
        outcome.result.setdefault("memories_updated", []).extend(
            {"id": mid, "type": "fact", "text": m.text if m else ""} for mid, m in updated.items()
        )

    def _current_revision(self, job: Any, memory: Memory) -> Memory | None:
        """The active end of the revision chain through a superseded fact of the job's user;
        None when the chain ends retracted (the user deleted the current value)."""
        chain = self.store.memory_revisions(job.org_id, memory.id)
        end = chain[-1] if chain else None
        if end is None or end.id == memory.id or end.status != "active" or end.type != "fact" \
                or end.user_id != job.user_id:
            return None
        return end

    def _add_artifacts(self, lease: Lease, extraction: Extraction, vectors: np.ndarray, outcome: JobOutcome) -> None:
        """New artifacts, or new versions of stored ones: an artifact with the title of an
        active artifact of the user (or that the extractor says revises one) and other
        content is version n+1 with the same `root_id`, and the old version is superseded;
        with the same content it only cites the new turns (`memories_updated`)."""
        facts_by_event: dict[str, list[Memory]] = {}
        for new in outcome.created:
            for event_id in new.memory.source_event_ids:
                facts_by_event.setdefault(event_id, []).append(new.memory)
        this_job: dict[str, Memory] = {}  # title -> latest version written by this job
        for artifact, vector in zip(extraction.artifacts, vectors):
            previous = this_job.get(_title_key(artifact.title)) or self._stored_version(lease, artifact, vector)
            if previous is not None and _same_content(ArtifactDetails.of(previous).full_content, artifact.content):
                if previous.id in {m.id for m in this_job.values()}:
                    previous.source_event_ids = list(dict.fromkeys([*previous.source_event_ids,
                                                                    *artifact.source_event_ids]))
                else:
                    outcome.added_sources.setdefault(previous.id, []).extend(artifact.source_event_ids)
                    outcome.result.setdefault("memories_updated", []).append(_ref(previous))
                continue
            memory = self._base_memory(lease, "artifact", artifact.title, artifact.source_event_ids)
            related = [f for e in artifact.source_event_ids for f in facts_by_event.get(e, [])]
            version, root_id = 1, memory.id
            if previous is not None:
                known = ArtifactDetails.of(previous)
                version, root_id = int(known.version or 1) + 1, known.root_id or previous.id
                outcome.superseded[previous.id] = memory.id
            memory.details = {"title": artifact.title, "rationale": artifact.rationale, "version": version,
                              "root_id": root_id, "supersedes": previous.id if previous is not None else None,
                              "source_fact_ids": [f.id for f in related], "episode_ids": [],
                              "full_content": artifact.content}
            for fact in related:
                fact.details["artifact_ids"].append(memory.id)
            this_job[_title_key(artifact.title)] = memory
            outcome.created.append(NewMemory(memory, vector))

    def _stored_version(self, lease: Lease, artifact: ArtifactCandidate, vector: np.ndarray) -> Memory | None:
        """The user's active artifact this one is a new version (or a repeat) of, if any."""
        job = lease.job
        if artifact.revises:
            memory = self.store.get_memory(job.org_id, artifact.revises)
            if memory is not None and memory.type == "artifact" and memory.status == "active" \
                    and memory.user_id == job.user_id:
                return memory
        where = conjoin(Cmp("user_id", "eq", job.user_id), Cmp("type", "eq", "artifact"),
                        Cmp("status", "eq", "active"))
        nearest = [m for m, _ in self.store.dense_candidates(job.org_id, where, vector, 5)]
        found = self.store.get_memories(job.org_id, nearest)
        return next((found[m] for m in nearest if m in found and _title_key(found[m].text) == _title_key(artifact.title)),
                    None)

    def _add_episode(self, lease: Lease, episode: EpisodeCandidate, vector: np.ndarray, events: Sequence[Event],
                     outcome: JobOutcome) -> None:
        memory = self._base_memory(lease, "episode", episode.summary, episode.source_event_ids)
        memory.valid_at = episode.started_at
        covered = set(episode.source_event_ids)
        fresh = [n.memory for n in outcome.created if covered & set(n.memory.source_event_ids)]
        earlier_facts = self._memories_citing(lease, [e.id for e in events if e.id not in
                                                      {s for n in outcome.created for s in n.memory.source_event_ids}])
        members = [*earlier_facts, *fresh]
        memory.details = {
            "title": episode.title, "started_at": iso(episode.started_at), "ended_at": iso(episode.ended_at),
            "fact_ids": [m.id for m in members if m.type == "fact"],
            "artifact_ids": [m.id for m in members if m.type == "artifact"],
        }
        for fact in fresh:
            if fact.type == "fact":
                fact.details["episode_id"] = memory.id
            elif fact.type == "artifact":
                fact.details["episode_ids"].append(memory.id)
        outcome.created.append(NewMemory(memory, vector))
        outcome.episode_id = memory.id
        outcome.episode_event_ids = [e.id for e in events]

    def _memories_citing(self, lease: Lease, event_ids: Sequence[str]) -> list[Memory]:
        return self.store.memories_citing(lease.job.org_id, event_ids) if event_ids else []

    # ------------------------------------------------------------------ idle episodes
    def _episode_only(self, lease: Lease) -> JobOutcome:
        job, outcome, timings = lease.job, JobOutcome(), {}
        with _timed(timings, "extract"):
            events = self.store.unepisoded_events(job.org_id, job.user_id, job.conv_id)
            episode = self.extractor.episode([to_turn(e) for e in events]) if events else None
        if episode is not None:
            with _timed(timings, "embed"):
                vector = self.embedder.embed([episode.summary])[0]
            self._add_episode(lease, episode, vector, events, outcome)
        outcome.result = {"object": "ingest_result", "memories_created": [_ref(n.memory) for n in outcome.created],
                          "memories_updated": [], "memories_superseded_by": {},
                          "stage_timings": {k: round(v, 6) for k, v in timings.items()}}
        return outcome


@dataclass(slots=True)
class _Draft:
    """What an ingest job's extraction and embedding produced: everything its reconcile
    needs, kept so that a stale commit is reconciled again without extracting or embedding."""

    extraction: Extraction
    vectors: np.ndarray
    episode: EpisodeCandidate | None
    events: list[Event]  # the turns an episode would cover (earlier unepisoded ones + this job's)
    event_failures: dict[str, str]
    timings: dict[str, float]
    usage: dict[str, int] | None = None  # set on a redo: what the first run spent


def _qualify_keys(extraction: Extraction, events: Sequence[Event]) -> None:
    """An attribute key belongs to the speaker it describes: under one user_id several
    named people may talk (Caroline's `lives_in` must not supersede Melanie's)."""
    speakers = {e.id: (e.name or e.role) for e in events}
    for i, fact in enumerate(extraction.facts):
        if fact.key and fact.source_event_ids:
            speaker = speakers.get(fact.source_event_ids[0], "")
            extraction.facts[i] = replace(fact, key=f"{speaker.strip().lower()}:{fact.key}")


def _title_key(title: str) -> str:
    return " ".join(title.casefold().split())


def _same_content(old: Any, new: str) -> bool:
    return isinstance(old, str) and old.strip() == new.strip()


def _turn_time(lease: Lease, event_ids: Sequence[str]) -> datetime | None:
    """When the earliest of these turns of the job happened."""
    wanted = set(event_ids)
    times = [e.occurred_at for e in lease.events if e.id in wanted]
    return min(times) if times else None


def _ref(memory: Memory) -> dict[str, Any]:
    return {"id": memory.id, "type": memory.type, "text": memory.text}


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Adds the wall time of the block to timings[stage]."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - started
