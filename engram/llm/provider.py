"""One OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp, LM Studio …) behind the
official `openai` client, with the retry policy engram documents.

Retries live here, around each HTTP request, and nowhere else for provider errors:

- transient failures (timeouts, connection errors, 408/409/429, 5xx) are retried up to
  `max_retries` times with exponential backoff and full jitter (`base_s · 2^n`, capped by
  `max_wait_s`); a `Retry-After` (or `retry-after-ms`) header is honoured exactly, and one
  longer than `max_wait_s` ends the retries at once instead of retrying early;
- then, or at once for a non-transient refusal (400, 401, 403, 404 …), a `ProviderError`
  is raised. It is final for the job (`retryable = False`): the worker's own job-level
  retries do not multiply provider calls. Its `job_code` is `rate_limit_exceeded` when
  the provider's last word was a 429, else `ingest_failed`.

So one logical call sends at most `1 + max_retries` requests. The openai client's own
retries are switched off (`max_retries=0`) so that the count is ours to bound.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Literal, Sequence, TypeVar

import httpx
import openai

from engram.errors import ServiceError
from engram.llm import usage

log = logging.getLogger("engram.llm")

T = TypeVar("T")
StructuredOutput = Literal["json_schema", "json_object", "none"]

_TRANSIENT_STATUS = frozenset({408, 409, 429})


class ProviderError(ServiceError):
    """The model provider could not answer, after the retries it was allowed.

    A ServiceError, so that the API renders it (a search whose query embedding fails
    answers 429 or 503, never 500); the worker reads `job_code` and `retryable`.
    """

    retryable = False  # the retries already happened, around the request
    provider = True  # the worker counts it (engram_llm_errors_total)

    def __init__(self, message: str, *, rate_limited: bool, retry_after: float | None = None) -> None:
        headers = {"Retry-After": str(max(1, round(retry_after)))} if rate_limited and retry_after else {}
        super().__init__("rate_limit_exceeded" if rate_limited else "unavailable", message, headers=headers)
        self.job_code = "rate_limit_exceeded" if rate_limited else "ingest_failed"
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 3
    base_s: float = 1.0
    max_wait_s: float = 30.0

    def backoff(self, retry: int) -> float:
        """Full jitter: uniform in [0, base·2^retry], capped."""
        return min(self.max_wait_s, random.uniform(0, self.base_s * 2 ** retry))


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    content: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


class Provider:
    """Chat completions and embeddings from one OpenAI-compatible base URL."""

    def __init__(self, base_url: str, api_key: str | None, *, timeout_s: float = 60.0,
                 retry: RetryPolicy = RetryPolicy(), sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self._sleep = sleep
        # Local servers need no key, but the client insists on one; any value will do there.
        self._client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "engram-no-key",
                                     timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)), max_retries=0)
        self._token_param = "max_tokens"  # switched once if the server wants max_completion_tokens

    # ------------------------------------------------------------------ chat
    def chat(self, model: str, messages: Sequence[dict[str, str]], *, mode: StructuredOutput,
             schema: dict[str, Any] | None = None, schema_name: str = "answer", max_tokens: int = 4096,
             temperature: float = 0.0) -> ChatAnswer:
        """One chat completion (retried as the module docstring says); its text and usage."""
        kwargs: dict[str, Any] = {"model": model, "messages": list(messages), "temperature": temperature}
        if mode == "json_schema":
            if schema is None:
                raise ValueError("json_schema mode needs a schema")
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": schema_name, "schema": schema, "strict": True}}
        elif mode == "json_object":
            kwargs["response_format"] = {"type": "json_object"}

        def send() -> Any:
            usage.record(llm_requests=1)
            try:
                return self._client.chat.completions.create(**kwargs, **{self._token_param: max_tokens})
            except openai.BadRequestError as exc:
                if self._token_param == "max_tokens" and "max_completion_tokens" in str(exc):
                    self._token_param = "max_completion_tokens"  # newer OpenAI models refuse max_tokens
                    usage.record(llm_requests=1)
                    return self._client.chat.completions.create(**kwargs, max_completion_tokens=max_tokens)
                raise

        response = _readable(self._with_retries("chat completion", send), "choices", "chat completion")
        choice = response.choices[0] if response.choices else None
        content = (choice.message.content or "") if choice is not None and choice.message is not None else ""
        prompt_tokens = getattr(response.usage, "prompt_tokens", None) if response.usage else None
        completion_tokens = getattr(response.usage, "completion_tokens", None) if response.usage else None
        if prompt_tokens is None:  # a server that reports no usage: count our estimate instead
            prompt_tokens = sum(usage.estimate_tokens(m.get("content", "")) for m in messages)
        if completion_tokens is None:
            completion_tokens = usage.estimate_tokens(content)
        usage.record(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        return ChatAnswer(content, choice.finish_reason if choice is not None else None, prompt_tokens,
                          completion_tokens)

    # ------------------------------------------------------------------ embeddings
    def embed(self, model: str, texts: Sequence[str], *, dimensions: int | None = None) -> list[list[float]]:
        kwargs: dict[str, Any] = {"model": model, "input": list(texts), "encoding_format": "float"}
        if dimensions:
            kwargs["dimensions"] = dimensions

        def send() -> Any:
            usage.record(embedding_requests=1)
            return self._client.embeddings.create(**kwargs)

        response = _readable(self._with_retries("embeddings", send), "data", "embeddings")
        rows = sorted(response.data or [], key=lambda d: d.index)
        if len(rows) != len(texts):
            raise ProviderError(f"the embeddings server returned {len(rows)} vectors for {len(texts)} texts",
                                rate_limited=False)
        tokens = getattr(response.usage, "prompt_tokens", None) if response.usage else None
        usage.record(embedding_tokens=tokens if tokens is not None else sum(usage.estimate_tokens(t) for t in texts))
        return [list(r.embedding) for r in rows]

    # ------------------------------------------------------------------ retries
    def _with_retries(self, what: str, send: Callable[[], T]) -> T:
        retry = 0
        while True:
            try:
                return send()
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                # APITimeoutError is an APIConnectionError; both mean "no answer".
                reason, status, retry_after = ("timed out" if isinstance(exc, openai.APITimeoutError)
                                               else "connection failed"), None, None
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status not in _TRANSIENT_STATUS and status < 500:
                    raise ProviderError(f"the model provider refused the {what} request: HTTP {status}: "
                                        f"{_brief(exc)}", rate_limited=False) from exc
                reason, retry_after = f"HTTP {status}", _retry_after(exc.response.headers)
            except openai.APIError as exc:  # an answer the client cannot read (not JSON, wrong shape)
                raise ProviderError(f"the {what} response could not be read: {str(exc)[:300]}",
                                    rate_limited=False) from exc
            rate_limited = status == 429
            if retry >= self.retry.max_retries:
                raise ProviderError(f"the {what} request failed {retry + 1} time(s); last: {reason}",
                                    rate_limited=rate_limited, retry_after=retry_after)
            if retry_after is not None and retry_after > self.retry.max_wait_s:
                raise ProviderError(f"the provider asked to wait {retry_after:.0f}s before the next {what} request "
                                    f"(more than ENGRAM_LLM_RETRY_MAX_WAIT_S={self.retry.max_wait_s:g})",
                                    rate_limited=rate_limited, retry_after=retry_after)
            delay = retry_after if retry_after is not None else self.retry.backoff(retry)
            log.warning("%s request %s; retry %d/%d in %.2fs", what, reason, retry + 1, self.retry.max_retries, delay)
            self._sleep(delay)
            retry += 1


def _readable(response: Any, field: str, what: str) -> Any:
    """The client hands back the raw text when a server answers 200 with something that is
    not JSON (a proxy's login page, say): that is a refusal, not an empty answer."""
    if not hasattr(response, field):
        raise ProviderError(f"the {what} response is not an OpenAI-compatible JSON body: {str(response)[:200]!r}",
                            rate_limited=False)
    return response


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _brief(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body["error"] if isinstance(body.get("error"), dict) else body
        if inner.get("message"):
            return str(inner["message"])[:300]
    return str(exc)[:300]
