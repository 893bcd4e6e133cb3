"""Both published `@xtraceai/memory` builds (0.1.1 and 0.5.0, from ../shared/clients, unmodified)
drive every public method against one real `engram serve` (tests/js/xtrace_driver.mjs, one Node
run per version): each method works, or raises the SDK's own typed error with a stable code,
and every family-X response the SDK received validates against the contract it was built for.
docs/compatibility.md is the table these tests prove."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import ServerProcess, create_key
from tests.node_clients import XTRACE_SDKS, contract_problems, error_of, node_ready, run_driver, value_of

pytestmark = pytest.mark.skipif(node_ready() is not None, reason=str(node_ready()))

METHODS = {
    "0.1.1": ["ai-sdk.createXtraceMemory", "ai-sdk.memoryTools", "memories.delete", "memories.get",
              "memories.ingest", "memories.jobs.get", "memories.jobs.pollUntilDone", "memories.list",
              "memories.listPage", "memories.retrieve", "memories.search", "memories.update"],
    "0.5.0": ["ai-sdk.createXtraceMemory", "ai-sdk.memoryTools", "ai-sdk.withDirectiveRecall", "groups.archive",
              "groups.create", "groups.get", "groups.list", "groups.update", "memories.delete", "memories.get",
              "memories.ingest", "memories.jobs.get", "memories.jobs.pollUntilDone", "memories.list",
              "memories.listPage", "memories.recall", "memories.retrieve", "memories.search", "memories.trigger",
              "parseWebhookEvent", "renderMemoriesPrompt", "verifyWebhookSignature", "webhooks.delete",
              "webhooks.get", "webhooks.set"],
}
NOT_FOUND = {"cls": "MemoryNotFound", "code": "memory_not_found", "status": 404}
v1_only = pytest.mark.parametrize("version", ["0.5.0"])
both = pytest.mark.parametrize("version", ["0.1.1", "0.5.0"])


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("node-xtrace") / "data", env={"ENGRAM_WEBHOOK_ALLOW_PRIVATE": "true"})
    yield server.start()
    server.stop()
    server.kill()


@pytest.fixture(scope="module")
def runs(srv: ServerProcess) -> dict[str, dict[str, Any]]:
    """One driver run per SDK version, each in an org of its own (and a second org for isolation)."""
    out = {}
    for version, sdk in XTRACE_SDKS.items():
        org, other = f"xtrace-{version}", f"xtrace-{version}-other"
        out[version] = run_driver("xtrace_driver.mjs", str(Path(sdk)), srv.url, create_key(srv, org), org,
                                  create_key(srv, other), other)
    return out


def results(runs: dict[str, dict[str, Any]], version: str) -> dict[str, Any]:
    return runs[version]["results"]


@both
def test_every_public_method_of_the_sdk_is_driven(runs: dict[str, dict[str, Any]], version: str) -> None:
    run = runs[version]
    assert sorted(run["methods"]) == sorted(METHODS[version]), "the SDK's method list changed: drive the new ones"
    assert set(run["methods"]) <= set(run["results"]), set(run["methods"]) - set(run["results"])


@both
def test_ingest_and_its_job(runs: dict[str, dict[str, Any]], version: str) -> None:
    r = results(runs, version)
    assert value_of(r["memories.ingest"])["status"] == "pending"
    done = value_of(r["memories.jobs.pollUntilDone"])
    assert done["status"] == "succeeded" and {m["type"] for m in done["created"]} == {"fact"}
    assert any("Lisbon" in m["text"] for m in done["created"]), done
    assert value_of(r["memories.jobs.get"]) == done
    assert value_of(r["ingest.wait"])["status"] == "succeeded"  # wait=true: terminal in the response
    if version == "0.5.0":  # the SDK's IngestJobResult: ignored_group_ids is always a list
        assert done["ignored_group_ids"] == [] and value_of(r["ingest.wait"])["ignored_group_ids"] == []
    assert error_of(r["jobs.get.missing"]) == {"cls": "MemoryNotFound", "code": "job_not_found", "status": 404}
    assert error_of(r["ingest.empty"]) == {"cls": "BadRequest", "code": "invalid_messages", "status": 400}


@both
def test_list_pages_and_iterates_one_users_memories(runs: dict[str, dict[str, Any]], version: str) -> None:
    r, alice = results(runs, version), runs[version]["alice"]
    page = value_of(r["memories.listPage"])  # limit 500 on 0.5.0 (the v1.0 bound), 100 on 0.1.1
    assert page["user_ids"] == [alice] and page["count"] >= 2 and page["has_more"] is False
    walked = value_of(r["memories.list"])  # limit 1: the iterator follows next_cursor
    assert walked["count"] == walked["distinct"] >= 2 and walked["user_ids"] == [alice]
    assert error_of(r["listPage.limit_501"]) == {"cls": "Unprocessable", "code": "validation_error", "status": 422}


@both
def test_search_by_user_never_returns_another_users_or_orgs_memories(runs: dict[str, dict[str, Any]], version: str) -> None:
    r, alice, bob = results(runs, version), runs[version]["alice"], runs[version]["bob"]
    hits = value_of(r["memories.search"])
    assert hits["user_ids"] == [alice] and any("Lisbon" in t for t in hits["texts"])
    assert not any("Oslo" in t for t in hits["texts"])
    assert {alice, bob} <= set(value_of(r["search.org_wide"])["user_ids"])
    other_org = value_of(r["search.other_org"])  # the same user id in another org is another person
    assert other_org["texts"] and all("too" in t for t in other_org["texts"]), other_org
    retrieved = value_of(r["memories.retrieve"])
    assert retrieved["user_ids"] == [alice]
    if version == "0.1.1":  # 0.1.1's retrieve() asks for include=context_prompt: a ready-to-paste block
        assert isinstance(retrieved["context_prompt"], str) and retrieved["texts"][0] in retrieved["context_prompt"]


@v1_only
def test_search_modes_and_the_legacy_filters_shape(runs: dict[str, dict[str, Any]], version: str) -> None:
    r, bob = results(runs, version), runs[version]["bob"]
    assert value_of(r["search.retrieve"])["context"] is None
    composed = value_of(r["search.compose"])["context"]
    assert isinstance(composed, str) and "Lisbon" in composed and composed.lstrip().startswith(("#", "-", "*")), composed
    retrieved = value_of(r["memories.retrieve"])["context"]  # retrieve() is compose sugar
    assert isinstance(retrieved, str) and retrieved.strip()
    assert value_of(r["search.legacy_filters"])["user_ids"] == [bob]
    assert error_of(r["search.bad_mode"]) == {"cls": "Unprocessable", "code": "validation_error", "status": 422}


@both
def test_get_and_hard_delete(runs: dict[str, dict[str, Any]], version: str) -> None:
    r = results(runs, version)
    got = value_of(r["memories.get"])
    assert got["object"] == "memory" and got["user_id"] == runs[version]["alice"]
    if version == "0.5.0":
        assert got["group_ids"] == []  # the SDK's Memory type: group_ids is always a list
    assert error_of(r["delete.other_org"]) == NOT_FOUND
    assert value_of(r["memories.delete"]) is None
    assert error_of(r["delete.get"]) == NOT_FOUND
    assert error_of(r["delete.again"]) == NOT_FOUND
    assert value_of(r["delete.listed"]) is False


@pytest.mark.parametrize("version", ["0.1.1"])
def test_update_supersedes_a_fact(runs: dict[str, dict[str, Any]], version: str) -> None:
    r = results(runs, version)
    new = value_of(r["memories.update"])
    old = value_of(r["update.old"])
    assert new["text"] == "Alice lives in Porto." and new["supersedes"] == old["id"] and new["id"] != old["id"]
    assert old["status"] == "superseded" and new["metadata"] == {"source": "sdk"}
    assert error_of(r["update.empty"]) == {"cls": "BadRequest", "code": "invalid_request", "status": 400}


@v1_only
def test_groups_round_trip(runs: dict[str, dict[str, Any]], version: str) -> None:
    r = results(runs, version)
    prompted, catch_all = value_of(r["groups.create"]), value_of(r["groups.create.catch_all"])
    assert prompted["id"].startswith("grp_") and prompted["object"] == "group" and prompted["status"] == "active"
    assert prompted["prompt"] == "Facts about the Lisbon offsite." and catch_all["prompt"] is None
    blank = {"cls": "Unprocessable", "code": "invalid_request", "status": 422}  # only omission means catch-all
    assert error_of(r["groups.create.empty_prompt"]) == blank
    listed = {g["id"]: g for g in value_of(r["groups.list"])}
    assert listed[catch_all["id"]]["prompt"] is None and prompted["id"] in listed
    assert value_of(r["groups.get"]) == catch_all
    assert error_of(r["groups.get.other_org"]) == {"cls": "MemoryNotFound", "code": "group_not_found", "status": 404}
    converted = value_of(r["groups.update"])
    assert converted["prompt"] == "Facts about tabletop games." and converted["name"].startswith("games renamed")
    assert error_of(r["groups.update.empty_prompt"]) == blank  # a prompt is never removed
    assert value_of(r["groups.archive"])["status"] == "archived"


@v1_only
def test_ingest_tags_groups_and_echoes_the_ones_it_ignored(runs: dict[str, dict[str, Any]], version: str) -> None:
    r, catch_all = results(runs, version), runs[version]["catch_all"]
    job = value_of(r["ingest.group_ids"])
    archived = value_of(r["groups.archive"])["id"]
    assert job["status"] == "succeeded"
    assert sorted(job["ignored_group_ids"]) == sorted([archived, "grp_ffffffffffffffffffffffffffffffff"])
    shared = value_of(r["search.group_ids"])  # a cross-user whole-group read
    assert any("standup" in t for t in shared["texts"]) and shared["context"] is None
    assert shared["group_ids"] and all(catch_all in g for g in shared["group_ids"]), shared


@v1_only
def test_recall_unions_personal_and_group_pools(runs: dict[str, dict[str, Any]], version: str) -> None:
    recalled = value_of(results(runs, version)["memories.recall"])
    assert [s["scope"] for s in recalled["scopes"]] == ["personal", "shared"]
    assert all(s["count"] >= 1 for s in recalled["scopes"]), recalled["scopes"]
    assert "standup" in recalled["prompt"] and "Lisbon" in recalled["prompt"]


@v1_only
def test_trigger_raises_the_sdks_typed_error(runs: dict[str, dict[str, Any]], version: str) -> None:
    # engram learns no lessons or procedures, so it has none to recall: 501 `not_supported`
    # rather than an empty list that would read as "nothing applies" (docs/compatibility.md)
    r = results(runs, version)
    unsupported = {"cls": "ServerError", "code": "not_supported", "status": 501}
    for call in ("memories.trigger", "trigger.compose", "trigger.no_scope"):
        assert error_of(r[call]) == unsupported, call


@v1_only
def test_webhooks_are_delivered_signed_as_the_sdk_verifies(runs: dict[str, dict[str, Any]], version: str) -> None:
    r = results(runs, version)
    config = value_of(r["webhooks.set"])
    assert config["object"] == "webhook" and config["enabled"] is True and config["events"] == ["memory.learning.completed"]
    assert config["secret"].startswith("whsec_") and "•" not in config["secret"]  # in full only when minted
    assert "•" in value_of(r["webhooks.get"])["secret"] and "•" in value_of(r["webhooks.set.rotate"])["secret"]
    assert value_of(r["webhook.delivered"]) >= 1
    assert value_of(r["verifyWebhookSignature"]) is True
    assert value_of(r["verifyWebhookSignature.wrong_secret"]) is False
    event = value_of(r["parseWebhookEvent"])
    assert event["event"] == "memory.learning.completed" and event["user_id"] == runs[version]["alice"]
    assert event["job_id"].startswith("job_") and event["memories"] >= 1
    assert value_of(r["webhooks.delete"]) is None
    assert error_of(r["webhooks.get.after_delete"]) == {"cls": "MemoryNotFound", "code": "not_found", "status": 404}


@v1_only
def test_the_prompt_renderer_reads_what_engram_returned(runs: dict[str, dict[str, Any]], version: str) -> None:
    rendered = value_of(results(runs, version)["renderMemoriesPrompt"])
    assert "Lisbon" in rendered and "Oslo" not in rendered


@both
def test_the_ai_sdk_helpers_talk_to_engram(runs: dict[str, dict[str, Any]], version: str) -> None:
    run = runs[version]
    r = run["results"]
    tools = value_of(r["ai-sdk.memoryTools"])
    searched = [x for x in run["exchanges"] if x["call"] == "ai-sdk.memoryTools" and x["path"] == "/v1/memories/search"]
    assert [x["status"] for x in searched] == [200]
    assert tools["hits"] >= 1 and tools["texts"] == [m["text"] for m in searched[0]["body"]["data"]]
    assert {m["user_id"] for m in searched[0]["body"]["data"]} == {run["alice"]}
    assert tools["saved"] == {"status": "succeeded", "created": 1}
    chat = value_of(r["ai-sdk.createXtraceMemory"])
    sent = [x for x in run["exchanges"] if x["call"] == "ai-sdk.createXtraceMemory"]
    searched = [x for x in sent if x["path"] == "/v1/memories/search"]
    assert [x["status"] for x in searched] == [200, 200]  # generateText, then streamText
    for exchange, system in zip(searched, (chat["system"], chat["streamSystem"])):
        assert exchange["request"]["filters"] == {"user_id": run["alice"]}
        found = exchange["body"]["data"]
        assert found and {m["user_id"] for m in found} == {run["alice"]}
        # what engram found is what reached the model, as the helper's system block
        assert system.splitlines()[1:] == [f"- {m['text']}" for m in found]
    assert chat["text"] == chat["streamedText"] == "You live in Lisbon."
    ingested = [x for x in sent if x["path"] == "/v1/memories" and x["method"] == "POST"]
    assert [x["status"] for x in ingested] == [200, 200], ingested  # wait=true: both turns ingested in full
    assert [[m["content"] for m in x["request"]["messages"]] for x in ingested] == [
        ["Where do I live?", "You live in Lisbon."], ["Which city do I live in?", "You live in Lisbon."]]
    if version == "0.5.0":
        # the wrapper is fail-open by design: the tool runs and returns its own result, and the
        # exchange shows the recall it attempted got trigger's typed 501
        assert value_of(r["ai-sdk.withDirectiveRecall"]) == "edited src/billing/refunds.py"
        fired = [x for x in run["exchanges"] if x["call"] == "ai-sdk.withDirectiveRecall"]
        assert [(x["path"], x["status"], x["body"]["error"]["code"]) for x in fired] == [
            ("/v1/memories/trigger", 501, "not_supported")]


@both
def test_every_response_the_sdk_read_validates_against_its_contract(runs: dict[str, dict[str, Any]], version: str) -> None:
    problems = [p for x in runs[version]["exchanges"] for p in contract_problems(version, x)]
    assert not problems, "\n".join(problems[:20])
