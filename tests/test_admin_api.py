"""The admin API over HTTP, on both stores (docs/operations.md): /v1/me, orgs, keys with names
and expiry; who may do what; memsy's control client driven unmodified against it; the CLI
on the same core."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.conftest import ServerProcess, create_key, serve_on


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serve_on(request.param, request, tmp_path_factory.mktemp(f"admin-{request.param}"), "engram_admin") as server:
        yield server


@pytest.fixture(scope="module")
def operator(srv: ServerProcess) -> str:
    return create_key(srv, "default", "read,write,admin")


def _client(srv: ServerProcess, key: str) -> httpx.Client:
    return srv.client(key)


def test_the_operator_creates_orgs_and_their_keys_and_a_key_works_at_once(srv: ServerProcess, operator: str) -> None:
    with _client(srv, operator) as op:
        me = op.get("/v1/me").json()
        assert me["org_id"] == "default" and me["is_operator"] and me["scopes"] == ["admin", "read", "write"]
        r = op.post("/v1/orgs", json={"name": "initech"})
        assert r.status_code == 201, r.text
        org = r.json()
        assert org["name"] == "initech" and org["object"] == "org"
        assert op.post("/v1/orgs", json={"name": "initech"}).json()["detail"]["code"] == "org_exists"
        listed = op.get("/v1/orgs").json()  # one org resource for both products: a bare array
        assert isinstance(listed, list) and {"initech", "default"} <= {o["name"] for o in listed}
        assert all(o["org_id"] == o["id"] and "focus" in o and "promotion_prompt" in o for o in listed)
        r = op.post("/v1/keys", json={"name": "ingest bot", "scopes": ["write"], "org_id": org["id"]})
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["raw_key"].startswith("egm_") and made["name"] == "ingest bot" and made["org_id"] == org["id"]
        listed = op.get("/v1/keys", params={"org_id": org["id"]}).json()
        assert [k["key_id"] for k in listed["keys"]] == [made["key_id"]] and "raw_key" not in listed["keys"][0]
        assert listed["active_count"] == 1 and listed["max_keys"] >= 1
    with _client(srv, made["raw_key"]) as bot:
        r = bot.post("/v1/memories", json={"user_id": "u", "conv_id": "c", "messages": [{"role": "user",
                                                                                         "content": "I ski."}]})
        assert r.status_code == 202, r.text
        assert bot.get("/v1/memories").json()["detail"]["code"] == "insufficient_scope"  # write only
        me = bot.get("/v1/me").json()
        assert me["org_id"] == org["id"] and me["scopes"] == ["write"] and not me["is_operator"]
    with _client(srv, operator) as op:
        assert op.delete(f"/v1/keys/{made['key_id']}").status_code == 204
        assert op.delete(f"/v1/keys/{made['key_id']}").json()["detail"]["code"] == "key_not_found"
    with _client(srv, made["raw_key"]) as bot:
        time.sleep(1.1)  # keys are cached for a second
        assert bot.get("/v1/me").status_code == 401


def test_an_org_admin_manages_its_own_keys_only(srv: ServerProcess, operator: str) -> None:
    acme_admin = create_key(srv, "acme-admin-test", "read,admin")
    other = create_key(srv, "globex-admin-test", "read,write")
    with _client(srv, acme_admin) as admin:
        assert admin.post("/v1/orgs", json={"name": "mine"}).json()["detail"]["code"] == "insufficient_scope"
        own = admin.get("/v1/orgs").json()  # an org's keys see their own org only
        assert [o["id"] for o in own] == [admin.get("/v1/me").json()["org_id"]]
        mine = admin.post("/v1/keys", json={"name": "reader", "scopes": ["read"]}).json()
        assert mine["org_id"] == admin.get("/v1/me").json()["org_id"]
        theirs_org = httpx.get(f"{srv.url}/v1/me", headers={"Authorization": f"Bearer {other}"}).json()["org_id"]
        assert admin.get("/v1/keys", params={"org_id": theirs_org}).status_code == 403
        theirs = next(k for k in httpx.get(f"{srv.url}/v1/keys", headers={"Authorization": f"Bearer {operator}"},
                                           params={"org_id": theirs_org}).json()["keys"])
        assert admin.delete(f"/v1/keys/{theirs['key_id']}").status_code == 404, "another org's key looks unknown"
        for bad in ({"scopes": []}, {"scopes": ["root"]}, {"expires_at": "2001-01-01T00:00:00Z"}, {"name": "x" * 300}):
            r = admin.post("/v1/keys", json=bad)
            assert r.status_code == 422 and r.json()["detail"]["code"] == "validation_error", (bad, r.text)
    with _client(srv, other) as writer:
        assert writer.get("/v1/keys").json()["detail"]["code"] == "insufficient_scope"


def test_a_key_past_its_expiry_authenticates_no_one(srv: ServerProcess, operator: str) -> None:
    soon = (datetime.now(timezone.utc) + timedelta(seconds=2)).isoformat()
    with _client(srv, operator) as op:
        made = op.post("/v1/keys", json={"name": "temp", "scopes": ["read"], "expires_at": soon}).json()
        assert made["expires_at"] is not None
    with _client(srv, made["raw_key"]) as temp:
        assert temp.get("/v1/me").status_code == 200
        time.sleep(2.2)
        r = temp.get("/v1/me")
        assert r.status_code == 401 and "expired" in r.json()["detail"]["message"]


def test_memsys_control_client_reads_me_and_manages_keys(srv: ServerProcess, operator: str) -> None:
    from memsy import MemsyControlClient
    from memsy.exceptions import AuthorizationError

    with MemsyControlClient(f"{srv.url}/v1", operator) as control:
        me = control.me()
        assert me.org_id == "default" and me.is_superadmin and me.org_role == "admin"
        made = control.keys.create("from memsy", scopes=["read"])
        assert made.raw_key.startswith("egm_") and made.scopes == ["read"]
        listed = control.keys.list()
        assert made.key_id in [k.key_id for k in listed.keys] and listed.active_count >= 1
        control.keys.delete(made.key_id)
        assert not next(k for k in control.keys.list().keys if k.key_id == made.key_id).is_active
    reader = create_key(srv, "memsy-reader", "read")
    with MemsyControlClient(f"{srv.url}/v1", reader) as control, pytest.raises(AuthorizationError):
        control.keys.list()


def test_the_cli_manages_keys_through_the_same_rules(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data")
    made = srv.cli("keys", "create", "--org", "cli-org", "--scopes", "read", "--name", "nightly",
                   "--expires", "2999-01-01T00:00:00Z")
    assert made.returncode == 0, made.stderr
    listing = srv.cli("keys", "list", "--org", "cli-org")
    assert "2999-01-01 00:00:00" in listing.stdout
    refused = srv.cli("keys", "create", "--org", "cli-org", "--scopes", "read", "--expires", "2001-01-01T00:00:00Z")
    assert refused.returncode == 2 and "future" in refused.stderr
    bad = srv.cli("keys", "create", "--org", "cli-org", "--scopes", "root")
    assert bad.returncode == 2 and "subset" in bad.stderr
