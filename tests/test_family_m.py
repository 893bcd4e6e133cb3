"""Family M end to end over raw HTTP: every validation rule and limit of SPEC §4/§7,
the 60 s dedup window, client event_id idempotency, and status/search semantics."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from tests.conftest import ServerProcess


def uid(prefix: str = "a") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(server: ServerProcess) -> httpx.Client:
    with server.client() as c:
        yield c


def event(**over: object) -> dict:
    return {"actor_id": uid(), "session_id": uid("s"), "kind": "user_message", "content": "I like sailing.", **over}


def wait_events(client: httpx.Client, ids: list[str], timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.post("/v1/status", json={"event_ids": ids}).json()
        if not status["pendingIds"]:
            return status
        time.sleep(0.05)
    raise AssertionError(f"still pending: {status}")


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert isinstance(body["detail"], dict), body
    return body["detail"]


@pytest.mark.parametrize("bad, field", [
    ({"kind": "shout"}, "kind"),
    ({"content": ""}, "content"),
    ({"content": " \n\t "}, "content"),
    ({"content": "x" * 8001}, "content"),
    ({"actor_id": ""}, "actor_id"),
    ({"session_id": "s" * 257}, "session_id"),
    ({"event_id": " "}, "event_id"),
    ({"metadata": "x" * 4097}, "metadata"),
])
def test_each_invalid_field_is_422_naming_it(client: httpx.Client, bad: dict, field: str) -> None:
    response = client.post("/v1/ingest", json={"events": [event(), event(**bad)]})
    assert response.status_code == 422
    detail = error_of(response)
    assert detail["code"] == "validation_error"
    assert any(e["loc"][:3] == ["body", "events", 1] and e["loc"][-1] == field for e in detail["errors"]), detail
    assert field in detail["message"]


def test_missing_fields_and_wrong_types_are_422(client: httpx.Client) -> None:
    missing = client.post("/v1/ingest", json={"events": [{"kind": "user_message", "content": "hi"}]})
    assert missing.status_code == 422
    locs = {tuple(e["loc"]) for e in error_of(missing)["errors"]}
    assert ("body", "events", 0, "actor_id") in locs and ("body", "events", 0, "session_id") in locs
    assert client.post("/v1/ingest", json={"events": "nope"}).status_code == 422
    assert client.post("/v1/ingest", json={"events": []}).status_code == 422
    assert client.post("/v1/ingest", content=b"[1,2", headers={"content-type": "application/json"}).status_code == 422


def test_limits_on_batch_size_and_status_ids(client: httpx.Client) -> None:
    actor = uid()
    too_many = client.post("/v1/ingest", json={"events": [event(actor_id=actor, content=f"n{i}") for i in range(1001)]})
    assert too_many.status_code == 422 and error_of(too_many)["errors"][0]["loc"] == ["body", "events"]
    status = client.post("/v1/status", json={"event_ids": [f"id{i}" for i in range(501)]})
    assert status.status_code == 422 and error_of(status)["code"] == "validation_error"
    for limit in (0, 101):
        assert client.post("/v1/search", json={"query": "x", "limit": limit}).status_code == 422


def test_ids_come_back_in_input_order_across_actors_and_sessions(client: httpx.Client) -> None:
    a, b = uid(), uid()
    events = [event(actor_id=a, session_id="s1", content="I like tea."),
              event(actor_id=b, session_id="s9", content="I like coffee."),
              event(actor_id=a, session_id="s1", content="I like scones."),
              event(actor_id=a, session_id="s2", content="I like jam.")]
    ids = client.post("/v1/ingest", json={"events": events}).json()["event_ids"]
    assert len(ids) == 4 and len(set(ids)) == 4
    status = wait_events(client, ids)
    assert status["completedIds"] == ids and status["total"] == 4
    hits = client.post("/v1/search", json={"query": "scones", "actor_id": a, "include_source_events": True}).json()
    top = hits["results"][0]
    assert "scones" in top["content"]
    assert top["metadata"]["source_events"][0]["event_id"] == ids[2]


def test_dedup_within_window_returns_original_id(client: httpx.Client) -> None:
    e = event(content=f"I adopted a cat named {uid('cat')}.")
    first = client.post("/v1/ingest", json={"events": [e]}).json()["event_ids"]
    again = client.post("/v1/ingest", json={"events": [e, e]}).json()["event_ids"]
    assert again == first * 2
    other_kind = client.post("/v1/ingest", json={"events": [{**e, "kind": "assistant_message"}]}).json()["event_ids"]
    assert other_kind != first


def test_dedup_window_expires(tmp_path) -> None:
    srv = ServerProcess(tmp_path / "data", env={"ENGRAM_DEDUP_WINDOW_S": "0.5"}).start()
    try:
        with srv.client() as c:
            e = event()
            first = c.post("/v1/ingest", json={"events": [e]}).json()["event_ids"]
            assert c.post("/v1/ingest", json={"events": [e]}).json()["event_ids"] == first
            time.sleep(0.7)
            assert c.post("/v1/ingest", json={"events": [e]}).json()["event_ids"] != first
    finally:
        srv.stop()


def test_client_event_id_is_an_idempotency_key_without_time_limit(client: httpx.Client) -> None:
    key = uid("evt")
    first = client.post("/v1/ingest", json={"events": [event(event_id=key, content="I moved to Porto.")]}).json()
    # Different content, same client id: still the original event, nothing new created.
    second = client.post("/v1/ingest", json={"events": [event(event_id=key, content="Something else.")]}).json()
    assert second["event_ids"] == first["event_ids"]


def test_metadata_nul_bytes_and_raw_json(client: httpx.Client) -> None:
    actor = uid()
    events = [event(actor_id=actor, content="I\x00 like\x00 kayaking.", metadata=json.dumps({"source": "app"})),
              event(actor_id=actor, content="I like canoeing.", metadata="not json at all"),
              event(actor_id=actor, content="I like rowing.", metadata=json.dumps({"user_id": "spoof", "ok": 1}))]
    ids = client.post("/v1/ingest", json={"events": events}).json()["event_ids"]
    assert wait_events(client, ids)["completedIds"] == ids
    results = client.post("/v1/search", json={"query": "kayaking canoeing rowing", "actor_id": actor,
                                              "include_source_events": True}).json()["results"]
    by_content = {r["metadata"]["source_events"][0]["content"]: r["metadata"] for r in results}
    assert "I like kayaking." in by_content, "NUL bytes are stripped"
    assert by_content["I like kayaking."]["source"] == "app"
    assert by_content["I like canoeing."]["raw"] == "not json at all"
    rowing = by_content["I like rowing."]
    assert rowing["ok"] == 1 and rowing["actor_id"] == actor, "reserved keys cannot spoof core fields"


def test_status_reports_unknown_and_rejected_events_as_failed(client: httpx.Client) -> None:
    actor = uid()
    ids = client.post("/v1/ingest", json={"events": [
        event(actor_id=actor, session_id="s", content="My favourite colour is teal."),
        event(actor_id=actor, session_id="s", content="-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"),
    ]}).json()["event_ids"]
    status = wait_events(client, [*ids, "01ZZZZZZZZZZZZZZZZZZZZZZZZ"])
    assert status["completedIds"] == [ids[0]]
    assert status["failedIds"] == [ids[1], "01ZZZZZZZZZZZZZZZZZZZZZZZZ"]
    assert status["reasons"] == {ids[1]: "content_rejected", "01ZZZZZZZZZZZZZZZZZZZZZZZZ": "not_found"}
    assert status["statuses"][ids[0]] == "completed" and status["statuses"][ids[1]] == "failed"


def test_search_scoping_threshold_and_health(client: httpx.Client) -> None:
    actor = uid()
    ids = client.post("/v1/ingest", json={"events": [
        event(actor_id=actor, session_id="home", content="I keep bees in my garden."),
        event(actor_id=actor, session_id="work", content="I manage the billing team at work.")]}).json()["event_ids"]
    wait_events(client, ids)
    home = client.post("/v1/search", json={"query": "bees", "actor_id": actor, "session_id": "home"}).json()["results"]
    assert home and all(r["metadata"]["session_id"] == "home" for r in home)
    not_home = client.post("/v1/search", json={"query": "bees", "actor_id": actor,
                                               "exclude_session_id": "home"}).json()["results"]
    assert not_home and all(r["metadata"]["session_id"] != "home" for r in not_home)
    strict = client.post("/v1/search", json={"query": "bees", "actor_id": actor, "threshold": 0.99}).json()["results"]
    loose = client.post("/v1/search", json={"query": "bees", "actor_id": actor}).json()["results"]
    assert len(strict) < len(loose) and all(r["score"] >= 0.99 for r in strict)
    org_wide = client.post("/v1/search", json={"query": "billing team"}).json()["results"]
    assert any(r["metadata"]["actor_id"] == actor for r in org_wide), "no actor_id searches the whole org"

    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["version"]
    assert {"store", "queue", "embedder", "extractor", "workers"} <= set(health["components"])
    assert health["components"]["workers"]["alive"] >= 1
