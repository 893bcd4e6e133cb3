"""Hybrid ranking (engram/search): query reading, fusion and the ranker over a real store.

The ranker is driven through a real SQLite store with a small deterministic embedder
(a bag of words over a fixed vocabulary) so that every cosine in these tests is known.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterator, Sequence

import numpy as np
import pytest

from engram.domain.filters import Cmp, conjoin
from engram.domain.records import Event, Job, Memory
from engram.ids import new_event_id, new_job_id, new_memory_id
from engram.search import query as q
from engram.search import engine
from engram.search.engine import UBIQUITY_MIN_DOCS, HybridRanker
from engram.search.fusion import (
    ADDRESSED_WEIGHT, ASSISTANT_WEIGHT, CONTEXT_SHARE, QUESTION_WEIGHT, TIME_BOOST, by_kind, by_role, in_context,
    lexical_strength, relevance,
)
from engram.store.base import DocumentFrequencies, JobOutcome, NewJob, NewMemory
from engram.store.sqlite import SQLiteStore

ORG = "org"
UTC = timezone.utc


# ---------------------------------------------------------------------- query reading
def test_terms_are_the_lexical_query_words() -> None:
    assert q.terms("When did Ann's dog run 5 km? A dog!") == ["ann", "dog", "run", "5", "km"]  # no stop words
    assert q.terms("?!") == []


def test_without_terms_drops_words_and_their_possessive() -> None:
    assert q.without_terms("What is Ann's dog called, Ann?", {"ann"}) == "What is dog called, ?"
    assert q.without_terms("What is Annette's dog called?", {"ann"}) == "What is Annette's dog called?"
    assert q.without_terms("unchanged", set()) == "unchanged"


@pytest.mark.parametrize("text, expected", [
    ("What did she paint on 13 October, 2023?", [(datetime(2023, 10, 13), datetime(2023, 10, 14))]),
    ("What happened on October 13th, 2023?", [(datetime(2023, 10, 13), datetime(2023, 10, 14))]),
    ("Which workout did Maria start in December 2023?", [(datetime(2023, 12, 1), datetime(2024, 1, 1))]),
    ("any trips in Sept. 2022 or in 2021?", [(datetime(2022, 9, 1), datetime(2022, 10, 1)),
                                             (datetime(2021, 1, 1), datetime(2022, 1, 1))]),
    ("When did Melanie go camping in June?", []),  # no year: no range
    ("Due 2023-10-13, not 2023-13-01", [(datetime(2023, 10, 13), datetime(2023, 10, 14))]),
    ("Since 31 February 2023", [(datetime(2023, 2, 1), datetime(2023, 3, 1))]),  # no such day: its month
    ("What did I say last week?", []),
])
def test_date_ranges_are_the_explicit_dates(text: str, expected: list[tuple[datetime, datetime]]) -> None:
    assert q.date_ranges(text) == [(a.replace(tzinfo=UTC), b.replace(tzinfo=UTC)) for a, b in expected]


# ---------------------------------------------------------------------- fusion
@pytest.mark.parametrize("cosine", [-1.0, -0.2, 0.0, 0.3, 0.99, 1.0])
@pytest.mark.parametrize("bm25", [0.0, 0.5, 12.0, 1e6])
def test_relevance_stays_in_the_unit_interval_and_the_time_boost_only_raises(cosine: float, bm25: float) -> None:
    plain, boosted = relevance(cosine, bm25), relevance(cosine, bm25, True)
    assert 0.0 <= plain <= boosted <= 1.0
    assert boosted == pytest.approx(plain + TIME_BOOST * (1 - plain))
    assert relevance(min(cosine + 0.01, 1.0), bm25) >= plain and relevance(cosine, bm25 + 1) >= plain


def test_lexical_strength_saturates() -> None:
    assert lexical_strength(0) == 0 and lexical_strength(-3) == 0
    assert 0 < lexical_strength(1) < lexical_strength(10) < lexical_strength(1000) < 1


@pytest.mark.parametrize("score", [0.0, 0.2, 0.7, 1.0])
@pytest.mark.parametrize("neighbour", [0.0, 0.5, 1.0, 1.3])
def test_turn_context_and_the_role_weight_keep_scores_in_the_unit_interval(score: float, neighbour: float) -> None:
    lifted = in_context(score, neighbour)
    assert score <= lifted <= 1.0 and in_context(score, 0.0) == score
    if neighbour > score:  # part of the way toward the better score, never past it
        assert lifted == pytest.approx(score + CONTEXT_SHARE * (min(neighbour, 1.0) - score)) and lifted <= neighbour
    else:
        assert lifted == score, "a previous turn that scored no better changes nothing"
    assert in_context(score, neighbour / 2) <= lifted, "a better neighbour lifts more"
    assert by_role(score, "assistant") == pytest.approx(ASSISTANT_WEIGHT * score) and 0 < ASSISTANT_WEIGHT < 1
    assert by_role(score, "user") == by_role(score, None) == score
    assert by_kind(score, "question", "Sam asked Evan: How did you get into painting?") == pytest.approx(QUESTION_WEIGHT * score)
    assert by_kind(score, "opinion", "Maria said to John: Friends like you matter.") == pytest.approx(ADDRESSED_WEIGHT * score)
    assert by_kind(score, "event", "Maria said: The party was fun.") == by_kind(score, None, "Ann moved.") == score
    assert 0 < QUESTION_WEIGHT < ADDRESSED_WEIGHT < 1


# ---------------------------------------------------------------------- the ranker on a store
VOCAB = ["ann", "bob", "dog", "cat", "rex", "garden", "tomatoes", "paris", "trip", "museum", "violin", "music"]


class BagOfWords:
    """A deterministic stand-in for the sentence embedder: unit count vectors over VOCAB."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.stack([self.one(t) for t in texts])

    @staticmethod
    def one(text: str) -> np.ndarray:
        v = np.zeros(len(VOCAB), dtype=np.float32)
        for word in q.terms(text):
            if word in VOCAB:
                v[VOCAB.index(word)] += 1
        n = np.linalg.norm(v)
        return v / n if n else v


@pytest.fixture
def store(tmp_path: Any) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "engram.db", synchronous="OFF")
    s.migrate()
    s.ensure_org(ORG)
    yield s
    s.close()


def write(store: SQLiteStore, texts: list[str], *, user: str = "u1",
          valid: list[datetime | None] | None = None) -> list[str]:
    """Store `texts` as active facts of `user` (through accept → lease → complete)."""
    now = datetime.now(UTC)
    job = Job(id=new_job_id(), org_id=ORG, user_id=user, conv_id="c", status="pending", created_at=now,
              updated_at=now, params={})
    event = Event(id=new_event_id(), org_id=ORG, user_id=user, conv_id="c", role="user", kind="user_message",
                  content="turn", occurred_at=now, received_at=now)
    store.accept(ORG, [NewJob(job, [event])], dedup_since=None)
    lease = store.lease("t", now, 30, 5)
    assert lease is not None and lease.job.id == job.id
    made = [Memory(id=new_memory_id(), org_id=ORG, type="fact", text=t, user_id=user, conv_id="c", created_at=now,
                   updated_at=now, valid_at=(valid or [None] * len(texts))[i], source_event_ids=[event.id])
            for i, t in enumerate(texts)]
    assert store.complete(lease, JobOutcome(created=[NewMemory(m, BagOfWords.one(m.text)) for m in made],
                                            result={"stage_timings": {}}))
    return [m.id for m in made]


def user_scope(user: str = "u1") -> Any:
    return conjoin(Cmp("status", "eq", "active"), Cmp("user_id", "eq", user))


def test_scores_are_exact_for_candidates_found_by_one_side_only(store: SQLiteStore) -> None:
    texts = ["Bob plays the violin.", "Xylophone, xylophone: violin, dog, cat, garden.", "Rex is a dog."]
    ids = write(store, texts)
    embed = BagOfWords()
    ranking = HybridRanker(store, embed).rank(ORG, user_scope(), "violin xylophone", depth=1)
    scores = dict(ranking.scored)
    vector = embed.one("violin xylophone")
    cosines = [float(BagOfWords.one(t) @ vector) for t in texts]
    assert cosines[0] > cosines[1] > 0 and cosines[2] == 0
    dense = store.dense_candidates(ORG, user_scope(), vector, 1)
    lexical = store.lexical_candidates(ORG, user_scope(), "violin xylophone", 1)
    assert [i for i, _ in dense] == [ids[0]] and [i for i, _ in lexical] == [ids[1]]
    # each side found one; both are scored with their exact cosine (the second by an id lookup)
    assert set(scores) == {ids[0], ids[1]}
    assert scores[ids[0]] == pytest.approx(relevance(cosines[0], 0.0))
    assert scores[ids[1]] == pytest.approx(relevance(cosines[1], lexical[0][1]))
    assert [s for _, s in ranking.scored] == sorted(scores.values(), reverse=True)
    assert all(0 <= s <= 1 for s in scores.values())


def test_words_in_most_of_the_scope_are_left_out_of_the_second_embedding(store: SQLiteStore) -> None:
    texts = [f"Ann {w}." for w in ("dog", "cat", "garden", "trip", "museum", "violin", "music", "paris",
                                   "tomatoes", "rex", "dog cat", "trip paris")]
    ids = write(store, texts)
    write(store, ["Bob garden."], user="u2")
    assert len(texts) >= UBIQUITY_MIN_DOCS
    embed = BagOfWords()
    ranking = HybridRanker(store, embed).rank(ORG, user_scope(), "What about Ann's violin?", depth=20)
    assert ranking.dropped_terms == ["ann"]
    assert embed.calls[-1] == ["What about Ann's violin?", "What about violin?"]
    assert ranking.scored[0][0] == ids[texts.index("Ann violin.")]
    # the same word is not ubiquitous in a scope where it is rare
    assert HybridRanker(store, embed).rank(ORG, user_scope("u2"), "Ann's garden", depth=5).dropped_terms == []
    assert embed.calls[-1] == ["Ann's garden"]


def test_a_date_in_the_query_lifts_memories_of_that_time(store: SQLiteStore) -> None:
    may, june = datetime(2023, 5, 20, 15, 30, tzinfo=UTC), datetime(2023, 6, 2, tzinfo=UTC)
    ids = write(store, ["Bob went on a trip to the museum.", "Bob went on a trip to Paris.", "Bob likes music."],
                valid=[june, may, None])
    ranker = HybridRanker(store, BagOfWords())
    undated = dict(ranker.rank(ORG, user_scope(), "Bob trip", depth=10).scored)
    dated = ranker.rank(ORG, user_scope(), "Bob trip in May 2023", depth=10)
    assert dated.date_ranges == 1 and dated.scored[0][0] == ids[1]
    scores = dict(dated.scored)
    assert scores[ids[1]] == pytest.approx(undated[ids[1]] + TIME_BOOST * (1 - undated[ids[1]]), abs=0.02)
    assert scores[ids[0]] < scores[ids[1]]
    # the range is read from the text: a day outside it gets no lift
    day = dict(ranker.rank(ORG, user_scope(), "Bob trip on 2 June, 2023", depth=10).scored)
    assert day[ids[0]] > day[ids[1]]


def test_document_frequencies_count_within_the_filter(store: SQLiteStore) -> None:
    assert isinstance(store, DocumentFrequencies)
    write(store, ["Ann walks dogs.", "Ann's dog barks.", "Bob has no dog."])
    write(store, ["Ann again.", "Dog again."], user="u2")
    total, counts = store.document_frequencies(ORG, user_scope(), ["ann", "dog", "cat", "?"])
    assert total == 3 and counts == {"ann": 2, "dog": 3, "cat": 0, "?": 0}, "stemmed: dogs, dog's"
    total, counts = store.document_frequencies(ORG, Cmp("user_id", "eq", "nobody"), ["ann"])
    assert total == 0 and counts == {"ann": 0}


def test_superseded_and_filtered_memories_never_rank(store: SQLiteStore) -> None:
    ids = write(store, ["Bob has a dog.", "Bob has a cat."])
    other = write(store, ["Bob has a dog too."], user="u2")
    ranking = HybridRanker(store, BagOfWords()).rank(ORG, user_scope(), "dog", depth=10)
    assert {i for i, _ in ranking.scored} <= set(ids) and other[0] not in dict(ranking.scored)
    narrowed = conjoin(user_scope(), Cmp("id", "ne", ids[0]))
    assert ids[0] not in dict(HybridRanker(store, BagOfWords()).rank(ORG, narrowed, "dog", depth=10).scored)


def test_an_empty_scope_ranks_nothing(store: SQLiteStore) -> None:
    ranking = HybridRanker(store, BagOfWords()).rank(ORG, user_scope("nobody"), "dog in May 2023", depth=10)
    assert ranking.scored == [] and ranking.dropped_terms == []


def test_valid_at_defaults_to_the_turn_time() -> None:
    """Facts without a stated date take the time of their turn (what time filters and the
    time boost read): checked end to end in test_search_api.py; here the rule itself."""
    from engram.pipeline.process import _turn_time
    from engram.store.base import Lease

    t1, t2 = datetime(2023, 5, 1, tzinfo=UTC), datetime(2023, 5, 3, tzinfo=UTC)
    events = [Event(id=f"e{i}", org_id=ORG, user_id="u", conv_id="c", role="user", kind="user_message",
                    content="x", occurred_at=t, received_at=t) for i, t in enumerate((t2, t1))]
    lease = Lease(job=Job(id="j", org_id=ORG, user_id="u", conv_id="c", status="running", created_at=t1,
                          updated_at=t1), events=events, token="t")
    assert _turn_time(lease, ["e0", "e1"]) == t1 and _turn_time(lease, ["e0"]) == t2
    assert _turn_time(lease, ["other"]) is None


def test_the_vector_cache_follows_writes_from_other_processes(tmp_path: Any) -> None:
    """SQLite scores from a per-process cache of vectors: rows written or deleted through another
    connection (another process) after the cache was filled are seen, and a cache that
    outgrows its bound starts over without losing answers."""
    first = SQLiteStore(tmp_path / "engram.db", synchronous="OFF")
    first.migrate()
    first.ensure_org(ORG)
    other = SQLiteStore(tmp_path / "engram.db", synchronous="OFF")  # stands in for a worker process
    try:
        first._vectors.max_rows = 5
        query = BagOfWords.one("dog")
        old = write(first, ["Bob has a dog.", "Bob has a cat."])
        assert [i for i, _ in first.dense_candidates(ORG, user_scope(), query, 1)] == [old[0]]
        new = write(other, ["Dog dog dog.", "A garden.", "Paris trip.", "Violin music."])
        got = first.dense_candidates(ORG, user_scope(), query, 10)
        assert got[0][0] == new[0] and got[0][1] == pytest.approx(1.0)
        assert {i for i, _ in got} == set(old + new), "six rows through a cache of five"
        assert other.delete_memory(ORG, new[0], datetime.now(UTC))  # a fact: retracted, filtered out
        assert new[0] not in {i for i, _ in first.dense_candidates(ORG, user_scope(), query, 10)}
        assert first.dense_candidates(ORG, user_scope(), np.ones(3, dtype=np.float32), 10) == [], \
            "a query of another dimension scores nothing"
    finally:
        first.close()
        other.close()


# ---------------------------------------------------------------------- turn context
def converse(store: SQLiteStore, turns: list[str], *, user: str = "u1", conv: str = "c",
             roles: list[str] | None = None, fact_types: list[str] | None = None) -> list[str]:
    """One job of `turns`, each turn an event and one fact of the same text (in turn order)."""
    now = datetime.now(UTC)
    job = Job(id=new_job_id(), org_id=ORG, user_id=user, conv_id=conv, status="pending", created_at=now,
              updated_at=now, params={})
    roles = roles or ["user"] * len(turns)
    fact_types = fact_types or ["fact"] * len(turns)
    events = [Event(id=new_event_id(), org_id=ORG, user_id=user, conv_id=conv, role=role, kind=f"{role}_message",
                    content=t, occurred_at=now, received_at=now) for t, role in zip(turns, roles)]
    store.accept(ORG, [NewJob(job, events)], dedup_since=None)
    lease = store.lease("t", now, 30, 5)
    assert lease is not None and lease.job.id == job.id
    made = [Memory(id=new_memory_id(), org_id=ORG, type="fact", text=t, user_id=user, conv_id=conv, created_at=now,
                   updated_at=now, source_event_ids=[e.id], details={"fact_type": ft, "source_role": e.role})
            for t, e, ft in zip(turns, events, fact_types)]
    assert store.complete(lease, JobOutcome(created=[NewMemory(m, BagOfWords.one(m.text)) for m in made],
                                            result={"stage_timings": {}}))
    return [m.id for m in made]


def without_context(monkeypatch: pytest.MonkeyPatch, store: SQLiteStore, where: Any, query: str) -> dict[str, float]:
    with monkeypatch.context() as m:
        m.setattr(engine, "CONTEXT_WINDOW", 0)
        return dict(HybridRanker(store, BagOfWords()).rank(ORG, where, query, depth=20).scored)


def test_an_answer_is_lifted_by_the_question_in_the_turn_before(store: SQLiteStore,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # The question's words match the query; the answer ("Rex, for music") only half does.
    question, answer, aside = converse(store, ["Ann violin teacher?", "Bob music rex dog.", "Paris."])
    (distractor,) = converse(store, ["Bob music garden."], conv="other")
    query = "Ann violin music"
    base = without_context(monkeypatch, store, user_scope(), query)
    assert base[distractor] > base[answer], "on its own words the answer loses"
    ranking = HybridRanker(store, BagOfWords()).rank(ORG, user_scope(), query, depth=20)
    scores = dict(ranking.scored)
    assert [i for i, _ in ranking.scored[:2]] == [question, answer], "its question lifts it"
    assert scores[answer] == pytest.approx(in_context(base[answer], base[question]))
    assert scores[distractor] == pytest.approx(base[distractor]), "no neighbour: its score as it was"
    assert scores[question] == pytest.approx(base[question]), "the turn after it lifts nothing"
    assert aside not in scores or scores[aside] == pytest.approx(in_context(base[aside], base[answer]))
    assert "context" in ranking.timings and all(0 <= s <= 1 for s in scores.values())


def test_memories_of_other_conversations_and_users_are_never_neighbours(store: SQLiteStore,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (answer,) = converse(store, ["Bob music rex dog."])
    # right after it in time, with the query's words: another conversation, another user
    (elsewhere,) = converse(store, ["Ann violin teacher?"], conv="other")
    (someone,) = converse(store, ["Ann violin teacher?"], user="u2")
    everyone = Cmp("status", "eq", "active")  # org-wide: all three are candidates
    query = "Ann violin music"
    base = without_context(monkeypatch, store, everyone, query)
    scores = dict(HybridRanker(store, BagOfWords()).rank(ORG, everyone, query, depth=20).scored)
    assert set(scores) == {answer, elsewhere, someone}
    assert scores == pytest.approx(base)


def test_a_fact_from_an_assistant_turn_ranks_below_the_users_own_words(store: SQLiteStore,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    user, echo = converse(store, ["Ann garden tomatoes dog.", "Ann garden tomatoes."], roles=["user", "assistant"])
    base = without_context(monkeypatch, store, user_scope(), "garden tomatoes")
    assert base[echo] > base[user], "the shorter echo matches better on its words"
    ranking = HybridRanker(store, BagOfWords()).rank(ORG, user_scope(), "garden tomatoes", depth=20)
    scores = dict(ranking.scored)
    assert [i for i, _ in ranking.scored] == [user, echo]
    assert scores[echo] == pytest.approx(ASSISTANT_WEIGHT * base[echo]) and scores[user] == pytest.approx(base[user])


def test_a_question_ranks_below_its_answer_and_still_lifts_it(store: SQLiteStore,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    question, answer = converse(store, ["Ann violin teacher?", "Bob music rex dog."], fact_types=["question", "fact"])
    query = "Ann violin music"
    base = without_context(monkeypatch, store, user_scope(), query)
    assert base[question] > base[answer]
    ranking = HybridRanker(store, BagOfWords()).rank(ORG, user_scope(), query, depth=20)
    scores = dict(ranking.scored)
    assert scores[answer] == pytest.approx(in_context(base[answer], base[question])), "lifted at full strength"
    assert scores[question] == pytest.approx(QUESTION_WEIGHT * base[question])
    assert [i for i, _ in ranking.scored] == [answer, question]


# ---------------------------------------------------------------------- over the API
def test_over_the_api_the_users_statement_ranks_above_an_assistants_echo_of_it(tmp_path: Any) -> None:
    """The role weight is a safety net behind the extractor (which should not keep echoes at
    all), so the facts are written here as a worker would commit them — a separate process on
    the server's database, with the real embedder — whatever today's extractor keeps; the
    search goes over HTTP. On its own words the echo matches the query better."""
    from engram.auth import DEFAULT_ORG
    from engram.embed import make_embedder
    from tests.conftest import ServerProcess

    server = ServerProcess(tmp_path / "data", env={"ENGRAM_WORKERS": "0"}).start()
    worker = SQLiteStore(tmp_path / "data" / "engram.db")
    try:
        embedder = make_embedder("local")
        turns = [("user", "I moved to Denver last spring, for a new job at the children's hospital there."),
                 ("assistant", "You moved to Denver.")]
        texts = ["Dana moved to Denver last spring, for a new job at the children's hospital there.",
                 "The assistant said: Dana moved to Denver."]
        now = datetime.now(UTC)
        job = Job(id=new_job_id(), org_id=DEFAULT_ORG, user_id="dana", conv_id="c", status="pending",
                  created_at=now, updated_at=now, params={})
        events = [Event(id=new_event_id(), org_id=DEFAULT_ORG, user_id="dana", conv_id="c", role=role,
                        kind=f"{role}_message", content=content, occurred_at=now, received_at=now)
                  for role, content in turns]
        worker.accept(DEFAULT_ORG, [NewJob(job, events)], dedup_since=None)
        lease = worker.lease("test", now, 30, 5)
        assert lease is not None and lease.job.id == job.id
        made = [Memory(id=new_memory_id(), org_id=DEFAULT_ORG, type="fact", text=text, user_id="dana", conv_id="c",
                       created_at=now, updated_at=now, source_event_ids=[e.id],
                       details={"fact_type": "fact", "source_role": e.role})
                for text, e in zip(texts, events)]
        vectors = embedder.embed(texts)
        assert worker.complete(lease, JobOutcome(created=[NewMemory(m, v) for m, v in zip(made, vectors)],
                                                 result={"stage_timings": {}}))
        query = "Dana moved to Denver"
        with pytest.MonkeyPatch.context() as m:  # the same ranking without this step, in process
            m.setattr(engine, "CONTEXT_WINDOW", 0)
            base = dict(HybridRanker(worker, lambda t: embedder.embed(t)).rank(
                DEFAULT_ORG, conjoin(Cmp("status", "eq", "active"), Cmp("user_id", "eq", "dana")), query, 20).scored)
        assert base[made[1].id] > base[made[0].id], "the echo is the better match on its words"
        with server.client() as client:
            response = client.post("/v1/memories/search", json={"query": query, "filters": {"user_id": "dana"}})
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert [(d["details"]["source_role"], d["text"]) for d in data] == [("user", texts[0]), ("assistant", texts[1])]
        assert data[1]["score"] == pytest.approx(ASSISTANT_WEIGHT * base[made[1].id], abs=1e-5)
        assert "context" in response.json()["extras"]["stage_timings"]
    finally:
        worker.close()
        server.stop()
