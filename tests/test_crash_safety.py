"""SIGKILL the server and its workers mid-processing; after a restart every accepted job
ends exactly once: nothing lost, nothing doubled."""

from __future__ import annotations

import time
from collections import Counter

import httpx

from tests.conftest import ServerProcess

USERS = 4
JOBS_PER_USER = 60


def content(user: int, n: int) -> str:
    # Distinct facts, so each message becomes exactly one memory and none merge.
    animals = ["otters", "herons", "foxes", "badgers", "owls", "hares"]
    return f"I counted {n * 7 + user} {animals[n % len(animals)]} at lake number {user * 1000 + n}."


def test_sigkill_mid_processing_loses_and_doubles_nothing(tmp_path) -> None:
    srv = ServerProcess(tmp_path / "data", env={"ENGRAM_LEASE_TIMEOUT_S": "30"}).start()
    job_ids: list[str] = []
    event_ids: list[str] = []
    with srv.client() as c:
        for n in range(JOBS_PER_USER):
            for user in range(USERS):
                if n % 2:
                    r = c.post("/v1/memories", json={"messages": [{"role": "user", "content": content(user, n)}],
                                                     "user_id": f"user-{user}", "conv_id": f"conv-{user}"})
                    assert r.status_code == 202
                    job_ids.append(r.json()["id"])
                else:
                    r = c.post("/v1/ingest", json={"events": [{"actor_id": f"user-{user}", "session_id": f"conv-{user}",
                                                               "kind": "user_message", "content": content(user, n)}]})
                    assert r.status_code == 200
                    event_ids.extend(r.json()["event_ids"])
        # Let the pipeline get going, then pull the plug on everything at once.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = sum(c.get(f"/v1/memories/jobs/{j}").json()["status"] == "succeeded" for j in job_ids[:20])
            if done >= 3:
                break
            time.sleep(0.02)
        before = c.post("/v1/status", json={"event_ids": event_ids}).json()
    srv.kill()
    assert before["pendingIds"], "the kill must land while work is still queued"

    srv.start()  # same data directory: the restarted server hands back the dead workers' leases
    with srv.client() as c:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            jobs = [c.get(f"/v1/memories/jobs/{j}").json() for j in job_ids]
            status = c.post("/v1/status", json={"event_ids": event_ids}).json()
            if all(j["status"] in ("succeeded", "failed") for j in jobs) and not status["pendingIds"]:
                break
            time.sleep(0.2)
        assert all(j["status"] == "succeeded" for j in jobs), Counter(j["status"] for j in jobs)
        assert sorted(status["completedIds"]) == sorted(event_ids) and not status["failedIds"]

        memories = []
        for user in range(USERS):
            cursor = None
            while True:
                params = {"user_id": f"user-{user}", "type": "fact", "limit": 100, **({"cursor": cursor} if cursor else {})}
                page = c.get("/v1/memories", params=params).json()
                memories.extend(page["data"])
                if not page["has_more"]:
                    break
                cursor = page["next_cursor"]
    expected = USERS * JOBS_PER_USER
    cited = Counter(e for m in memories for e in m["details"]["source_event_ids"])
    texts = Counter((m["user_id"], m["text"]) for m in memories)
    assert len(memories) == expected, f"{len(memories)} facts for {expected} messages"
    assert len(cited) == expected and set(cited.values()) == {1}, "every event is cited by exactly one fact"
    assert set(texts.values()) == {1}, "no fact is stored twice"
    created = Counter(ref["id"] for j in jobs for ref in j["result"]["memories_created"])
    assert set(created.values()) == {1}, "no memory is reported by two jobs"
    srv.stop()
