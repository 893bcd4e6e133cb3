"""The data lifecycle over HTTP, on both stores (SPEC §5, docs/lifecycle.md): erase a user,
retract a conversation, export and import; races with jobs in flight; the erasure proof on
the files (SQLite) and the rows (PostgreSQL); the SQLite → PostgreSQL round trip.

Every server is a real `engram serve` process with its worker; PostgreSQL is the session's
real one (tests/postgres_server.py).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import psycopg
import pytest

from tests.conftest import ServerProcess, create_key, serve_on, server_on_postgres, wait_job

ENV = {"ENGRAM_EPISODE_EVERY_TURNS": "4", "ENGRAM_EPISODE_IDLE_S": "100000"}


@dataclass
class Deployment:
    name: str
    srv: ServerProcess
    holds: Callable[[str], int]  # rows anywhere in the database whose text contains this string

    def client(self) -> httpx.Client:
        return self.srv.client()


def _sqlite_holds(db: Path) -> Callable[[str], int]:
    def holds(text: str) -> int:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            total = 0
            for table in tables:
                columns = [r[1] for r in conn.execute(f"PRAGMA table_info('{table}')")]
                if not columns:
                    continue
                where = " OR ".join(f"CAST({c} AS TEXT) LIKE ?" for c in columns)
                total += conn.execute(f"SELECT count(*) FROM '{table}' WHERE {where}",
                                      [f"%{text}%"] * len(columns)).fetchone()[0]
            return total
    return holds


def _postgres_holds(url: str) -> Callable[[str], int]:
    def holds(text: str) -> int:
        with psycopg.connect(url) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
            return sum(conn.execute(f'SELECT count(*) FROM "{t}" x WHERE x::text ILIKE %s',  # type: ignore[arg-type]
                                    (f"%{text}%",)).fetchone()[0] for t in tables)
    return holds


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp(f"lifecycle-{request.param}")
    with serve_on(request.param, request, tmp, "engram_lifecycle", env=ENV) as srv:
        holds = _sqlite_holds(tmp / "data" / "engram.db") if request.param == "sqlite" else \
            _postgres_holds(srv.env["ENGRAM_DATABASE_URL"])
        yield Deployment(request.param, srv, holds)


def _tag() -> str:
    return uuid.uuid4().hex[:10]


def _ingest(c: httpx.Client, user: str, conv: str, texts: list[str], *, wait: bool = True,
            headers: dict[str, str] | None = None) -> dict[str, Any]:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]
    r = c.post("/v1/memories", params={"wait": "true"} if wait else {}, headers=headers or {},
               json={"user_id": user, "conv_id": conv, "messages": messages})
    assert r.status_code in (200, 202), r.text
    job = r.json()
    if wait:
        assert job["status"] == "succeeded", job
    return job


def _memories(c: httpx.Client, user: str) -> list[dict[str, Any]]:
    r = c.get("/v1/memories", params={"user_id": user, "limit": 100})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def _search(c: httpx.Client, user: str, query: str) -> list[dict[str, Any]]:
    r = c.post("/v1/memories/search", json={"query": query, "user_id": user, "limit": 10})
    assert r.status_code == 200, r.text
    return r.json()["data"]


# ---------------------------------------------------------------------- erase a user
def test_erasing_a_user_removes_all_of_theirs_and_nothing_else(deployment: Deployment) -> None:
    tag = _tag()
    alice, bob = f"alice-{tag}", f"bob-{tag}"
    secret, kept = f"Quillfeather{tag}", f"Marrowbone{tag}"
    with deployment.client() as c:
        keyed = _ingest(c, alice, "c1", [f"My cat is called {secret}.", "Nice name!", "I live in Porto.", "Lovely."],
                        headers={"Idempotency-Key": f"k-{tag}"})
        _ingest(c, alice, "c2", [f"I drive a {secret} van.", "Noted."])
        event_id = f"ev-{tag}"
        r = c.post("/v1/ingest", json={"events": [{"actor_id": alice, "session_id": "m1", "kind": "user_message",
                                                   "content": f"I teach piano to {secret} kids.",
                                                   "event_id": event_id}]})
        assert r.status_code == 200, r.text
        m_event = r.json()["event_ids"][0]
        _ingest(c, bob, "c1", [f"My dog is called {kept}.", "Cute."])
        deadline = time.monotonic() + 60
        while c.post("/v1/status", json={"event_ids": [m_event]}).json()["statuses"][m_event] == "pending":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        theirs, bobs = _memories(c, alice), _memories(c, bob)
        assert len(theirs) >= 4 and bobs and deployment.holds(secret) > 0

        r = c.delete(f"/v1/users/{alice}")
        assert r.status_code == 200, r.text
        erased = r.json()
        assert erased["object"] == "user_erasure" and erased["user_id"] == alice
        assert erased["events_deleted"] == 7
        assert sum(erased["memories_deleted"].values()) >= len(theirs)  # every type, every status
        assert erased["jobs_deleted"] == 3 and erased["jobs_failed"] == 0
        assert erased["idempotency_keys_deleted"] == 1

        assert _memories(c, alice) == [] and _search(c, alice, f"{secret} cat") == []
        assert c.get(f"/v1/memories/jobs/{keyed['id']}").status_code == 404
        assert c.get(f"/v1/memories/{theirs[0]['id']}").status_code == 404
        status = c.post("/v1/status", json={"event_ids": [m_event]}).json()
        assert status["reasons"][m_event] == "not_found"
        assert deployment.holds(secret) == 0, "a row still holds the erased user's words"
        # Nothing of the user is remembered: the same client event id and idempotency key are new again.
        r = c.post("/v1/ingest", json={"events": [{"actor_id": alice, "session_id": "m1", "kind": "user_message",
                                                   "content": "I teach violin.", "event_id": event_id}]})
        assert r.json()["event_ids"][0] != m_event
        again = _ingest(c, alice, "c1", [f"My cat is called {secret}.", "Nice name!", "I live in Porto.", "Lovely."],
                        headers={"Idempotency-Key": f"k-{tag}"}, wait=False)
        assert again["id"] != keyed["id"]
        wait_job(c, again["id"])

        # Bob is untouched.
        assert [m["id"] for m in _memories(c, bob)] == [m["id"] for m in bobs]
        assert any(kept in h["text"] for h in _search(c, bob, f"dog {kept}"))
        # Erasing is idempotent: again, the new turns go; then there is nothing left.
        assert c.delete(f"/v1/users/{alice}").json()["events_deleted"] == 5
        zero = c.delete(f"/v1/users/{alice}").json()
        assert zero["events_deleted"] == 0 and zero["memories_deleted"] == {} and zero["jobs_deleted"] == 0


def _file_bytes(data_dir: Path) -> bytes:
    """Every byte of the embedded store's files: the database, its write-ahead log and index."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("engram.db*")))


def test_after_erasure_and_compaction_the_words_are_gone_from_the_files(deployment: Deployment) -> None:
    """The proof: on SQLite, no byte of the files spells the erased user's words any more (the
    lexical index keeps words lower-cased, so both cases are looked for); on PostgreSQL, no
    row of any table holds them after VACUUM."""
    tag = _tag()
    ivan, jo = f"ivan-{tag}", f"jo-{tag}"
    words = [f"Thistlewick{tag}", f"Brambleton{tag}"]
    kept = f"Hollowmere{tag}"
    with deployment.client() as c:
        _ingest(c, ivan, "c1", [f"My horse is called {words[0]}.", "Nice.", f"I grew up in {words[1]}.", "OK."])
        _ingest(c, ivan, "c2", [f"I moved from {words[1]} to Leeds.", "Right."])
        _ingest(c, jo, "c1", [f"My cat is called {kept}.", "Cute."])
        files = (lambda: _file_bytes(deployment.srv.data_dir)) if deployment.name == "sqlite" else None

        def present(word: str) -> bool:
            if files is not None:
                raw = files()
                return word.encode() in raw or word.lower().encode() in raw
            return deployment.holds(word) > 0

        assert all(present(w) for w in words) and present(kept)
        r = c.delete(f"/v1/users/{ivan}", params={"compact": "true"})
        assert r.status_code == 200, r.text
        assert r.json()["compacted"] is not None
        for word in words:
            assert not present(word), f"{word} is still in the store"
        assert present(kept), "the other user's words must still be there (else this test proves nothing)"


def test_erasing_names_the_user_by_the_id_rule(deployment: Deployment) -> None:
    with deployment.client() as c:
        r = c.delete("/v1/users/" + "u" * 300)
        assert r.status_code == 422 and r.json()["detail"]["code"] == "validation_error"
        r = c.delete("/v1/users/x", params={"compact": "maybe"})
        assert r.status_code == 422


def test_an_erased_users_jobs_in_flight_fail_and_never_write(deployment: Deployment) -> None:
    tag = _tag()
    carol = f"carol-{tag}"
    with deployment.client() as c:
        # One long job (1000 turns: seconds of extraction) and two queued behind it in its conversation.
        long = _ingest(c, carol, "c1", [f"I visited the {tag} museum number {i} in June." for i in range(1000)],
                       wait=False)
        queued = [_ingest(c, carol, "c1", [f"I own {i + 2} bikes."], wait=False) for i in range(2)]
        _await_running(c, long["id"])
        erased = c.delete(f"/v1/users/{carol}").json()
        assert erased["jobs_failed"] == 3, erased
        for job in [long, *queued]:
            ended = c.get(f"/v1/memories/jobs/{job['id']}").json()
            assert ended["status"] == "failed" and ended["error"]["code"] == "resource_deleted", ended
        # The worker finishes its extraction and tries to commit: refused, it writes nothing.
        _await_refused_commit(deployment, long["id"])
        assert _memories(c, carol) == []
        assert deployment.holds(f"{tag} museum") == 0


def _await_running(c: httpx.Client, job_id: str, timeout_s: float = 60) -> None:
    """Until a worker has leased the job (it is extracting: the race is on)."""
    deadline = time.monotonic() + timeout_s
    while c.get(f"/v1/memories/jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _await_refused_commit(deployment: Deployment, job_id: str, timeout_s: float = 60) -> None:
    """Until the worker that was running the job has tried to commit it and was refused."""
    deadline = time.monotonic() + timeout_s
    while f"job {job_id}: lease lost before commit" not in deployment.srv.log():
        assert time.monotonic() < deadline, deployment.srv.log()[-3000:]
        time.sleep(0.1)


# ---------------------------------------------------------------------- retract a conversation
def test_retracting_a_conversation_retracts_only_what_came_from_it(deployment: Deployment) -> None:
    tag = _tag()
    dave = f"dave-{tag}"
    with deployment.client() as c:
        _ingest(c, dave, "a", ["I live in Lisbon.", "Nice city.", f"I love kayaking on the {tag} river.", "Fun!"])
        _ingest(c, dave, "b", [f"I love kayaking on the {tag} river.", "You said so."])
        _ingest(c, dave, "b", ["I work as a nurse.", "Good."])
        before = {m["text"]: m for m in _memories(c, dave)}
        lisbon = next(m for t, m in before.items() if "Lisbon" in t and m["type"] == "fact")
        kayak = next(m for t, m in before.items() if "kayaking" in t and m["type"] == "fact")
        nurse = next(m for t, m in before.items() if "nurse" in t)
        episodes_a = [m for m in before.values() if m["type"] == "episode" and m["conv_id"] == "a"]
        assert len(kayak["details"]["source_event_ids"]) == 2 and episodes_a

        assert c.delete("/v1/conversations/a").status_code == 422  # which user's conversation: required
        r = c.delete("/v1/conversations/a", params={"user_id": dave})
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["object"] == "conversation_retraction" and done["events_deleted"] == 4
        assert lisbon["id"] in done["memories_retracted"]
        assert kayak["id"] in done["memories_updated"] and kayak["id"] not in done["memories_retracted"]
        assert {e["id"] for e in episodes_a} <= set(done["memories_removed"])
        assert nurse["id"] not in done["memories_retracted"] + done["memories_updated"] + done["memories_removed"]

        assert c.get(f"/v1/memories/{lisbon['id']}").json()["details"]["status"] == "retracted"
        kept = c.get(f"/v1/memories/{kayak['id']}").json()
        assert kept["details"]["status"] == "active" and kept["conv_id"] == "b"
        assert len(kept["details"]["source_event_ids"]) == 1
        assert c.get(f"/v1/memories/{episodes_a[0]['id']}").status_code == 404
        assert not any("Lisbon" in h["text"] for h in _search(c, dave, "where does he live Lisbon"))
        assert any(h["id"] == kayak["id"] for h in _search(c, dave, "kayaking river"))
        turns = lisbon["details"]["source_event_ids"]
        status = c.post("/v1/status", json={"event_ids": turns}).json()
        assert status["statuses"][turns[0]] == "failed" and status["reasons"][turns[0]] == "resource_deleted"
        # Retracting again changes nothing more.
        again = c.delete("/v1/conversations/a", params={"user_id": dave}).json()
        assert again["memories_retracted"] == [] and again["memories_removed"] == [] and again["events_deleted"] == 0


def test_a_retracted_conversations_jobs_in_flight_fail_and_never_write(deployment: Deployment) -> None:
    tag = _tag()
    erin = f"erin-{tag}"
    with deployment.client() as c:
        _ingest(c, erin, "other", ["I play the cello.", "Nice."])
        long = _ingest(c, erin, "big", [f"I climbed the {tag} peak number {i} in May." for i in range(1000)],
                       wait=False)
        _await_running(c, long["id"])
        done = c.delete("/v1/conversations/big", params={"user_id": erin}).json()
        assert done["jobs_failed"] == 1 and done["events_deleted"] == 1000
        assert c.get(f"/v1/memories/jobs/{long['id']}").json()["error"]["code"] == "resource_deleted"
        _await_refused_commit(deployment, long["id"])
        texts = [m["text"] for m in _memories(c, erin)]
        assert not any(f"{tag} peak" in t for t in texts) and any("cello" in t for t in texts)


# ---------------------------------------------------------------------- export and import
def _export(c: httpx.Client, path: str, **params: str) -> list[dict[str, Any]]:
    with c.stream("GET", path, params=params) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.iter_lines() if line]


def test_an_export_holds_events_memories_revisions_and_its_embedder(deployment: Deployment) -> None:
    tag = _tag()
    fay = f"fay-{tag}"
    with deployment.client() as c:
        _ingest(c, fay, "a", ["I live in Denver.", "OK.", f"My sister {tag} is a pilot.", "Cool."])
        _ingest(c, fay, "b", ["I moved to Boston last month.", "Big change."])
        lines = _export(c, f"/v1/users/{fay}/export")
        header, *records, end = lines
        assert header["record"] == "header" and header["format"] == "engram-export" and header["version"] == 1
        assert header["embedder"] and header["dim"] == 384 and header["scope"] == {"user_id": fay, "conv_id": None}
        events = [r for r in records if r["record"] == "event"]
        memories = [r for r in records if r["record"] == "memory"]
        assert end == {"record": "end", "events": 6, "memories": len(memories)} and len(events) == 6
        assert {m["status"] for m in memories} >= {"active", "superseded"}  # the revision is in it
        new = next(m for m in memories if m["details"].get("supersedes"))
        assert any(m["id"] == new["details"]["supersedes"] and m["status"] == "superseded" for m in memories)
        assert all(m["vector"] for m in memories) and all(e["content"] for e in events)
        part = _export(c, "/v1/conversations/b/export", user_id=fay)
        assert part[0]["scope"] == {"user_id": fay, "conv_id": "b"}
        assert {r["conv_id"] for r in part if r["record"] == "event"} == {"b"}
        assert part[-1]["events"] == 2


def test_an_import_refuses_what_is_not_an_export(deployment: Deployment) -> None:
    with deployment.client() as c:
        def post(body: str) -> httpx.Response:
            return c.post("/v1/import", content=body.encode(), headers={"content-type": "application/x-ndjson"})

        header = json.dumps({"record": "header", "format": "engram-export", "version": 1, "embedder": None})
        for body, line in [("not json\n", 1), ('{"record": "event"}\n', 1), (header + "\n{oops\n", 2),
                           (header + '\n{"record": "event", "id": "x"}\n', 2),
                           (json.dumps({"record": "header", "format": "engram-export", "version": 9}) + "\n", 1),
                           (header + "\n" + json.dumps({"record": "event", "id": "e" * 300, "user_id": "u",
                                                        "conv_id": "c", "role": "user", "kind": "user_message",
                                                        "content": "hi", "occurred_at": "2026-01-01T00:00:00Z",
                                                        "received_at": "2026-01-01T00:00:00Z",
                                                        "status": "completed"}) + "\n", 2)]:
            r = post(body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["detail"]["code"] == "invalid_import" and r.json()["detail"]["line"] == line, r.text
        r = post("")
        assert r.status_code == 422 and r.json()["detail"]["code"] == "invalid_import"


def test_sqlite_export_imports_into_postgres_with_the_same_searches(postgres: Any, tmp_path: Path) -> None:
    tag = _tag()
    user = f"gus-{tag}"
    facts = ["I live in Denver.", "I work as a carpenter.", "My daughter Ivy plays the violin.",
             "I love hiking in the Rockies.", "My favourite food is ramen.", "I have two dogs, Rex and Mo.",
             "I moved to Boston last month.", "I am learning Spanish.", "My brother lives in Austin.",
             "I ran a marathon in October 2025.", "I drink green tea every morning.", "I play chess on Sundays."]
    queries = ["where does the user live", "what pets", "family members", "food", "sports and exercise",
               "languages", "what does he drink"]
    source = ServerProcess(tmp_path / "sqlite", env=ENV).start()
    try:
        with source.client() as c:
            for i in range(0, len(facts), 3):
                _ingest(c, user, f"conv{i // 3}", [t for f in facts[i:i + 3] for t in (f, "I see.")])
            with c.stream("GET", f"/v1/users/{user}/export") as r:
                body = b"".join(r.iter_bytes())
            expected = {q: [h["id"] for h in _search(c, user, q)] for q in queries}
            listed = _memories(c, user)
            revisions = {m["id"]: [x["id"] for x in c.get(f"/v1/memories/{m['id']}/revisions").json()["data"]]
                         for m in listed}
    finally:
        source.stop()
    with server_on_postgres(postgres, tmp_path / "pg", "engram_roundtrip", env=ENV) as target, target.client() as c:
        r = c.post("/v1/import", content=body, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["complete"] and first["events_created"] == 2 * len(facts) and first["memories_created"] > 0
        assert first["memories_embedded"] == 0  # the same embedder: the vectors came with the file
        for q in queries:
            assert [h["id"] for h in _search(c, user, q)] == expected[q], q
        for memory_id, chain in revisions.items():
            assert [x["id"] for x in c.get(f"/v1/memories/{memory_id}/revisions").json()["data"]] == chain
        second = c.post("/v1/import", content=body).json()
        assert second["events_created"] == 0 and second["memories_created"] == 0
        assert second["events_existing"] == first["events_created"]
        assert second["memories_existing"] == first["memories_created"]
        # What was imported lives on: a new turn of the user reconciles with the imported facts.
        job = _ingest(c, user, "conv9", ["I work as a carpenter.", "Right."])
        assert job["result"]["memories_created"] == []
        assert [m["id"] for m in job["result"]["memories_updated"]] == [
            m["id"] for m in listed if m["type"] == "fact" and "carpenter" in m["text"]]


def test_an_import_never_takes_another_orgs_ids(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", env=ENV).start()
    try:
        a, b = create_key(srv, "org-a", "read,write"), create_key(srv, "org-b", "read,write")
        with srv.client(a) as ca, srv.client(b) as cb:
            _ingest(ca, "hana", "c", ["I live in Kyoto.", "Nice."])
            with ca.stream("GET", "/v1/users/hana/export") as r:
                body = b"".join(r.iter_bytes())
            r = cb.post("/v1/import", content=body)
            assert r.status_code == 409 and r.json()["detail"]["code"] == "id_conflict", r.text
            assert _memories(cb, "hana") == []
            assert len(_memories(ca, "hana")) >= 1
    finally:
        srv.stop()


def test_the_cli_erases_exports_and_imports_on_the_store(tmp_path: Path) -> None:
    """`engram export` / `engram import` / `engram users erase` work on the store directly,
    beside a running server (the embedded file) and into another data directory."""
    tag = _tag()
    user = f"kim-{tag}"
    srv = ServerProcess(tmp_path / "data", env=ENV).start()
    target = ServerProcess(tmp_path / "copy")  # its directory only: the CLI imports into it
    try:
        with srv.client() as c:
            _ingest(c, user, "c1", [f"My parrot is called Pip{tag}.", "Cute.", "I live in Oslo.", "Nice."])
            ids = sorted(m["id"] for m in _memories(c, user))
            out = tmp_path / "kim.jsonl"
            done = srv.cli("export", "--user", user, "-o", str(out))
            assert done.returncode == 0, done.stderr
            assert "exported" in done.stderr and out.read_text().count("\n") >= 2 + 4 + len(ids)
            loaded = target.cli("import", str(out))
            assert loaded.returncode == 0, loaded.stderr
            assert f"{len(ids)} memories created" in loaded.stdout
            assert "0 memories created" in target.cli("import", str(out)).stdout  # twice: nothing twice
            erased = srv.cli("users", "erase", user, "--compact")
            assert erased.returncode == 0, erased.stderr
            assert f"erased user '{user}'" in erased.stdout and "4 events" in erased.stdout
            assert "compacted" in erased.stdout
            assert _memories(c, user) == []  # the running server sees the erasure at once
            assert f"pip{tag}".encode() not in _file_bytes(tmp_path / "data").lower()
            assert srv.cli("users", "erase", user, "--org", "nope").returncode == 1
        target.start()
        with target.client() as c:
            assert sorted(m["id"] for m in _memories(c, user)) == ids
    finally:
        srv.stop()
        target.stop()


# ---------------------------------------------------------------------- replay
def _facts(c: httpx.Client, user: str) -> dict[str, dict[str, Any]]:
    """The user's active facts by text."""
    return {m["text"]: m for m in _memories(c, user) if m["type"] == "fact"}


def test_replaying_a_conversation_supersedes_its_facts_and_duplicates_nothing(deployment: Deployment) -> None:
    tag = _tag()
    lea = f"lea-{tag}"
    with deployment.client() as c:
        _ingest(c, lea, "a", ["I live in Denver.", "Nice.", f"My dog {tag} is three.", "Cute."])
        _ingest(c, lea, "a", ["I moved to Boston last month.", "Big change."])
        _ingest(c, lea, "b", ["I work as a nurse.", "Good."])
        before = _facts(c, lea)
        assert any("Boston" in t for t in before) and not any("Denver" in t for t in before)
        from_a = {i for t, m in before.items() if "nurse" not in t for i in [m["id"]]}
        nurse = next(m for t, m in before.items() if "nurse" in t)

        r = c.post("/v1/conversations/a/replay", params={"user_id": lea, "wait": "true"})
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["object"] == "ingest_job" and job["status"] == "succeeded", job
        result = job["result"]
        # The same extractor finds what it found: nothing changes, nothing is written twice.
        assert result["replay"] == {"turns": 6, "facts_before": len(from_a), "facts_unchanged": len(from_a)}
        assert result["memories_created"] == [] and result["memories_superseded_by"] == {}
        assert result["memories_retracted"] == []
        after = _facts(c, lea)
        assert {t: m["id"] for t, m in after.items()} == {t: m["id"] for t, m in before.items()}
        again = c.post("/v1/conversations/a/replay", params={"user_id": lea, "wait": "true"}).json()
        assert again["status"] == "succeeded" and sorted(_facts(c, lea)) == sorted(before)

        assert c.post("/v1/conversations/nope/replay", params={"user_id": lea}).status_code == 404
        assert c.post("/v1/conversations/a/replay").status_code == 422
        # A retracted conversation has nothing left to replay.
        c.delete("/v1/conversations/a", params={"user_id": lea})
        empty = c.post("/v1/conversations/a/replay", params={"user_id": lea, "wait": "true"}).json()
        assert empty["status"] == "succeeded" and empty["result"]["replay"]["turns"] == 0
        assert sorted(_facts(c, lea)) == [nurse["text"]]


def test_an_import_streams_past_the_body_limit_up_to_its_own(tmp_path: Path) -> None:
    """An import is read a line at a time: larger than ENGRAM_MAX_BODY_BYTES is fine, larger than
    ENGRAM_MAX_IMPORT_BYTES is 413, and one line longer than the body limit is refused by number."""
    srv = ServerProcess(tmp_path / "data", env={**ENV, "ENGRAM_MAX_BODY_BYTES": "8192",
                                                "ENGRAM_MAX_IMPORT_BYTES": "200000"}).start()
    try:
        with srv.client() as c:
            _ingest(c, "max", "c1", [t for i in range(12) for t in (f"I visited museum number {i} in Rome.", "Nice.")])
            with c.stream("GET", "/v1/users/max/export") as r:
                body = b"".join(r.iter_bytes())
            assert 8192 < len(body) < 200_000
            c.delete("/v1/users/max")
            r = c.post("/v1/import", content=body)
            assert r.status_code == 200 and r.json()["complete"], r.text
            assert r.json()["memories_created"] > 0
            r = c.post("/v1/import", content=body * 20)
            assert r.status_code == 413 and r.json()["detail"]["code"] == "payload_too_large"
            header = body.split(b"\n", 1)[0]
            r = c.post("/v1/import", content=header + b"\n" + b'{"record": "event", "content": "' + b"x" * 9000 + b'"}\n')
            assert r.status_code == 422 and r.json()["detail"] == {**r.json()["detail"], "code": "invalid_import",
                                                                  "line": 2}
    finally:
        srv.stop()
