"""The published family-M client, `memsy==0.3.5`, unmodified, against a real engram server.

What shapes these tests (read from the client's source):
  * the base URL includes `/v1`; the client appends `/ingest`, `/status`, `/search`, `/health`;
  * it always sends `Authorization: Bearer <key>` and cannot send none, so open mode accepts any key;
  * 422 has no subclass: it is `MemsyAPIError` with `status_code == 422`; 401 is `AuthenticationError`;
  * it reads its error code from `detail.error`, which engram sets beside `detail.code`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from typing import Iterable

import httpx
import pytest

from tests.conftest import ServerProcess, create_key

from memsy import AsyncMemsyClient, EventPayload, MemsyClient
from memsy.exceptions import (
    AuthenticationError,
    MemsyAPIError,
    MemsyError,
)

KINDS = {"user_message", "assistant_message", "tool_result", "app_event"}
OPEN_KEY = os.environ.get("ENGRAM_TEST_OPEN_KEY", "engram-open-mode-placeholder")
PROCESS_TIMEOUT_S = float(os.environ.get("ENGRAM_TEST_PROCESS_TIMEOUT", "60"))


# --------------------------------------------------------------------------- helpers


def v1(url: str) -> str:
    return url.rstrip("/") + "/v1"


def uid(prefix: str) -> str:
    # searchable-id charset: letters, digits and _ - : . @ /
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_client(srv, api_key: str | None = None, **kw) -> MemsyClient:
    key = api_key or getattr(srv, "api_key", None) or OPEN_KEY
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 15.0)
    return MemsyClient(base_url=v1(srv.url), api_key=key, **kw)


def wait_done(client: MemsyClient, event_ids: list[str], timeout: float = PROCESS_TIMEOUT_S):
    """Poll POST /v1/status until nothing is pending; return the last StatusResponse."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        st = client.status(event_ids)
        if not st.pending_ids and (set(st.completed_ids) | set(st.failed_ids)) >= set(event_ids):
            return st
        if time.monotonic() > deadline:
            pytest.fail(f"events still pending after {timeout}s: {st}")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def ingest_and_wait(client: MemsyClient, events: list[EventPayload]) -> list[str]:
    ids = client.ingest(events).event_ids
    st = wait_done(client, ids)
    assert set(st.completed_ids) == set(ids), f"some events failed: {st}"
    return ids


def corpus(actor: str, session: str, token: str) -> list[EventPayload]:
    return [
        EventPayload(
            actor_id=actor,
            session_id=session,
            kind="user_message",
            content=f"My name is Alice {token} and I work as a marine biologist in Lisbon.",
            ts="2024-05-01T10:00:00Z",
            metadata=json.dumps({"source": "memsy-compat", "token": token}),
        ),
        EventPayload(
            actor_id=actor,
            session_id=session,
            kind="assistant_message",
            content="Nice to meet you, Alice. Marine biology in Lisbon sounds great.",
        ),
        EventPayload(
            actor_id=actor,
            session_id=session,
            kind="user_message",
            content=f"I prefer dark mode in all apps and I drink green tea every morning ({token}).",
            role_id="role_eng",
            team_id="team_platform",
        ),
    ]


def assert_result_shape(results: Iterable) -> None:
    for r in results:
        assert isinstance(r.id, str) and r.id
        assert isinstance(r.content, str) and r.content
        assert isinstance(r.score, (int, float)) and not isinstance(r.score, bool)
        assert isinstance(r.metadata, dict)
        for key in ("type", "kind", "source_event_ids"):
            assert key in r.metadata, f"metadata lacks {key!r}: {r.metadata}"
        assert isinstance(r.source_event_ids, list)
        # session_id key present; str for conversation memories, None for promoted ones
        assert "session_id" in r.metadata
        assert r.metadata["session_id"] is None or isinstance(r.metadata["session_id"], str)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server_with_key(tmp_path_factory):
    """A server on which a key exists, so every request must carry a valid one."""
    srv = ServerProcess(tmp_path_factory.mktemp("memsy-auth") / "data")
    key = create_key(srv, "memsy-org")
    srv.start()
    srv.api_key = key
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    with make_client(server) as c:
        yield c


# --------------------------------------------------------------------------- health


def test_health(client):
    h = client.health()
    assert h.status == "ok"
    assert isinstance(h.version, str) and h.version
    assert isinstance(h.components, dict)
    assert {"store", "queue", "embedder", "extractor"} <= set(h.components)


def test_health_wire_is_json_object_at_v1_without_trailing_slash(server):
    # memsy does not follow redirects: /v1/health must answer directly (no 307 to /v1/health/).
    r = httpx.get(v1(server.url) + "/health", headers={"Authorization": f"Bearer {OPEN_KEY}"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert isinstance(r.json(), dict)


# --------------------------------------------------------------------------- ingest / status


def test_ingest_returns_ids_in_input_order(client):
    actor, session, token = uid("actor"), uid("sess"), uuid.uuid4().hex[:8]
    events = corpus(actor, session, token)
    res = client.ingest(events)
    assert isinstance(res.event_ids, list)
    assert len(res.event_ids) == len(events)
    assert all(isinstance(i, str) and i for i in res.event_ids)
    assert len(set(res.event_ids)) == len(events)
    # ULIDs (26 chars, Crockford base32), time-ordered in input order
    assert all(len(i) == 26 for i in res.event_ids)


def test_status_poll_until_done(client):
    actor, session, token = uid("actor"), uid("sess"), uuid.uuid4().hex[:8]
    ids = client.ingest(corpus(actor, session, token)).event_ids

    first = client.status(ids)  # may be pending, partly done, or done
    assert first.total == len(ids)
    assert set(first.completed_ids) | set(first.pending_ids) | set(first.failed_ids) == set(ids)

    st = wait_done(client, ids)
    assert set(st.completed_ids) == set(ids)
    assert st.failed_ids == []
    assert st.pending_ids == []
    assert st.total == len(ids)
    assert isinstance(st.statuses, dict) and set(ids) <= set(st.statuses)
    assert all(isinstance(v, str) for v in st.statuses.values())


def test_status_unknown_id_is_failed_not_pending(client):
    unknown = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
    st = client.status([unknown])
    assert unknown in st.failed_ids
    assert unknown not in st.pending_ids
    assert st.total == 1


def test_status_wire_uses_camel_case_keys(server):
    # memsy reads ONLY completedIds/pendingIds/failedIds; snake_case would silently parse as [].
    r = httpx.post(
        v1(server.url) + "/status",
        json={"event_ids": ["01HZZZZZZZZZZZZZZZZZZZZZZZ"]},
        headers={"Authorization": f"Bearer {OPEN_KEY}"},
    )
    assert r.status_code == 200
    body = r.json()
    for key in ("completedIds", "pendingIds", "failedIds", "total", "statuses"):
        assert key in body


# --------------------------------------------------------------------------- search


def test_search_without_source_events(client):
    actor, session, token = uid("actor"), uid("sess"), uuid.uuid4().hex[:8]
    ids = ingest_and_wait(client, corpus(actor, session, token))

    res = client.search("Alice marine biologist Lisbon", actor_id=actor)
    assert res.results, "expected at least one memory for the ingested facts"
    assert_result_shape(res.results)
    for r in res.results:
        assert set(r.source_event_ids) <= set(ids)
        assert r.session_id in (session, None)
        # not requested -> absent (or empty)
        assert r.metadata.get("source_events") in (None, [])
        assert r.source_events == []
    scores = [r.score for r in res.results]
    assert scores == sorted(scores, reverse=True)


def test_search_with_source_events(client):
    actor, session, token = uid("actor"), uid("sess"), uuid.uuid4().hex[:8]
    events = corpus(actor, session, token)
    ids = ingest_and_wait(client, events)
    contents = {e.content for e in events}

    res = client.search("Alice marine biologist Lisbon", actor_id=actor, include_source_events=True)
    assert res.results
    assert_result_shape(res.results)
    seen = 0
    for r in res.results:
        srcs = r.source_events  # SourceEvent.from_dict needs event_id, kind, content
        if r.source_event_ids:
            assert srcs, f"result {r.id} cites events but returned no source_events"
        for ev in srcs:
            seen += 1
            assert ev.event_id in ids
            assert ev.event_id in r.source_event_ids
            assert ev.kind in KINDS
            assert ev.content in contents
            assert ev.ts is None or isinstance(ev.ts, str)
    assert seen >= 1


def test_search_other_actor_sees_nothing(client):
    actor, session, token = uid("actor"), uid("sess"), uuid.uuid4().hex[:8]
    ingest_and_wait(client, corpus(actor, session, token))
    res = client.search(f"Alice {token} marine biologist", actor_id=uid("stranger"))
    for r in res.results:
        assert token not in r.content


def test_search_session_scoping(client):
    actor, s1, s2, token = uid("actor"), uid("sess"), uid("sess"), uuid.uuid4().hex[:8]
    ingest_and_wait(client, corpus(actor, s1, token))
    only = client.search("Alice marine biologist", actor_id=actor, session_id=s1)
    assert only.results and all(r.session_id in (s1, None) for r in only.results)
    excl = client.search("Alice marine biologist", actor_id=actor, exclude_session_id=s1)
    assert all(r.session_id != s1 for r in excl.results)
    other = client.search("Alice marine biologist", actor_id=actor, session_id=s2)
    assert all(r.session_id in (s2, None) for r in other.results)


def test_search_limit_and_extra_fields_accepted(client):
    actor, session, token = uid("actor"), uid("sess"), uuid.uuid4().hex[:8]
    ingest_and_wait(client, corpus(actor, session, token))
    # memsy always sends limit/threshold/include_source_events and, when given, role_ids/team_ids
    # (not in engram's spec) -> unknown request fields must be ignored, not 422.
    res = client.search(
        "Alice", actor_id=actor, limit=1, threshold=0.0, role_ids=["role_eng"], team_ids=["t1"]
    )
    assert len(res.results) <= 1


# --------------------------------------------------------------------------- 422


def _ev(**over) -> EventPayload:
    base = dict(actor_id=uid("actor"), session_id=uid("sess"), kind="user_message", content="hi")
    base.update(over)
    return EventPayload(**base)


@pytest.mark.parametrize(
    "event, field",
    [
        (lambda: _ev(kind="bogus_kind"), "kind"),
        (lambda: _ev(content="   "), "content"),
        (lambda: _ev(content=""), "content"),
        (lambda: _ev(content="x" * 8001), "content"),
        (lambda: _ev(actor_id=""), "actor_id"),
        (lambda: _ev(session_id="s" * 257), "session_id"),
    ],
)
def test_ingest_invalid_event_is_422(client, event, field):
    with pytest.raises(MemsyAPIError) as ei:
        client.ingest([event()])
    e = ei.value
    assert type(e) is MemsyAPIError  # memsy has no 422 subclass
    assert e.status_code == 422
    assert isinstance(e.detail, str) and e.detail
    assert field in e.detail  # holds for the list-shaped detail (raw text) and a message naming the field


def test_invalid_event_rejects_whole_batch(client):
    actor = uid("actor")
    with pytest.raises(MemsyAPIError) as ei:
        client.ingest([_ev(actor_id=actor), _ev(actor_id=actor, kind="nope")])
    assert ei.value.status_code == 422


@pytest.mark.parametrize("limit", [0, 101])
def test_search_bad_limit_is_422(client, limit):
    with pytest.raises(MemsyAPIError) as ei:
        client.search("anything", limit=limit)
    assert ei.value.status_code == 422


def test_status_too_many_ids_is_422(client):
    with pytest.raises(MemsyAPIError) as ei:
        client.status([f"id{i}" for i in range(501)])
    assert ei.value.status_code == 422


def test_422_error_code_readable_by_memsy(client):
    """Requires the extra top-level/inner `error` key recommended in memsy.md.

    memsy reads its error code from `error` (never `code`); without it e.error_code is None.
    """
    with pytest.raises(MemsyAPIError) as ei:
        client.ingest([_ev(kind="bogus_kind")])
    assert ei.value.error_code is not None


# --------------------------------------------------------------------------- 401


def test_valid_key_works(server_with_key):
    with make_client(server_with_key, api_key=server_with_key.api_key) as c:
        assert c.health().status == "ok"
        ids = c.ingest([_ev()]).event_ids
        assert len(ids) == 1
        st = c.status(ids)
        assert st.total == 1
        c.search("hi")


@pytest.mark.parametrize("call", ["ingest", "status", "search"])
def test_bad_key_raises_authentication_error(server_with_key, call):
    with make_client(server_with_key, api_key="engram-definitely-not-a-key") as c:
        fn = {
            "ingest": lambda: c.ingest([_ev()]),
            "status": lambda: c.status(["01HZZZZZZZZZZZZZZZZZZZZZZZ"]),
            "search": lambda: c.search("anything"),
        }[call]
        with pytest.raises(AuthenticationError) as ei:
            fn()
    e = ei.value
    assert e.status_code == 401
    assert isinstance(e.detail, str) and e.detail  # from detail.message
    assert "Authentication failed" in str(e)


def test_bad_key_wire_envelope(server_with_key):
    r = httpx.post(
        v1(server_with_key.url) + "/search",
        json={"query": "x"},
        headers={"Authorization": "Bearer engram-definitely-not-a-key"},
    )
    assert r.status_code == 401
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("detail"), dict)
    assert body["detail"]["code"] == "unauthorized"
    assert isinstance(body["detail"]["message"], str) and body["detail"]["message"]


def test_401_error_code_readable_by_memsy(server_with_key):
    """Requires `detail.error == "unauthorized"` (recommended in memsy.md)."""
    with make_client(server_with_key, api_key="engram-definitely-not-a-key") as c:
        with pytest.raises(AuthenticationError) as ei:
            c.search("anything")
    assert ei.value.error_code == "unauthorized"


# --------------------------------------------------------------------------- async client


def test_async_client_roundtrip(server):
    async def main():
        key = getattr(server, "api_key", None) or OPEN_KEY
        async with AsyncMemsyClient(base_url=v1(server.url), api_key=key, max_retries=0) as c:
            h = await c.health()
            assert h.status == "ok"
            actor, session, token = uid("actor"), uid("sess"), uuid.uuid4().hex[:8]
            ids = (await c.ingest(corpus(actor, session, token))).event_ids
            deadline = time.monotonic() + PROCESS_TIMEOUT_S
            while True:
                st = await c.status(ids)
                if not st.pending_ids:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            assert set(st.completed_ids) == set(ids)
            res = await c.search("Alice marine biologist", actor_id=actor, include_source_events=True)
            assert res.results
            assert_result_shape(res.results)
            with pytest.raises(MemsyAPIError) as ei:
                await c.ingest([_ev(kind="bogus_kind")])
            assert ei.value.status_code == 422

    asyncio.run(main())


def test_connection_error_is_memsy_error():
    # sanity of the client contract itself: unreachable server -> MemsyConnectionError (a MemsyError)
    with MemsyClient(base_url="http://127.0.0.1:9/v1", api_key="k", timeout=2) as c:
        with pytest.raises(MemsyError):
            c.health()
