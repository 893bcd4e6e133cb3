"""Auth modes, scopes, and proof that one org cannot reach another's data by guessing ids."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.conftest import ServerProcess, create_key, wait_job


@pytest.fixture(scope="module")
def two_orgs(tmp_path_factory: pytest.TempPathFactory):
    srv = ServerProcess(tmp_path_factory.mktemp("tenancy") / "data")
    keys = {"acme": create_key(srv, "acme"), "globex": create_key(srv, "globex"),
            "acme_reader": create_key(srv, "acme", "read")}
    srv.start()
    yield srv, keys
    srv.stop()


def test_open_mode_needs_no_key(fresh_server: ServerProcess) -> None:
    fresh_server.start()
    assert httpx.get(f"{fresh_server.url}/v1/memories").status_code == 200
    # Any credential is accepted until the first key exists (the family-M client always sends one).
    assert httpx.get(f"{fresh_server.url}/v1/memories", headers={"Authorization": "Bearer whatever"}).status_code == 200
    key = create_key(fresh_server, "first")
    time.sleep(1.2)  # the server re-checks whether keys exist at most once a second
    closed = httpx.get(f"{fresh_server.url}/v1/memories")
    assert closed.status_code == 401 and closed.json()["detail"]["code"] == "unauthorized"
    assert httpx.get(f"{fresh_server.url}/v1/memories", headers={"x-api-key": key}).status_code == 200


def test_non_loopback_bind_requires_a_key(tmp_path) -> None:
    srv = ServerProcess(tmp_path / "data", host="0.0.0.0").start()
    try:
        response = httpx.get(f"{srv.url}/v1/memories")
        assert response.status_code == 401 and response.json()["detail"]["code"] == "unauthorized"
        assert httpx.get(f"{srv.url}/v1/health").status_code == 200, "health stays open for probes"
    finally:
        srv.stop()


def test_key_header_forms_and_org_header(two_orgs) -> None:
    srv, keys = two_orgs
    for headers in ({"Authorization": f"Bearer {keys['acme']}"}, {"Authorization": f"Token {keys['acme']}"},
                    {"x-api-key": keys["acme"]}):
        assert httpx.get(f"{srv.url}/v1/memories", headers=headers).status_code == 200
    assert httpx.get(f"{srv.url}/v1/memories", headers={"x-api-key": keys["acme"], "X-Org-Id": "acme"}).status_code == 200
    mismatch = httpx.get(f"{srv.url}/v1/memories", headers={"x-api-key": keys["acme"], "X-Org-Id": "globex"})
    assert mismatch.status_code == 403 and mismatch.json()["detail"]["code"] == "org_mismatch"
    bad = httpx.get(f"{srv.url}/v1/memories", headers={"x-api-key": "egm_not-a-real-key"})
    assert bad.status_code == 401 and bad.json()["detail"]["code"] == "unauthorized"
    missing = httpx.get(f"{srv.url}/v1/memories")
    assert missing.status_code == 401


def test_read_scope_cannot_write(two_orgs) -> None:
    srv, keys = two_orgs
    with srv.client(keys["acme_reader"]) as reader:
        assert reader.get("/v1/memories").status_code == 200
        denied = reader.post("/v1/memories", json={"messages": [{"role": "user", "content": "I like tea."}],
                                                   "user_id": "u", "conv_id": "c"})
        assert denied.status_code == 403 and denied.json()["detail"]["code"] == "insufficient_scope"
        denied_m = reader.post("/v1/ingest", json={"events": [{"actor_id": "a", "session_id": "s",
                                                               "kind": "user_message", "content": "hi there"}]})
        assert denied_m.status_code == 403


def test_revoked_key_stops_working(two_orgs) -> None:
    srv, _ = two_orgs
    key = create_key(srv, "short-lived")
    assert httpx.get(f"{srv.url}/v1/memories", headers={"x-api-key": key}).status_code == 200
    listing = srv.cli("keys", "list", "--org", "short-lived")
    assert listing.returncode == 0 and key not in listing.stdout, "secrets are never listed"
    key_id = listing.stdout.strip().splitlines()[-1].split()[0]
    assert srv.cli("keys", "revoke", key_id).returncode == 0
    time.sleep(1.2)  # positive lookups are cached for at most a second
    assert httpx.get(f"{srv.url}/v1/memories", headers={"x-api-key": key}).status_code == 401


def test_one_org_cannot_reach_another_orgs_data(two_orgs) -> None:
    srv, keys = two_orgs
    user = f"shared-user-{uuid.uuid4().hex[:6]}"  # both orgs use the same user and conversation ids
    with srv.client(keys["acme"]) as acme, srv.client(keys["globex"]) as globex:
        job = acme.post("/v1/memories", json={"messages": [{"role": "user", "content": "My bank is First Acme Bank."}],
                                              "user_id": user, "conv_id": "c"}).json()
        done = wait_job(acme, job["id"])
        assert done["status"] == "succeeded"
        memory_id = done["result"]["memories_created"][0]["id"]
        event_ids = acme.post("/v1/ingest", json={"events": [
            {"actor_id": user, "session_id": "s", "kind": "user_message", "content": "My PIN hint is my cat."}]}
        ).json()["event_ids"]

        # globex guesses every id it could have learned
        assert globex.get(f"/v1/memories/jobs/{job['id']}").json()["detail"]["code"] == "job_not_found"
        assert globex.get(f"/v1/memories/{memory_id}").json()["detail"]["code"] == "memory_not_found"
        assert globex.get("/v1/memories", params={"user_id": user}).json()["data"] == []
        found = globex.post("/v1/memories/search", json={"query": "bank", "filters": {"user_id": user}}).json()
        assert found["data"] == []
        assert globex.post("/v1/memories/search", json={"query": "bank"}).json()["data"] == []
        assert globex.post("/v1/search", json={"query": "bank", "actor_id": user}).json()["results"] == []
        status = globex.post("/v1/status", json={"event_ids": event_ids}).json()
        assert status["failedIds"] == event_ids and status["reasons"] == {event_ids[0]: "not_found"}
        assert globex.delete(f"/v1/memories/{memory_id}").json()["detail"]["code"] == "memory_not_found"
        # a cursor minted for acme is refused for globex
        page = acme.get("/v1/memories", params={"user_id": user, "limit": 1}).json()
        if page["next_cursor"]:
            refused = globex.get("/v1/memories", params={"cursor": page["next_cursor"]})
            assert refused.json()["detail"]["code"] == "cursor_mismatch"
        # acme still sees its own
        assert acme.get(f"/v1/memories/{memory_id}").status_code == 200
        assert acme.post("/v1/memories/search", json={"query": "bank", "filters": {"user_id": user}}).json()["data"]
