"""PATCH, DELETE and revisions of memories (SPEC §3), over HTTP against a real `engram serve`
(rules extractor), every response checked against the family-X contract."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import ServerProcess, wait_job
from tests.contract import validate_component
from tests.test_family_x import checked


def uid() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(server: ServerProcess) -> httpx.Client:
    with server.client() as c:
        yield c


def run(client: httpx.Client, user: str, conv: str, messages: list[dict], **extra: object) -> dict:
    job = client.post("/v1/memories", json={"messages": messages, "user_id": user, "conv_id": conv, **extra}).json()
    done = wait_job(client, job["id"])
    assert done["status"] == "succeeded", done
    return done["result"]


def a_fact(client: httpx.Client, user: str, text: str = "I live in Paris.", **extra: object) -> str:
    result = run(client, user, "c1", [{"role": "user", "content": text}], **extra)
    return next(r["id"] for r in result["memories_created"] if r["type"] == "fact")


def get(client: httpx.Client, memory_id: str) -> dict:
    return checked(client.get(f"/v1/memories/{memory_id}")).json()


def patch(client: httpx.Client, memory_id: str, **kwargs: object) -> httpx.Response:
    return checked(client.patch(f"/v1/memories/{memory_id}", **kwargs))


def revisions(client: httpx.Client, memory_id: str) -> list[dict]:
    response = client.get(f"/v1/memories/{memory_id}/revisions")
    assert response.status_code == 200, response.text
    body = response.json()
    validate_component("ListEnvelope", body)  # an engram extension, in the contract's list shape
    assert body["object"] == "list" and body["has_more"] is False
    return body["data"]


def error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["detail"]["code"]


# ---------------------------------------------------------------------- PATCH text
def test_patch_text_supersedes_the_fact_and_merges_metadata(client: httpx.Client) -> None:
    user = uid()
    old_id = a_fact(client, user, metadata={"project": "atlas", "channel": "chat"})
    response = patch(client, old_id, json={"text": "The user lives in Berlin.", "metadata": {"channel": "email",
                                                                                              "checked": True}})
    assert response.status_code == 200
    new = response.json()
    assert new["id"] != old_id and new["type"] == "fact" and new["text"] == "The user lives in Berlin."
    assert new["details"]["supersedes"] == old_id and new["details"]["status"] == "active"
    assert new["metadata"] == {"project": "atlas", "channel": "email", "checked": True}
    assert new["user_id"] == user and new["conv_id"] == "c1"

    old = get(client, old_id)
    assert old["details"]["status"] == "superseded"
    assert old["metadata"] == {"project": "atlas", "channel": "chat"}, "the old revision keeps its metadata"

    hits = client.post("/v1/memories/search", json={"query": "where does the user live",
                                                    "filters": {"user_id": user}}).json()["data"]
    assert [h["id"] for h in hits] == [new["id"]]
    assert [m["id"] for m in revisions(client, old_id)] == [old_id, new["id"]]
    assert [m["id"] for m in revisions(client, new["id"])] == [old_id, new["id"]]


def test_patch_text_twice_makes_a_chain_and_only_the_newest_can_change(client: httpx.Client) -> None:
    first = a_fact(client, uid(), "I work as a nurse.")
    second = patch(client, first, json={"text": "The user works as a surgeon."}).json()["id"]
    third = patch(client, second, json={"text": "The user works as a head surgeon."}).json()["id"]
    chain = revisions(client, second)
    assert [m["id"] for m in chain] == [first, second, third]
    assert [m["details"]["status"] for m in chain] == ["superseded", "superseded", "active"]
    assert [m["details"]["supersedes"] for m in chain] == [None, first, second]

    stale = patch(client, first, json={"text": "The user works as a doctor."})
    assert error_code(stale, 422) == "invalid_request", "a superseded fact cannot fork its history"
    assert [m["id"] for m in revisions(client, first)] == [first, second, third]


def test_a_later_ingest_of_the_same_key_supersedes_the_edited_fact(client: httpx.Client) -> None:
    user = uid()
    original = a_fact(client, user, "I live in Paris.")
    edited = patch(client, original, json={"text": "The user lives in Lyon."}).json()["id"]
    moved = run(client, user, "c2", [{"role": "user", "content": "I moved to Rome."}])
    newest = moved["memories_created"][0]["id"]
    assert moved["memories_superseded_by"] == {edited: newest}, "the edit kept the attribute key"
    assert [m["id"] for m in revisions(client, original)] == [original, edited, newest]


def test_patch_with_the_same_text_is_no_revision(client: httpx.Client) -> None:
    fact_id = a_fact(client, uid(), "I enjoy jazz.")
    text = get(client, fact_id)["text"]
    same = patch(client, fact_id, json={"text": text})
    assert same.status_code == 200 and same.json()["id"] == fact_id
    tagged = patch(client, fact_id, json={"text": f"  {text} ", "metadata": {"genre": "jazz"}}).json()
    assert tagged["id"] == fact_id and tagged["metadata"] == {"genre": "jazz"}
    assert [m["id"] for m in revisions(client, fact_id)] == [fact_id]


# ---------------------------------------------------------------------- PATCH metadata
def test_patch_metadata_merges_in_place_for_every_type(client: httpx.Client) -> None:
    user = uid()
    fact_id = a_fact(client, user, metadata={"project": "atlas", "tier": 1})
    response = patch(client, fact_id, json={"metadata": {"tier": 2, "reviewed": "yes"}})
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == fact_id and body["details"]["status"] == "active"
    assert body["metadata"] == {"project": "atlas", "tier": 2, "reviewed": "yes"}
    assert body["updated_at"] >= body["created_at"]
    assert get(client, fact_id)["metadata"] == {"project": "atlas", "tier": 2, "reviewed": "yes"}
    hits = client.post("/v1/memories/search", json={"query": "paris", "filters": {"user_id": user,
                                                                                   "reviewed": "yes"}}).json()["data"]
    assert [h["id"] for h in hits] == [fact_id], "merged metadata is filterable"
    assert [m["id"] for m in revisions(client, fact_id)] == [fact_id], "a metadata change is not a revision"

    code = "```python\ndef add(a, b):\n    return a + b\n```"
    artifact = run(client, user, "c9", [{"role": "user", "content": f"Here is my helper:\n{code}"}],
                   extract_artifacts=True)
    artifact_id = next(r["id"] for r in artifact["memories_created"] if r["type"] == "artifact")
    assert patch(client, artifact_id, json={"metadata": {"lang": "python"}}).json()["metadata"]["lang"] == "python"


# ---------------------------------------------------------------------- PATCH errors
def test_patch_error_codes(client: httpx.Client) -> None:
    user = uid()
    fact_id = a_fact(client, user)
    assert error_code(patch(client, fact_id, json={}), 400) == "invalid_request"
    assert error_code(patch(client, fact_id), 400) == "invalid_request", "no body at all"
    assert error_code(patch(client, fact_id, json={"text": None, "metadata": None}), 400) == "invalid_request"
    assert error_code(patch(client, fact_id, json={"unknown": 1}), 400) == "invalid_request"
    assert error_code(patch(client, fact_id, json={"text": ""}), 422) == "empty_text_field"
    assert error_code(patch(client, fact_id, json={"text": " \n\t "}), 422) == "empty_text_field"
    for key in ("user_id", "conv_id", "agent_id", "app_id", "type", "created_at", "id", "org_id"):
        assert error_code(patch(client, fact_id, json={"metadata": {key: "x"}}), 422) == "immutable_field", key
    for key in ("tag1", "tag5", "kb_type", "status"):
        assert error_code(patch(client, fact_id, json={"metadata": {key: "x"}}), 422) == "reserved_field", key
    assert error_code(patch(client, str(uuid.uuid4()), json={"text": "x"}), 404) == "memory_not_found"
    assert error_code(patch(client, "not-a-uuid", json={"metadata": {"a": 1}}), 404) == "memory_not_found"
    too_many = {f"k{i}": i for i in range(65)}
    assert error_code(patch(client, fact_id, json={"metadata": too_many}), 422) == "validation_error"
    assert error_code(patch(client, fact_id, json={"text": "x" * 32001}), 422) == "validation_error"
    assert get(client, fact_id)["metadata"] == {} and get(client, fact_id)["details"]["status"] == "active", \
        "refused patches change nothing"


def test_patch_text_on_episode_or_artifact_is_invalid_request_422(client: httpx.Client) -> None:
    user = uid()
    result = run(client, user, "c", [{"role": "user", "content": f"I have {n} cats and a garden."} for n in range(6)])
    episode_id = next(r["id"] for r in result["memories_created"] if r["type"] == "episode")
    assert error_code(patch(client, episode_id, json={"text": "new summary"}), 422) == "invalid_request"
    code = "```python\ndef mul(a, b):\n    return a * b\n```"
    art = run(client, user, "c2", [{"role": "user", "content": f"Look:\n{code}"}], extract_artifacts=True)
    artifact_id = next(r["id"] for r in art["memories_created"] if r["type"] == "artifact")
    assert error_code(patch(client, artifact_id, json={"text": "x"}), 422) == "invalid_request"
    assert get(client, artifact_id)["text"] != "x"


# ---------------------------------------------------------------------- DELETE
def test_delete_removes_a_fact_and_its_revision_chain_stops_where_it_was(client: httpx.Client) -> None:
    """Both contracts' examples pass with a hard delete (docs/design.md, "Two contracts"): the
    deleted fact answers 404, and its predecessor is not revived."""
    user = uid()
    first = a_fact(client, user, "I live in Oslo.")
    second = patch(client, first, json={"text": "The user lives in Bergen."}).json()["id"]
    assert checked(client.delete(f"/v1/memories/{second}")).status_code == 204
    assert error_code(checked(client.get(f"/v1/memories/{second}")), 404) == "memory_not_found"
    assert error_code(client.get(f"/v1/memories/{second}/revisions"), 404) == "memory_not_found"  # engram's own path
    assert [(m["id"], m["details"]["status"]) for m in revisions(client, first)] == [(first, "superseded")], \
        "the chain stops at the deleted fact; the old value stays superseded"
    listed = client.get("/v1/memories", params={"user_id": user}).json()["data"]
    assert listed == [], "neither the retracted nor the superseded fact is listed"
    hits = client.post("/v1/memories/search", json={"query": "bergen", "filters": {"user_id": user}}).json()["data"]
    assert hits == []
    assert error_code(checked(client.delete(f"/v1/memories/{second}")), 404) == "memory_not_found"
    assert error_code(patch(client, second, json={"metadata": {"a": 1}}), 404) == "memory_not_found"
    assert error_code(checked(client.delete(f"/v1/memories/{uuid.uuid4()}")), 404) == "memory_not_found"


def test_artifact_versions_and_delete_removes_every_version(client: httpx.Client) -> None:
    user = uid()
    v1_code = "```python\ndef slugify(text):\n    return text.lower()\n```"
    v2_code = "```python\ndef slugify(text):\n    return '-'.join(text.lower().split())\n```"
    one = run(client, user, "c", [{"role": "user", "content": f"My helper:\n{v1_code}"}], extract_artifacts=True)
    v1 = next(r["id"] for r in one["memories_created"] if r["type"] == "artifact")
    same = run(client, user, "c", [{"role": "user", "content": f"Again:\n{v1_code}"}], extract_artifacts=True)
    assert not [r for r in same["memories_created"] if r["type"] == "artifact"], "the same artifact is not repeated"
    assert v1 in [r["id"] for r in same["memories_updated"]]
    two = run(client, user, "c", [{"role": "user", "content": f"Better:\n{v2_code}"}], extract_artifacts=True)
    v2 = next(r["id"] for r in two["memories_created"] if r["type"] == "artifact")
    assert two["memories_superseded_by"].get(v1) == v2
    new, old = get(client, v2), get(client, v1)
    assert new["details"]["version"] == 2 and new["details"]["root_id"] == v1 == old["details"]["root_id"]
    assert "join" in new["details"]["full_content"] and "join" not in old["details"]["full_content"]
    assert [m["id"] for m in revisions(client, v2)] == [v1, v2]
    listed = client.get("/v1/memories", params={"user_id": user, "type": "artifact"}).json()["data"]
    assert [m["id"] for m in listed] == [v2], "only the current version is listed"

    assert checked(client.delete(f"/v1/memories/{v2}")).status_code == 204
    for gone in (v1, v2):
        assert error_code(checked(client.get(f"/v1/memories/{gone}")), 404) == "memory_not_found"


# ---------------------------------------------------------------------- revisions
def test_revisions_of_an_unrevised_memory_and_of_nothing(client: httpx.Client) -> None:
    fact_id = a_fact(client, uid(), "I enjoy chess.")
    chain = revisions(client, fact_id)
    assert [m["id"] for m in chain] == [fact_id] and chain[0]["details"]["status"] == "active"
    missing = client.get(f"/v1/memories/{uuid.uuid4()}/revisions")
    assert error_code(missing, 404) == "memory_not_found"
