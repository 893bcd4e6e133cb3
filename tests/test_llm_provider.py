"""The provider client and the openai embedder against a real scripted HTTP server:
retries, backoff, Retry-After, timeouts, refusals, usage metering."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Iterator

import httpx
import numpy as np
import pytest

from engram.embed import make_embedder
from engram.embed.openai import OpenAIEmbedder
from engram.llm.provider import Provider, ProviderError, RetryPolicy, _retry_after
from engram.llm.usage import estimate_tokens, metering
from tests.openai_server import Reply, ScriptedOpenAI, chat, default_embeddings, error, rate_limited, slow


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as server:
        yield server


@pytest.fixture
def server(scripted: ScriptedOpenAI) -> ScriptedOpenAI:
    scripted.reset()
    return scripted


def provider(server: ScriptedOpenAI, sleeps: list[float] | None = None, *, retries: int = 3,
             timeout_s: float = 10.0, max_wait_s: float = 5.0) -> Provider:
    return Provider(server.url, "sk-test", timeout_s=timeout_s,
                    retry=RetryPolicy(max_retries=retries, base_s=0.01, max_wait_s=max_wait_s),
                    sleep=(sleeps.append if sleeps is not None else lambda s: None))


def ask(p: Provider, mode: str = "json_object") -> str:
    return p.chat("m", [{"role": "user", "content": "hello JSON"}], mode=mode).content  # type: ignore[arg-type]


def test_a_plain_answer_and_its_usage(server: ScriptedOpenAI) -> None:
    server.script(chat('{"ok": true}', prompt_tokens=11, completion_tokens=3))
    with metering() as usage:
        assert ask(provider(server)) == '{"ok": true}'
    assert usage.snapshot()["llm_requests"] == 1
    assert usage.snapshot()["prompt_tokens"] == 11 and usage.snapshot()["completion_tokens"] == 3
    request = server.chat_requests()[0]
    assert request.body["model"] == "m" and request.body["response_format"] == {"type": "json_object"}
    assert request.headers["authorization"] == "Bearer sk-test"


def test_json_schema_mode_sends_a_strict_schema(server: ScriptedOpenAI) -> None:
    server.script(chat("{}"))
    schema = {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
    provider(server).chat("m", [{"role": "user", "content": "x"}], mode="json_schema", schema=schema,
                          schema_name="memories")
    sent = server.chat_requests()[0].body["response_format"]
    assert sent == {"type": "json_schema", "json_schema": {"name": "memories", "schema": schema, "strict": True}}


def test_429_forever_is_rate_limit_exceeded_after_a_bounded_number_of_requests(server: ScriptedOpenAI) -> None:
    server.reset(default_chat=lambda request: rate_limited("0"))
    with metering() as usage, pytest.raises(ProviderError) as caught:
        ask(provider(server, retries=3))
    assert caught.value.job_code == "rate_limit_exceeded" and caught.value.retryable is False
    assert caught.value.code == "rate_limit_exceeded" and caught.value.status == 429
    assert len(server.chat_requests()) == 4, "one request and three retries, no more"
    assert usage.snapshot()["llm_requests"] == 4


def test_5xx_then_success_retries_with_growing_jittered_backoff(server: ScriptedOpenAI) -> None:
    sleeps: list[float] = []
    server.script(error(500), error(502), error(503), chat("fine"))
    assert ask(provider(server, sleeps, retries=3)) == "fine"
    assert len(server.chat_requests()) == 4
    assert len(sleeps) == 3 and all(0 <= s <= 0.01 * 2 ** i for i, s in enumerate(sleeps))


def test_5xx_forever_is_ingest_failed(server: ScriptedOpenAI) -> None:
    server.reset(default_chat=lambda request: error(500))
    with pytest.raises(ProviderError) as caught:
        ask(provider(server, retries=2))
    assert caught.value.job_code == "ingest_failed" and "HTTP 500" in str(caught.value)
    assert len(server.chat_requests()) == 3


def test_retry_after_is_honoured_exactly(server: ScriptedOpenAI) -> None:
    sleeps: list[float] = []
    server.script(rate_limited("2"), error(429, headers={"retry-after-ms": "1500"}), chat("ok"))
    assert ask(provider(server, sleeps)) == "ok"
    assert sleeps == [2.0, 1.5]


def test_retry_after_longer_than_the_cap_stops_at_once(server: ScriptedOpenAI) -> None:
    sleeps: list[float] = []
    server.script(rate_limited("3600"), chat("never reached"))
    with pytest.raises(ProviderError) as caught:
        ask(provider(server, sleeps, max_wait_s=30))
    assert caught.value.job_code == "rate_limit_exceeded" and caught.value.headers["Retry-After"] == "3600"
    assert sleeps == [] and len(server.chat_requests()) == 1, "never retry sooner than the provider asked"


def test_retry_after_as_an_http_date() -> None:
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=120), usegmt=True)
    assert 100 < _retry_after(httpx.Headers({"retry-after": later})) <= 120
    assert _retry_after(httpx.Headers({"retry-after": "7"})) == 7.0
    assert _retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert _retry_after(httpx.Headers({})) is None


def test_timeouts_are_retried_then_fail(server: ScriptedOpenAI) -> None:
    server.reset(default_chat=slow(3.0, chat("too late")))
    with pytest.raises(ProviderError) as caught:
        ask(provider(server, retries=1, timeout_s=0.3))
    assert caught.value.job_code == "ingest_failed" and "timed out" in str(caught.value)
    assert len(server.chat_requests()) == 2


def test_a_timeout_then_an_answer_succeeds(server: ScriptedOpenAI) -> None:
    server.script(slow(3.0, chat("too late")), chat("in time"))
    assert ask(provider(server, retries=1, timeout_s=0.3)) == "in time"


def test_refusals_are_not_retried(server: ScriptedOpenAI) -> None:
    for status in (400, 401, 404):
        server.reset()
        server.script(error(status, "model 'nope' not found"), chat("unused"))
        with pytest.raises(ProviderError) as caught:
            ask(provider(server))
        assert caught.value.job_code == "ingest_failed" and f"HTTP {status}" in str(caught.value)
        assert "model 'nope' not found" in str(caught.value)
        assert len(server.chat_requests()) == 1


def test_an_unreadable_success_is_not_retried(server: ScriptedOpenAI) -> None:
    server.script(Reply(200, "<html>a proxy's login page</html>", {"content-type": "text/html"}), chat("unused"))
    with pytest.raises(ProviderError) as caught:
        ask(provider(server))
    assert caught.value.job_code == "ingest_failed" and len(server.chat_requests()) == 1


def test_connection_refused_is_transient_then_ingest_failed() -> None:
    with ScriptedOpenAI() as gone:
        url = gone.url
    p = Provider(url, None, timeout_s=2, retry=RetryPolicy(max_retries=2, base_s=0.0), sleep=lambda s: None)
    with pytest.raises(ProviderError) as caught:
        p.chat("m", [{"role": "user", "content": "x"}], mode="none")
    assert caught.value.job_code == "ingest_failed" and "connection failed" in str(caught.value)


def test_a_server_that_wants_max_completion_tokens_gets_it(server: ScriptedOpenAI) -> None:
    def picky(request: dict) -> object:
        if "max_tokens" in request:
            return error(400, "Unsupported parameter: 'max_tokens'. Use 'max_completion_tokens' instead.")
        return chat("ok")(request)

    server.reset(default_chat=picky)  # type: ignore[arg-type]
    p = provider(server)
    assert ask(p) == "ok" and ask(p) == "ok"
    sent = [r.body for r in server.chat_requests()]
    assert "max_tokens" in sent[0] and "max_completion_tokens" in sent[1] and "max_completion_tokens" in sent[2]
    assert len(sent) == 3, "switched once, then remembered"


def test_a_server_without_usage_is_metered_by_estimate(server: ScriptedOpenAI) -> None:
    server.script(chat("abcdef", usage=False))
    with metering() as usage:
        ask(provider(server))
    assert usage.snapshot()["prompt_tokens"] == estimate_tokens("hello JSON")
    assert usage.snapshot()["completion_tokens"] == estimate_tokens("abcdef")


# ---------------------------------------------------------------------- the openai embedder
def test_openai_embedder_batches_normalises_and_learns_its_size(server: ScriptedOpenAI) -> None:
    embedder = make_embedder("openai", base_url=server.url, model="emb", api_key="k", batch_size=2)
    assert embedder.name == "openai:emb"
    with metering() as usage:
        vectors = embedder.embed(["the cat sat", "the cat sat on the mat", "quantum physics", "", "x"])
    assert vectors.shape == (5, 64) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2], "texts sharing words are closer"
    requests = server.embedding_requests()
    assert [len(r.body["input"]) for r in requests] == [2, 2, 1]
    assert all(r.body["model"] == "emb" and r.body["encoding_format"] == "float" for r in requests)
    assert requests[1].body["input"][1] == " ", "an empty text is sent as a space"
    assert usage.snapshot()["embedding_requests"] == 3 and usage.snapshot()["embedding_tokens"] > 0
    assert embedder.dim == 64 and len(server.embedding_requests()) == 3, "the size was learned, not probed"
    assert embedder.embed([]).shape == (0, 64)


def test_openai_embedder_probes_its_size_once_and_sends_dimensions(server: ScriptedOpenAI) -> None:
    probe = make_embedder("openai", base_url=server.url, model="emb")
    assert probe.dim == 64 and probe.dim == 64
    assert len(server.embedding_requests()) == 1
    sized = make_embedder("openai", base_url=server.url, model="emb", dimensions=64)
    assert sized.name == "openai:emb@64" and sized.dim == 64 and len(server.embedding_requests()) == 1
    sized.embed(["hello"])
    assert server.embedding_requests()[-1].body["dimensions"] == 64


def test_openai_embedder_errors_follow_the_retry_policy(server: ScriptedOpenAI) -> None:
    calls = {"n": 0}

    def flaky(request: dict) -> object:
        calls["n"] += 1
        return rate_limited("0") if calls["n"] == 1 else default_embeddings(request)

    server.embeddings = flaky  # type: ignore[assignment]
    embedder = OpenAIEmbedder(server.url, "emb", retry=RetryPolicy(max_retries=1, base_s=0.0))
    assert embedder.embed(["a b c"]).shape == (1, 64) and calls["n"] == 2
    server.embeddings = lambda request: error(401, "bad key")  # type: ignore[assignment]
    with pytest.raises(ProviderError) as caught:
        embedder.embed(["a b c"])
    assert caught.value.status == 503 and caught.value.code == "unavailable", "a search would answer 503, not 500"
