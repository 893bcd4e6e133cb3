"""End to end: a real `engram serve` with ENGRAM_EXTRACTOR=llm and ENGRAM_EMBEDDER=openai,
pointed at a real scripted OpenAI-compatible server; everything observed over HTTP (and the
org's usage counters in the store)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from engram.store.sqlite import SQLiteStore
from tests.conftest import ServerProcess, wait_job
from tests.openai_server import (
    ScriptedOpenAI, chat, echo_extractor, error, fact, label_of, memories_of, rate_limited, slow, turns_of,
)
from tests.test_family_x import checked

MAX_RETRIES = 2  # ENGRAM_LLM_MAX_RETRIES of the servers below: 3 requests per call at most
BUDGET = 2500  # ENGRAM_LLM_MAX_PROMPT_TOKENS
EPISODE_EVERY = 8


def llm_env(scripted: ScriptedOpenAI, **extra: str) -> dict[str, str]:
    return {
        "ENGRAM_EXTRACTOR": "llm", "ENGRAM_LLM_BASE_URL": scripted.url, "ENGRAM_LLM_MODEL": "scripted-model",
        "ENGRAM_LLM_API_KEY": "sk-e2e", "ENGRAM_LLM_MAX_RETRIES": str(MAX_RETRIES), "ENGRAM_LLM_RETRY_BASE_S": "0.01",
        "ENGRAM_LLM_RETRY_MAX_WAIT_S": "2", "ENGRAM_LLM_MAX_PROMPT_TOKENS": str(BUDGET),
        "ENGRAM_EMBEDDER": "openai", "ENGRAM_EMBEDDING_BASE_URL": scripted.url, "ENGRAM_EMBEDDING_MODEL": "emb",
        "ENGRAM_EPISODE_EVERY_TURNS": str(EPISODE_EVERY), "ENGRAM_MAX_ATTEMPTS": "3", "ENGRAM_RETRY_BASE_S": "0.01",
        **extra,
    }


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def engram(tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedOpenAI) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("engram-llm") / "data", env=llm_env(scripted)).start()
    yield srv
    srv.stop()


@pytest.fixture
def llm(scripted: ScriptedOpenAI) -> ScriptedOpenAI:
    scripted.reset()
    return scripted


@pytest.fixture
def client(engram: ServerProcess) -> Iterator[httpx.Client]:
    with engram.client() as c:
        yield c


def uid() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


def submit(client: httpx.Client, user: str, messages: list[dict], conv: str = "c1", **extra: object) -> dict:
    response = checked(client.post("/v1/memories", json={"messages": messages, "user_id": user, "conv_id": conv,
                                                         **extra}))
    assert response.status_code == 202
    return wait_job(client, response.json()["id"])


def succeeded(client: httpx.Client, user: str, messages: list[dict], **extra: object) -> dict:
    job = submit(client, user, messages, **extra)
    assert job["status"] == "succeeded", job
    checked(client.get(f"/v1/memories/jobs/{job['id']}"))
    return job["result"]


def get(client: httpx.Client, memory_id: str) -> dict:
    return checked(client.get(f"/v1/memories/{memory_id}")).json()


def memories_of_user(client: httpx.Client, user: str) -> list[dict]:
    return checked(client.get("/v1/memories", params={"user_id": user, "limit": 100})).json()["data"]


def revisions(client: httpx.Client, memory_id: str) -> list[str]:
    return [m["id"] for m in client.get(f"/v1/memories/{memory_id}/revisions").json()["data"]]


def usage_totals(srv: ServerProcess) -> dict[str, int]:
    store = SQLiteStore(Path(srv.data_dir) / "engram.db")
    try:
        return store.usage_totals("default")
    finally:
        store.close()


LISBON = [{"role": "user", "name": "Caroline", "content": "I moved to Lisbon last month. I love pastel de nata.",
           "date": "2023-05-08T13:56:00Z"}]


def lisbon_answer(request: dict) -> object:
    return chat({"facts": [
        fact("Caroline lives in Lisbon.", [1], fact_type="biographical", key="lives_in", valid_at="2023-04-01"),
        fact("Caroline loves pastel de nata.", [1], fact_type="preference"),
    ], "artifacts": []}, prompt_tokens=700, completion_tokens=60)(request)


# ---------------------------------------------------------------------- the happy path
def test_happy_path(client: httpx.Client, llm: ScriptedOpenAI, engram: ServerProcess) -> None:
    user = uid()
    llm.script(lisbon_answer)
    result = succeeded(client, user, LISBON + [{"role": "assistant", "content": "That sounds lovely!"}],
                       metadata={"project": "atlas"})
    created = {r["text"]: r["id"] for r in result["memories_created"]}
    assert set(created) == {"Caroline lives in Lisbon.", "Caroline loves pastel de nata."}
    assert result["usage"]["llm_requests"] == 1
    assert result["usage"]["prompt_tokens"] == 700 and result["usage"]["completion_tokens"] == 60
    assert result["usage"]["embedding_requests"] >= 1 and result["usage"]["embedding_tokens"] > 0
    assert set(result["stage_timings"]) >= {"extract", "embed", "reconcile"}

    lives = get(client, created["Caroline lives in Lisbon."])
    assert lives["details"]["fact_type"] == "biographical" and lives["details"]["valid_at"].startswith("2023-04-01")
    assert lives["details"]["source_role"] == "user" and len(lives["details"]["source_event_ids"]) == 1
    assert lives["metadata"] == {"project": "atlas"} and lives["details"]["status"] == "active"

    request = llm.chat_requests()[0]
    assert request.body["model"] == "scripted-model" and request.headers["authorization"] == "Bearer sk-e2e"
    assert request.body["response_format"]["type"] == "json_schema"
    assert [(n, s) for n, s, _ in turns_of(request.body)] == [(1, "Caroline (user)"), (2, "the assistant")]
    assert "2023-05-08 13:56 UTC" in request.user

    hits = checked(client.post("/v1/memories/search", json={
        "query": "where does Caroline live", "filters": {"user_id": user}})).json()["data"]
    assert hits and hits[0]["id"] == created["Caroline lives in Lisbon."]
    assert all(r.body["model"] == "emb" for r in llm.embedding_requests())
    health = client.get("/v1/health").json()
    assert health["components"]["extractor"]["name"] == "llm" and health["components"]["embedder"]["name"] == "openai"


def test_no_call_exceeds_the_token_budget_and_every_turn_is_read(client: httpx.Client, llm: ScriptedOpenAI) -> None:
    llm.reset(default_chat=echo_extractor)
    user = uid()
    turns = [{"role": "user", "content": f"Fact {i}: my cousin number {i} lives in a town with a long name. " * 4}
             for i in range(EPISODE_EVERY - 1)]
    result = succeeded(client, user, turns)
    requests = llm.chat_requests()
    assert len(requests) > 1
    from tests.test_llm_extractor import prompt_tokens

    assert all(prompt_tokens(r) <= BUDGET for r in requests)
    sent = [text for r in requests for _, _, text in turns_of(r.body)]
    assert sent == [t["content"] for t in turns]
    assert len(result["memories_created"]) == len(turns)
    assert result["usage"]["llm_requests"] == len(requests)


# ---------------------------------------------------------------------- provider failures
def test_429_forever_fails_with_rate_limit_exceeded_after_bounded_calls(client: httpx.Client,
                                                                        llm: ScriptedOpenAI) -> None:
    llm.reset(default_chat=lambda request: rate_limited("0"))
    user = uid()
    job = submit(client, user, LISBON)
    assert job["status"] == "failed" and job["result"] is None
    assert job["error"]["code"] == "rate_limit_exceeded" and "429" in job["error"]["message"]
    assert len(llm.chat_requests()) == 1 + MAX_RETRIES, "no job-level retry multiplies provider calls"
    assert memories_of_user(client, user) == []


def test_500_then_success_succeeds(client: httpx.Client, llm: ScriptedOpenAI) -> None:
    llm.script(error(500), error(503), lisbon_answer)
    result = succeeded(client, uid(), LISBON)
    assert len(result["memories_created"]) == 2
    assert len(llm.chat_requests()) == 3 and result["usage"]["llm_requests"] == 3


def test_non_json_answers_fail_the_job_and_the_same_body_resubmitted_succeeds(client: httpx.Client,
                                                                              llm: ScriptedOpenAI) -> None:
    user = uid()
    llm.script(chat("I'm sorry, I can't produce JSON today."), chat("Still no JSON."))
    job = submit(client, user, LISBON)
    assert job["status"] == "failed" and job["error"]["code"] == "ingest_failed"
    assert "not JSON" in job["error"]["message"]
    assert len(llm.chat_requests()) == 2, "asked once, repaired once"
    assert "could not be used" in llm.chat_requests()[1].messages[-1]["content"]
    assert memories_of_user(client, user) == []

    llm.script(lisbon_answer)
    result = succeeded(client, user, LISBON)
    assert {r["text"] for r in result["memories_created"]} == {"Caroline lives in Lisbon.",
                                                               "Caroline loves pastel de nata."}
    assert "[C1]" not in llm.chat_requests()[-1].user, "the failed job's turns are not context for the next"


def test_a_schema_violating_answer_is_repaired(client: httpx.Client, llm: ScriptedOpenAI) -> None:
    llm.script(chat({"facts": [fact("Caroline lives in Lisbon.", [7])], "artifacts": []}), lisbon_answer)
    result = succeeded(client, uid(), LISBON)
    assert len(result["memories_created"]) == 2 and result["usage"]["llm_requests"] == 2
    assert "there is no turn T7" in llm.chat_requests()[1].messages[-1]["content"]


def test_a_failed_chunk_leaves_nothing_half_written(client: httpx.Client, llm: ScriptedOpenAI) -> None:
    user = uid()
    turns = [{"role": "user", "content": f"Note {i}: I keep {i} jars of honey in my pantry, all labelled. " * 4}
             for i in range(EPISODE_EVERY - 1)]
    broken = chat({"facts": [{"text": "no type"}], "artifacts": []})
    llm.script(echo_extractor, broken, broken)
    job = submit(client, user, turns)
    assert job["status"] == "failed" and job["error"]["code"] == "ingest_failed"
    assert len(llm.chat_requests()) == 3, "the first chunk was answered; the second failed twice"
    assert memories_of_user(client, user) == [], "the first chunk's facts were not written"

    llm.reset(default_chat=echo_extractor)
    result = succeeded(client, user, turns)
    assert len([r for r in result["memories_created"] if r["type"] == "fact"]) == len(turns)


def test_a_provider_that_refuses_fails_the_job_at_once(client: httpx.Client, llm: ScriptedOpenAI) -> None:
    llm.reset(default_chat=lambda request: error(401, "Incorrect API key provided"))
    job = submit(client, uid(), LISBON)
    assert job["status"] == "failed" and job["error"]["code"] == "ingest_failed"
    assert "HTTP 401" in job["error"]["message"] and "Incorrect API key" in job["error"]["message"]
    assert len(llm.chat_requests()) == 1


def test_timeouts(tmp_path: Path, llm: ScriptedOpenAI) -> None:
    srv = ServerProcess(tmp_path / "data", env=llm_env(llm, ENGRAM_LLM_TIMEOUT_S="0.5",
                                                       ENGRAM_EMBEDDER="local")).start()
    try:
        with srv.client() as c:
            llm.reset(default_chat=slow(5.0, chat({"facts": [], "artifacts": []})))
            user = uid()
            job = submit(c, user, LISBON)
            assert job["status"] == "failed" and job["error"]["code"] == "ingest_failed"
            assert "timed out" in job["error"]["message"]
            assert len(llm.chat_requests()) == 1 + MAX_RETRIES
            assert memories_of_user(c, user) == []

            llm.reset()
            llm.script(slow(5.0, chat({"facts": [], "artifacts": []})), lisbon_answer)
            assert len(succeeded(c, uid(), LISBON)["memories_created"]) == 2
    finally:
        srv.stop()


# ---------------------------------------------------------------------- memory that evolves
def test_supersession_and_dedup_across_two_ingests(client: httpx.Client, llm: ScriptedOpenAI) -> None:
    user = uid()
    llm.script(lisbon_answer)
    first = {r["text"]: r["id"] for r in succeeded(client, user, LISBON)["memories_created"]}
    lisbon, nata = first["Caroline lives in Lisbon."], first["Caroline loves pastel de nata."]

    def second_answer(request: dict) -> object:
        return chat({"facts": [
            fact("Caroline lives in Porto.", [1], fact_type="biographical", key="lives_in", valid_at="2023-06-01",
                 action="supersedes", memory=label_of(request, "Lisbon")),
            fact("Caroline adores pastel de nata.", [1], fact_type="preference", action="repeats",
                 memory=label_of(request, "pastel de nata")),
        ], "artifacts": []})(request)

    llm.script(second_answer)
    moved = [{"role": "user", "name": "Caroline", "content": "I moved to Porto this week; pastel de nata still rules.",
              "date": "2023-06-02T10:00:00Z"}]
    second = succeeded(client, user, moved, conv="c2")
    shown = memories_of(llm.chat_requests()[-1].body)
    assert {"Caroline lives in Lisbon.", "Caroline loves pastel de nata."} <= set(shown.values()), \
        "the request carried the user's related memories"

    porto = next(r["id"] for r in second["memories_created"])
    assert [r["text"] for r in second["memories_created"]] == ["Caroline lives in Porto."]
    assert second["memories_superseded_by"] == {lisbon: porto}
    assert [r["id"] for r in second["memories_updated"]] == [nata]
    assert get(client, lisbon)["details"]["status"] == "superseded"
    assert get(client, porto)["details"]["supersedes"] == lisbon
    assert len(get(client, nata)["details"]["source_event_ids"]) == 2, "the repeat added its source"
    assert revisions(client, porto) == [lisbon, porto]
    hits = client.post("/v1/memories/search", json={"query": "where does Caroline live",
                                                    "filters": {"user_id": user}}).json()["data"]
    assert lisbon not in [h["id"] for h in hits] and porto in [h["id"] for h in hits]

    # What the model leaves open, the rules decide: a new value of the same key supersedes.
    llm.script(chat({"facts": [fact("Caroline lives in Braga.", [1], key="lives_in")], "artifacts": []}))
    third = succeeded(client, user, [{"role": "user", "name": "Caroline", "content": "Now I'm in Braga."}], conv="c3")
    braga = third["memories_created"][0]["id"]
    assert third["memories_superseded_by"] == {porto: braga}
    assert revisions(client, lisbon) == [lisbon, porto, braga]


def test_artifact_versions(client: httpx.Client, llm: ScriptedOpenAI) -> None:
    user = uid()
    v1_code = "```python\ndef area(r):\n    return 3.14 * r * r\n```"
    v2_code = "```python\nimport math\n\ndef area(r):\n    return math.pi * r ** 2\n```"
    llm.script(chat({"facts": [fact("The user wrote a Python function to compute a circle's area.")],
                     "artifacts": [{"title": "Circle area function", "rationale": "Reusable helper.",
                                    "content": v1_code, "turns": [1], "revises": None}]}))
    first = succeeded(client, user, [{"role": "user", "content": f"Here:\n{v1_code}"}], extract_artifacts=True)
    v1 = next(r["id"] for r in first["memories_created"] if r["type"] == "artifact")
    assert "artifacts" in llm.chat_requests()[-1].body["response_format"]["json_schema"]["schema"]["properties"]

    def revised(request: dict) -> object:
        return chat({"facts": [], "artifacts": [
            {"title": "Circle area (math.pi)", "rationale": "More precise.", "content": v2_code, "turns": [1],
             "revises": label_of(request, "Circle area function")}]})(request)

    llm.script(revised)
    second = succeeded(client, user, [{"role": "user", "content": f"Better:\n{v2_code}"}], extract_artifacts=True)
    v2 = next(r["id"] for r in second["memories_created"] if r["type"] == "artifact")
    assert second["memories_superseded_by"] == {v1: v2}
    new = get(client, v2)
    assert new["details"]["version"] == 2 and new["details"]["root_id"] == v1
    assert new["details"]["full_content"] == v2_code and get(client, v1)["details"]["full_content"] == v1_code
    assert revisions(client, v1) == [v1, v2]

    llm.script(chat({"facts": [], "artifacts": [{"title": "ignored", "rationale": "", "content": "x", "turns": [1],
                                                 "revises": None}]}))
    plain = succeeded(client, user, [{"role": "user", "content": "Thanks, that works well."}])
    assert plain["memories_created"] == [], "no artifacts unless extract_artifacts"
    assert "artifacts" not in llm.chat_requests()[-1].body["response_format"]["json_schema"]["schema"]["properties"]


def test_an_answer_naming_memories_not_shown_keeps_its_facts_and_counts_them(client: httpx.Client,
                                                                           llm: ScriptedOpenAI) -> None:
    """The answer that used to fail the job (`'other' is not one of the stored artifacts shown`)."""
    user = uid()
    llm.script(chat({"facts": [fact("Caroline lives in Lisbon.", [1], action="supersedes", memory="M3"),
                               {"text": "Caroline loves pastel de nata.", "turns": [1], "fact_type": "food"},
                               {"text": "broken: no turns"}],
                     "artifacts": [{"title": "Nata recipe", "rationale": "To bake again.", "content": "- eggs",
                                    "turns": [1], "revises": "other"}]}))
    result = succeeded(client, user, LISBON, extract_artifacts=True)
    assert sorted((r["type"], r["text"]) for r in result["memories_created"]) == [
        ("artifact", "Nata recipe"), ("fact", "Caroline lives in Lisbon."), ("fact", "Caroline loves pastel de nata.")]
    assert len(llm.chat_requests()) == 1, "no repair"
    usage = result["usage"]
    assert (usage["llm_references_degraded"], usage["llm_items_dropped"]) == (2, 1)
    assert usage["llm_fields_defaulted"] >= 1 and "llm_repairs" not in usage


def test_episode_after_enough_turns(client: httpx.Client, llm: ScriptedOpenAI) -> None:
    llm.reset(default_chat=echo_extractor)
    user = uid()
    turns = [{"role": "user", "content": f"Day {i}: I practised the violin for {i} hours."} for i in range(EPISODE_EVERY)]
    result = succeeded(client, user, turns)
    episodes = [r for r in result["memories_created"] if r["type"] == "episode"]
    assert len(episodes) == 1
    episode = get(client, episodes[0]["id"])
    assert episode["details"]["title"] == "Conversation summary" and "violin" in episode["text"]
    assert len(episode["details"]["fact_ids"]) == EPISODE_EVERY
    asked = [r for r in llm.chat_requests() if r.body["response_format"]["json_schema"]["name"] == "episode"]
    assert len(asked) == 1 and asked[0].system.startswith("You summarise")


# ---------------------------------------------------------------------- cost
def test_tokens_are_counted_per_org_for_failed_jobs_too(client: httpx.Client, llm: ScriptedOpenAI,
                                                        engram: ServerProcess) -> None:
    before = usage_totals(engram)
    llm.script(chat("not json", prompt_tokens=100, completion_tokens=5),
               chat("still not json", prompt_tokens=120, completion_tokens=6))
    assert submit(client, uid(), LISBON)["status"] == "failed"
    llm.script(lisbon_answer)
    result = succeeded(client, uid(), LISBON)
    after = usage_totals(engram)
    assert after["prompt_tokens"] - before.get("prompt_tokens", 0) == 100 + 120 + 700
    assert after["completion_tokens"] - before.get("completion_tokens", 0) == 5 + 6 + 60
    assert after["llm_requests"] - before.get("llm_requests", 0) == 3
    # The failed job embedded its turns once (to recall related memories) before it asked the model.
    assert after["embedding_requests"] - before.get("embedding_requests", 0) == \
        result["usage"]["embedding_requests"] + 1
