"""A large SQLite fixture for search benchmarks: many users' memories, written fast.

The real pipeline makes ~250 memories/s here (the local embedder is the bottleneck), so a
million memories that way would take an hour. This module writes the rows the worker would
have committed, with the store's own SQL, in large transactions, and embeds only a pool of
~20,000 distinct texts once.

**What the fixture is.** One org (`default`); every user is an agent integration that sends
each LoCoMo turn as its own family-X call (`POST /v1/memories`, one message, with call
metadata `{"topic": <one of 10>, "priority": 1-5}`), and whose conversations went idle, so
each conversation (a LoCoMo session, `conv_id` `<sample_id>/session_<n>`) has an idle
episode. For each user that gives, exactly as the worker commits them:

- `events` (one per turn, `completed`, `episode_id` set) and `jobs` (one `ingest` job per
  turn and one `episode` job per episode, `succeeded`, attempts 1, with the result JSON the
  worker writes: `memories_created` etc.);
- fact `memories` (rules-extractor output of the turn: text, `fact_type`, `key` qualified by
  the speaker, `valid_at`, `details` after the episode job's `json_set`), with their row in
  `memory_vectors` (float32 blob), `memory_fts` and `memory_sources`;
- an episode memory per conversation (type `episode`, metadata `{}` as the worker writes it).

Reconciliation is emulated: a fact whose text the user already has adds its turn to that
memory's sources (`memories_updated`), and a fact with the key of an active fact of the
user supersedes it (`details.supersedes`, old row `superseded`). Near-duplicate merging by
vector (cosine >= 0.95) is not emulated.

**Compromises** (the reason this is fast):

- *Texts and vectors come from a pool.* The pool is the rules extractor's facts of the 5
  LoCoMo dev conversations (2,960 turns, read from ../shared at run time) and an episode
  summary per session, in `VARIANTS` copies with other speaker names (copy 0 keeps the
  original names), each embedded once with engram's real local embedder (cached as .npy
  under the cache dir, keyed by a hash of the pool's texts). ~22,000 vectors.
- *Names per user.* Each user gets its own pair of speaker names per conversation (from
  `USER_NAMES`), written into the texts, the turns and the questions, so lexical statistics
  see many different names, as in a real org. The vector stays the pool's: it was computed
  for the same text with the copy's names, not with this user's.
- *Each user walks the conversations in order* from a random session of a random copy
  (wrapping around the 5 conversations), so users hold different slices; a user with n
  memories has had about n/2 turns. Facts past the user's quota in the turn where the
  quota is reached are dropped; a later, larger build continues at the next turn, as if
  the user had gone on talking (its next episode covers only the new turns).
- *An episode's text is the summary of its whole LoCoMo session* (of that copy), even when
  the user's slice covers part of the session; its dates and cited turns are the slice's.
- Timestamps: turns keep LoCoMo's session dates (`occurred_at`, `valid_at`); processing
  times (`created_at` etc.) are the build's clock, 1 ms apart per job.

`check_fidelity()` builds a small fixture twice, once through the store protocol
(`accept` -> `lease` -> `complete`, and `enqueue_idle_episodes` for the episodes, as the
worker does) and once with the bulk writer, and compares every table row by row; the bulk
writer is trusted only while that holds.

The bulk build runs with `PRAGMA synchronous=OFF` and a large page cache: a power cut
during the build would corrupt a fixture, which is then simply rebuilt. Nothing else differs
from what the server writes (the server itself always runs with `synchronous=FULL`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sqlite3
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engram.domain.details import EpisodeDetails, FactDetails, with_episode  # noqa: E402
from engram.domain.extraction import EpisodeCandidate, Extraction, FactCandidate, Turn  # noqa: E402
from engram.domain.records import Event, Job, Memory, iso, utcnow  # noqa: E402
from engram.domain.text import text_hash  # noqa: E402
from engram.embed.local import NAME as LOCAL_EMBEDDER  # noqa: E402
from engram.ids import new_event_ids, new_job_id, new_memory_id  # noqa: E402
from engram.llm.usage import COUNTERS  # noqa: E402
from engram.pipeline.extract.rules import RulesExtractor  # noqa: E402
from engram.pipeline.reconcile import NEAR_DUPLICATE_COSINE, _specifics  # noqa: E402
from engram.store.base import NewJob, NewMemory  # noqa: E402
from engram.store.sqlite import SQLiteStore  # noqa: E402

from locomo import DATA, session_messages, sessions  # noqa: E402

CACHE = Path(os.environ.get("ENGRAM_BENCH_CACHE", "/tmp/engram-bench-cache"))
ORG = "default"
VARIANTS = 4
TOPICS = ("travel", "work", "family", "health", "food", "hobbies", "finance", "education", "friends", "home")
USER_NAMES = (
    "Aaron Abigail Adrian Aisha Alan Alice Amara Amelia Andre Angela Anton Arjun Aurora Beatrice Benjamin Bianca "
    "Bruno Calvin Camila Carlos Cecilia Chiara Clara Colin Dalia Damian Daniela David Delia Derek Diana Dmitri "
    "Edgar Elena Elias Eliza Emil Erin Esther Ethan Fatima Felix Fiona Florian Gabriel Gemma George Gloria Hana "
    "Hannah Hector Helena Henry Hugo Ines Irene Isaac Ivan Jasmine Javier Joanna Jonas Julia Julian Kai Karim "
    "Katya Kenji Laila Lars Laura Leon Lidia Lorenzo Lucia Luis Maya Marco Marta Mateo Milan Mina Nadia Nathan "
    "Nina Noah Nora Oliver Olga Omar Oscar Paula Pedro Petra Rafael Rania Rebecca Ricardo Rosa Ruben Sabine "
    "Samuel Sara Sebastian Selma Simon Sofia Stefan Tamar Theo Tomas Ursula Valeria Victor Viktor Wanda Xavier "
    "Yara Yusuf Zara Zoltan").split()
# Speaker names of the pool's copies 1.. (copy 0 keeps LoCoMo's); chosen to be words that
# occur nowhere else in the conversations.
VARIANT_NAMES = ("Quillon Brevane Tasmira Corvell Ondrea Pellam Varnick Isolde Marlowe Fennick Yselle Dorvan "
                 "Kestrel Lunette Sorrel Bramwell Ottilie Caspian Wrenna Thadeus Elowen Perrin Galvani Rosalind "
                 "Merritt Anselm Clementia Hollis Ivo Juniper").split()
SCHEMA_TABLES = ("memories", "memory_vectors", "memory_fts", "memory_sources", "events", "jobs")


# ====================================================================== the pool
@dataclass(slots=True)
class PoolTurn:
    conv: int
    index: int  # position in the conversation
    session: int
    dia_id: str
    speaker: int  # 0 = speaker_a, 1 = speaker_b
    content: str  # with LoCoMo's names
    date: datetime


@dataclass(slots=True)
class PoolFact:
    text: str  # with the copy's names
    fact_type: str
    source_role: str
    valid_at: datetime | None
    key: str | None  # unqualified (the worker prefixes the speaker)
    row: int  # vector row


@dataclass(slots=True)
class PoolEpisode:
    title: str
    summary: str
    row: int


@dataclass
class Pool:
    sample_ids: list[str]
    speakers: list[tuple[str, str]]  # LoCoMo's names per conversation
    turns: list[list[PoolTurn]]  # per conversation
    stream: list[tuple[int, int]]  # (conv, turn index) of every turn, conversation by conversation
    session_starts: list[int]  # positions in `stream` where a session begins
    facts: dict[tuple[int, int, int], list[PoolFact]]  # (copy, conv, turn index) -> facts
    episodes: dict[tuple[int, int, int], PoolEpisode]  # (copy, conv, session) -> episode
    names: dict[tuple[int, int], tuple[str, str]]  # (copy, conv) -> speaker names in that copy
    questions: list[list[str]]  # per conversation, LoCoMo's names
    vectors: np.ndarray
    digest: str
    near: dict[int, list[tuple[int, float]]] = field(default_factory=dict)  # fact row -> rows of cosine >= 0.95
    _patterns: dict[tuple[int, int], re.Pattern[str]] = field(default_factory=dict)

    def pattern(self, copy: int, conv: int) -> re.Pattern[str]:
        """Word-bounded names (and their 3-letter nicknames, "Mel") of a copy's speakers."""
        found = self._patterns.get((copy, conv))
        if found is None:
            words = sorted({w for n in self.names[(copy, conv)] for w in (n, n[:3])}, key=len, reverse=True)
            found = self._patterns[(copy, conv)] = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b")
        return found

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])


def _swap(names_from: Sequence[str], names_to: Sequence[str]) -> dict[str, str]:
    out = {}
    for old, new in zip(names_from, names_to):
        out[old] = new
        out.setdefault(old[:3], new[:3])
    return out


def load_pool(data: list[dict[str, Any]], *, variants: int = VARIANTS, cache: Path = CACHE,
              log: Any = print) -> Pool:
    """Extract the pool's texts (a few seconds) and embed them, or read their vectors from the cache."""
    extractor = RulesExtractor()
    sample_ids, speakers, turns, questions = [], [], [], []
    stream: list[tuple[int, int]] = []
    session_starts: list[int] = []
    for c, sample in enumerate(data):
        conv = sample["conversation"]
        sample_ids.append(sample["sample_id"])
        speakers.append((conv["speaker_a"], conv["speaker_b"]))
        conv_turns: list[PoolTurn] = []
        for s in sessions(conv):
            session_starts.append(len(stream))
            for m in session_messages(conv, s):
                t = PoolTurn(c, len(conv_turns), s, m["dia_id"], 0 if m["name"] == conv["speaker_a"] else 1,
                             m["content"], datetime.fromisoformat(m["date"].replace("Z", "+00:00")))
                stream.append((c, t.index))
                conv_turns.append(t)
        turns.append(conv_turns)
        questions.append([qa["question"] for qa in sample["qa"]])

    names: dict[tuple[int, int], tuple[str, str]] = {}
    texts: list[str] = []
    facts: dict[tuple[int, int, int], list[PoolFact]] = {}
    episodes: dict[tuple[int, int, int], PoolEpisode] = {}
    for v in range(variants):
        for c, conv_turns in enumerate(turns):
            names[(v, c)] = speakers[c] if v == 0 else (VARIANT_NAMES[2 * (v * len(turns) + c) % len(VARIANT_NAMES)],
                                                        VARIANT_NAMES[(2 * (v * len(turns) + c) + 1) % len(VARIANT_NAMES)])
            swap = _swap(speakers[c], names[(v, c)])
            pat = re.compile(r"\b(" + "|".join(map(re.escape, sorted(swap, key=len, reverse=True))) + r")\b")
            by_session: dict[int, list[Turn]] = defaultdict(list)
            for t in conv_turns:
                by_session[t.session].append(Turn(event_id=str(t.index), role="user",
                                                  content=pat.sub(lambda m: swap[m.group(0)], t.content),
                                                  date=t.date, name=names[(v, c)][t.speaker], dia_id=t.dia_id))
            for s, session_turns in by_session.items():
                extraction = extractor.extract(session_turns, extract_artifacts=False)
                for f in extraction.facts:
                    facts.setdefault((v, c, int(f.source_event_ids[0])), []).append(PoolFact(
                        f.text, f.fact_type, f.source_role, f.valid_at, f.key, len(texts)))
                    texts.append(f.text)
                episode = extractor.episode(session_turns)
                if episode is not None:
                    episodes[(v, c, s)] = PoolEpisode(episode.title, episode.summary, len(texts))
                    texts.append(episode.summary)

    from engram.embed.local import MODEL_SHA256, NAME

    digest = hashlib.sha256("\x1e".join([NAME, MODEL_SHA256, *texts]).encode()).hexdigest()[:16]
    path = cache / f"pool-{digest}.npy"
    if path.exists():
        vectors = np.load(path)
        log(f"pool: {len(texts)} texts, vectors from {path}")
    else:
        from engram.config import load_settings
        from engram.runtime import build_embedder

        embedder = build_embedder(load_settings(env={}))  # the worker's embedder, as configured by default
        started = time.perf_counter()
        parts = []
        for start in range(0, len(texts), 2048):
            parts.append(embedder.embed(texts[start:start + 2048]))
            log(f"  embedded {start + len(parts[-1])}/{len(texts)} pool texts, "
                f"{(start + len(parts[-1])) / (time.perf_counter() - started):.0f}/s")
        vectors = np.concatenate(parts).astype(np.float32)
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".tmp.npy"), vectors)
        os.replace(path.with_suffix(".tmp.npy"), path)
        log(f"pool: {len(texts)} texts embedded in {time.perf_counter() - started:.0f} s -> {path}")
    pool = Pool(sample_ids, speakers, turns, stream, session_starts, facts, episodes, names, questions,
                vectors, digest)
    for v in range(variants):  # near-duplicate pairs inside a copy (a user draws from one copy)
        rows = np.array(sorted(f.row for (copy, _, _), fs in facts.items() if copy == v for f in fs))
        m = vectors[rows]
        for start in range(0, len(rows), 1024):
            scores = (m[start:start + 1024] @ m.T).astype(np.float64)
            for i, j in zip(*np.nonzero(scores >= NEAR_DUPLICATE_COSINE)):
                if start + i != j:
                    pool.near.setdefault(int(rows[start + i]), []).append((int(rows[j]), float(scores[i, j])))
    return pool


# ====================================================================== users
EPISODE_EVERY_TURNS = 40  # Settings.episode_every_turns (default): a long conversation gets an episode inline


@dataclass(slots=True)
class UserPlan:
    """Who a user is: which copy of the pool, where in the conversations it starts, and its
    speakers' names per conversation."""

    user_id: str
    copy: int
    start: int  # position in pool.stream
    names: list[tuple[str, str]]  # per conversation
    first_conv: int


def user_plan(pool: Pool, index: int, seed: int, variants: int = VARIANTS) -> UserPlan:
    rng = random.Random(f"{seed}:user:{index}")
    names = [tuple(rng.sample(USER_NAMES, 2)) for _ in pool.speakers]
    start = rng.choice(pool.session_starts)
    return UserPlan(f"user-{index:05d}", rng.randrange(variants), start, names,  # type: ignore[arg-type]
                    pool.stream[start][0])


def user_questions(pool: Pool, plan: UserPlan) -> list[str]:
    """The questions of the conversation the user starts in, with the user's names."""
    c = plan.first_conv
    swap = _swap(pool.speakers[c], plan.names[c])
    return [pool.pattern(0, c).sub(lambda m: swap[m.group(0)], q) for q in pool.questions[c]]


@dataclass(slots=True)
class ActiveFact:
    text: str
    digest: str
    key: str | None
    row: int  # pool row of its vector
    order: int  # creation order (= row id order)


@dataclass
class UserState:
    """A user's memory as the store holds it (read back before a build extends it)."""

    memories: int = 0  # facts and episodes, any status
    turns: int = 0  # its events: how far it has walked
    active: dict[str, ActiveFact] = field(default_factory=dict)  # active facts by memory id
    by_hash: dict[str, str] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    by_row: dict[int, str] = field(default_factory=dict)
    created: int = 0  # creation counter

    def add(self, mid: str, fact: ActiveFact) -> None:
        self.active[mid] = fact
        self.by_hash[fact.digest] = mid
        if fact.key:
            self.by_key[fact.key] = mid
        self.by_row[fact.row] = mid

    def drop(self, mid: str) -> None:
        fact = self.active.pop(mid)
        for index, value in ((self.by_hash, fact.digest), (self.by_key, fact.key), (self.by_row, fact.row)):
            if value is not None and index.get(value) == mid:
                del index[value]


@dataclass
class JobRecord:
    """One job as the worker ran it: its turn(s), what it committed, its result."""

    job: Job
    events: list[Event]
    created: list[NewMemory] = field(default_factory=list)
    added_sources: dict[str, list[str]] = field(default_factory=dict)
    superseded: dict[str, str] = field(default_factory=dict)
    episode_id: str | None = None
    episode_event_ids: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    candidates: list[FactCandidate] = field(default_factory=list)  # the extractor's output (the check replays it)


@dataclass
class Changes:
    """What a later job does to a fact row: re-cite it, supersede it, or (earlier builds
    only) cover one of its turns by an episode. For a row of an earlier build
    (`UserBatch.earlier`) they are written as the statements complete() runs; for a row of
    this build (`UserBatch.later`) they are folded into the row, which is written once in its
    final state (the build never changes a Memory it made)."""

    sources: list[str] = field(default_factory=list)
    status: str | None = None
    episode_id: str | None = None
    updated_at: datetime | None = None


@dataclass
class UserBatch:
    plan: UserPlan
    jobs: list[JobRecord] = field(default_factory=list)
    episode_of_fact: dict[str, str] = field(default_factory=dict)  # final details.episode_id of new facts
    episode_of_event: dict[str, str] = field(default_factory=dict)
    earlier: dict[str, Changes] = field(default_factory=dict)  # rows of earlier builds
    later: dict[str, Changes] = field(default_factory=dict)  # rows of this build, changed by a later job of it
    vectors_by_text: dict[str, np.ndarray] = field(default_factory=dict)  # the check's embedder
    episode_texts: dict[str, tuple[str, str, np.ndarray]] = field(default_factory=dict)  # conv_id -> title, summary, vector


class Clock:
    """The build's processing times: now at the start, then +10 µs per step."""

    def __init__(self) -> None:
        self.now = utcnow()

    def tick(self) -> datetime:
        self.now += timedelta(microseconds=10)
        return self.now


class _Swaps:
    """Per conversation: the pool copy's speaker names -> the user's (facts, episodes), and
    LoCoMo's names -> the user's (turns)."""

    def __init__(self, pool: Pool, plan: UserPlan) -> None:
        self.pool, self.plan = pool, plan
        self._by_conv: dict[int, tuple[re.Pattern[str], dict[str, str], re.Pattern[str], dict[str, str]]] = {}

    def _get(self, c: int) -> tuple[re.Pattern[str], dict[str, str], re.Pattern[str], dict[str, str]]:
        found = self._by_conv.get(c)
        if found is None:
            p = self.pool
            found = self._by_conv[c] = (p.pattern(self.plan.copy, c), _swap(p.names[(self.plan.copy, c)], self.plan.names[c]),
                                        p.pattern(0, c), _swap(p.speakers[c], self.plan.names[c]))
        return found

    def copy_text(self, c: int, text: str) -> str:
        pat, swap, _, _ = self._get(c)
        return pat.sub(lambda m: swap[m.group(0)], text)

    def turn_text(self, c: int, text: str) -> str:
        _, _, pat, swap = self._get(c)
        return pat.sub(lambda m: swap[m.group(0)], text)


def grow_user(pool: Pool, plan: UserPlan, state: UserState, target: int, seed: int, clock: Clock,
              every: int = EPISODE_EVERY_TURNS) -> UserBatch:
    """The jobs that take the user from `state` to `target` memories (facts and episodes), with
    what each committed, as the worker (pipeline/process.py, reconcile.py) would have done it.
    `state` is advanced."""
    batch = UserBatch(plan)
    rng = random.Random(f"{seed}:turns:{plan.user_id}:{state.turns}")
    swaps = _Swaps(pool, plan)
    n_stream = len(pool.stream)
    run: dict[str, list[Event]] = {}  # conv_id -> its turns not yet in an episode
    reserved: set[str] = set()  # conversations whose (coming) episode is counted already
    cites: dict[str, list[str]] = defaultdict(list)  # event id -> facts citing it (this build)
    here: dict[str, Memory] = {}  # facts created by this build
    digests: dict[str, str] = {}  # fact id -> text hash, for every fact this build touches
    orders: dict[str, int] = {}  # fact id -> creation order (= row id order), likewise

    def is_active(mid: str, also: set[str]) -> bool:
        if mid in also:
            return True
        changes = (batch.later if mid in here else batch.earlier).get(mid)
        return changes is None or changes.status is None

    def order_of(mid: str) -> int:
        return state.active[mid].order if mid in state.active else orders.get(mid, -1)

    def citing(event_ids: Sequence[str], also: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
        """store.memories_citing: active memories citing these turns, in creation (row id) order."""
        return sorted({fid for e in event_ids for fid in cites.get(e, ()) if is_active(fid, also)},
                      key=lambda fid: orders[fid])

    def cover(episode_id: str, event_ids: Sequence[str]) -> None:
        """complete(): the turns get the episode; every fact citing one gets details.episode_id."""
        for e in event_ids:
            batch.episode_of_event[e] = episode_id
            for fid in cites.get(e, ()):
                if fid in here:
                    batch.episode_of_fact[fid] = episode_id
                else:
                    batch.earlier.setdefault(fid, Changes()).episode_id = episode_id

    def episode_memory(job: Job, conv_id: str, events: list[Event], metadata: dict[str, Any], at: datetime,
                       fact_ids: list[str]) -> NewMemory:
        title, summary, vector = batch.episode_texts[conv_id]
        started = min(e.occurred_at for e in events)
        details = EpisodeDetails(title=title, started_at=started, ended_at=max(e.occurred_at for e in events),
                                 fact_ids=tuple(fact_ids))
        m = Memory(id=new_memory_id(), org_id=ORG, type="episode", text=summary, user_id=plan.user_id,
                   conv_id=conv_id, metadata=metadata, created_at=at, updated_at=at, details=details.to_wire(),
                   source_event_ids=list(dict.fromkeys(e.id for e in events)), job_id=job.id, valid_at=started)
        state.created += 1
        return NewMemory(m, vector)

    def cite(mid: str, event_id: str, at: datetime) -> None:
        changes = (batch.later if mid in here else batch.earlier).setdefault(mid, Changes())
        changes.sources.append(event_id)  # the writer drops repeats, as complete() does
        changes.updated_at = at
        cites[event_id].append(mid)

    while state.memories < target:
        if state.turns >= n_stream:
            raise ValueError(f"{plan.user_id}: the conversations are exhausted at {state.memories} memories")
        c, t_index = pool.stream[(plan.start + state.turns) % n_stream]
        turn = pool.turns[c][t_index]
        conv_id = f"{pool.sample_ids[c]}/session_{turn.session}"
        if conv_id not in batch.episode_texts:
            ep = pool.episodes[(plan.copy, c, turn.session)]
            batch.episode_texts[conv_id] = (swaps.copy_text(c, ep.title), swaps.copy_text(c, ep.summary),
                                            pool.vectors[ep.row])
        if conv_id not in reserved:
            reserved.add(conv_id)
            state.memories += 1  # its episode
        state.turns += 1
        received = clock.tick()
        job = Job(id=new_job_id(), org_id=ORG, user_id=plan.user_id, conv_id=conv_id, status="pending",
                  created_at=received, updated_at=received,
                  params={"agent_id": None, "app_id": None, "extract_artifacts": False})
        name = plan.names[c][turn.speaker]
        event = Event(id=new_event_ids(1)[0], org_id=ORG, user_id=plan.user_id, conv_id=conv_id, role="user",
                      kind="user_message", content=swaps.turn_text(c, turn.content), occurred_at=turn.date,
                      received_at=received, job_id=job.id, name=name, dia_id=turn.dia_id,
                      metadata={"topic": rng.choice(TOPICS), "priority": rng.randint(1, 5)})
        done = clock.tick()
        rec = JobRecord(job, [event])
        # reconcile.reconcile: `existing` and `nearest` see the store as it was before this job
        updated: dict[str, dict[str, Any]] = {}
        near_repeats: list[str] = []
        fresh: list[Memory] = []
        retired: list[str] = []  # superseded by this job: still active for its own reads
        for f in pool.facts.get((plan.copy, c, t_index), ()):
            if state.memories >= target:
                break  # the quota: the rest of this turn's facts are dropped
            text = swaps.copy_text(c, f.text)
            rec.candidates.append(FactCandidate(text=text, fact_type=f.fact_type, source_event_ids=(event.id,),
                                                source_role=f.source_role, valid_at=f.valid_at, key=f.key))
            batch.vectors_by_text[text] = pool.vectors[f.row]
            digest = text_hash(text)
            key = f"{name.strip().lower()}:{f.key}" if f.key else None
            target_id = state.by_hash.get(digest)
            if target_id is not None:  # repeats an active fact: this turn becomes one of its sources
                if target_id in here and here[target_id].job_id == job.id:
                    continue  # a repeat inside this job: merged into the first copy
                digests[target_id] = digest
                orders[target_id] = order_of(target_id)
                cite(target_id, event.id, done)
                rec.added_sources.setdefault(target_id, []).append(event.id)
                updated.setdefault(target_id, {"id": target_id, "type": "fact", "text": state.active[target_id].text})
                continue
            old = state.by_key.get(key) if key else None
            if old is None:
                near = _nearest(pool, state, f.row, job.id, here)
                if near is not None and _specifics(state.active[near].text) == _specifics(text):
                    digests[near] = state.active[near].digest
                    orders[near] = order_of(near)
                    cite(near, event.id, done)
                    rec.added_sources.setdefault(near, []).append(event.id)
                    if near not in updated:
                        near_repeats.append(near)
                        updated[near] = {"id": near, "type": "fact", "text": ""}
                    continue
            details = FactDetails(fact_type=f.fact_type, supersedes=old, source_role=f.source_role)
            memory = Memory(id=new_memory_id(), org_id=ORG, type="fact", text=text, user_id=plan.user_id,
                            conv_id=conv_id, metadata=dict(event.metadata), created_at=done, updated_at=done,
                            details=details.to_wire(), source_event_ids=[event.id], job_id=job.id, key=key,
                            valid_at=f.valid_at or turn.date)
            if old is not None:  # the same attribute with another value: the new fact supersedes
                rec.superseded[old] = memory.id
                digests[old] = state.active[old].digest
                orders[old] = order_of(old)
                changes = (batch.later if old in here else batch.earlier).setdefault(old, Changes())
                changes.status, changes.updated_at = "superseded", done
                if old not in retired:
                    retired.append(old)
                del state.by_key[key]  # type: ignore[arg-type]
            state.add(memory.id, ActiveFact(text, digest, key, f.row, state.created))
            state.created += 1
            digests[memory.id] = digest
            orders[memory.id] = order_of(memory.id)
            here[memory.id] = memory
            cites[event.id].append(memory.id)
            state.memories += 1
            fresh.append(memory)
            rec.created.append(NewMemory(memory, pool.vectors[f.row]))
        # `existing` names a near-duplicate's text only when its hash or key matched a candidate
        hashes = {text_hash(x.text) for x in rec.candidates}
        keys = {f"{name.strip().lower()}:{x.key}" for x in rec.candidates if x.key}
        for mid in near_repeats:
            fact = state.active[mid]
            if fact.digest in hashes or (fact.key and fact.key in keys):
                updated[mid]["text"] = fact.text
        earlier_turns = run.get(conv_id, [])
        run[conv_id] = earlier_turns + [event]
        if len(run[conv_id]) >= every:  # an episode inline, in this job (Pipeline._add_episode)
            events = run.pop(conv_id)
            reserved.discard(conv_id)
            # read before this job commits: its own citations and supersessions are not stored yet
            earlier_facts = citing([e.id for e in events if e.id != event.id], set(retired))
            ep = episode_memory(job, conv_id, events, dict(event.metadata), done,
                                [*earlier_facts, *(m.id for m in fresh)])
            rec.created.append(ep)  # `fresh` cite this job's turn: cover() gives them the episode
            rec.episode_id, rec.episode_event_ids = ep.memory.id, [e.id for e in events]
            cover(ep.memory.id, rec.episode_event_ids)
        for old in retired:
            state.drop(old)
        rec.result = {"object": "ingest_result", "memories_created": [_ref(n.memory) for n in rec.created],
                      "memories_updated": list(updated.values()), "memories_superseded_by": dict(rec.superseded),
                      "stage_timings": {"filter": 1e-05, "extract": 0.0004, "embed": 0.012, "reconcile": 0.002},
                      # what the pipeline embedded: every candidate, and an inline episode's summary
                      "embedded_texts": len(rec.candidates) + (1 if rec.episode_id else 0),
                      "usage": dict.fromkeys(COUNTERS, 0)}
        job.updated_at = done
        batch.jobs.append(rec)

    # The idle sweep (store.enqueue_idle_episodes): an episode job per conversation with
    # turns not yet in an episode, in the sweep's order.
    for conv_id in sorted(run):
        events = run[conv_id]
        at = clock.tick()
        job = Job(id=new_job_id(), org_id=ORG, user_id=plan.user_id, conv_id=conv_id, status="pending",
                  created_at=at, updated_at=at, kind="episode", params={})
        done = clock.tick()
        ep = episode_memory(job, conv_id, events, {}, done, citing([e.id for e in events]))
        rec = JobRecord(job, [], created=[ep], episode_id=ep.memory.id, episode_event_ids=[e.id for e in events])
        rec.result = {"object": "ingest_result", "memories_created": [_ref(ep.memory)], "memories_updated": [],
                      "memories_superseded_by": {}, "stage_timings": {"extract": 0.003, "embed": 0.015},
                      "usage": dict.fromkeys(COUNTERS, 0)}
        cover(ep.memory.id, rec.episode_event_ids)
        job.updated_at = done
        batch.jobs.append(rec)
    return batch


def _nearest(pool: Pool, state: UserState, row: int, job_id: str, here: dict[str, Memory]) -> str | None:
    """reconcile's `nearest`, where it can matter: the user's stored active fact of highest
    cosine, if that cosine is >= NEAR_DUPLICATE_COSINE (pool.near lists those pairs)."""
    best: tuple[float, int, str] | None = None
    for other, score in pool.near.get(row, ()):
        mid = state.by_row.get(other)
        if mid is None or (mid in here and here[mid].job_id == job_id):
            continue  # not the user's, or not stored before this job
        candidate = (-score, state.active[mid].order, mid)
        if best is None or candidate < best:
            best = candidate
    return best[2] if best else None


def _ref(m: Memory) -> dict[str, Any]:
    return {"id": m.id, "type": m.type, "text": m.text}


# ====================================================================== writing
def open_fixture(db: Path) -> None:
    """The schema, exactly as the server creates it, and the default org."""
    store = SQLiteStore(db)
    store.migrate()
    store.ensure_org(ORG)
    store.record_vector_space(LOCAL_EMBEDDER, utcnow())  # the pool's vectors are the local embedder's
    store.close()


def read_states(conn: sqlite3.Connection, pool: Pool, seed: int) -> dict[str, UserState]:
    """Each user's state, from the store. A fact's pool row is found by walking the user's
    turns again (its text under the user's names is unique to one row's text)."""
    states: dict[str, UserState] = defaultdict(UserState)
    for user, n in conn.execute("SELECT user_id, count(*) FROM events GROUP BY user_id"):
        states[user].turns = n
    rows_by_text: dict[str, dict[str, int]] = {}
    for user, mid, mtype, status, digest, key, text in conn.execute(
            "SELECT user_id, id, type, status, text_hash, key, text FROM memories ORDER BY rid"):
        s = states[user]
        s.memories += 1
        s.created += 1
        if mtype != "fact" or status != "active":
            continue
        if user not in rows_by_text:
            rows_by_text[user] = _rows_by_text(pool, user_plan(pool, int(user.split("-")[1]), seed), s.turns)
        s.add(mid, ActiveFact(text, digest, key, rows_by_text[user][text], s.created - 1))
    return states


def _rows_by_text(pool: Pool, plan: UserPlan, turns: int) -> dict[str, int]:
    swaps = _Swaps(pool, plan)
    out: dict[str, int] = {}
    for p in range(turns):
        c, t = pool.stream[(plan.start + p) % len(pool.stream)]
        for f in pool.facts.get((plan.copy, c, t), ()):
            out.setdefault(swaps.copy_text(c, f.text), f.row)
    return out


_J = json.dumps


class BulkWriter:
    """Writes UserBatches as the store's own rules write them (store/relational.py: accept,
    lease, complete with its sources and episode marking; store/sqlite.py: memory rows), many
    jobs per transaction, each row in its final state (so no row is written twice)."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(db, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=OFF")  # a fixture: rebuilt if a crash corrupts it
        self.conn.execute("PRAGMA cache_size=-1000000")  # 1 GB: the id indexes stay in memory
        self.conn.execute("PRAGMA temp_store=MEMORY")
        row = self.conn.execute("SELECT max(rid) FROM memories").fetchone()[0] or 0
        seq = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name='memories'").fetchone()
        self.next_rid = max(row, seq[0] if seq else 0) + 1
        self.rows = 0

    def write(self, batches: Sequence[UserBatch]) -> None:
        events, jobs, memories, vectors, fts, sources = [], [], [], [], [], []
        earlier: list[tuple[str, Changes]] = []
        for b in batches:
            for rec in b.jobs:
                job = rec.job
                for e in rec.events:
                    events.append((e.id, ORG, e.user_id, e.conv_id, e.agent_id, e.app_id, e.role, e.kind, e.name,
                                   e.content, e.dia_id, _J(e.metadata) if e.metadata else "{}", iso(e.occurred_at),
                                   iso(e.received_at), job.id, e.client_event_id, e.dedup_hash,
                                   b.episode_of_event.get(e.id)))
                result = {**rec.result, "stage_timings": {**rec.result["stage_timings"], "commit": 0.0008}}
                jobs.append((job.id, ORG, job.user_id, job.conv_id, job.kind, _J(job.params), iso(job.created_at),
                             _J(result), iso(job.created_at), iso(job.updated_at)))
                for new in rec.created:
                    m = new.memory
                    rid = self.next_rid
                    self.next_rid += 1
                    later = b.later.get(m.id, Changes())  # the row as the last job of this build left it
                    cited = list(dict.fromkeys([*m.source_event_ids, *later.sources]))
                    episode = b.episode_of_fact.get(m.id) if m.type == "fact" else None
                    details = _J(with_episode(m.details, episode) if episode else m.details)
                    memories.append((rid, m.id, ORG, m.type, later.status or m.status, m.text, text_hash(m.text), m.key,
                                     m.user_id, m.agent_id, m.conv_id, m.app_id, _J(m.metadata), _J(m.categories),
                                     details, _J(cited), iso(m.valid_at), m.job_id, iso(m.created_at),
                                     iso(later.updated_at or m.updated_at)))
                    vectors.append((rid, np.asarray(new.vector, dtype=np.float32).tobytes()))
                    fts.append((rid, m.text))
                    sources.extend((m.id, e) for e in cited)
            earlier.extend(b.earlier.items())
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.executemany(
                "INSERT INTO events(id, org_id, user_id, conv_id, agent_id, app_id, role, kind, name, content,"
                " dia_id, metadata, occurred_at, received_at, job_id, client_event_id, dedup_hash, status, episode_id)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'completed',?)", events)
            c.executemany(
                "INSERT INTO jobs(id, org_id, user_id, conv_id, kind, status, params, attempts, available_at, result,"
                " created_at, updated_at) VALUES (?,?,?,?,?,'succeeded',?,1,?,?,?,?)", jobs)
            c.executemany(
                "INSERT INTO memories(rid, id, org_id, type, status, text, text_hash, key, user_id, agent_id, conv_id,"
                " app_id, metadata, categories, details, source_event_ids, valid_at, job_id, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", memories)
            c.executemany("INSERT INTO memory_vectors(rid, vec) VALUES (?, ?)", vectors)
            c.executemany("INSERT INTO memory_fts(rowid, text) VALUES (?, ?)", fts)
            c.executemany("INSERT OR IGNORE INTO memory_sources(memory_id, event_id) VALUES (?,?)", sources)
            for mid, e in earlier:  # rows of an earlier build: the statements complete() runs on them
                at = iso(e.updated_at) if e.updated_at else None
                if e.sources:
                    row = c.execute("SELECT source_event_ids FROM memories WHERE id=?", (mid,)).fetchone()
                    merged = list(dict.fromkeys([*json.loads(row[0]), *e.sources]))
                    c.execute("UPDATE memories SET source_event_ids=?, updated_at=? WHERE id=?", (_J(merged), at, mid))
                    c.executemany("INSERT OR IGNORE INTO memory_sources(memory_id, event_id) VALUES (?,?)",
                                  [(mid, x) for x in e.sources])
                if e.status:
                    c.execute("UPDATE memories SET status=?, updated_at=? WHERE id=?", (e.status, at, mid))
                if e.episode_id:  # complete() edits a fact's details in Python, so key order stays
                    row = c.execute("SELECT details FROM memories WHERE id=? AND type='fact'", (mid,)).fetchone()
                    if row is not None:
                        c.execute("UPDATE memories SET details=? WHERE id=?",
                                  (_J({**json.loads(row[0]), "episode_id": e.episode_id}), mid))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        self.rows += len(memories)

    def close(self) -> None:
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()


# ====================================================================== the fidelity check
class _PoolExtractor:
    """Replays the pool's extractor output for the turns the check ingests."""

    name = "rules"
    sees_memories = False

    def __init__(self) -> None:
        self.by_event: dict[str, list[FactCandidate]] = {}
        self.conv_of: dict[str, str] = {}
        self.episodes: dict[str, tuple[str, str, np.ndarray]] = {}

    def extract(self, turns: Sequence[Turn], *, extract_artifacts: bool, context: Sequence[Turn] = ()) -> Extraction:
        return Extraction(facts=[f for t in turns for f in self.by_event.get(t.event_id, [])])

    def episode(self, turns: Sequence[Turn]) -> EpisodeCandidate | None:
        title, summary, _ = self.episodes[self.conv_of[turns[0].event_id]]
        return EpisodeCandidate(title=title, summary=summary, started_at=min(t.date for t in turns),
                                ended_at=max(t.date for t in turns),
                                source_event_ids=tuple(dict.fromkeys(t.event_id for t in turns)))


class _PoolEmbedder:
    name = LOCAL_EMBEDDER  # the vector space open_fixture records: a commit of another's is refused
    dim = 384

    def __init__(self) -> None:
        self.table: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.table[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


class PipelineWriter:
    """The reference: the same turns through the real worker path — store.accept, lease,
    Pipeline.process (reconcile, keys, episodes; only the extractor and the embedder are
    replaced by the pool's outputs), complete, and enqueue_idle_episodes for the idle sweep."""

    def __init__(self, db: Path) -> None:
        from engram.config import load_settings
        from engram.pipeline.content_filter import ContentFilter
        from engram.pipeline.process import Pipeline

        self.store = SQLiteStore(db)
        self.extractor, self.embedder = _PoolExtractor(), _PoolEmbedder()
        self.pipeline = Pipeline(self.store, load_settings(env={}), self.extractor, self.embedder,  # type: ignore[arg-type]
                                 ContentFilter())

    def write(self, batches: Sequence[UserBatch]) -> None:
        s, far = self.store, utcnow() + timedelta(days=365 * 100)
        for b in batches:
            self.extractor.by_event = {r.events[0].id: r.candidates for r in b.jobs if r.job.kind == "ingest"}
            self.extractor.conv_of = {e.id: e.conv_id for r in b.jobs for e in r.events}
            self.extractor.episodes = b.episode_texts
            self.embedder.table = {**b.vectors_by_text, **{s_: v for _, s_, v in b.episode_texts.values()}}
            for rec in b.jobs:
                if rec.job.kind != "ingest":
                    continue
                s.accept(ORG, [NewJob(rec.job, rec.events)], dedup_since=None)
                self._run(far)
            s.enqueue_idle_episodes(far, far)
            while self._run(far):
                pass

    def _run(self, now: datetime) -> bool:
        lease = self.store.lease("check", now, 60, 5)
        if lease is None:
            return False
        outcome = self.pipeline.process(lease)
        assert self.store.complete(lease, outcome)
        return True

    def close(self) -> None:
        self.store.close()


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def dump(db: Path) -> dict[str, list[tuple]]:
    """Every row of the tables a build writes, comparable across two builds: memory and job
    ids as their rank, and the processing clock (times, commit durations) blanked."""
    conn = sqlite3.connect(db)
    labels = {r[0]: f"M{i}" for i, r in enumerate(conn.execute("SELECT id FROM memories ORDER BY rid"))}
    labels.update({r[0]: f"J{i}" for i, r in enumerate(conn.execute("SELECT id FROM jobs ORDER BY seq"))})

    def norm(value: Any) -> Any:
        if isinstance(value, str):
            value = _UUID.sub(lambda m: labels.get(m.group(0), m.group(0)), value)
            return re.sub(r"job_[0-9a-f]{32}", lambda m: labels.get(m.group(0), m.group(0)), value)
        return value

    out: dict[str, list[tuple]] = {}
    for table, order in (("memories", "rid"), ("memory_vectors", "rid"), ("memory_fts", "rowid"),
                         ("memory_sources", None), ("events", "id"), ("jobs", "seq"), ("orgs", "id"),
                         ("usage_counters", "org_id"), ("idempotency_keys", "key")):
        cur = conn.execute(f"SELECT rowid AS _rowid, * FROM {table}" + (f" ORDER BY {order}" if order else ""))
        cols = [d[0] for d in cur.description]
        rows = []
        for r in cur:
            row = dict(zip(cols, r))
            if table == "jobs":
                for k in ("updated_at", "available_at", "created_at", "seq", "_rowid"):
                    row[k] = "*"
                result = json.loads(row["result"]) if row["result"] else None
                if result:
                    result["stage_timings"] = sorted(result["stage_timings"])
                row["result"] = json.dumps(result)
            if table == "memories":
                row["created_at"] = row["updated_at"] = "*"
            if table in ("orgs", "memory_sources"):
                row.pop("_rowid", None)
                row.pop("created_at", None)
            rows.append(tuple((k, norm(v)) for k, v in row.items()))
        out[table] = rows if order else sorted(rows)
    conn.close()
    return out


def check_fidelity(pool: Pool, tmp: Path, *, users: int = 8, steps: Sequence[int] = (15, 70, 260), seed: int = 7,
                   log: Any = print) -> dict[str, int]:
    """Build a small fixture in steps (extension included) with the bulk writer and through
    the real worker path, and compare every table row by row. Raises on any difference."""
    dbs = {"pipeline": tmp / "pipeline" / "engram.db", "bulk": tmp / "bulk" / "engram.db"}
    plans = [user_plan(pool, i, seed) for i in range(users)]
    for db in dbs.values():
        open_fixture(db)
    for target in steps:
        clock = Clock()
        stored = read_states(sqlite3.connect(dbs["bulk"]), pool, seed)
        batches = [grow_user(pool, p, stored[p.user_id], target, seed, clock) for p in plans]
        bulk = BulkWriter(dbs["bulk"])
        bulk.write(batches)
        bulk.close()
        ref = PipelineWriter(dbs["pipeline"])
        ref.write(batches)
        ref.close()
    a, b = dump(dbs["pipeline"]), dump(dbs["bulk"])
    for table in a:
        if a[table] != b[table]:
            for i, (x, y) in enumerate(zip(a[table], b[table])):
                if x != y:
                    diff = [(k, v, w) for (k, v), (_, w) in zip(x, y) if v != w]
                    raise AssertionError(f"fidelity: {table} row {i} differs (column, pipeline, bulk): {diff[:4]}")
            raise AssertionError(f"fidelity: {table}: {len(a[table])} rows through the pipeline, {len(b[table])} bulk")
    counts = {t: len(rows) for t, rows in a.items() if rows}
    log(f"fidelity check passed: bulk rows == worker-path rows, {counts}")
    return counts


# ====================================================================== building
def build(pool: Pool, db: Path, users: int, total: int, seed: int, *, chunk_users: int = 50,
          log: Any = print) -> dict[str, Any]:
    """Extend the fixture at `db` until user i has its share of `total` memories."""
    open_fixture(db)
    per_user = [total // users + (1 if i < total % users else 0) for i in range(users)]
    writer = BulkWriter(db)
    t0 = time.perf_counter()
    states = read_states(writer.conn, pool, seed)
    read_s = time.perf_counter() - t0
    before = sum(s.memories for s in states.values())
    started = time.perf_counter()
    gen_s = 0.0
    clock = Clock()
    next_log = 0.0
    for first in range(0, users, chunk_users):
        t0 = time.perf_counter()
        batches = []
        for i in range(first, min(users, first + chunk_users)):
            plan = user_plan(pool, i, seed)
            batches.append(grow_user(pool, plan, states[plan.user_id], per_user[i], seed, clock))
        gen_s += time.perf_counter() - t0
        writer.write(batches)
        elapsed = time.perf_counter() - started
        if elapsed >= next_log or first + chunk_users >= users:
            next_log = elapsed + 15
            log(f"  {min(users, first + chunk_users)}/{users} users, {writer.rows} memories written, {elapsed:.0f} s "
                f"({writer.rows / max(elapsed, 1e-9):.0f}/s)")
    t0 = time.perf_counter()
    writer.close()
    seconds = time.perf_counter() - started
    return {"memories_before": before, "memories_written": writer.rows, "seconds": round(seconds, 1),
            "read_state_seconds": round(read_s, 1), "generate_seconds": round(gen_s, 1),
            "checkpoint_seconds": round(time.perf_counter() - t0, 1),
            "memories_per_second": round(writer.rows / max(seconds, 1e-9))}


def load_data() -> list[dict[str, Any]]:
    return json.loads(DATA.read_text())
