"""Hostile input, over real HTTP on both API families (issue 12): every bad request is a clear
4xx in the error envelope, nothing it sends is stored half-way or poisons later reads, and no
field that names a scope is dropped.

Bodies are sent as raw bytes, so the JSON text is exactly what a hostile client would write
(`\\udc00` escapes, 1,000-deep nesting, integers past 64 bits). The cases that depend on the
store (NUL in ids and values, which PostgreSQL refuses in text and jsonb; very large filters,
which both SQL dialects must accept) run on SQLite and on a real PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from engram.errors import STATUS_BY_CODE
from tests.conftest import ServerProcess, server_on_postgres, wait_job

SURROGATE = "\\udc00"  # as JSON text: a lone low surrogate escape
EDGE_TIMES = ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"]
HEADER_TIMEOUT_S = 2.0  # the module's server: slow clients are cut off after this


# ---------------------------------------------------------------------- servers
@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("hostile") / "data",
                        env={"ENGRAM_EPISODE_EVERY_TURNS": "1000", "ENGRAM_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
                             "ENGRAM_HTTP_BODY_TIMEOUT_S": str(HEADER_TIMEOUT_S),
                             "ENGRAM_HTTP_KEEPALIVE_TIMEOUT_S": str(HEADER_TIMEOUT_S)}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def pg_server(postgres: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_on_postgres(postgres, tmp_path_factory.mktemp("hostile_pg") / "data", "engram_hostile",
                            {"ENGRAM_EPISODE_EVERY_TURNS": "1000"}) as srv:
        yield srv


@pytest.fixture(params=["sqlite", "pg"])
def any_server(request: pytest.FixtureRequest) -> ServerProcess:
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture
def client(sqlite_server: ServerProcess) -> Iterator[httpx.Client]:
    with sqlite_server.client() as c:
        yield c


def uid() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


def raw(client: httpx.Client, method: str, path: str, body: str | bytes, **kwargs: Any) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return client.request(method, path, content=content, headers={"content-type": "application/json"}, **kwargs)


LIST_SHAPED = {("POST", "/v1/memories")}


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """A 4xx in the envelope: `detail.code` registered for this status (list-shaped 422 on the
    operations whose contract says so, with the code at the top level)."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    if isinstance(body["detail"], list):
        found = body["code"]
        assert body["message"]
    else:
        found = body["detail"]["code"]
        assert body["detail"]["error"] == found and body["detail"]["message"]
    # what the xtrace SDKs read: the same code beside `detail`
    assert body["error"]["code"] == found and body["error"]["type"] and body["error"]["message"], body
    assert STATUS_BY_CODE[found] == status or found == "invalid_request", found
    if code is not None:
        assert found == code, body
    return body


def message_of(response: httpx.Response) -> str:
    body = response.json()
    return body["message"] if isinstance(body["detail"], list) else body["detail"]["message"]


def ingest_x(client: httpx.Client, user: str, text: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/memories?wait=true", json={
        "messages": [{"role": "user", "content": text}], "user_id": user, "conv_id": "c1", **extra})
    assert response.status_code == 200 and response.json()["status"] == "succeeded", response.text
    return response.json()


def reads_still_answer(client: httpx.Client, user: str, memory_id: str | None = None) -> None:
    """The org's reads that would touch what was sent: list, search, get, revisions."""
    assert client.get("/v1/memories").status_code == 200
    assert client.get("/v1/memories", params={"user_id": user}).status_code == 200
    assert client.post("/v1/memories/search", json={"query": "anything at all"}).status_code == 200
    assert client.post("/v1/memories/search", json={"query": "bike", "filters": {"user_id": user}}).status_code == 200
    assert client.post("/v1/search", json={"query": "bike", "actor_id": user}).status_code == 200
    if memory_id:
        assert client.get(f"/v1/memories/{memory_id}").status_code == 200
        assert client.get(f"/v1/memories/{memory_id}/revisions").status_code == 200


# ---------------------------------------------------------------------- 1. lone surrogates
SURROGATE_BODIES = {
    "X ingest content": ("POST", "/v1/memories",
                         '{"messages":[{"role":"user","content":"I ride a bike %s"}],"user_id":"u","conv_id":"c"}'),
    "X ingest metadata value": ("POST", "/v1/memories",
                                '{"messages":[{"role":"user","content":"hi"}],"user_id":"u","conv_id":"c",'
                                '"metadata":{"k":"%s"}}'),
    "X ingest metadata key": ("POST", "/v1/memories",
                              '{"messages":[{"role":"user","content":"hi"}],"user_id":"u","conv_id":"c",'
                              '"metadata":{"k%s":1}}'),
    "X ingest user_id": ("POST", "/v1/memories",
                         '{"messages":[{"role":"user","content":"hi"}],"user_id":"u%s","conv_id":"c"}'),
    "X ingest role": ("POST", "/v1/memories",
                      '{"messages":[{"role":"user%s","content":"hi"}],"user_id":"u","conv_id":"c"}'),
    "X ingest name": ("POST", "/v1/memories",
                      '{"messages":[{"role":"user","content":"hi","name":"A%s"}],"user_id":"u","conv_id":"c"}'),
    "X search query": ("POST", "/v1/memories/search", '{"query":"bike %s"}'),
    "X search filter value": ("POST", "/v1/memories/search", '{"query":"bike","filters":{"user_id":"%s"}}'),
    "X search filter key": ("POST", "/v1/memories/search", '{"query":"bike","filters":{"k%s":1}}'),
    "X search cursor": ("POST", "/v1/memories/search", '{"query":"bike","cursor":"%s"}'),
    "M ingest content": ("POST", "/v1/ingest",
                         '{"events":[{"actor_id":"a","session_id":"s","kind":"user_message","content":"x%s"}]}'),
    "M ingest actor_id": ("POST", "/v1/ingest",
                          '{"events":[{"actor_id":"a%s","session_id":"s","kind":"user_message","content":"x"}]}'),
    "M ingest metadata object": ("POST", "/v1/ingest",
                                 '{"events":[{"actor_id":"a","session_id":"s","kind":"user_message","content":"x",'
                                 '"metadata":{"k":"%s"}}]}'),
    "M status event_ids": ("POST", "/v1/status", '{"event_ids":["01%s"]}'),
    "M search query": ("POST", "/v1/search", '{"query":"x%s"}'),
    "M search actor_id": ("POST", "/v1/search", '{"query":"x","actor_id":"%s"}'),
}


@pytest.mark.parametrize("case", sorted(SURROGATE_BODIES))
def test_a_lone_surrogate_anywhere_in_a_body_is_422(client: httpx.Client, case: str) -> None:
    method, path, template = SURROGATE_BODIES[case]
    response = raw(client, method, path, template % SURROGATE)
    assert_error(response, 422, "validation_error")
    assert "surrogate" in message_of(response)
    # A well-formed pair is text like any other: the same body with an emoji is accepted.
    fine = raw(client, method, path, template % "\\ud83d\\ude00")
    assert fine.status_code < 400 or fine.status_code == 422 and "surrogate" not in message_of(fine), fine.text


def test_patch_with_a_surrogate_is_refused_and_the_memory_stays_readable(client: httpx.Client) -> None:
    user = uid()
    done = ingest_x(client, user, "I ride a red bike to work.")
    memory_id = done["result"]["memories_created"][0]["id"]
    for body in ('{"metadata":{"k":"%s"}}' % SURROGATE, '{"metadata":{"k%s":"v"}}' % SURROGATE,
                 '{"text":"I ride a blue bike %s"}' % SURROGATE):
        assert_error(raw(client, "PATCH", f"/v1/memories/{memory_id}", body), 422, "validation_error")
    reads_still_answer(client, user, memory_id)
    assert client.get(f"/v1/memories/{memory_id}").json()["metadata"] == {}


def test_family_m_metadata_text_the_reader_refuses_is_kept_raw(client: httpx.Client) -> None:
    """Family M's metadata is a JSON *string*; one whose JSON holds a lone surrogate, or nests
    1,000 deep, is text engram keeps as {"raw": …} (SPEC §4), never a 500 and never a row that
    breaks reads."""
    actor = uid()
    surrogate = '{"k":"\\udc00"}'
    deep = "[" * 1000 + "]" * 1000
    ids = []
    for i, metadata in enumerate((surrogate, deep)):
        response = client.post("/v1/ingest", json={"events": [
            {"actor_id": actor, "session_id": f"s{i}", "kind": "user_message", "metadata": metadata,
             "content": f"I ride my bike to lake number {i + 40}."}]})
        assert response.status_code == 200, response.text
        ids.extend(response.json()["event_ids"])
    deadline = time.monotonic() + 60
    while client.post("/v1/status", json={"event_ids": ids}).json()["pendingIds"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert client.post("/v1/status", json={"event_ids": ids}).json()["completedIds"] == ids
    found = client.post("/v1/search", json={"query": "bike lake", "actor_id": actor}).json()["results"]
    raws = sorted(r["metadata"]["raw"] for r in found)
    assert raws == sorted([surrogate, deep])
    reads_still_answer(client, actor)


def test_a_row_written_before_the_reader_was_strict_still_reads(sqlite_server: ServerProcess,
                                                                client: httpx.Client) -> None:
    """Defence in depth: a surrogate already in a stored row (from an older engram) is answered
    escaped, not with a 500, by get, revisions, list and search."""
    user = uid()
    done = ingest_x(client, user, "I ride a green bike on Sundays.")
    memory_id = done["result"]["memories_created"][0]["id"]
    db = sqlite3.connect(sqlite_server.data_dir / "engram.db")
    db.execute("UPDATE memories SET metadata=? WHERE id=?", ('{"k":"\\udc00"}', memory_id))
    db.commit()
    db.close()
    got = client.get(f"/v1/memories/{memory_id}")
    assert got.status_code == 200 and got.json()["metadata"] == {"k": "\udc00"}
    reads_still_answer(client, user, memory_id)
    listed = client.get("/v1/memories", params={"user_id": user})
    assert listed.status_code == 200 and listed.json()["data"][0]["metadata"] == {"k": "\udc00"}


# ---------------------------------------------------------------------- NUL, on both stores
def test_nul_in_ids_values_and_paths_is_a_4xx_on_every_store(any_server: ServerProcess) -> None:
    with any_server.client() as c:
        for body in (
            {"messages": [{"role": "user", "content": "hi"}], "user_id": "u\x00", "conv_id": "c"},
            {"messages": [{"role": "user\x00", "content": "hi"}], "user_id": "u", "conv_id": "c"},
            {"messages": [{"role": "user", "content": "hi"}], "user_id": "u", "conv_id": "c",
             "metadata": {"k": "v\x00"}},
            {"messages": [{"role": "user", "content": "hi"}], "user_id": "u", "conv_id": "c",
             "metadata": {"k\x00": "v"}},
        ):
            assert_error(c.post("/v1/memories", json=body), 422, "validation_error")
        assert_error(c.post("/v1/ingest", json={"events": [
            {"actor_id": "a\x00", "session_id": "s", "kind": "user_message", "content": "x"}]}), 422)
        assert_error(c.post("/v1/ingest", json={"events": [
            {"actor_id": "a", "session_id": "s", "kind": "user_message", "content": "x",
             "metadata": '{"k": "\\u0000"}'}]}), 422)
        assert_error(c.post("/v1/status", json={"event_ids": ["01\x00"]}), 422)
        assert_error(c.post("/v1/memories/search", json={"query": "x", "filters": {"user_id": "a\x00"}}), 400,
                     "invalid_filter")
        assert_error(c.post("/v1/search", json={"query": "x", "actor_id": "a\x00"}), 422)
        assert_error(c.get("/v1/memories", params={"user_id": "a\x00"}), 422)
        for path in ("/v1/memories/a%00b", "/v1/memories/a%00b/revisions", "/v1/memories/jobs/job_%00"):
            assert_error(c.get(path), 404)
        assert_error(c.delete("/v1/memories/a%00b"), 404)
        assert_error(c.patch("/v1/memories/a%00b", json={"metadata": {"k": 1}}), 404)
        # NUL in free text is stripped (SPEC §4), in a query too: accepted and searchable.
        user = uid()
        done = c.post("/v1/memories?wait=true", json={
            "messages": [{"role": "user", "content": "I keep\x00 three goats."}], "user_id": user, "conv_id": "c"})
        assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
        found = c.post("/v1/memories/search", json={"query": "goats\x00", "filters": {"user_id": user}})
        assert found.status_code == 200 and "goats" in found.json()["data"][0]["text"]


def test_metadata_numbers_must_be_finite_and_fit_64_bits(client: httpx.Client) -> None:
    for number in ("1e400", "-1e400", str(2 ** 64), str(-(2 ** 63) - 1)):
        body = ('{"messages":[{"role":"user","content":"hi"}],"user_id":"u","conv_id":"c","metadata":{"n":%s}}'
                % number)
        assert_error(raw(client, "POST", "/v1/memories", body), 422, "validation_error")
        event = ('{"events":[{"actor_id":"a","session_id":"s","kind":"user_message","content":"x",'
                 '"metadata":"{\\"n\\": %s}"}]}' % number)
        assert_error(raw(client, "POST", "/v1/ingest", event), 422, "validation_error")
    for literal in ("NaN", "Infinity", "-Infinity"):
        body = ('{"messages":[{"role":"user","content":"hi"}],"user_id":"u","conv_id":"c","metadata":{"n":%s}}'
                % literal)
        assert_error(raw(client, "POST", "/v1/memories", body), 422, "validation_error")
    ok = ('{"messages":[{"role":"user","content":"hi"}],"user_id":"u","conv_id":"c","metadata":{"n":%d}}'
          % (2 ** 63 - 1))
    assert raw(client, "POST", "/v1/memories", ok).status_code == 202


# ---------------------------------------------------------------------- 2. forged cursors
def _envelope(position: Any) -> str:
    payload = json.dumps({"o": "0" * 12, "s": "0" * 16, "p": position}).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


FORGED_POSITIONS = [["x"], ["2026-01-01T00:00:00.000000Z", 5], [1, 2], "abc", 10 ** 30, -5, 1.5, None, {"a": 1},
                    [["nested"]], "x" * 5000]


def test_forged_and_tampered_cursors_are_invalid_cursor(client: httpx.Client) -> None:
    user = uid()
    ingest_x(client, user, "I ride a bike. I keep bees. I grow figs. I sail boats.")
    real_search = client.post("/v1/memories/search", json={"query": "bike", "filters": {"user_id": user},
                                                           "limit": 1}).json()["next_cursor"]
    real_list = client.get("/v1/memories", params={"user_id": user, "limit": 1}).json()["next_cursor"]
    assert real_search and real_list
    body, tag = real_list.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged = [_envelope(p) for p in FORGED_POSITIONS]
    for position in FORGED_POSITIONS:  # a real envelope and tag around another position
        edited = base64.urlsafe_b64encode(json.dumps({**payload, "p": position}).encode()).decode().rstrip("=")
        forged.append(f"{edited}.{tag}")
    forged += [".", "a.b.c", "%%%", real_list + "x", "A" * 5000, real_list.replace(".", "")]
    for cursor in forged:
        assert_error(client.get("/v1/memories", params={"user_id": user, "cursor": cursor}), 422, "invalid_cursor")
        assert_error(client.post("/v1/memories/search", json={"query": "bike", "filters": {"user_id": user},
                                                               "cursor": cursor}), 422, "invalid_cursor")
    assert client.get("/v1/memories", params={"user_id": user, "cursor": real_list, "limit": 1}).status_code == 200
    assert client.post("/v1/memories/search", json={"query": "bike", "filters": {"user_id": user},
                                                    "limit": 1, "cursor": real_search}).status_code == 200


# ---------------------------------------------------------------------- 3. filters
def test_filters_past_the_limits_are_invalid_filter(client: httpx.Client) -> None:
    def search(filters: str) -> httpx.Response:
        return raw(client, "POST", "/v1/memories/search", '{"query":"bike","filters":%s}' % filters)

    assert_error(search('{"n": %d}' % 2 ** 64), 400, "invalid_filter")
    assert_error(search('{"n": {"$gt": %d}}' % -(2 ** 70)), 400, "invalid_filter")
    assert_error(search('{"n": {"$in": [1, %d]}}' % 2 ** 64), 400, "invalid_filter")
    deep_not = '{"NOT":' * 50 + '{"a":1}' + "}" * 50
    assert_error(search(deep_not), 400, "invalid_filter")
    deep_and = '{"AND":[' * 50 + '{"a":1}' + "]}" * 50
    assert_error(search(deep_and), 400, "invalid_filter")
    # Nesting past the JSON reader's own limit (200) is refused while the body is read.
    assert_error(search('{"NOT":' * 300 + '{"a":1}' + "}" * 300), 422, "validation_error")
    many = json.dumps({"tag": {"$in": [f"v{i}" for i in range(5000)]}})
    assert_error(search(many), 400, "invalid_filter")
    ors = json.dumps({"OR": [{"tag": f"v{i}"} for i in range(5000)]})
    assert_error(search(ors), 400, "invalid_filter")
    long_value = json.dumps({"tag": "x" * 5000})
    assert_error(search(long_value), 400, "invalid_filter")


def test_filters_at_the_limits_run_on_every_store(any_server: ServerProcess) -> None:
    """The largest filters the limits admit compile to SQL that both dialects accept."""
    with any_server.client() as c:
        user = uid()
        done = c.post("/v1/memories?wait=true", json={
            "messages": [{"role": "user", "content": "I ride a bike to the harbour."}], "user_id": user,
            "conv_id": "c", "metadata": {"tag": "v7", "n": 7}})
        assert done.status_code == 200
        nested = {"tag": "v7"}
        for _ in range(8):  # depth 10 with the top level and the operator-free leaf
            nested = {"NOT": {"NOT": nested}} if len(json.dumps(nested)) < 0 else {"AND": [nested]}
        for filters in (
            {"user_id": user, "tag": {"$in": [f"v{i}" for i in range(499)]}},
            {"user_id": user, "OR": [{"n": i} for i in range(499)]},
            {"user_id": user, "NOT": {"tag": {"$nin": [f"v{i}" for i in range(490)]}}},
            {"user_id": user, **nested},
        ):
            response = c.post("/v1/memories/search", json={"query": "bike", "filters": filters})
            assert response.status_code == 200, response.text[:300]
            assert [m["user_id"] for m in response.json()["data"]] == [user], filters.keys()


# ---------------------------------------------------------------------- 4. timestamps
@pytest.mark.parametrize("edge", EDGE_TIMES)
def test_times_outside_the_calendar_in_utc_are_422(client: httpx.Client, edge: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi", "date": edge}], "user_id": "u", "conv_id": "c"}
    refused = assert_error(client.post("/v1/memories", json=body), 422, "validation_error")
    assert refused["detail"][0]["loc"] == ["body", "messages", 0, "date"]
    event = {"actor_id": "a", "session_id": "s", "kind": "user_message", "content": "x", "ts": edge}
    refused = assert_error(client.post("/v1/ingest", json={"events": [event]}), 422, "validation_error")
    assert refused["detail"]["errors"][0]["loc"] == ["body", "events", 0, "ts"]
    assert_error(client.post("/v1/memories/search", json={"query": "x", "filters": {"created_at": {"$gt": edge}}}),
                 400, "invalid_filter")
    assert_error(client.post("/v1/memories/search", json={"query": "x", "filters": {"when": {"$lt": edge}}}),
                 400, "invalid_filter")


def test_the_last_instant_of_the_calendar_is_a_valid_date(client: httpx.Client) -> None:
    user = uid()
    response = client.post("/v1/memories?wait=true", json={
        "messages": [{"role": "user", "content": "Tomorrow I ride my bike to the end of time.",
                      "date": "9999-12-31T23:59:59Z"}], "user_id": user, "conv_id": "c"})
    assert response.status_code == 200 and response.json()["status"] == "succeeded", response.text
    reads_still_answer(client, user, response.json()["result"]["memories_created"][0]["id"])


# ---------------------------------------------------------------------- 6. chunked bodies
BODY_ROUTES = [("POST", "/v1/memories"), ("POST", "/v1/memories/search"), ("PATCH", "/v1/memories/some-id"),
               ("POST", "/v1/ingest"), ("POST", "/v1/status"), ("POST", "/v1/search")]


@pytest.mark.parametrize("method,path", BODY_ROUTES)
def test_a_chunked_body_over_the_limit_is_413_everywhere(client: httpx.Client, method: str, path: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"query":"'
        for _ in range(6):  # 6 MiB against the default 5 MiB limit
            yield b"a" * (1024 * 1024)
        yield b'"}'

    response = client.request(method, path, content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")
    declared = client.request(method, path, content=b"x" * (5 * 1024 * 1024 + 1),
                              headers={"content-type": "application/json"})
    assert_error(declared, 413, "payload_too_large")


# ---------------------------------------------------------------------- 7. text limits
def test_queries_and_free_text_have_limits(client: httpx.Client) -> None:
    assert_error(client.post("/v1/memories/search", json={"query": "bike " * 801}), 422, "validation_error")
    assert_error(client.post("/v1/search", json={"query": "bike " * 801}), 422, "validation_error")
    huge = "bike lake " * 490_000  # 4.9 MB: refused before any scoring (its cost: bench/query_cost.py)
    assert_error(client.post("/v1/memories/search", json={"query": huge}), 422, "validation_error")
    assert_error(client.post("/v1/search", json={"query": huge}), 422, "validation_error")
    assert client.post("/v1/memories/search", json={"query": "bike " * 799}).status_code == 200
    long_id = "x" * 257
    for message in ({"role": long_id, "content": "hi"}, {"role": "user", "content": "hi", "name": long_id},
                    {"role": "user", "content": "hi", "dia_id": long_id}):
        assert_error(client.post("/v1/memories", json={"messages": [message], "user_id": "u", "conv_id": "c"}),
                     422, "validation_error")
    assert_error(client.post("/v1/memories", json={"messages": [{"role": "user", "content": "hi"}], "user_id": "u",
                                                   "conv_id": "c"}, headers={"Idempotency-Key": long_id}), 422)
    assert_error(client.post("/v1/status", json={"event_ids": [long_id]}), 422, "validation_error")
    assert_error(client.post("/v1/search", json={"query": "x", "role_ids": [long_id]}), 422, "validation_error")


# ---------------------------------------------------------------------- 8. secrets
SECRET_TURNS = ["my pw is hunter2", "My password's hunter2.", "My login is bob and the pass is hunter2.",
                "My passphrase is correct horse battery staple.", "Mein Passwort ist hunter2.",
                "here is my key sk-abcdefghijklmnopqrstuvwxyzABCDEFGH"]


def test_secrets_in_any_field_never_become_memories(client: httpx.Client) -> None:
    """Each campaign sentence, and secrets in a message's name or the call's metadata, fail
    with content_rejected on both families; the clean turn beside them becomes memory and
    nothing of the secret comes back through search (source events included)."""
    user = uid()
    calls = [{"messages": [{"role": "user", "content": text}]} for text in SECRET_TURNS]
    calls.append({"messages": [{"role": "user", "content": "I ride a bike.", "name": "token ghp_"
                                "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"}]})
    calls.append({"messages": [{"role": "user", "content": "I ride a bike."}],
                  "metadata": {"api_key": "sk-proj-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe"}})
    calls.append({"messages": [{"role": "user", "content": "I ride a bike."}], "metadata": {"password": "hunter2"}})
    for i, call in enumerate(calls):
        done = client.post("/v1/memories?wait=true", json={**call, "user_id": user, "conv_id": f"c{i}"}).json()
        assert done["status"] == "failed" and done["error"]["code"] == "content_rejected", (call, done)
    actor = uid()
    events = [{"actor_id": actor, "session_id": "s", "kind": "user_message", "content": text} for text in SECRET_TURNS]
    events.append({"actor_id": actor, "session_id": "s", "kind": "user_message", "content": "I ride a bike.",
                   "metadata": json.dumps({"token": "xoxb-1234567890-abcdefghij"})})
    events.append({"actor_id": actor, "session_id": "s", "kind": "user_message", "content": "I keep three goats."})
    ids = client.post("/v1/ingest", json={"events": events}).json()["event_ids"]
    deadline = time.monotonic() + 60
    while (status := client.post("/v1/status", json={"event_ids": ids}).json())["pendingIds"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert status["completedIds"] == ids[-1:]
    assert set(status["failedIds"]) == set(ids[:-1]) and set(status["reasons"].values()) == {"content_rejected"}
    for scope in ({"filters": {"user_id": user}}, {"filters": {"user_id": actor}}):
        found = client.post("/v1/memories/search", json={"query": "password pass key token bike goats",
                                                          "include": ["source_events"], **scope}).json()
        text = json.dumps(found)
        assert "hunter2" not in text and "sk-" not in text and "xoxb" not in text and "ghp_" not in text


# ---------------------------------------------------------------------- 11. scope fields
def test_top_level_scope_fields_of_the_v1_contract_narrow_a_search(client: httpx.Client) -> None:
    alice, bob = uid(), uid()
    for user, app in ((alice, "app-a"), (bob, "app-b")):
        done = client.post("/v1/memories?wait=true", json={
            "messages": [{"role": "user", "content": f"My favourite bike is the {app} tourer."}],
            "user_id": user, "conv_id": "c", "agent_id": f"agent-{user}", "app_id": app})
        assert done.status_code == 200
    users = lambda r: {m["user_id"] for m in r.json()["data"]}  # noqa: E731
    assert users(client.post("/v1/memories/search", json={"query": "bike", "user_id": alice})) == {alice}
    assert users(client.post("/v1/memories/search", json={"query": "bike", "agent_id": f"agent-{bob}"})) == {bob}
    assert users(client.post("/v1/memories/search", json={"query": "bike", "app_id": "app-a",
                                                           "filters": {"user_id": {"$in": [alice, bob]}}})) == {alice}
    # Top-level and `filters` scopes are ANDed: they can only narrow.
    assert users(client.post("/v1/memories/search", json={"query": "bike", "user_id": alice,
                                                           "filters": {"user_id": bob}})) == set()
    # No memory is in a group: a group scope finds nothing, never everything.
    grouped = client.post("/v1/memories/search", json={"query": "bike", "group_ids": ["grp_1"]})
    assert grouped.status_code == 200 and grouped.json()["data"] == []
    listed = client.get("/v1/memories", params={"group_id": "grp_1"})
    assert listed.status_code == 200 and listed.json()["data"] == []
    assert_error(client.post("/v1/memories/search", json={"query": "bike", "user_id": "a\x00"}), 422)


def test_ingest_group_ids_are_echoed_as_ignored(client: httpx.Client) -> None:
    done = client.post("/v1/memories?wait=true", json={
        "messages": [{"role": "user", "content": "I ride a bike."}], "user_id": uid(), "conv_id": "c",
        "group_ids": ["grp_a", "grp_b", "grp_a"]})
    assert done.status_code == 200 and done.json()["result"]["ignored_group_ids"] == ["grp_a", "grp_b"]


def test_memsy_role_and_team_scopes_narrow_a_search(client: httpx.Client) -> None:
    actor = uid()
    events = [{"actor_id": actor, "session_id": f"s-{role}", "kind": "user_message", "role_id": role,
               "team_id": team, "content": f"I ride the {role} bike with the {team} crew."}
              for role, team in (("r-eng", "t-1"), ("r-ops", "t-2"))]
    ids = client.post("/v1/ingest", json={"events": events}).json()["event_ids"]
    deadline = time.monotonic() + 60
    while client.post("/v1/status", json={"event_ids": ids}).json()["pendingIds"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    def roles(**body: Any) -> set[str]:
        response = client.post("/v1/search", json={"query": "bike crew", "actor_id": actor, **body})
        assert response.status_code == 200, response.text
        return {r["metadata"].get("role_id") for r in response.json()["results"]}

    assert roles() == {"r-eng", "r-ops"}
    assert roles(role_ids=["r-eng"]) == {"r-eng"}
    assert roles(team_ids=["t-2"]) == {"r-ops"}
    assert roles(role_ids=["r-eng"], team_ids=["t-2"]) == set()
    assert roles(role_ids=["nobody"]) == set()


# ---------------------------------------------------------------------- the OpenAPI document
# Operations defined for any id, never 404: erasing or retracting what is not there removes
# nothing (zero counts), and exporting it is an empty export (docs/lifecycle.md).
ANY_ID = {("delete", "/v1/users/{user_id}"), ("delete", "/v1/conversations/{conv_id}"),
          ("get", "/v1/users/{user_id}/export"), ("get", "/v1/conversations/{conv_id}/export")}


def test_the_openapi_document_tells_the_truth(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    ingest_x_ref = doc["paths"]["/v1/memories"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "messages" in schemas[ingest_x_ref["$ref"].rsplit("/", 1)[1]]["properties"]
    ingest_m_ref = doc["paths"]["/v1/ingest"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "events" in schemas[ingest_m_ref["$ref"].rsplit("/", 1)[1]]["properties"]
    embeds = {("post", "/v1/memories/search"), ("post", "/v1/search"), ("patch", "/v1/memories/{memory_id}")}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            responses = op["responses"]
            if path != "/v1/health":
                assert {"401", "403"} <= set(responses), (method, path)
            if "{" in path and (method, path) not in ANY_ID:
                assert "404" in responses, (method, path)
            elif (method, path) in ANY_ID:
                assert "404" not in responses, (method, path)
            if "requestBody" in op:
                assert "413" in responses and "422" in responses, (method, path)
            # the query embedding is the only provider call a request waits for
            assert ("429" in responses) == ((method, path) in embeds), (method, path)
            if "422" in responses:
                schema = responses["422"]["content"]["application/json"]["schema"]
                name = schema["$ref"].rsplit("/", 1)[1]
                shaped = "list" if (method.upper(), path) in {("POST", "/v1/memories"),
                                                              ("GET", "/v1/memories/jobs/{job_id}"),
                                                              ("GET", "/v1/memories/{memory_id}"),
                                                              ("DELETE", "/v1/memories/{memory_id}")} else "envelope"
                detail = schemas[name]["properties"]["detail"]
                assert (detail.get("type") == "array") == (shaped == "list"), (method, path, name)


def test_405_names_every_method_of_the_path(client: httpx.Client) -> None:
    response = client.put("/v1/memories")
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    response = client.post("/v1/memories/some-id")
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "PATCH", "DELETE"}


# ---------------------------------------------------------------------- slow clients
def _closed_within(sock: socket.socket, seconds: float, trickle: bytes | None = None) -> tuple[bool, bytes]:
    """Whether the server closes `sock` within `seconds` (sending `trickle` every 0.5 s
    meanwhile), and what it sent before closing."""
    sock.settimeout(0.5)
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if trickle:
                sock.sendall(trickle)
            data = sock.recv(1 << 16)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True, received
        if not data:
            return True, received
        received += data
    return False, received


def _read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (headers, then as many body bytes as Content-Length says)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1 << 16)
        assert chunk, "closed before the response"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        chunk = sock.recv(1 << 16)
        assert chunk, "closed inside the response"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_connection_that_never_finishes_its_headers_is_closed(sqlite_server: ServerProcess) -> None:
    """Slowloris: a client that trickles header lines is answered 408 and cut off once the
    header timeout passes; the server answers everyone else meanwhile."""
    with socket.create_connection(("127.0.0.1", sqlite_server.port)) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert httpx.get(f"{sqlite_server.url}/v1/health", timeout=2).status_code == 200
        closed, received = _closed_within(sock, HEADER_TIMEOUT_S * 5, trickle=b"X-Slow: 1\r\n")
        assert closed and received.startswith(b"HTTP/1.1 408"), received[:200]
        assert time.monotonic() - started >= HEADER_TIMEOUT_S * 0.9
    assert httpx.get(f"{sqlite_server.url}/v1/health", timeout=2).status_code == 200


def test_a_body_that_stops_arriving_is_cut_off(sqlite_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", sqlite_server.port)) as sock:
        sock.sendall(b"POST /v1/search HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 100\r\n\r\n{\"query\":")
        closed, received = _closed_within(sock, HEADER_TIMEOUT_S * 5)
        assert closed, received[:200]


def test_a_connection_that_sends_nothing_is_closed(sqlite_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", sqlite_server.port)) as sock:
        closed, _ = _closed_within(sock, HEADER_TIMEOUT_S * 5)
        assert closed


def test_a_kept_alive_connection_serves_requests_then_idles_out(sqlite_server: ServerProcess) -> None:
    """The limits are on waiting for a client, not on a client that talks: three requests on
    one connection are answered, then the idle connection is closed."""
    with socket.create_connection(("127.0.0.1", sqlite_server.port)) as sock:
        sock.settimeout(10)
        for _ in range(3):
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(sock).startswith(b"HTTP/1.1 200")
            time.sleep(HEADER_TIMEOUT_S / 2)
        closed, _ = _closed_within(sock, HEADER_TIMEOUT_S * 5)
        assert closed


@pytest.mark.parametrize("request_bytes", [
    b"FOO /v1/health HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Bad: a\x7fb\r\n\r\n",
    b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
])
def test_what_the_http_parser_refuses_is_a_400_in_the_envelope(sqlite_server: ServerProcess,
                                                               request_bytes: bytes) -> None:
    with socket.create_connection(("127.0.0.1", sqlite_server.port)) as sock:
        sock.sendall(request_bytes)
        closed, received = _closed_within(sock, 10)
    head, _, body = received.partition(b"\r\n\r\n")
    assert closed and head.startswith(b"HTTP/1.1 400"), received[:300]
    assert json.loads(body)["detail"]["code"] == "invalid_request"
