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

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from engram.config import Settings
from engram.domain.details import ArtifactDetails, Details, EpisodeDetails, FactDetails
from engram.domain.extraction import ArtifactCandidate, EpisodeCandidate, Extraction, FactCandidate, Guidance, Turn
from engram.domain.filters import Cmp, conjoin
from engram.domain.records import Event, JobError, Memory, MemoryType, utcnow
from engram.domain.text import text_hash
from engram.embed import Embedder
from engram.ids import new_memory_id
from engram.llm.usage import metering
from engram.pipeline.content_filter import ContentFilter
from engram.pipeline import sharing
from engram.pipeline.reconcile import reconcile
from engram.store.base import JobOutcome, Lease, NewMemory, Store
from engram.stages import timed


CONTEXT_TURNS = 10  # earlier turns shown to the extractor (e.g. to know who "you" is)
RECALL_PER_TURN = 5  # stored memories looked up per turn for an extractor that sees memories
EXCLUDED_IN_FILTER = 2000  # a replay's old facts kept out of reconcile by a filter clause, up to this many


class Extractor(Protocol):
    """Turns into candidate memories.

    An extractor whose class sets `sees_guidance = True` is also given `guidance=<Guidance>`:
    the promotion prompts of the org and of the turns' roles and teams (the rules extractor
    cannot read prose, so it is not). An extractor whose class sets `sees_memories = True` is
    also given `recall=<callable>`: `recall(turns)` returns the user's stored active memories most
    related to those turns, so that it can say in its candidates which one a fact
    repeats or supersedes (`FactCandidate.repeats / supersedes`, `ArtifactCandidate.revises`).
    """

    name: str

    def extract(self, turns: Sequence[Turn], *, extract_artifacts: bool, context: Sequence[Turn] = ()) -> Extraction: ...

    def episode(self, turns: Sequence[Turn]) -> EpisodeCandidate | None: ...


def to_turn(event: Event) -> Turn:
    role_id, team_id = (v if isinstance(v := event.metadata.get(k), str) else None for k in ("role_id", "team_id"))
    return Turn(event_id=event.id, role=event.role, content=event.content, date=event.occurred_at,
                name=event.name, dia_id=event.dia_id, role_id=role_id, team_id=team_id)


def guidance_for(store: Store, org_id: str, events: Sequence[Event]) -> Guidance:
    """The org's promotion prompt and those of the roles and teams these events came with."""
    org = store.get_org(org_id)
    wanted = {kind: sorted({v for e in events if isinstance(v := e.metadata.get(f"{kind}_id"), str)})
              for kind in ("role", "team")}
    found = {kind: {u.id: (u.name, u.promotion_prompt) for u in store.org_units_named(org_id, kind, ids)
                    if u.promotion_prompt}
             for kind, ids in wanted.items()}
    return Guidance(org.name if org else None, org.promotion_prompt if org else None, found["role"], found["team"])


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
                kind = lease.job.kind
                outcome = (self._episode_only(lease) if kind == "episode" else
                           self._replay(lease) if kind == "replay" else self._ingest(lease))
            except Exception as exc:
                exc.usage = usage.snapshot()  # type: ignore[attr-defined]
                raise
        outcome.usage = usage.snapshot()
        outcome.space = self.embedder.name  # its vectors' space: the commit checks the store's is still it
        if outcome.result:
            outcome.result["usage"] = outcome.usage
        return outcome

    # ------------------------------------------------------------------ ingest jobs
    def _ingest(self, lease: Lease) -> JobOutcome:
        job, outcome, timings = lease.job, JobOutcome(), {}

        with timed(timings, "filter"):
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

        with timed(timings, "extract"):
            turns = [to_turn(e) for e in accepted]
            earlier = self.store.unepisoded_events(job.org_id, job.user_id, job.conv_id)
            context = [to_turn(e) for e in earlier[-CONTEXT_TURNS:]]
            extra: dict[str, Any] = {}
            if getattr(self.extractor, "sees_memories", False):
                extra["recall"] = self._recall(lease)
            if getattr(self.extractor, "sees_guidance", False):
                extra["guidance"] = guidance_for(self.store, job.org_id, accepted)
            extraction = self.extractor.extract(turns, extract_artifacts=bool(job.params.get("extract_artifacts")),
                                                context=context, **extra)
            _qualify_keys(extraction, accepted)
            episode = None
            if len(earlier) + len(accepted) >= self.settings.episode_every_turns:
                episode = self.extractor.episode([to_turn(e) for e in earlier] + turns)

        with timed(timings, "embed"):
            texts = [f.text for f in extraction.facts] + [a.title + "\n" + a.rationale for a in extraction.artifacts]
            if episode is not None:
                texts.append(episode.summary)
            vectors = self.embedder.embed(texts) if texts else np.zeros((0, self.embedder.dim), np.float32)
            judge = self._judge(lease)

        draft = _Draft(extraction, vectors, episode, earlier + accepted, dict(outcome.event_failures), timings,
                       judge=judge)
        return self._reconciled(lease, draft)

    # ------------------------------------------------------------------ replay jobs
    def _replay(self, lease: Lease) -> JobOutcome:
        """Extract a conversation's remembered turns again with the current extractor (SPEC §5).

        The turns are extracted as they were ingested — each original job's turns together,
        with the turns before them as context — and reconciled against the user's memory
        *without* the facts derived only from this conversation (they are what is being
        redone, `_replaced`): the conversation's own changes ("I moved to Boston" after "I live
        in Denver") chain inside the batch as they did the first time. Then each of those old
        facts is superseded by the new fact that says the same, names its key or comes from
        its turns, or retracted when the extractor no longer finds it (`_plan_replacements`).
        Episodes are not redone."""
        job, timings = lease.job, {}
        with timed(timings, "filter"):
            turns = [e for e in lease.events
                     if self.content_filter.check_event(e.content, name=e.name, metadata=e.metadata) is None]
        with timed(timings, "extract"):
            facts: list[FactCandidate] = []
            artifacts: list[ArtifactCandidate] = []
            extra: dict[str, Any] = {}
            if getattr(self.extractor, "sees_memories", False):
                extra["recall"] = self._recall(lease)
            if getattr(self.extractor, "sees_guidance", False):
                extra["guidance"] = guidance_for(self.store, job.org_id, turns)
            seen: list[Event] = []
            for job_id, group in _by_original_job(turns):
                original = self.store.get_job(job.org_id, job_id) if job_id else None
                extraction = self.extractor.extract(
                    [to_turn(e) for e in group], context=[to_turn(e) for e in seen[-CONTEXT_TURNS:]],
                    extract_artifacts=bool(original and original.params.get("extract_artifacts")), **extra)
                _qualify_keys(extraction, group)
                facts += extraction.facts
                artifacts += extraction.artifacts
                seen += group
            extraction = Extraction(facts=facts, artifacts=artifacts)
        with timed(timings, "embed"):
            texts = [f.text for f in facts] + [a.title + "\n" + a.rationale for a in artifacts]
            vectors = self.embedder.embed(texts) if texts else np.zeros((0, self.embedder.dim), np.float32)
        return self._reconciled(lease, _Draft(extraction, vectors, None, [], {}, timings))

    def _replaced(self, lease: Lease) -> dict[str, Memory]:
        """The user's facts derived only from the replayed conversation's turns, any status."""
        turns = {e.id for e in lease.events}
        job = lease.job
        found = self.store.memories_citing(job.org_id, sorted(turns), any_status=True) if turns else []
        return {m.id: m for m in found
                if m.type == "fact" and m.user_id == job.user_id and set(m.source_event_ids) <= turns}

    @staticmethod
    def _plan_replacements(plan: "_Plan", replaced: dict[str, Memory]) -> None:
        """Make a replay's plan a difference against the conversation's old facts.

        What the batch supersedes within itself is history the old facts already hold, so it is
        not written again. An old active fact the batch says again (same text) stays as it is,
        and the new copy is dropped; any other old active fact gives way to the new fact that
        has its key, else shares one of its turns (superseded by it; the new fact names it
        unless it already replaces another), and is retracted when there is none. A replay
        that finds what was found before writes nothing."""
        renamed: dict[str, str | None] = {}  # a dropped new fact -> the old fact standing for it
        history = {f.id for f in plan.facts if f.id in plan.superseded}
        for f in plan.facts:
            if f.id in history:
                renamed[f.id] = None
                if f.supersedes and f.supersedes not in history and f.supersedes not in renamed:
                    # it replaced a stored fact: its successor in the batch does now
                    end = plan.superseded[f.id]
                    while end in history:
                        end = plan.superseded[end]
                    plan.superseded[f.supersedes] = end
        active_old = {text_hash(m.text): m for m in replaced.values() if m.status == "active"}
        kept: set[str] = set()
        for f in plan.facts:
            old = active_old.get(text_hash(f.candidate.text))
            if f.id not in history and old is not None and old.id not in kept:
                renamed[f.id] = old.id
                kept.add(old.id)
        for dropped in renamed:
            plan.superseded.pop(dropped, None)
        plan.superseded = {old: new for old, new in plan.superseded.items() if new not in renamed}
        plan.facts = [replace(f, supersedes=None) if f.supersedes in renamed else f
                      for f in plan.facts if f.id not in renamed]
        plan.artifacts = [replace(a, fact_ids=tuple(x for x in (renamed.get(i, i) for i in a.fact_ids) if x))
                          for a in plan.artifacts]
        by_key = {f.candidate.key: f.id for f in plan.facts if f.candidate.key}
        by_turn: dict[str, str] = {}
        for f in plan.facts:
            for event_id in f.sources:
                by_turn.setdefault(event_id, f.id)
        index = {f.id: i for i, f in enumerate(plan.facts)}
        for old in sorted(replaced.values(), key=lambda m: m.id):
            if old.status != "active" or old.id in kept:
                continue
            new = (by_key.get(old.key) if old.key else None) \
                or next((by_turn[e] for e in old.source_event_ids if e in by_turn), None)
            if new is None:
                plan.retracted.append(old.id)
                continue
            plan.superseded[old.id] = new
            fact = plan.facts[index[new]]
            if fact.supersedes is None:
                plan.facts[index[new]] = replace(fact, supersedes=old.id)
        plan.unchanged = len(kept)

    def _reconciled(self, lease: Lease, draft: "_Draft") -> JobOutcome:
        """The reconcile stage of an ingest job: its outcome against the user's memory as it
        is now. Runs again (as `outcome.redo`) when the commit finds it stale.

        First every decision (`_Plan`: which facts are new, which repeat a stored one or one
        of the batch, what they supersede; the artifacts' versions and the facts they cite;
        the episode and its members), then `_build` makes each memory once, with its final
        details and sources; no memory is changed after it is built."""
        extraction, vectors, episode = draft.extraction, draft.vectors, draft.episode
        outcome, timings = JobOutcome(event_failures=dict(draft.event_failures)), draft.timings
        with timed(timings, "reconcile"):
            if extraction.facts or extraction.artifacts or episode is not None:
                # Read before anything it decides on: a write after this read moves it.
                outcome.basis = self.store.user_version(lease.job.org_id, lease.job.user_id)
            plan = _Plan()
            replaced = self._replaced(lease) if lease.job.kind == "replay" else {}
            self._plan_facts(lease, extraction, vectors[: len(extraction.facts)], plan, exclude=set(replaced))
            self._plan_artifacts(lease, extraction, vectors[len(extraction.facts):], plan)
            if replaced:
                self._plan_replacements(plan, replaced)
            if episode is not None:
                self._plan_episode(lease, episode, vectors[-1], draft.events, plan)
            self._carry_out(lease, plan, outcome, draft.judge)

        outcome.result = {
            "object": "ingest_result",
            "memories_created": [_ref(n.memory) for n in outcome.created],
            "memories_updated": list(plan.updated),
            "memories_superseded_by": dict(outcome.superseded),
            "stage_timings": {k: round(v, 6) for k, v in timings.items()},
            "embedded_texts": int(vectors.shape[0]),
        }
        if lease.job.kind == "replay":
            outcome.result["memories_retracted"] = list(outcome.retracted)
            outcome.result["replay"] = {
                "turns": len(lease.events), "facts_before": sum(m.status == "active" for m in replaced.values()),
                "facts_unchanged": plan.unchanged}
        if draft.usage is not None:  # a redo: what the first run spent (reconcile spends nothing)
            outcome.usage = dict(draft.usage)
            outcome.result["usage"] = outcome.usage
        outcome.space = self.embedder.name  # a redo commits the same vectors: the same check
        outcome.redo = lambda: self._redo(lease, draft, outcome)
        return outcome

    def _redo(self, lease: Lease, draft: "_Draft", stale: JobOutcome) -> JobOutcome:
        draft.usage = stale.usage
        return self._reconciled(lease, draft)

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

    def _plan_facts(self, lease: Lease, extraction: Extraction, vectors: np.ndarray, plan: "_Plan", *,
                    exclude: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        """`exclude`: stored facts reconcile must not see (a replay's old facts)."""
        job, facts = lease.job, extraction.facts
        if not facts:
            return
        existing = [m for m in self.store.reconcile_candidates(
            job.org_id, job.user_id, [f.key for f in facts if f.key], [text_hash(f.text) for f in facts])
            if m.id not in exclude]
        # Facts the extractor says a candidate repeats or supersedes count only if they are
        # still active facts of this user (the job may run long after the model saw them).
        hinted = {ref for f in facts for ref in (f.repeats, f.supersedes) if ref} - {m.id for m in existing}
        if hinted:
            found = self.store.get_memories(job.org_id, sorted(hinted))
            existing += [m for m in found.values()
                         if m.type == "fact" and m.status == "active" and m.user_id == job.user_id
                         and m.id not in exclude]
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
        # Excluded ids as a filter clause while they are few (a statement binds each one);
        # past that, read past them instead.
        in_filter = len(exclude) <= EXCLUDED_IN_FILTER
        user_facts = conjoin(Cmp("user_id", "eq", job.user_id), Cmp("type", "eq", "fact"), Cmp("status", "eq", "active"),
                             *([Cmp("id", "nin", tuple(sorted(exclude)))] if exclude and in_filter else []))

        def nearest(vector: np.ndarray, k: int) -> list[tuple[Memory, float]]:
            found = self.store.dense_candidates(job.org_id, user_facts, vector, k if in_filter else k + len(exclude))
            found = [(memory_id, cosine) for memory_id, cosine in found if memory_id not in exclude][:k]
            if not found:
                return []
            rows = self.store.get_memories(job.org_id, [memory_id for memory_id, _ in found])
            return [(rows[memory_id], cosine) for memory_id, cosine in found if memory_id in rows]

        decisions = reconcile(facts, vectors, existing, nearest).decisions
        planned: dict[int, _NewFact] = {}  # decision index -> the new fact it makes
        updated: dict[str, Memory | None] = {}  # stored facts repeated, with what `existing` knew of them

        for index, decision in enumerate(decisions):
            fact = decision.candidate  # reconcile may have given it the key of the fact it supersedes
            if decision.repeats is not None:
                if decision.repeats.startswith("#"):  # repeated inside the batch: its turns join the first copy's
                    first = planned[int(decision.repeats[1:])]
                    planned[int(decision.repeats[1:])] = replace(first, sources=_merged(first.sources,
                                                                                        fact.source_event_ids))
                else:
                    plan.added_sources.setdefault(decision.repeats, []).extend(fact.source_event_ids)
                    updated.setdefault(decision.repeats, next((m for m in existing if m.id == decision.repeats), None))
                continue
            memory_id, old = new_memory_id(), decision.supersedes
            if old is not None:
                old = planned[int(old[1:])].id if old.startswith("#") else old
                plan.superseded[old] = memory_id
            planned[index] = _NewFact(memory_id, fact, decision.vector, _merged((), fact.source_event_ids), old)
        plan.facts.extend(planned.values())
        plan.updated.extend({"id": mid, "type": "fact", "text": m.text if m else ""} for mid, m in updated.items())

    def _current_revision(self, job: Any, memory: Memory) -> Memory | None:
        """The active end of the revision chain through a superseded fact of the job's user;
        None when the chain ends retracted (the user deleted the current value)."""
        chain = self.store.memory_revisions(job.org_id, memory.id)
        end = chain[-1] if chain else None
        if end is None or end.id == memory.id or end.status != "active" or end.type != "fact" \
                or end.user_id != job.user_id:
            return None
        return end

    def _plan_artifacts(self, lease: Lease, extraction: Extraction, vectors: np.ndarray, plan: "_Plan") -> None:
        """New artifacts, or new versions of stored ones: an artifact with the title of an
        active artifact of the user (or that the extractor says revises one) and other
        content is version n+1 with the same `root_id`, and the old version is superseded;
        with the same content it only cites the new turns (`memories_updated`). A new one
        cites the batch's new facts that share a turn with it (`source_fact_ids`; those facts
        list it in their `artifact_ids`)."""
        facts_by_event: dict[str, list[str]] = {}
        for fact in plan.facts:
            for event_id in fact.sources:
                facts_by_event.setdefault(event_id, []).append(fact.id)
        this_job: dict[str, int] = {}  # title -> index in plan.artifacts of the latest version this job writes
        for artifact, vector in zip(extraction.artifacts, vectors):
            title = _title_key(artifact.title)
            previous: tuple[str, int, str] | None = None  # the version it follows: id, version, root_id
            if title in this_job:
                prior = plan.artifacts[this_job[title]]
                if _same_content(prior.candidate.content, artifact.content):
                    plan.artifacts[this_job[title]] = replace(prior, sources=_merged(prior.sources,
                                                                                     artifact.source_event_ids))
                    continue
                previous = (prior.id, prior.version, prior.root_id)
            elif (stored := self._stored_version(lease, artifact, vector)) is not None:
                known = ArtifactDetails.of(stored)
                if _same_content(known.full_content, artifact.content):
                    plan.added_sources.setdefault(stored.id, []).extend(artifact.source_event_ids)
                    plan.updated.append(_ref(stored))
                    continue
                previous = (stored.id, int(known.version or 1), known.root_id or stored.id)
            memory_id = new_memory_id()
            version, root_id, old = 1, memory_id, None
            if previous is not None:
                old, version, root_id = previous[0], previous[1] + 1, previous[2]
                plan.superseded[old] = memory_id
            cites = tuple(f for e in artifact.source_event_ids for f in facts_by_event.get(e, ()))
            plan.artifacts.append(_NewArtifact(memory_id, artifact, vector, _merged((), artifact.source_event_ids),
                                               version, root_id, old, cites))
            this_job[title] = len(plan.artifacts) - 1

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

    def _plan_episode(self, lease: Lease, episode: EpisodeCandidate, vector: np.ndarray, events: Sequence[Event],
                      plan: "_Plan") -> None:
        """The episode over `events`: its members are the stored memories citing those turns
        that no new memory of the job cites, then the job's new facts and artifacts that
        share a turn with it (those get its id: `episode_id`, `episode_ids`)."""
        covered = set(episode.source_event_ids)
        new = [*(("fact", f.id, f.sources) for f in plan.facts),
               *(("artifact", a.id, a.sources) for a in plan.artifacts)]
        fresh = [(type_, memory_id) for type_, memory_id, sources in new if covered.intersection(sources)]
        cited = {event_id for _, _, sources in new for event_id in sources}
        earlier = self._memories_citing(lease, [e.id for e in events if e.id not in cited])
        members = [*((m.type, m.id) for m in earlier), *fresh]
        plan.episode = _NewEpisode(
            new_memory_id(), episode, vector,
            fact_ids=tuple(m for type_, m in members if type_ == "fact"),
            artifact_ids=tuple(m for type_, m in members if type_ == "artifact"),
            covers=frozenset(m for _, m in fresh), event_ids=tuple(e.id for e in events))

    def _memories_citing(self, lease: Lease, event_ids: Sequence[str]) -> list[Memory]:
        return self.store.memories_citing(lease.job.org_id, event_ids) if event_ids else []

    # ------------------------------------------------------------------ building what was decided
    def _carry_out(self, lease: Lease, plan: "_Plan", outcome: JobOutcome,
                   judge: sharing.Judge | None = None) -> None:
        """The plan as the outcome the store commits."""
        outcome.created = self._build(lease, plan)
        if judge is not None:
            outcome.group_tags = _group_tags(lease, outcome.created, judge)
        outcome.added_sources = plan.added_sources
        outcome.superseded = plan.superseded
        outcome.retracted = plan.retracted
        if plan.episode is not None:
            outcome.episode_id, outcome.episode_event_ids = plan.episode.id, list(plan.episode.event_ids)

    def _judge(self, lease: Lease) -> sharing.Judge | None:
        """What judges the job's new memories for the groups its ingest named, read and embedded
        once per job (a redo reuses it); None when it names no group active now."""
        named = lease.job.params.get("group_ids") or []
        found = self.store.groups_by_id(lease.job.org_id, named) if named else {}
        groups = [found[g] for g in named if g in found and found[g].status == "active"]
        if not groups:
            return None
        prompts = sharing.prompted(groups)
        return sharing.Judge.of(groups, self.embedder.embed(prompts) if prompts else np.zeros((0, self.embedder.dim)))

    def _build(self, lease: Lease, plan: "_Plan") -> list[NewMemory]:
        """Every memory of the plan, each built once with its final details: the facts (with
        the artifacts citing them and their episode), the artifacts (with their episode), the
        episode; in that order, which is the order the store inserts them."""
        episode = plan.episode
        covered = episode.covers if episode is not None else frozenset()
        cited_by: dict[str, list[str]] = {}  # fact id -> the new artifacts citing it
        for artifact in plan.artifacts:
            for fact_id in artifact.fact_ids:
                cited_by.setdefault(fact_id, []).append(artifact.id)
        built: list[NewMemory] = []
        for f in plan.facts:
            c = f.candidate
            details = FactDetails(fact_type=c.fact_type, supersedes=f.supersedes, source_role=c.source_role,
                                  episode_id=episode.id if episode is not None and f.id in covered else None,
                                  artifact_ids=tuple(cited_by.get(f.id, ())))
            # Event time: the date the text gives, else when the turn it came from happened
            # (SPEC §3: a message's `date` is what time filters use).
            built.append(NewMemory(self._memory(lease, f.id, "fact", c.text, c.source_event_ids, f.sources, details,
                                                key=c.key, valid_at=c.valid_at or _turn_time(lease, c.source_event_ids)),
                                   f.vector))
        for a in plan.artifacts:
            c = a.candidate
            details = ArtifactDetails(title=c.title, rationale=c.rationale, version=a.version, root_id=a.root_id,
                                      supersedes=a.supersedes, source_fact_ids=a.fact_ids,
                                      episode_ids=(episode.id,) if episode is not None and a.id in covered else (),
                                      full_content=c.content)
            built.append(NewMemory(self._memory(lease, a.id, "artifact", c.title, c.source_event_ids, a.sources,
                                                details), a.vector))
        if episode is not None:
            e = episode.candidate
            details = EpisodeDetails(title=e.title, started_at=e.started_at, ended_at=e.ended_at,
                                     fact_ids=episode.fact_ids, artifact_ids=episode.artifact_ids)
            built.append(NewMemory(self._memory(lease, episode.id, "episode", e.summary, e.source_event_ids,
                                                e.source_event_ids, details, valid_at=e.started_at), episode.vector))
        return built

    def _memory(self, lease: Lease, memory_id: str, type_: MemoryType, text: str, extracted_from: Sequence[str],
                sources: Sequence[str], details: Details, *, key: str | None = None,
                valid_at: datetime | None = None) -> Memory:
        """A memory carries the metadata of the events it was extracted from (family X gives
        every event of a call the call's metadata; family M gives each event its own); turns a
        repeat later in the batch added count among its sources only."""
        job, now = lease.job, utcnow()
        by_id = {e.id: e for e in lease.events}
        metadata: dict[str, Any] = {}
        for event_id in extracted_from:
            if event_id in by_id:
                metadata.update(by_id[event_id].metadata)
        return Memory(
            id=memory_id, org_id=job.org_id, type=type_, text=text, user_id=job.user_id, conv_id=job.conv_id,
            agent_id=job.params.get("agent_id"), app_id=job.params.get("app_id"),
            metadata=metadata, created_at=now, updated_at=now, details=details.to_wire(), key=key,
            valid_at=valid_at, source_event_ids=list(dict.fromkeys(sources)), job_id=job.id,
        )

    # ------------------------------------------------------------------ idle episodes
    def _episode_only(self, lease: Lease) -> JobOutcome:
        job, outcome, timings = lease.job, JobOutcome(), {}
        with timed(timings, "extract"):
            events = self.store.unepisoded_events(job.org_id, job.user_id, job.conv_id)
            episode = self.extractor.episode([to_turn(e) for e in events]) if events else None
        if episode is not None:
            with timed(timings, "embed"):
                vector = self.embedder.embed([episode.summary])[0]
            plan = _Plan()
            self._plan_episode(lease, episode, vector, events, plan)
            self._carry_out(lease, plan, outcome)
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
    judge: sharing.Judge | None = None  # the groups its new memories may join


def _group_tags(lease: Lease, created: Sequence[NewMemory], judge: sharing.Judge) -> dict[str, list[str]]:
    """The groups each new memory joins (pipeline/sharing.py)."""
    said = {e.id: e.content for e in lease.events}
    tags: dict[str, list[str]] = {}
    for new in created:
        m = new.memory
        turns = [said[e] for e in m.source_event_ids if e in said]
        # An episode speaks for its whole conversation; a fact or artifact for its sentences.
        evidence = turns if m.type == "episode" else sharing.source_sentences(m.text, turns)
        joined = judge.groups_of(m.text, new.vector, evidence)
        if joined:
            tags[m.id] = joined
    return tags


@dataclass(frozen=True, slots=True)
class _NewFact:
    """A fact the job writes, decided but not built. Its id is drawn at the decision so
    that what is decided later (artifacts, the episode) can name it."""

    id: str
    candidate: FactCandidate  # as reconciled: it may carry the key of the fact it supersedes
    vector: np.ndarray
    sources: tuple[str, ...]  # its turns, then those of its repeats later in the batch
    supersedes: str | None  # the stored fact, or the fact earlier in the batch, it replaces


@dataclass(frozen=True, slots=True)
class _NewArtifact:
    """A new artifact, or a new version of one, decided but not built."""

    id: str
    candidate: ArtifactCandidate
    vector: np.ndarray
    sources: tuple[str, ...]  # its turns, then those of the same content again later in the batch
    version: int
    root_id: str
    supersedes: str | None  # the version it follows (stored, or written earlier in the batch)
    fact_ids: tuple[str, ...]  # the batch's new facts citing one of its turns


@dataclass(frozen=True, slots=True)
class _NewEpisode:
    id: str
    candidate: EpisodeCandidate
    vector: np.ndarray
    fact_ids: tuple[str, ...]
    artifact_ids: tuple[str, ...]
    covers: frozenset[str]  # the job's new facts and artifacts that get its id
    event_ids: tuple[str, ...]  # the turns it marks as covered (`JobOutcome.episode_event_ids`)


@dataclass(slots=True)
class _Plan:
    """What one reconcile decided, in the order it decided it; `_build` turns it into memories."""

    facts: list[_NewFact] = field(default_factory=list)
    artifacts: list[_NewArtifact] = field(default_factory=list)
    episode: _NewEpisode | None = None
    added_sources: dict[str, list[str]] = field(default_factory=dict)  # stored memory id -> turns it now cites
    superseded: dict[str, str] = field(default_factory=dict)  # old memory id -> the new one replacing it
    updated: list[dict[str, Any]] = field(default_factory=list)  # `memories_updated` of the result
    retracted: list[str] = field(default_factory=list)  # a replay's old facts its turns no longer give
    unchanged: int = 0  # a replay's old facts it found again as they were


def _by_original_job(events: Sequence[Event]) -> list[tuple[str | None, list[Event]]]:
    """Turns grouped as they were ingested (by the job that brought them), in arrival order."""
    groups: dict[str | None, list[Event]] = {}
    for event in events:
        groups.setdefault(event.job_id, []).append(event)
    return list(groups.items())


def _merged(sources: Sequence[str], more: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*sources, *more]))


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
