"""Family X end to end: a real `engram serve` process over HTTP, responses checked
against the published OpenAPI document."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import ServerProcess, wait_job
from tests.contract import validate_response


def checked(response: httpx.Response) -> httpx.Response:
    """Validate a family-X response against the contract and hand it back."""
    body = response.json() if response.content else None
    validate_response(response.request.method, response.request.url.path, response.status_code, body)
    return response


def uid() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(server: ServerProcess) -> httpx.Client:
    with server.client() as c:
        yield c


def ingest(client: httpx.Client, user: str, conv: str, messages: list[dict], **extra: object) -> dict:
    response = checked(client.post("/v1/memories", json={"messages": messages, "user_id": user, "conv_id": conv,
                                                         **extra}))
    assert response.status_code == 202
    return response.json()


def test_ingest_then_poll_until_succeeded(client: httpx.Client) -> None:
    user = uid()
    job = ingest(client, user, "conv_2026_05_16", [
        {"role": "user", "content": "My favorite food is pad see ew."},
        {"role": "assistant", "content": "Noted — Thai food."},
    ])
    assert job["object"] == "ingest_job" and job["status"] == "pending" and job["id"].startswith("job_")
    assert job["result"] is None and job["error"] is None
    done = wait_job(client, job["id"])
    checked(client.get(f"/v1/memories/jobs/{job['id']}"))
    assert done["status"] == "succeeded", done
    created = done["result"]["memories_created"]
    assert created and all(ref["type"] == "fact" for ref in created)
    assert any("pad see ew" in ref["text"] for ref in created)
    assert set(done["result"]["stage_timings"]) >= {"filter", "extract", "embed", "reconcile"}

    memory = checked(client.get(f"/v1/memories/{created[0]['id']}")).json()
    assert memory["user_id"] == user and memory["conv_id"] == "conv_2026_05_16"
    assert memory["details"]["status"] == "active"
    assert memory["details"]["source_event_ids"], "a fact cites the events it came from"


def test_wait_true_returns_terminal_job(client: httpx.Client) -> None:
    response = checked(client.post("/v1/memories?wait=true", json={
        "messages": [{"role": "user", "content": "I am vegetarian."}], "user_id": uid(), "conv_id": "c1"}))
    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"
    assert response.json()["result"]["memories_created"]


def test_wait_true_falls_back_to_202_when_budget_elapses(fresh_server: ServerProcess) -> None:
    # No workers: nothing can finish, so the short budget must elapse.
    fresh_server.env.update({"ENGRAM_WORKERS": "0", "ENGRAM_WAIT_BUDGET_S": "0.3"})
    fresh_server.start()
    with fresh_server.client() as c:
        response = checked(c.post("/v1/memories?wait=true", json={
            "messages": [{"role": "user", "content": "I live in Lisbon."}], "user_id": "u", "conv_id": "c"}))
        assert response.status_code == 202
        assert response.json()["status"] in ("pending", "running")


def test_search_with_metadata_filter_and_includes(client: httpx.Client) -> None:
    user = uid()
    for project, text in (("atlas", "I love Thai food, especially pad see ew."),
                          ("zephyr", "I love Italian food, especially carbonara.")):
        job = ingest(client, user, f"conv-{project}", [{"role": "user", "content": text, "name": "Alice"}],
                     metadata={"project": project, "channel": "support", "tag1": "reserved", "org_id": "evil"})
        assert wait_job(client, job["id"])["status"] == "succeeded"

    response = checked(client.post("/v1/memories/search", json={
        "query": "thai food", "filters": {"user_id": user, "project": "atlas"},
        "include": ["source_events", "context_prompt"]}))
    body = response.json()
    assert body["object"] == "list" and body["data"]
    assert all(m["metadata"]["project"] == "atlas" for m in body["data"])
    top = body["data"][0]
    assert "pad see ew" in top["text"] and 0 <= top["score"] <= 1
    assert "tag1" not in top["metadata"] and "org_id" not in top["metadata"], "reserved keys are stripped"
    events = top["details"]["source_events"]
    assert events and events[0]["name"] == "Alice" and "pad see ew" in events[0]["content"]
    assert "pad see ew" in body["extras"]["context_prompt"]

    other = checked(client.post("/v1/memories/search", json={
        "query": "food", "filters": {"user_id": user, "project": {"$in": ["zephyr"]}}})).json()
    assert other["data"] and all("carbonara" in m["text"] for m in other["data"])

    nobody = checked(client.post("/v1/memories/search", json={"query": "food", "filters": {"user_id": uid()}})).json()
    assert nobody["data"] == [] and nobody["has_more"] is False


def test_search_errors(client: httpx.Client) -> None:
    bad_op = checked(client.post("/v1/memories/search", json={"query": "x", "filters": {"user_id": {"$regex": "a"}}}))
    assert bad_op.status_code == 400 and bad_op.json()["detail"]["code"] == "invalid_filter"
    assert "$regex" in bad_op.json()["detail"]["message"]
    bad_include = checked(client.post("/v1/memories/search", json={"query": "x", "include": ["everything"]}))
    assert bad_include.status_code == 422 and bad_include.json()["detail"]["code"] == "unsupported_include_option"
    empty_query = checked(client.post("/v1/memories/search", json={"query": ""}))
    assert empty_query.status_code == 422 and empty_query.json()["detail"]["code"] == "validation_error"
    bad_limit = checked(client.post("/v1/memories/search", json={"query": "x", "limit": 0}))
    assert bad_limit.status_code == 422
    bad_cursor = checked(client.post("/v1/memories/search", json={"query": "x", "cursor": "nonsense!"}))
    assert bad_cursor.status_code == 422 and bad_cursor.json()["detail"]["code"] == "invalid_cursor"


def test_search_pagination(client: httpx.Client) -> None:
    user = uid()
    facts = [f"I visited city number {i} on my trip." for i in range(7)]
    job = ingest(client, user, "trip", [{"role": "user", "content": f} for f in facts])
    assert wait_job(client, job["id"])["status"] == "succeeded"
    seen: list[str] = []
    cursor = None
    while True:
        page = checked(client.post("/v1/memories/search", json={
            "query": "trip city", "filters": {"user_id": user, "type": "fact"}, "limit": 3, "cursor": cursor})).json()
        seen.extend(m["id"] for m in page["data"])
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen)) >= 7
    other_query = checked(client.post("/v1/memories/search", json={
        "query": "something else", "filters": {"user_id": user}, "limit": 3,
        "cursor": checked(client.post("/v1/memories/search", json={
            "query": "trip city", "filters": {"user_id": user}, "limit": 1})).json()["next_cursor"]}))
    assert other_query.status_code == 422 and other_query.json()["detail"]["code"] == "cursor_mismatch"


def test_list_filters_order_and_cursor(client: httpx.Client) -> None:
    user = uid()
    topics = {"a": ["I own a red bike.", "I grow tomatoes on my balcony.", "I run every Sunday."],
              "b": ["My sister lives in Oslo.", "I collect vinyl records.", "I learned to knit last winter."]}
    for conv, lines in topics.items():
        job = ingest(client, user, conv, [{"role": "user", "content": line} for line in lines])
        assert wait_job(client, job["id"])["status"] == "succeeded"
    everything = checked(client.get("/v1/memories", params={"user_id": user, "limit": 100})).json()
    assert everything["data"] and all(m["user_id"] == user for m in everything["data"])
    created = [m["created_at"] for m in everything["data"]]
    assert created == sorted(created, reverse=True), "default order is created_at_desc"

    only_b = checked(client.get("/v1/memories", params={"user_id": user, "conv_id": "b", "type": "fact"})).json()
    assert only_b["data"] and all(m["conv_id"] == "b" for m in only_b["data"])

    pages, cursor = [], None
    while True:
        params = {"user_id": user, "limit": 2, "order": "created_at_asc", **({"cursor": cursor} if cursor else {})}
        page = checked(client.get("/v1/memories", params=params)).json()
        pages.extend(m["id"] for m in page["data"])
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert sorted(pages) == sorted(m["id"] for m in everything["data"])
    assert len(pages) == len(set(pages))

    first = checked(client.get("/v1/memories", params={"user_id": user, "limit": 1, "order": "created_at_asc"})).json()
    mismatch = checked(client.get("/v1/memories", params={"user_id": user, "cursor": first["next_cursor"],
                                                          "order": "created_at_desc"}))
    assert mismatch.status_code == 422 and mismatch.json()["detail"]["code"] == "cursor_mismatch"
    bad_order = checked(client.get("/v1/memories", params={"order": "sideways"}))
    assert bad_order.status_code == 422
    bad_include = checked(client.get("/v1/memories", params={"include": "secrets"}))
    assert bad_include.status_code == 422 and bad_include.json()["detail"]["code"] == "unsupported_include_option"


def test_ingest_validation_errors(client: httpx.Client) -> None:
    empty = checked(client.post("/v1/memories", json={"messages": [], "user_id": "u", "conv_id": "c"}))
    assert empty.status_code == 400 and empty.json()["detail"]["code"] == "invalid_messages"
    missing = checked(client.post("/v1/memories", json={"messages": [{"role": "user", "content": "hi"}]}))
    assert missing.status_code == 422
    locations = {tuple(e["loc"]) for e in missing.json()["detail"]}
    assert ("body", "user_id") in locations and ("body", "conv_id") in locations
    blank = checked(client.post("/v1/memories", json={"messages": [{"role": "user", "content": "  "}],
                                                      "user_id": "u", "conv_id": "c"}))
    assert blank.status_code == 422 and blank.json()["detail"][0]["loc"] == ["body", "messages", 0, "content"]
    too_long = checked(client.post("/v1/memories", json={"messages": [{"role": "user", "content": "x" * 32001}],
                                                         "user_id": "u", "conv_id": "c"}))
    assert too_long.status_code == 422
    not_json = client.post("/v1/memories", content=b"{not json", headers={"content-type": "application/json"})
    assert checked(not_json).status_code == 422
    huge = client.post("/v1/memories", content=b"x" * (5 * 1024 * 1024 + 1), headers={"content-type": "application/json"})
    assert huge.status_code == 413 and huge.json()["detail"]["code"] == "payload_too_large"


def test_not_found_errors(client: httpx.Client) -> None:
    job = checked(client.get("/v1/memories/jobs/job_" + "0" * 32))
    assert job.status_code == 404 and job.json()["detail"]["code"] == "job_not_found"
    memory = checked(client.get(f"/v1/memories/{uuid.uuid4()}"))
    assert memory.status_code == 404 and memory.json()["detail"]["code"] == "memory_not_found"


def test_idempotency_key(client: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": "I play the cello."}], "user_id": uid(), "conv_id": "c"}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = checked(client.post("/v1/memories", json=body, headers=key)).json()
    again = checked(client.post("/v1/memories", json=body, headers=key)).json()
    assert again["id"] == first["id"], "the same key and body return the original job"
    other = checked(client.post("/v1/memories", json={**body, "conv_id": "other"}, headers=key))
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    fresh = checked(client.post("/v1/memories", json=body)).json()
    assert fresh["id"] != first["id"], "without a key, a re-send is a new job"


def test_secret_is_rejected_by_the_content_filter(client: httpx.Client) -> None:
    job = ingest(client, uid(), "c", [{"role": "user", "content": "my key is AKIAIOSFODNN7EXAMPLE ok"}])
    done = wait_job(client, job["id"])
    checked(client.get(f"/v1/memories/jobs/{job['id']}"))
    assert done["status"] == "failed" and done["error"]["code"] == "content_rejected"
    assert "AKIA" not in done["error"]["message"], "the secret is never echoed"


def test_request_id_is_echoed_or_generated(client: httpx.Client) -> None:
    assert client.get("/v1/memories", headers={"X-Request-Id": "req-123"}).headers["x-request-id"] == "req-123"
    assert len(client.get("/v1/memories").headers["x-request-id"]) >= 16


def test_the_quickstart_exchange_remembers_the_users_fact_not_the_acknowledgement(client: httpx.Client) -> None:
    """README's quickstart, verbatim: the assistant's "Noted — Thai food." is an
    acknowledgement, not a memory; the search the README shows finds the user's fact first."""
    user = uid()
    job = ingest(client, user, "conv_2026_05_16", [
        {"role": "user", "content": "My favorite food is pad see ew."},
        {"role": "assistant", "content": "Noted — Thai food."},
    ])
    done = wait_job(client, job["id"])
    assert done["status"] == "succeeded", done
    assert [ref["text"] for ref in done["result"]["memories_created"]] == ["The user's favorite food is pad see ew."]
    hits = checked(client.post("/v1/memories/search", json={"query": "thai food", "filters": {"user_id": user}})).json()
    assert hits["data"] and hits["data"][0]["text"] == "The user's favorite food is pad see ew."
    assert hits["data"][0]["details"]["source_role"] == "user"


def test_an_assistants_recommendation_is_remembered_as_the_assistants(client: httpx.Client) -> None:
    user = uid()
    job = ingest(client, user, "c1", [
        {"role": "user", "content": "Any idea where I could eat good khao soi?"},
        {"role": "assistant", "content": "Great question! I recommend the khao soi at Lotus on Pine Street."},
        {"role": "user", "content": "Thanks, I'll go there on Friday."},
        {"role": "assistant", "content": "Sounds good — enjoy!"},
    ])
    done = wait_job(client, job["id"])
    texts = [ref["text"] for ref in done["result"]["memories_created"]]
    assert "The assistant recommends the khao soi at Lotus on Pine Street." in texts
    assert not any(t.startswith("The assistant said") for t in texts), texts  # no pleasantry kept
