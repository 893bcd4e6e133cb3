"""The published `@memsy-io/memsy` 0.3.2 (from ../shared/clients, unmodified) drives every public
method of `MemsyClient` and `MemsyControlClient` and their resources against one real
`engram serve` (tests/js/memsy_driver.mjs, one Node run): each works, or raises the SDK's own
typed error with a stable code where a self-hosted engram has no such thing (billing, the Pro
plan). docs/compatibility.md is the table these tests prove."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from tests.conftest import ServerProcess, create_key
from tests.node_clients import MEMSY_SDK, error_of, node_ready, run_driver, value_of

pytestmark = pytest.mark.skipif(node_ready() is not None, reason=str(node_ready()))

ORG = "memsy-node"
RESOURCES = {"client": ["health", "ingest", "search", "status"],
             "client.orgs": ["create", "delete", "get", "list", "regeneratePrompt", "update"],
             "client.roles": ["create", "delete", "get", "list", "regeneratePrompt", "update"],
             "client.teams": ["create", "delete", "get", "list", "regeneratePrompt", "update"],
             "client.memories": ["get", "list", "stats"],
             "control": ["health", "me"],
             "control.keys": ["create", "delete", "list", "usage"],
             "control.usage": ["summary", "timeseries"],
             "control.billing": ["invoices", "summary"],
             "control.events": ["list"],
             "control.interest": ["express", "status"]}
METHODS = sorted(f"{prefix}.{name}" for prefix, names in RESOURCES.items() for name in names)


def assert_written_by_the_template(meta: dict[str, Any]) -> None:
    # no model is configured here: the prompt says it came from the template, never from an LLM
    assert meta["generator"] == "template" and meta["llm"] is False, meta


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    srv = ServerProcess(tmp_path_factory.mktemp("node-memsy") / "data").start()
    try:
        keys = [create_key(srv, ORG, "read,write,admin"), ORG, create_key(srv, ORG, "read"),
                create_key(srv, "default", "read,write,admin")]
        yield run_driver("memsy_driver.mjs", str(MEMSY_SDK), f"{srv.url}/v1", *keys)
    finally:
        srv.stop()
        srv.kill()


def test_every_public_method_of_the_sdk_is_driven(run: dict[str, Any]) -> None:
    assert sorted(run["methods"]) == METHODS, "the SDK's method list changed: drive the new ones"
    assert set(run["methods"]) <= set(run["results"]), set(run["methods"]) - set(run["results"])


def test_ingest_status_search_and_health(run: dict[str, Any]) -> None:
    r = run["results"]
    assert value_of(r["client.ingest"]) == {"eventIds": 2}
    assert error_of(r["ingest.not_array"])["cls"] == "TypeError"  # the SDK's own check, before any request
    assert error_of(r["ingest.bad_kind"]) == {"cls": "MemsyAPIError", "code": "validation_error", "status": 422}
    assert error_of(r["ingest.read_only_key"]) == {"cls": "MemsyAuthorizationError", "code": "insufficient_scope",
                                                    "status": 403}
    assert value_of(r["client.status"]) == {"completed": 2, "pending": 0, "failed": 0, "total": 2}
    found = value_of(r["client.search"])
    assert found["count"] >= 1 and all("Ana" in c or "dark mode" in c for c in found["contents"]), found
    assert all(n >= 1 for n in found["sourceEvents"])
    assert error_of(r["search.bad_key"]) == {"cls": "MemsyAuthError", "code": "unauthorized", "status": 401}
    health = value_of(r["client.health"])
    assert health["status"] == "ok" and {"store", "queue", "embedder", "extractor"} <= set(health["components"])
    assert health["billingEnabled"] is False


def test_search_narrows_by_role_and_team(run: dict[str, Any]) -> None:
    r = run["results"]
    designers = value_of(r["search.role_ids"])["contents"]
    assert designers and all("Ben" in c for c in designers), designers
    platform = value_of(r["search.team_ids"])["contents"]
    assert platform and not any("Ben" in c for c in platform), platform


def test_orgs(run: dict[str, Any]) -> None:
    r = run["results"]
    created = value_of(r["client.orgs.create"])
    assert created["orgId"].startswith("acme-") and created["name"] == "Acme"
    assert created["focus"] == "Customer support for a bike shop"
    mismatch = {"cls": "MemsyAuthorizationError", "code": "org_mismatch", "status": 403}
    assert error_of(r["orgs.create.not_operator"]) == mismatch  # an org admin creates no other org
    assert created["orgId"] in {o["orgId"] for o in value_of(r["client.orgs.list"])}
    assert value_of(r["client.orgs.get"])["orgId"] == created["orgId"]
    assert value_of(r["client.orgs.update"])["focus"] == "Bike repairs and rentals"
    regenerated = value_of(r["client.orgs.regeneratePrompt"])
    assert "Bike repairs and rentals" in regenerated["promotionPrompt"]
    assert_written_by_the_template(regenerated["promptMeta"])
    assert value_of(r["orgs.get.own"])["orgId"] == ORG
    own = value_of(r["orgs.update.own"])
    assert own["orgId"] == ORG and own["name"] == "X Org" and own["focus"] == "Platform engineering notes"
    assert error_of(r["orgs.get.other_org"]) == mismatch  # another org is never readable
    assert value_of(r["client.orgs.delete"]) is None
    # memsy: deleting an org's record removes its customisation only; the org stays
    reset = value_of(r["orgs.get.deleted"])
    assert reset["orgId"] == created["orgId"] and reset["focus"] == "" and reset["promotionPrompt"] == ""


@pytest.mark.parametrize("kind", ["roles", "teams"])
def test_roles_and_teams(run: dict[str, Any], kind: str) -> None:
    r = run["results"]
    made = value_of(r[f"client.{kind}.create"])
    name = {"roles": "engineer", "teams": "platform"}[kind]
    ident = made["roleId" if kind == "roles" else "teamId"]
    assert made["orgId"] == ORG and made["name"] == name and ident.startswith(f"{kind[:-1]}_")  # engram's id
    assert ident in {x["roleId" if kind == "roles" else "teamId"] for x in value_of(r[f"client.{kind}.list"])}
    assert value_of(r[f"client.{kind}.get"]) == made
    updated = value_of(r[f"client.{kind}.update"])
    if kind == "roles":
        assert updated["focus"] == "Code, deploys and on-call"
    else:
        assert updated["name"] == "platform-eng"
    regenerated = value_of(r[f"client.{kind}.regeneratePrompt"])
    assert regenerated["focus"] in regenerated["promotionPrompt"]
    assert_written_by_the_template(regenerated["promptMeta"])
    assert value_of(r[f"client.{kind}.delete"]) is None
    if kind == "roles":
        assert error_of(r["roles.get.deleted"]) == {"cls": "MemsyAPIError", "code": "not_found", "status": 404}


def test_console_memories(run: dict[str, Any]) -> None:
    r = run["results"]
    page = value_of(r["client.memories.list"])
    assert page["actors"] == [run["actor"]] and page["count"] == page["total"] >= 2
    assert page["limit"] == 10 and page["offset"] == 0
    stats = value_of(r["client.memories.stats"])
    assert stats["total"] >= 3 and stats["activeMemories"] >= 3
    got = value_of(r["client.memories.get"])
    assert got["actorId"] == run["actor"] and got["text"] in page["texts"]
    assert error_of(r["memories.get.missing"]) == {"cls": "MemsyAPIError", "code": "memory_not_found", "status": 404}


def test_control_plane(run: dict[str, Any]) -> None:
    r = run["results"]
    assert value_of(r["control.me"]) == {"orgId": ORG, "tier": "self-hosted"}
    assert value_of(r["control.health"]) == {"status": "ok"}
    key = value_of(r["control.keys.create"])
    assert key["keyId"].startswith("key_") and key["rawKey"] == "string" and key["scopes"] == ["read"]
    assert key["name"] in value_of(r["control.keys.list"])["names"]
    assert value_of(r["control.keys.usage"]) == {"points": True}
    assert value_of(r["control.keys.delete"]) is None
    summary = value_of(r["control.usage.summary"])
    assert summary["orgId"] == ORG and summary["dimensions"]["events_ingested"] >= 2
    assert value_of(r["control.usage.timeseries"]) == {"granularity": "daily", "total": summary["dimensions"]["events_ingested"]}
    events = value_of(r["control.events.list"])
    assert events == {"total": 1, "count": 1, "actors": [run["actor"]]}


def test_what_a_self_hosted_server_does_not_sell_raises_the_sdks_typed_errors(run: dict[str, Any]) -> None:
    r = run["results"]
    billing = {"cls": "MemsyBillingNotEnabledError", "code": "billing_not_enabled", "status": 403}
    assert error_of(r["control.billing.summary"]) == billing
    assert error_of(r["control.billing.invoices"]) == billing
    pro = {"cls": "MemsyFeatureNotAvailableError", "code": "feature_not_available", "status": 403}
    for call in ("control.interest.express", "control.interest.status"):
        assert error_of(r[call]) == pro
        assert r[call]["error"]["extra"] == {"feature": "pro_interest", "currentTier": "self-hosted"}


def test_no_request_was_answered_with_a_server_error(run: dict[str, Any]) -> None:
    assert not [(x["method"], x["path"], x["status"]) for x in run["exchanges"] if x["status"] >= 500]
