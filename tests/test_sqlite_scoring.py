"""The SQLite store's exact dense scoring, on both of its paths, against numpy.

Small scopes copy their rows out of the vector cache; a scope that is a large share of the
cache scores the whole cache in one pass and picks its rows' scores. Both must give the
exact cosine, and the top k must be a full sort's top k.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engram.domain.filters import MATCH_ALL, Cmp
from engram.domain.records import Event, Job, Memory, utcnow
from engram.ids import new_event_id, new_job_id, new_memory_id
from engram.store.base import JobOutcome, NewJob, NewMemory
from engram.store.sqlite import SQLiteStore
from engram.store.sqlite_index import _best


@pytest.mark.parametrize("seed", range(5))
def test_best_is_a_stable_sorts_top_k(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 20, size=500).astype(np.float32)  # many ties
    for k in (0, 1, 7, 50, 499, 500, 800):
        assert _best(scores, k).tolist() == np.argsort(-scores, kind="stable")[:k].tolist()


def test_dense_scores_are_exact_on_both_paths(tmp_path: Any) -> None:
    store = SQLiteStore(tmp_path / "engram.db", synchronous="OFF")
    store.migrate()
    store.ensure_org("o")
    rng = np.random.default_rng(3)
    vectors: dict[str, np.ndarray] = {}
    for user, count in (("small", 20), ("large", 400)):
        at = utcnow()
        job = Job(id=new_job_id(), org_id="o", user_id=user, conv_id="c", status="pending", created_at=at,
                  updated_at=at, params={})
        event = Event(id=new_event_id(), org_id="o", user_id=user, conv_id="c", role="user", kind="user_message",
                      content="turn", occurred_at=at, received_at=at)
        store.accept("o", [NewJob(job, [event])], dedup_since=None)
        lease = store.lease("w", utcnow(), 30, 5)
        made = []
        for i in range(count):
            v = rng.standard_normal(384).astype(np.float32)
            m = Memory(id=new_memory_id(), org_id="o", type="fact", text=f"{user} {i}", user_id=user, conv_id="c",
                       created_at=at, updated_at=at, source_event_ids=[event.id])
            vectors[m.id] = v / np.linalg.norm(v)
            made.append(NewMemory(m, vectors[m.id]))
        assert lease is not None and store.complete(lease, JobOutcome(created=made, result={}))
    q = rng.standard_normal(384).astype(np.float32)
    q /= np.linalg.norm(q)
    store.dense_candidates("o", MATCH_ALL, q, 1)  # every vector cached: 420 rows
    small = set(list(vectors)[:20])
    for where, share, admitted in ((Cmp("user_id", "eq", "small"), "20 of 420", small),
                                   (MATCH_ALL, "all 420", set(vectors))):
        got = store.dense_candidates("o", where, q, 10)
        want = sorted(((float(vectors[i] @ q), i) for i in admitted), reverse=True)[:10]
        assert [i for i, _ in got] == [i for _, i in want], share
        assert [s for _, s in got] == pytest.approx([s for s, _ in want], abs=1e-5), share
    store.close()
