"""Usage over HTTP, on both stores (docs/operations.md, "Usage"): what an org did is counted —
messages, searches, requests, job outcomes, per day and per key — and answered in the xtrace
v1.0 contract's UsageResponse (validated against the document) and memsy's control client's
summary and timeseries (the client driven unmodified)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.conftest import ServerProcess, create_key, serve_on, wait_job

CONTRACT = Path(__file__).resolve().parents[1].parent / "shared" / "contracts" / "xtrace-memory-openapi-v1.0.json"


def _validator(schema_name: str) -> Draft202012Validator:
    doc = json.loads(CONTRACT.read_text())
    registry = Registry().with_resource("urn:xtrace-v1.0", Resource.from_contents(doc, default_specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"urn:xtrace-v1.0#/components/schemas/{schema_name}"}, registry=registry)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serve_on(request.param, request, tmp_path_factory.mktemp(f"usage-{request.param}"), "engram_usage") as server:
        yield server


def _until(check: Any, timeout_s: float = 10) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "counts did not arrive"
        time.sleep(0.2)


def test_what_an_org_does_is_counted_and_shown_in_both_products_shapes(srv: ServerProcess) -> None:
    org = f"usage-{srv.port}"
    writer, admin = create_key(srv, org, "read,write"), create_key(srv, org, "read,admin")
    other = create_key(srv, f"{org}-other", "read,write")
    with srv.client(writer) as c, srv.client(other) as o:
        job = c.post("/v1/memories", json={"user_id": "ann", "conv_id": "c1", "messages": [
            {"role": "user", "content": "I keep bees."}, {"role": "assistant", "content": "Nice."},
            {"role": "user", "content": "I live in Porto."}]}).json()
        ev = c.post("/v1/ingest", json={"events": [
            {"actor_id": "ann", "session_id": "s1", "kind": "user_message", "content": "I play chess.", "event_id": "e1"},
            {"actor_id": "ann", "session_id": "s1", "kind": "user_message", "content": "I play chess.", "event_id": "e1"},
        ]}).json()
        assert len(set(ev["event_ids"])) == 1  # the repeat is not ingested twice, nor counted twice
        o.post("/v1/memories", json={"user_id": "x", "conv_id": "c", "messages": [{"role": "user", "content": "Hi."}]})
        wait_job(c, job["id"])
        _until(lambda: c.post("/v1/status", json={"event_ids": ev["event_ids"][:1]}).json()["pendingIds"] == [])
        for q in ("bees", "where does ann live"):
            assert c.post("/v1/memories/search", json={"query": q, "user_id": "ann"}).status_code == 200

        def counted() -> dict[str, Any] | None:
            body = c.get("/v1/usage", params={"daily": "true", "by_api_key": "true"}).json()
            done = body["operations"]["searches"] == 2 and body["engram"]["jobs"]["succeeded"] == 2
            return body if done else None

        body = _until(counted)
    errors = sorted(_validator("UsageResponse").iter_errors(body), key=str)
    assert not errors, [e.message for e in errors[:5]]
    assert body["operations"]["messages_ingested"] == 4  # 3 messages + 1 new event
    assert body["operations"]["requests"] >= 6
    today = datetime.now(timezone.utc).date().isoformat()
    day = next(d for d in body["daily"] if d["date"] == today)
    assert day["messages_ingested"] == 4 and day["searches"] == 2 and day["jobs_succeeded"] == 2
    by_key = {k["api_key_hash"]: k for k in body["by_api_key"]}
    writer_id = next(k for k in by_key if by_key[k]["messages_ingested"] == 4)
    assert writer_id.startswith("key_") and by_key[writer_id]["first_n"] == writer[:10]
    assert body["storage"]["memories_active"] >= 3 and body["period"]["type"] == "calendar_month"
    assert body["engram"]["memories"].get("fact:active", 0) == body["storage"]["memories_active"]
    assert body["quota"]["monthly"]["messages_ingested"] == {"used": 4, "limit": None}

    from memsy import MemsyControlClient

    with MemsyControlClient(f"{srv.url}/v1", admin) as control:
        summary = control.usage.summary()
        dims = {d.dimension: d.used for d in summary.dimensions}
        assert dims["events_ingested"] == 4 and dims["search_queries"] == 2 and dims["memory_stored"] >= 3
        series = control.usage.timeseries(dimension="events_ingested")
        assert [(p.date, p.quantity) for p in series.data] == [(today, 4)]
        points = {p["dimension"]: p["quantity"] for p in control.keys.usage(writer_id)}
        assert points["events_ingested"] == 4 and points["search_queries"] == 2 and points["api_calls"] >= 6
    with srv.client(writer) as c:
        assert c.get("/v1/usage/summary").json()["detail"]["code"] == "insufficient_scope"  # memsy's: admin only
        r = c.get("/v1/usage", params={"daily": "maybe"})
        assert r.status_code == 422
