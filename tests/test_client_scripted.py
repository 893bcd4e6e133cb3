"""The client against a small scripted HTTP server: retries, idempotency, error mapping,
and the wire shape of calls the real server does not answer yet (PATCH, revisions).

`ScriptedServer` is a real HTTP server (http.server in a thread) that answers from a
queue of scripted replies and records every request it receives.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

import engram
from engram.client._core import poll_delays, retry_after_seconds


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None


DROP = "drop"  # close the connection without answering, after reading the request


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    at: float


class ScriptedServer:
    def __init__(self) -> None:
        self.replies: list[Reply | str] = []
        self.default: Reply | str | Callable[[Seen], Reply] = Reply(404, {"detail": {"code": "not_found",
                                                                                      "message": "not scripted"}})
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                seen = Seen(self.command, parts.path, parse_qs(parts.query),
                            {k.lower(): v for k, v in self.headers.items()},
                            json.loads(raw) if raw else None, time.monotonic())
                with server._lock:
                    server.requests.append(seen)
                    reply = server.replies.pop(0) if server.replies else server.default
                if callable(reply) and not isinstance(reply, Reply):
                    reply = reply(seen)
                if reply == DROP:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                assert isinstance(reply, Reply)
                data = reply.text.encode() if reply.text is not None else (
                    json.dumps(reply.json).encode() if reply.json is not None else b"")
                self.send_response(reply.status)
                content_type = "text/plain" if reply.text is not None else "application/json"
                headers = {"content-type": content_type, "x-request-id": f"req-{len(server.requests)}",
                           **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def script(self, *replies: Reply | str) -> None:
        self.replies.extend(replies)

    def start(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    srv = ScriptedServer().start()
    yield srv
    srv.stop()


# ------------------------------------------------------------------ canned bodies
def job_body(status: str = "pending", **extra: Any) -> dict[str, Any]:
    return {"object": "ingest_job", "id": "job_" + "a" * 32, "status": status,
            "created_at": "2026-05-16T10:00:00Z", "updated_at": "2026-05-16T10:00:01Z",
            "result": None, "error": None, **extra}


def memory_body(memory_id: str = "11111111-1111-1111-1111-111111111111", text: str = "The user likes tea.",
                **details: Any) -> dict[str, Any]:
    return {"id": memory_id, "object": "memory", "type": "fact", "text": text, "user_id": "alice",
            "agent_id": None, "conv_id": "c1", "app_id": None, "metadata": {}, "categories": [],
            "created_at": "2026-05-16T10:00:00Z", "updated_at": "2026-05-16T10:00:00Z",
            "details": {"status": "active", "supersedes": None, "source_event_ids": ["e1"], **details}}


MESSAGES = [{"role": "user", "content": "I like tea."}]


class Faces:
    """Run one scenario through the sync and the async client alike."""

    def __init__(self, face: str, url: str, **kwargs: Any) -> None:
        self.face = face
        self.url = url
        self.kwargs = kwargs

    def __call__(self, action: Callable[[Any], Any]) -> Any:
        if self.face == "sync":
            with engram.Client(self.url, **self.kwargs) as client:
                result = action(client)
                return list(result) if inspect.isgenerator(result) else result

        async def run() -> Any:
            async with engram.AsyncClient(self.url, **self.kwargs) as client:
                result = action(client)
                if hasattr(result, "__aiter__"):
                    return [item async for item in result]
                return await result

        return asyncio.run(run())


FACES = ["sync", "async"]


# ------------------------------------------------------------------ 429 and Retry-After
@pytest.mark.parametrize("face", FACES)
def test_429_is_retried_after_retry_after_with_the_same_idempotency_key(scripted: ScriptedServer, face: str) -> None:
    scripted.script(Reply(429, {"detail": {"code": "rate_limit_exceeded", "message": "slow down"}},
                          {"retry-after": "1"}),
                    Reply(202, job_body()))
    started = time.monotonic()
    job = Faces(face, scripted.url)(lambda c: c.memories.ingest(messages=MESSAGES, user_id="alice", conv_id="c1"))
    elapsed = time.monotonic() - started
    assert job.id == "job_" + "a" * 32 and job.status == "pending"
    assert len(scripted.requests) == 2
    first, second = scripted.requests
    assert second.at - first.at >= 0.95, "Retry-After: 1 was not honoured"
    assert elapsed >= 0.95
    key = first.headers["idempotency-key"]
    assert key and second.headers["idempotency-key"] == key
    assert first.body == second.body


@pytest.mark.parametrize("face", FACES)
def test_429_until_retries_run_out_raises_rate_limit_error(scripted: ScriptedServer, face: str) -> None:
    limited = Reply(429, {"detail": {"code": "rate_limit_exceeded", "message": "quota"}}, {"retry-after": "0"})
    scripted.default = limited
    with pytest.raises(engram.RateLimitError) as caught:
        Faces(face, scripted.url, max_retries=2)(lambda c: c.search("tea", actor_id="alice"))
    assert len(scripted.requests) == 3
    err = caught.value
    assert err.status_code == 429 and err.code == "rate_limit_exceeded" and err.retry_after == 0
    assert isinstance(err, engram.EngramError) and err.request_id == "req-3"


def test_429_asking_for_more_than_max_retry_after_is_not_waited_out(scripted: ScriptedServer) -> None:
    scripted.script(Reply(429, {"detail": {"code": "rate_limit_exceeded", "message": "later"}},
                          {"retry-after": "3600"}))
    started = time.monotonic()
    with pytest.raises(engram.RateLimitError) as caught:
        engram.Client(scripted.url, max_retry_after=10).health()
    assert caught.value.retry_after == 3600
    assert len(scripted.requests) == 1 and time.monotonic() - started < 5


def test_retry_after_as_an_http_date() -> None:
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    response = httpx.Response(429, headers={"retry-after": when})
    assert 25 <= (retry_after_seconds(response) or 0) <= 31
    assert retry_after_seconds(httpx.Response(429, headers={"retry-after": "soon"})) is None
    assert retry_after_seconds(httpx.Response(429)) is None


# ------------------------------------------------------------------ 5xx and connection errors
@pytest.mark.parametrize("face", FACES)
def test_5xx_on_an_idempotent_call_is_retried(scripted: ScriptedServer, face: str) -> None:
    scripted.script(Reply(503, {"detail": {"code": "unavailable", "message": "busy"}}),
                    Reply(500, text="Internal Server Error"),
                    Reply(200, job_body("succeeded", result={"memories_created": []})))
    job = Faces(face, scripted.url)(lambda c: c.memories.jobs.get("job_" + "a" * 32))
    assert job.status == "succeeded" and len(scripted.requests) == 3


@pytest.mark.parametrize("face", FACES)
def test_5xx_on_ingest_is_retried_with_the_same_idempotency_key(scripted: ScriptedServer, face: str) -> None:
    scripted.script(Reply(502, text="bad gateway"), Reply(202, job_body()))
    Faces(face, scripted.url)(lambda c: c.memories.ingest(messages=MESSAGES, user_id="alice", conv_id="c1",
                                                          idempotency_key="my-key-1"))
    assert [r.headers["idempotency-key"] for r in scripted.requests] == ["my-key-1", "my-key-1"]


@pytest.mark.parametrize("face", FACES)
def test_5xx_on_update_is_not_retried(scripted: ScriptedServer, face: str) -> None:
    scripted.default = Reply(500, {"detail": {"code": "server_error", "message": "boom"}})
    with pytest.raises(engram.ServerError) as caught:
        Faces(face, scripted.url)(lambda c: c.memories.update("m1", text="The user likes coffee."))
    assert len(scripted.requests) == 1
    assert caught.value.code == "server_error" and caught.value.status_code == 500


@pytest.mark.parametrize("face", FACES)
def test_dropped_connection_on_family_m_ingest_is_retried_with_the_same_event_ids(
        scripted: ScriptedServer, face: str) -> None:
    scripted.script(DROP, Reply(200, {"event_ids": ["01A", "01B"]}))
    events = [{"actor_id": "alice", "session_id": "s1", "kind": "user_message", "content": "I like tea.",
               "metadata": {"source": "test"}},
              engram.Event(actor_id="alice", session_id="s1", kind="assistant_message", content="Noted.",
                           event_id="mine-1")]
    result = Faces(face, scripted.url)(lambda c: c.ingest(events))
    assert result.event_ids == ["01A", "01B"]
    assert len(scripted.requests) == 2
    first, second = (r.body["events"] for r in scripted.requests)
    assert first == second, "a retry must send the same event ids"
    assert first[0]["event_id"] and first[1]["event_id"] == "mine-1"
    assert first[0]["metadata"] == '{"source": "test"}', "family M carries metadata as a JSON string"
    assert "event_id" not in events[0], "the caller's dicts are not modified"


@pytest.mark.parametrize("face", FACES)
def test_dropped_connection_on_delete_is_not_retried(scripted: ScriptedServer, face: str) -> None:
    scripted.script(DROP)
    with pytest.raises(engram.APIConnectionError):
        Faces(face, scripted.url)(lambda c: c.memories.delete("m1"))
    assert len(scripted.requests) == 1


@pytest.mark.parametrize("face", FACES)
def test_dropped_connection_on_search_is_retried(scripted: ScriptedServer, face: str) -> None:
    scripted.script(DROP, Reply(200, {"results": [{"id": "m1", "content": "The user likes tea.", "score": 0.5,
                                                   "metadata": {"type": "fact"}}]}))
    response = Faces(face, scripted.url)(lambda c: c.search("tea"))
    assert response.results[0].content == "The user likes tea." and len(scripted.requests) == 2


def test_connection_refused_raises_api_connection_error_after_retries() -> None:
    srv = ScriptedServer()  # bound but never serving: connections are accepted by the OS backlog, so close it
    url = srv.url
    srv.httpd.server_close()
    started = time.monotonic()
    with pytest.raises(engram.APIConnectionError) as caught:
        engram.Client(url, max_retries=1).health()
    assert "ConnectError" in str(caught.value)
    assert time.monotonic() - started >= 0.3, "one retry, after a backoff, was expected"


# ------------------------------------------------------------------ error mapping
@pytest.mark.parametrize("status, body, cls, code", [
    (400, {"detail": {"code": "invalid_filter", "error": "invalid_filter", "message": "bad clause"}},
     engram.BadRequestError, "invalid_filter"),
    (401, {"detail": {"code": "unauthorized", "error": "unauthorized", "message": "key needed"}},
     engram.AuthenticationError, "unauthorized"),
    (403, {"detail": {"code": "insufficient_scope", "message": "no write"}}, engram.PermissionDeniedError,
     "insufficient_scope"),
    (404, {"detail": {"code": "memory_not_found", "message": "gone"}}, engram.NotFoundError, "memory_not_found"),
    (413, {"detail": {"code": "payload_too_large", "message": "big"}}, engram.BadRequestError, "payload_too_large"),
    (422, {"detail": {"code": "validation_error", "message": "kind: bad",
                      "errors": [{"loc": ["body", "events", 0, "kind"], "msg": "bad", "type": "enum"}]}},
     engram.ValidationError, "validation_error"),
    (422, {"detail": [{"loc": ["body", "user_id"], "msg": "Field required", "type": "missing"}],
           "code": "validation_error", "message": "body.user_id: Field required"},
     engram.ValidationError, "validation_error"),
    (429, {"detail": {"code": "rate_limit_exceeded", "message": "slow"}}, engram.RateLimitError,
     "rate_limit_exceeded"),
    (500, {"detail": {"code": "server_error", "message": "oops"}}, engram.ServerError, "server_error"),
    (503, None, engram.ServerError, None),
    # not engram's envelope (a proxy in front of it): still a typed error, never a TypeError
    (502, {"error": {"type": "upstream_error", "message": "bad gateway"}}, engram.ServerError, "upstream_error"),
    (400, {"detail": {"code": 7, "message": ["x"]}, "error": None}, engram.BadRequestError, None),
])
def test_errors_are_typed_by_status_and_carry_the_code(scripted: ScriptedServer, status: int, body: Any,
                                                       cls: type, code: str | None) -> None:
    scripted.default = Reply(status, body) if body is not None else Reply(status, text="Service Unavailable")
    with pytest.raises(cls) as caught:
        engram.Client(scripted.url, max_retries=0).memories.get("m1")
    err = caught.value
    assert isinstance(err, engram.APIStatusError) and isinstance(err, engram.EngramError)
    assert err.status_code == status and err.code == code and err.request_id
    assert err.message
    if cls is engram.ValidationError:
        assert err.errors and err.errors[0]["loc"][0] == "body"
    if body is None:
        assert err.message == "Service Unavailable"


def test_a_success_that_is_not_json_is_an_error_not_a_crash(scripted: ScriptedServer) -> None:
    scripted.default = Reply(200, text="<html>proxy login</html>")
    with pytest.raises(engram.APIConnectionError, match="unexpected response"):
        engram.Client(scripted.url, max_retries=0).health()


# ------------------------------------------------------------------ update and revisions: the wire
@pytest.mark.parametrize("face", FACES)
def test_update_sends_a_patch_with_only_the_given_fields(scripted: ScriptedServer, face: str) -> None:
    new = memory_body("22222222-2222-2222-2222-222222222222", "The user likes coffee.",
                      supersedes="11111111-1111-1111-1111-111111111111")
    scripted.script(Reply(200, new), Reply(200, memory_body()))
    run = Faces(face, scripted.url)
    updated = run(lambda c: c.memories.update("11111111-1111-1111-1111-111111111111", text="The user likes coffee."))
    run(lambda c: c.memories.update("11111111-1111-1111-1111-111111111111", metadata={"project": "atlas"}))
    text_call, meta_call = scripted.requests
    assert text_call.method == "PATCH" and text_call.path == "/v1/memories/11111111-1111-1111-1111-111111111111"
    assert text_call.body == {"text": "The user likes coffee."}
    assert meta_call.body == {"metadata": {"project": "atlas"}}
    assert isinstance(updated, engram.Memory) and isinstance(updated.details, engram.FactDetails)
    assert updated.details.supersedes == "11111111-1111-1111-1111-111111111111"


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("shape", ["envelope", "bare list"])
def test_revisions_reads_the_chain_oldest_first(scripted: ScriptedServer, face: str, shape: str) -> None:
    chain = [memory_body("11111111-1111-1111-1111-111111111111", "The user likes tea.", status="superseded"),
             memory_body("22222222-2222-2222-2222-222222222222", "The user likes coffee.",
                         supersedes="11111111-1111-1111-1111-111111111111")]
    scripted.script(Reply(200, {"object": "list", "data": chain} if shape == "envelope" else chain))
    revisions = Faces(face, scripted.url)(lambda c: c.memories.revisions("22222222-2222-2222-2222-222222222222"))
    assert scripted.requests[0].method == "GET"
    assert scripted.requests[0].path == "/v1/memories/22222222-2222-2222-2222-222222222222/revisions"
    assert [m.text for m in revisions] == ["The user likes tea.", "The user likes coffee."]
    assert revisions[0].details.status == "superseded"


def test_ids_are_escaped_in_paths(scripted: ScriptedServer) -> None:
    scripted.script(Reply(200, memory_body()))
    engram.Client(scripted.url).memories.get("a/b?c")
    assert scripted.requests[0].path == "/v1/memories/a%2Fb%3Fc"


# ------------------------------------------------------------------ polling
@pytest.mark.parametrize("face", FACES)
def test_poll_until_done_backs_off_then_times_out(scripted: ScriptedServer, face: str) -> None:
    scripted.default = Reply(200, job_body("running"))
    started = time.monotonic()
    with pytest.raises(engram.PollTimeoutError) as caught:
        Faces(face, scripted.url)(lambda c: c.memories.jobs.poll_until_done("job_" + "a" * 32, timeout=2.0))
    assert time.monotonic() - started >= 2.0
    assert caught.value.job.status == "running" and isinstance(caught.value, TimeoutError)
    times = [r.at for r in scripted.requests]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) >= 3
    assert gaps[0] >= 0.45 and gaps[1] >= 0.95, f"expected 0.5 s then 1 s between polls, got {gaps}"


def test_poll_until_done_returns_a_failed_job(scripted: ScriptedServer) -> None:
    scripted.script(Reply(200, job_body("pending")),
                    Reply(200, job_body("failed", error={"type": "server_error", "code": "ingest_failed",
                                                         "message": "extractor crashed"})))
    done = engram.Client(scripted.url).memories.jobs.poll_until_done(engram.IngestJob.model_validate(job_body()))
    assert done.status == "failed" and done.error.code == "ingest_failed" and done.is_done


def test_poll_delays_grow_from_half_a_second_to_five() -> None:
    delays = poll_delays()
    assert [next(delays) for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


# ------------------------------------------------------------------ pagination and chunking
@pytest.mark.parametrize("face", FACES)
def test_list_follows_cursors(scripted: ScriptedServer, face: str) -> None:
    scripted.script(
        Reply(200, {"object": "list", "data": [memory_body("m1")], "has_more": True, "next_cursor": "c-2"}),
        Reply(200, {"object": "list", "data": [memory_body("m2"), memory_body("m3")], "has_more": False,
                    "next_cursor": None}))
    rows = Faces(face, scripted.url)(lambda c: c.memories.list(user_id="alice", page_size=2, type="fact"))
    assert [m.id for m in rows] == ["m1", "m2", "m3"]
    first, second = scripted.requests
    assert first.query == {"user_id": ["alice"], "type": ["fact"], "order": ["created_at_desc"], "limit": ["2"]}
    assert second.query["cursor"] == ["c-2"]


def test_status_of_many_ids_is_split_and_merged(scripted: ScriptedServer) -> None:
    def answer(seen: Seen) -> Reply:
        ids = seen.body["event_ids"]
        return Reply(200, {"completedIds": ids[:-1], "pendingIds": ids[-1:], "failedIds": [], "total": len(ids),
                           "statuses": {i: "completed" for i in ids[:-1]} | {ids[-1]: "pending"}})

    scripted.default = answer
    ids = [f"e{i}" for i in range(700)]
    status = engram.Client(scripted.url).status(event_ids=ids)
    assert [len(r.body["event_ids"]) for r in scripted.requests] == [500, 200]
    assert status.pending_ids == ["e499", "e699"] and len(status.completed_ids) == 698 and status.total == 700


# ------------------------------------------------------------------ configuration
def test_base_url_and_api_key_come_from_the_environment(scripted: ScriptedServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    scripted.default = Reply(200, {"status": "ok", "version": "x", "components": {}})
    monkeypatch.setenv("ENGRAM_BASE_URL", scripted.url + "/v1/")
    monkeypatch.setenv("ENGRAM_API_KEY", "ek_from_env")
    client = engram.Client()
    assert client.base_url == scripted.url
    assert client.health().status == "ok"
    assert scripted.requests[-1].headers["authorization"] == "Bearer ek_from_env"
    assert scripted.requests[-1].path == "/v1/health"
    engram.Client(api_key="ek_arg", org_id="acme").health()
    assert scripted.requests[-1].headers["authorization"] == "Bearer ek_arg"
    assert scripted.requests[-1].headers["x-org-id"] == "acme"
    monkeypatch.delenv("ENGRAM_API_KEY")
    engram.Client().health()
    assert "authorization" not in scripted.requests[-1].headers


def test_base_url_defaults_to_the_local_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGRAM_BASE_URL", raising=False)
    assert engram.Client().base_url == "http://127.0.0.1:8420"
    with pytest.raises(ValueError):
        engram.Client("localhost:8420")


def test_public_names_are_exported_from_engram() -> None:
    import engram.client as client_pkg

    assert set(client_pkg.__all__) == engram._CLIENT_NAMES
    for name in client_pkg.__all__:
        assert getattr(engram, name) is getattr(client_pkg, name)
    for name in ("NotFoundError", "AuthenticationError", "PermissionDeniedError", "ValidationError",
                 "RateLimitError", "ServerError", "BadRequestError", "APIConnectionError", "PollTimeoutError"):
        assert issubclass(getattr(engram, name), engram.EngramError)
    with pytest.raises(AttributeError):
        engram.NoSuchThing  # noqa: B018
