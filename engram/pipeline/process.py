"""Turn one leased job into a JobOutcome: filter → extract → embed → reconcile.

Nothing here writes: the worker commits the outcome in one transaction, so a job either
lands whole or not at all.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from engram.config import Settings
from engram.domain.extraction import Extraction, EpisodeCandidate, Turn
from engram.domain.filters import Cmp, conjoin
from engram.domain.records import Event, JobError, Memory, iso, utcnow
from engram.domain.text import text_hash
from engram.embed import Embedder
from engram.ids import new_memory_id
from engram.pipeline.content_filter import ContentFilter
from engram.pipeline.reconcile import reconcile
from engram.store.base import JobOutcome, Lease, NewMemory, Store


CONTEXT_TURNS = 10  # earlier turns shown to the extractor (e.g. to know who "you" is)


class Extractor(Protocol):
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
        if lease.job.kind == "episode":
            return self._episode_only(lease)
        return self._ingest(lease)

    # ------------------------------------------------------------------ ingest jobs
    def _ingest(self, lease: Lease) -> JobOutcome:
        job, outcome, timings = lease.job, JobOutcome(), {}

        with _timed(timings, "filter"):
            for event in lease.events:
                rejection = self.content_filter.check(event.content)
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
            extraction = self.extractor.extract(turns, extract_artifacts=bool(job.params.get("extract_artifacts")),
                                                context=context)
            _qualify_keys(extraction, accepted)
            episode = None
            if len(earlier) + len(accepted) >= self.settings.episode_every_turns:
                episode = self.extractor.episode([to_turn(e) for e in earlier] + turns)

        with _timed(timings, "embed"):
            texts = [f.text for f in extraction.facts] + [a.title + "\n" + a.rationale for a in extraction.artifacts]
            if episode is not None:
                texts.append(episode.summary)
            vectors = self.embedder.embed(texts) if texts else np.zeros((0, self.embedder.dim), np.float32)

        with _timed(timings, "reconcile"):
            fact_vectors = vectors[: len(extraction.facts)]
            self._reconcile_facts(lease, extraction, fact_vectors, outcome)
            self._add_artifacts(lease, extraction, vectors[len(extraction.facts):], outcome)
            if episode is not None:
                self._add_episode(lease, episode, vectors[-1], earlier + accepted, outcome)

        outcome.result = {
            "object": "ingest_result",
            "memories_created": [_ref(n.memory) for n in outcome.created],
            "memories_updated": outcome.result.get("memories_updated", []),
            "memories_superseded_by": dict(outcome.superseded),
            "stage_timings": {k: round(v, 6) for k, v in timings.items()},
        }
        return outcome

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

    def _reconcile_facts(self, lease: Lease, extraction: Extraction, vectors: np.ndarray, outcome: JobOutcome) -> None:
        job, facts = lease.job, extraction.facts
        if not facts:
            return
        existing = self.store.reconcile_candidates(
            job.org_id, job.user_id, [f.key for f in facts if f.key], [text_hash(f.text) for f in facts])
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
            fact = decision.candidate
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
            memory.key, memory.valid_at = fact.key, fact.valid_at
            memory.details = {"fact_type": fact.fact_type, "supersedes": None, "source_role": fact.source_role,
                              "episode_id": None, "artifact_ids": []}
            if decision.supersedes is not None:
                old = resolve(decision.supersedes)
                memory.details["supersedes"] = old
                outcome.superseded[old] = memory.id
            created_by_index[index] = memory
            outcome.created.append(NewMemory(memory, decision.vector))
        outcome.result["memories_updated"] = [
            {"id": mid, "type": "fact", "text": m.text if m else ""} for mid, m in updated.items()
        ]

    def _add_artifacts(self, lease: Lease, extraction: Extraction, vectors: np.ndarray, outcome: JobOutcome) -> None:
        facts_by_event: dict[str, list[Memory]] = {}
        for new in outcome.created:
            for event_id in new.memory.source_event_ids:
                facts_by_event.setdefault(event_id, []).append(new.memory)
        for artifact, vector in zip(extraction.artifacts, vectors):
            memory = self._base_memory(lease, "artifact", artifact.title, artifact.source_event_ids)
            related = [f for e in artifact.source_event_ids for f in facts_by_event.get(e, [])]
            memory.details = {"title": artifact.title, "rationale": artifact.rationale, "version": 1,
                              "root_id": memory.id, "source_fact_ids": [f.id for f in related], "episode_ids": [],
                              "full_content": artifact.content}
            for fact in related:
                fact.details["artifact_ids"].append(memory.id)
            outcome.created.append(NewMemory(memory, vector))

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


def _qualify_keys(extraction: Extraction, events: Sequence[Event]) -> None:
    """An attribute key belongs to the speaker it describes: under one user_id several
    named people may talk (Caroline's `lives_in` must not supersede Melanie's)."""
    speakers = {e.id: (e.name or e.role) for e in events}
    for i, fact in enumerate(extraction.facts):
        if fact.key and fact.source_event_ids:
            speaker = speakers.get(fact.source_event_ids[0], "")
            extraction.facts[i] = replace(fact, key=f"{speaker.strip().lower()}:{fact.key}")


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
