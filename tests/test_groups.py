"""Groups (the xtrace v1.0 sharing axis) over HTTP on both stores: registered groups, tags judged
at ingest, union scope on search and list, PATCH add/remove, archive, and the v1.0 search
shape (mode, context) beside v0.1's. docs/design.md, "Groups" and "Two contracts"."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Iterator

import httpx
import pytest

from engram.pipeline.sharing import is_personal
from tests import contract
from tests.conftest import ServerProcess, create_key, serve_on
from tests.node_clients import contract_v10_problems

ENV = {"ENGRAM_MAX_GROUPS_PER_ORG": "4"}


def v1(r: httpx.Response) -> Any:
    """The response's body, once it validates against the v1.0 contract."""
    body = r.json()
    problems = contract_v10_problems(r.request.method, r.request.url.path, r.status_code, body)
    assert not problems, problems
    return body


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serve_on(request.param, request, tmp_path_factory.mktemp(f"groups-{request.param}"), "engram_groups",
                  env=ENV) as server:
        yield server


@pytest.fixture
def client(srv: ServerProcess) -> Iterator[httpx.Client]:
    """A fresh org per test, so group quotas and listings are the test's own."""
    org = f"g{uuid.uuid4().hex[:10]}"
    key = create_key(srv, org, "read,write")
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        yield c


def group(client: httpx.Client, name: str, prompt: str | None = None) -> dict[str, Any]:
    r = client.post("/v1/groups", json={"name": name, **({"prompt": prompt} if prompt else {})})
    assert r.status_code == 201, r.text
    return v1(r)


def ingest(client: httpx.Client, user: str, text: str, group_ids: list[str]) -> dict[str, Any]:
    r = client.post("/v1/memories?wait=true", json={"messages": [{"role": "user", "content": text}],
                                                    "user_id": user, "conv_id": uuid.uuid4().hex, "group_ids": group_ids})
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    return r.json()["result"]


def memories(client: httpx.Client, result: dict[str, Any]) -> list[dict[str, Any]]:
    return [v1(client.get(f"/v1/memories/{ref['id']}")) for ref in result["memories_created"]]


def code(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["error"]["code"] == body["detail"]["code"]
    return body["error"]["code"]


# ---------------------------------------------------------------------- the registry
def test_groups_are_registered_edited_archived_and_restored(client: httpx.Client) -> None:
    catch_all = group(client, "team")
    assert re.fullmatch(r"grp_[0-9a-f]{32}", catch_all["id"]) and catch_all["prompt"] is None
    assert catch_all["status"] == "active" and catch_all["updated_at"] is None
    assert code(client.post("/v1/groups", json={"name": "x", "prompt": ""}), 422) == "invalid_request", \
        "only omission or null makes a catch-all"
    assert code(client.post("/v1/groups", json={"name": " "}), 422) == "invalid_request"
    converted = client.patch(f"/v1/groups/{catch_all['id']}", json={"prompt": "Facts about the team's rituals."}).json()
    assert converted["prompt"] == "Facts about the team's rituals." and converted["updated_at"] is not None
    assert code(client.patch(f"/v1/groups/{catch_all['id']}", json={"prompt": ""}), 422) == "invalid_request"
    assert code(client.patch(f"/v1/groups/{catch_all['id']}", json={"status": "gone"}), 422) == "invalid_request"
    assert client.get(f"/v1/groups/{catch_all['id']}").json()["prompt"] == "Facts about the team's rituals."

    archived = client.delete(f"/v1/groups/{catch_all['id']}").json()
    assert archived["status"] == "archived"
    assert client.delete(f"/v1/groups/{catch_all['id']}").json()["status"] == "archived", "idempotent"
    listed = v1(client.get("/v1/groups"))
    assert listed["data"] == []
    assert [g["id"] for g in client.get("/v1/groups", params={"include_archived": "true"}).json()["data"]] == \
        [catch_all["id"]]
    assert client.patch(f"/v1/groups/{catch_all['id']}", json={"status": "active"}).json()["status"] == "active"
    assert code(client.get("/v1/groups/grp_" + "0" * 32), 404) == "group_not_found"
    assert code(client.patch("/v1/groups/grp_" + "0" * 32, json={"name": "y"}), 404) == "group_not_found"


def test_an_org_holds_at_most_its_quota_of_active_groups(client: httpx.Client) -> None:
    made = [group(client, f"g{i}") for i in range(4)]
    assert code(client.post("/v1/groups", json={"name": "one too many"}), 422) == "groups_quota_exceeded"
    client.delete(f"/v1/groups/{made[0]['id']}")
    group(client, "in the freed place")
    assert code(client.patch(f"/v1/groups/{made[0]['id']}", json={"status": "active"}), 422) == \
        "groups_quota_exceeded", "restoring counts against the quota too"


def test_another_orgs_groups_are_unknown(srv: ServerProcess, client: httpx.Client) -> None:
    mine = group(client, "mine")
    other_key = create_key(srv, f"o{uuid.uuid4().hex[:10]}", "read,write")
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {other_key}"}, timeout=60) as other:
        assert code(other.get(f"/v1/groups/{mine['id']}"), 404) == "group_not_found"
        result = ingest(other, "eve", "Our release train leaves every second Wednesday.", [mine["id"]])
        assert result["ignored_group_ids"] == [mine["id"]]
        assert all(m["group_ids"] == [] for m in memories(other, result))
        hits = other.post("/v1/memories/search", json={"query": "release train", "group_ids": [mine["id"]]}).json()
        assert hits["data"] == []


# ---------------------------------------------------------------------- tagging at ingest
def test_a_catch_all_group_takes_what_is_shareable_and_never_what_is_personal(client: httpx.Client) -> None:
    team = group(client, "team")
    result = ingest(client, "ann", "The design review moved to Fridays at 2pm. Also, privately: I was diagnosed "
                                   "with diabetes last spring.", [team["id"]])
    assert result["ignored_group_ids"] == []
    rows = memories(client, result)
    shared = [m for m in rows if "review" in m["text"].lower()]
    personal = [m for m in rows if "diabetes" in m["text"].lower()]
    assert shared and all(m["group_ids"] == [team["id"]] for m in shared), rows
    assert personal and all(m["group_ids"] == [] for m in personal), rows


def test_a_prompted_group_takes_what_its_prompt_is_about(client: httpx.Client) -> None:
    trip = group(client, "trip", "Facts about the Kyoto trip in April 2027: flights, hotels, plans.")
    on_topic = ingest(client, "ann", "My flight to Kyoto lands at Kansai on April 3.", [trip["id"]])
    off_topic = ingest(client, "ann", "My sister adopted a grey cat named Pixel.", [trip["id"]])
    assert any(trip["id"] in m["group_ids"] for m in memories(client, on_topic))
    assert all(m["group_ids"] == [] for m in memories(client, off_topic))


def test_archived_and_unknown_groups_are_echoed_and_tag_nothing(client: httpx.Client) -> None:
    live, gone = group(client, "live"), group(client, "gone")
    client.delete(f"/v1/groups/{gone['id']}")
    unknown = "grp_" + "f" * 32
    result = ingest(client, "ann", "The quarterly planning doc is due on the 15th.", [gone["id"], live["id"], unknown])
    assert result["ignored_group_ids"] == [gone["id"], unknown]
    assert all(m["group_ids"] == [live["id"]] for m in memories(client, result))


# ---------------------------------------------------------------------- reading by group
def test_search_by_group_reads_every_users_tagged_memories_and_nothing_else(client: httpx.Client) -> None:
    team = group(client, "team")
    ingest(client, "ann", "The staging database is rebuilt every Monday night.", [team["id"]])
    ingest(client, "bob", "The staging database password rotates monthly.", [team["id"]])
    ingest(client, "cat", "The staging database lives in the Frankfurt region.", [])  # not shared
    body = {"query": "staging database", "group_ids": [team["id"]], "mode": "retrieve"}
    found = v1(client.post("/v1/memories/search", json=body))
    assert found["object"] == "search" and found["mode"] == "retrieve" and found["context"] is None
    assert {m["user_id"] for m in found["data"]} == {"ann", "bob"}
    assert all(team["id"] in m["group_ids"] for m in found["data"])
    both = client.post("/v1/memories/search", json={**body, "user_id": "bob"}).json()
    assert {m["user_id"] for m in both["data"]} == {"bob"}, "user_id and group_ids intersect"
    assert client.post("/v1/memories/search", json={**body, "group_ids": []}).json()["data"] == [], \
        "an empty group list names no group: nothing, never everything"
    listed = client.get("/v1/memories", params={"group_id": team["id"], "limit": 500}).json()
    assert {m["user_id"] for m in listed["data"]} == {"ann", "bob"}
    assert client.get("/v1/memories", params={"limit": 501}).status_code == 422
    in_dsl = client.post("/v1/memories/search", json={"query": "staging database",
                                                       "filters": {"group_ids": {"$in": [team["id"]]}}}).json()
    assert {m["user_id"] for m in in_dsl["data"]} == {"ann", "bob"}
    outside = client.post("/v1/memories/search", json={"query": "staging database",
                                                        "filters": {"group_ids": {"$ne": team["id"]}}}).json()
    assert {m["user_id"] for m in outside["data"]} == {"cat"}
    assert code(client.post("/v1/memories/search", json={"query": "x", "filters": {"group_ids": {"$gt": "a"}}}),
                400) == "invalid_filter"


def test_search_answers_the_shape_of_the_contract_it_was_asked_in(client: httpx.Client) -> None:
    ingest(client, "ann", "I keep my bicycle in the basement storage room.", [])
    composed = v1(client.post("/v1/memories/search", json={"query": "bicycle", "user_id": "ann"}))
    assert composed["mode"] == "compose" and composed["context_selection_applied"] is False
    assert "bicycle" in composed["context"] and composed["context"].startswith("## ")
    corpus = client.post("/v1/memories/search", json={"query": "bicycle", "user_id": "ann", "include": ["episode"]})
    assert corpus.json()["data"] == [], "include names the corpora searched"
    legacy = client.post("/v1/memories/search", json={"query": "bicycle", "filters": {"user_id": "ann"}})
    contract.validate_response("POST", "/v1/memories/search", 200, legacy.json())
    assert legacy.json()["object"] == "list" and legacy.json()["data"][0]["user_id"] == "ann"


# ---------------------------------------------------------------------- PATCH, DELETE, export
def test_patch_adds_and_removes_tags_set_wise(client: httpx.Client) -> None:
    a, b = group(client, "a"), group(client, "b")
    (memory,) = [m for m in memories(client, ingest(client, "ann", "I water the office plants on Mondays.", []))
                 if m["type"] == "fact"][:1]
    url = f"/v1/memories/{memory['id']}"
    once = v1(client.patch(url, json={"add_group_ids": [a["id"], b["id"], " "]}))
    assert once["group_ids"] == sorted([a["id"], b["id"]])
    assert client.patch(url, json={"add_group_ids": [a["id"]]}).json()["group_ids"] == sorted([a["id"], b["id"]])
    client.delete(f"/v1/groups/{b['id']}")
    assert code(client.patch(url, json={"add_group_ids": [b["id"]]}), 422) == "invalid_group_ids"
    assert client.patch(url, json={"remove_group_ids": [b["id"], "grp_unknown"]}).json()["group_ids"] == [a["id"]], \
        "an archived group's tag can always be removed"
    assert code(client.patch(url, json={"add_group_ids": [a["id"]], "remove_group_ids": [a["id"]]}), 422) == \
        "contradictory_group_ids"
    assert code(client.patch(url, json={"add_group_ids": [], "remove_group_ids": []}), 422) == "empty_patch"
    revised = client.patch(url, json={"text": "The user waters the office plants on Tuesdays."}).json()
    assert revised["id"] != memory["id"] and revised["group_ids"] == [a["id"]], "a text revision stays shared"
    assert client.delete(f"/v1/memories/{revised['id']}").status_code == 204
    assert code(client.patch(f"/v1/memories/{revised['id']}", json={"add_group_ids": [a["id"]]}), 404) == \
        "memory_not_found"
    assert client.get("/v1/memories", params={"group_id": a["id"]}).json()["data"] == []


def test_export_carries_tags_and_import_restores_them(client: httpx.Client) -> None:
    team = group(client, "team")
    result = ingest(client, "dan", "The coffee machine on floor 3 is descaled every Friday.", [team["id"]])
    tagged = {m["id"] for m in memories(client, result) if m["group_ids"]}
    assert tagged
    lines = [json.loads(line) for line in client.get("/v1/users/dan/export").text.splitlines()]
    exported = {r["id"]: r["group_ids"] for r in lines if r["record"] == "memory"}
    assert {i for i, g in exported.items() if g == [team["id"]]} == tagged
    assert client.delete("/v1/users/dan").status_code == 200
    assert client.get("/v1/memories", params={"group_id": team["id"]}).json()["data"] == [], "erasure took the tags"
    body = "\n".join(json.dumps(r) for r in lines).encode()
    assert client.post("/v1/import", content=body, headers={"Content-Type": "application/x-ndjson"}).status_code == 200
    assert {m["id"] for m in client.get("/v1/memories", params={"group_id": team["id"]}).json()["data"]} == tagged


def test_trigger_says_plainly_that_engram_has_no_procedures(client: httpx.Client) -> None:
    r = client.post("/v1/memories/trigger", json={"user_id": "ann", "entities": ["deploy.sh"]})
    assert code(r, 501) == "not_supported" and "lessons or procedures" in r.json()["error"]["message"]


# ---------------------------------------------------------------------- the personal judgement
@pytest.mark.parametrize("text", [
    "I started seeing a counsellor about my panic attacks.",
    "My salary went up to 95k this year.",
    "Keep this between us: I'm interviewing at another company.",
    "My girlfriend and I broke up in June.",
    "I'm on medication for my blood pressure.",
    "Don't tell anyone, but I'm planning to resign in March.",
])
def test_kinds_of_personal_statements_are_personal(text: str) -> None:
    assert is_personal(text)


@pytest.mark.parametrize("text", [
    "The sprint demo is on Thursday at 4pm.",
    "We use Postgres 16 for the billing service.",
    "The hotel for the offsite is near the river.",
    "I prefer window seats on long flights.",
])
def test_kinds_of_shareable_statements_are_not(text: str) -> None:
    assert not is_personal(text)
