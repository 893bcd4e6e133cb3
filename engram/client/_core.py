"""The request core shared by `Client` and `AsyncClient`.

Everything that does not depend on how bytes move lives here, written once: settings
from arguments or the environment, the request each operation sends, how a response
becomes a model or a typed error, and the retry and polling policies. The two faces
(`_sync.py`, `_async.py`) only drive it: send, sleep, loop.
"""

from __future__ import annotations

import email.utils
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

import httpx

from engram import __version__
from engram.client import errors

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8420"
DEFAULT_TIMEOUT_S = 60.0  # above the server's 30 s `wait=true` budget
DEFAULT_MAX_RETRIES = 3
MAX_RETRY_AFTER_S = 60.0  # a server asking for a longer pause gets a RateLimitError instead of a hang
POLL_INITIAL_S = 0.5
POLL_MAX_S = 5.0
DEFAULT_POLL_TIMEOUT_S = 120.0
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class Operation(Generic[T]):
    """One HTTP exchange, described without sending it.

    `idempotent` says whether sending it twice is harmless: only then are 5xx answers and
    errors after the request may have reached the server retried. Ingest calls count as
    idempotent because they carry an idempotency key (family X) or event ids (family M).
    """

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotent: bool = True


def normalize_base_url(url: str) -> str:
    """`http://host:8420`, `…/` and `…/v1` all name the same server root."""
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
    return url


class Core:
    """Settings plus the pure parts of every exchange."""

    def __init__(self, base_url: str | None, api_key: str | None, *, org_id: str | None, timeout: float,
                 max_retries: int, max_retry_after: float, headers: dict[str, str] | None) -> None:
        self.base_url = normalize_base_url(base_url or os.environ.get("ENGRAM_BASE_URL") or DEFAULT_BASE_URL)
        self.api_key = api_key if api_key is not None else (os.environ.get("ENGRAM_API_KEY") or None)
        self.timeout = timeout
        self.max_retries = max(0, max_retries)
        self.max_retry_after = max_retry_after
        self.headers = {"User-Agent": f"engram-python/{__version__}", "Accept": "application/json"}
        if self.api_key:
            self.headers["Authorization"] = f"Bearer {self.api_key}"
        if org_id:
            self.headers["X-Org-Id"] = org_id
        self.headers.update(headers or {})

    # ------------------------------------------------------------------ requests
    def request_args(self, op: Operation[Any]) -> dict[str, Any]:
        """Keyword arguments for `httpx.Client.request` / `httpx.AsyncClient.request`."""
        args: dict[str, Any] = {"method": op.method, "url": self.base_url + op.path,
                                "headers": {**self.headers, **op.headers}, "timeout": self.timeout}
        if op.params:
            args["params"] = {k: v for k, v in op.params.items() if v is not None}
        if op.json is not None:
            args["json"] = op.json
        return args

    # ------------------------------------------------------------------ responses
    def result(self, op: Operation[T], response: httpx.Response) -> T:
        """The parsed model of a final response, or the typed error it stands for."""
        if response.is_success:
            try:
                return op.parse(response)
            except ValueError as exc:  # not JSON, or JSON of the wrong shape
                raise errors.APIConnectionError(
                    f"unexpected response to {op.method} {op.path}: {exc}",
                    status_code=response.status_code, request_id=response.headers.get("x-request-id")) from exc
        raise error_from_response(response)

    # ------------------------------------------------------------------ retries
    def retry_delay(self, op: Operation[Any], attempt: int, *, response: httpx.Response | None = None,
                    error: Exception | None = None) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to stop here.

        - 429: always retried (the server refused before doing anything), after `Retry-After`.
        - Connection never established: always retried; nothing reached the server.
        - Any other transport failure, or 500/502/503/504: retried only when `op` is idempotent.
        """
        if attempt >= self.max_retries:
            return None
        if response is not None:
            if response.status_code == 429:
                wait = retry_after_seconds(response)
                if wait is None:
                    return backoff(attempt)
                return wait if wait <= self.max_retry_after else None
            if response.status_code in RETRYABLE_STATUSES and op.idempotent:
                return backoff(attempt)
            return None
        if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
            return backoff(attempt)
        if isinstance(error, httpx.TransportError) and op.idempotent:
            return backoff(attempt)
        return None

    def connection_error(self, op: Operation[Any], exc: Exception) -> errors.APIConnectionError:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
        return errors.APIConnectionError(
            f"{op.method} {self.base_url}{op.path} {kind}: {type(exc).__name__}: {exc}".rstrip(": "))


def backoff(attempt: int) -> float:
    """0.5 s, 1 s, 2 s, 4 s … capped at 8 s, with ±25 % jitter so clients do not retry in step."""
    return min(8.0, 0.5 * 2 ** attempt) * random.uniform(0.75, 1.25)


def poll_delays(initial: float = POLL_INITIAL_S, maximum: float = POLL_MAX_S) -> Iterator[float]:
    """The pauses between job polls: 0.5, 1, 2, 4, 5, 5, … seconds."""
    delay = initial
    while True:
        yield delay
        delay = min(maximum, delay * 2)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """`Retry-After` as seconds: either a number or an HTTP date."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_CLASS_BY_STATUS: dict[int, type[errors.APIStatusError]] = {
    401: errors.AuthenticationError,
    403: errors.PermissionDeniedError,
    404: errors.NotFoundError,
    422: errors.ValidationError,
    429: errors.RateLimitError,
}


def error_from_response(response: httpx.Response) -> errors.APIStatusError:
    """Read engram's error envelope (either of its two 422 shapes, or no envelope at all)."""
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    code: str | None = None
    message: str | None = None
    field_errors: list[dict[str, Any]] = []
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, dict):  # {"detail": {"code", "message", "errors"?}}
            code = detail.get("code") or detail.get("error")
            message = detail.get("message")
            field_errors = detail.get("errors") or []
        elif isinstance(detail, list):  # {"detail": [{loc, msg, type}], "code"?, "message"?}
            field_errors = detail
            code = body.get("code") or body.get("error")
            message = body.get("message")
        elif isinstance(detail, str):
            message = detail
        code = code or body.get("code") or body.get("error")
        message = message or body.get("message")
        if isinstance(code, dict):  # {"error": {"code", "message"}}: not engram, but a proxy in front of it
            code, message = code.get("code") or code.get("type"), message or code.get("message")
        code = code if isinstance(code, str) else None
        message = message if isinstance(message, str) else None
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:500]
    if not message and field_errors:
        message = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg', '')}"
                            for e in field_errors[:5] if isinstance(e, dict))
    message = message or response.reason_phrase or f"HTTP {status}"
    kwargs: dict[str, Any] = {"code": code, "status_code": status,
                              "request_id": response.headers.get("x-request-id"), "body": body}
    if status >= 500:
        return errors.ServerError(message, **kwargs)
    cls = _CLASS_BY_STATUS.get(status, errors.BadRequestError)
    if cls is errors.ValidationError:
        return errors.ValidationError(message, errors=[e for e in field_errors if isinstance(e, dict)], **kwargs)
    if cls is errors.RateLimitError:
        return errors.RateLimitError(message, retry_after=retry_after_seconds(response), **kwargs)
    return cls(message, **kwargs)
