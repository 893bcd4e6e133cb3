"""In-process BM25 of small scopes (engram/store/sqlite_lexicon.py), against PostgreSQL's.

The other store is the oracle: on the same memories, the in-process scores must be the
PostgreSQL store's lexical scores to rounding, and the matches the same set (both leave out
English stop words, domain/stopwords.py). Then, in the store: a small scope's statistics
are its own (another org's memories do not move them), and when the scope is the whole
file the FTS5 path finds the same matches.
"""

from __future__ import annotations

import random
import sqlite3
from typing import Any

import numpy as np
import pytest

from engram.domain.filters import MATCH_ALL, Cmp
from engram.domain.records import utcnow
from engram.ids import new_event_id, new_job_id, new_memory_id
from engram.domain.records import Event, Job, Memory
from engram.store.base import JobOutcome, NewJob, NewMemory
from engram.store.sqlite import SQLiteStore
from engram.domain.text import query_words
from engram.store.postgres import PostgresStore
from engram.store.sqlite_lexicon import ANALYZER, ScopeStatistics

# Words whose Porter stems collide ("walk", "walks", "walking"), digits, mixed case and
# single letters, drawn with Zipf-like weights so some words are in most documents.
VOCABULARY = ("walk walks walking walked dog dogs river kayak Kayaking trip Ann ann's the a of to "
              "2023 7 x paint painting painted sunset Caroline support group groups LGBTQ").split()


def _random_text(rng: random.Random) -> str:
    weights = [1 / (rank + 1) for rank in range(len(VOCABULARY))]
    return " ".join(rng.choices(VOCABULARY, weights, k=rng.randint(0, 14)))


@pytest.fixture(scope="module")
def pg_store(postgres: Any) -> Any:
    url = postgres.create_database("engram_lexicon")
    store = PostgresStore(url, pool_size=2)
    store.migrate()
    for org in ("org-a", "org-b"):
        store.ensure_org(org)
    yield store
    store.close()
    postgres.drop_database(url)


@pytest.mark.parametrize("seed", range(8))
def test_scores_are_postgresqls_bm25_on_the_same_documents(seed: int, tmp_path: Any, pg_store: Any) -> None:
    """The oracle is the other store: the same memories in PostgreSQL, scored by its lexical
    query (english stop words dropped, BM25 over the user's memories with FTS5's constants).
    The in-process scores must be the same to rounding, and the matches the same set, so a
    user moved from one store to the other finds the same memories in the same order."""
    rng = random.Random(seed)
    texts = [_random_text(rng) for _ in range(rng.randint(1, 60))]
    user = f"u{seed}"
    sqlite = _store(tmp_path, "s")
    _write(sqlite, "org-a", user, texts)
    _write(pg_store, "org-a", user, texts)
    mine = Cmp("user_id", "eq", user)
    asked = 0
    for _ in range(10):
        query = " ".join(rng.sample(VOCABULARY, rng.randint(1, 5)))
        here = _by_text(sqlite, sqlite.lexical_candidates("org-a", mine, query, 100))
        there = _by_text(pg_store, pg_store.lexical_candidates("org-a", mine, query, 100))
        assert sorted(here) == sorted(there), query
        for key, score in here.items():
            assert score == pytest.approx(there[key], rel=1e-9, abs=1e-12), (query, key)
        asked += bool(here)
    assert asked > 0
    sqlite.close()


def _by_text(store: Any, found: list[tuple[str, float]]) -> dict[tuple[str, int], float]:
    """Scores by (text, occurrence): the two stores' ids differ, their texts do not."""
    text_of = {m.id: m.text for m in store.get_memories("org-a", [i for i, _ in found]).values()}
    seen: dict[str, int] = {}
    out = {}
    for memory_id, score in sorted(found, key=lambda p: (text_of[p[0]], -p[1])):
        n = seen[text_of[memory_id]] = seen.get(text_of[memory_id], -1) + 1
        out[(text_of[memory_id], n)] = score
    return out


def test_stop_words_neither_match_nor_count_in_a_documents_length() -> None:
    docs = [ANALYZER.document(t) for t in ("the dog and the river", "dog river")]
    assert docs[0] == docs[1]
    assert query_words("where does the dog swim") == ["dog", "swim"]


def test_document_frequencies_count_stems_once_per_document() -> None:
    docs = [ANALYZER.document(t) for t in ("Walking the dogs, walking home", "a dog", "rivers")]
    scope = ScopeStatistics(np.arange(3), docs, ANALYZER.query(["walks", "dog", "river", "zebra"]))
    assert scope.document_frequency().tolist() == [1, 2, 1, 0]


# ---------------------------------------------------------------------- in the store
def _store(tmp_path: Any, name: str) -> SQLiteStore:
    store = SQLiteStore(tmp_path / name / "engram.db", synchronous="OFF")
    store.migrate()
    for org in ("org-a", "org-b"):
        store.ensure_org(org)
    return store


def _write(store: SQLiteStore, org: str, user: str, texts: list[str]) -> list[str]:
    """The worker's write path: accept a turn, lease its job, commit memories with it."""
    at = utcnow()
    job = Job(id=new_job_id(), org_id=org, user_id=user, conv_id="c1", status="pending", created_at=at,
              updated_at=at, params={})
    event = Event(id=new_event_id(), org_id=org, user_id=user, conv_id="c1", role="user", kind="user_message",
                  content="turn", occurred_at=at, received_at=at)
    store.accept(org, [NewJob(job, [event])], dedup_since=None)
    lease = store.lease("w", utcnow(), 30, 5)
    assert lease is not None
    made = [Memory(id=new_memory_id(), org_id=org, type="fact", text=t, user_id=user, conv_id="c1",
                   created_at=at, updated_at=at, source_event_ids=[event.id]) for t in texts]
    rng = np.random.default_rng(len(texts))
    vectors = rng.standard_normal((len(texts), 384)).astype(np.float32)
    assert store.complete(lease, JobOutcome(created=[NewMemory(m, v / np.linalg.norm(v))
                                                     for m, v in zip(made, vectors)], result={}))
    return [m.id for m in made]


def test_a_scope_keeps_its_statistics_whatever_else_the_file_holds(tmp_path: Any) -> None:
    store = _store(tmp_path, "s")
    _write(store, "org-a", "u1", ["Ann paints sunsets by the river", "Ann walks her dogs", "a kayak trip"])
    mine = Cmp("user_id", "eq", "u1")
    before = store.lexical_candidates("org-a", mine, "river sunsets", 10)
    df_before = store.document_frequencies("org-a", mine, ["ann", "river"])
    # Another tenant writes the query's words a thousand times over.
    _write(store, "org-b", "u9", [f"river sunsets river {i}" for i in range(1000)])
    assert store.lexical_candidates("org-a", mine, "river sunsets", 10) == before
    assert store.document_frequencies("org-a", mine, ["ann", "river"]) == df_before == (3, {"ann": 2, "river": 1})
    store.close()


def test_when_the_scope_is_the_whole_file_both_paths_find_the_same_matches(tmp_path: Any) -> None:
    """Past the in-process limit a scope goes through FTS5, whose statistics are its own (the
    whole file, stop words in a document's length): the same memories match, scored alike
    but not identically."""
    rng = random.Random(5)
    texts = [_random_text(rng) or "empty" for _ in range(300)]
    in_process, through_fts = _store(tmp_path, "a"), _store(tmp_path, "b")
    through_fts.scoped_lexical_limit = -1
    for store in (in_process, through_fts):
        _write(store, "org-a", "u1", texts)
    for query in ("walking dogs", "Caroline support group 2023", "the a of", "kayak x 7"):
        assert (query == "the a of") == (not query_words(query))  # stop words only: nothing to match
        a = in_process.lexical_candidates("org-a", MATCH_ALL, query, 1000)
        b = through_fts.lexical_candidates("org-a", MATCH_ALL, query, 1000)
        text_of = {m.id: m.text for m in in_process.get_memories("org-a", [i for i, _ in a]).values()}
        text_of.update({m.id: m.text for m in through_fts.get_memories("org-a", [i for i, _ in b]).values()})
        # every match (k > 300): ids differ between the two files, texts do not
        assert sorted(text_of[i] for i, _ in a) == sorted(text_of[i] for i, _ in b)
        assert len(a) > 0 or not query_words(query)
    assert in_process.document_frequencies("org-a", MATCH_ALL, ["walk", "zebra"]) == \
        through_fts.document_frequencies("org-a", MATCH_ALL, ["walk", "zebra"])
    for store in (in_process, through_fts):
        store.close()
