"""The client's exceptions: one class per kind of failure a caller handles differently.

Every exception the client raises on purpose derives from `EngramError`. Errors the
server answered carry its stable `code`, the HTTP `status_code`, the `request_id` to quote
in a bug report and the decoded `body`; switch on the class or on `code`, never on `message`.

    EngramError
    ├── APIConnectionError        the server could not be reached (after retries)
    ├── PollTimeoutError          poll_until_done ran out of time (also a TimeoutError)
    └── APIStatusError            the server answered with an error status
        ├── BadRequestError       400, 413 and other 4xx without a class of their own
        │   └── ValidationError   422 (field errors in `.errors`)
        ├── AuthenticationError   401
        ├── PermissionDeniedError 403
        ├── NotFoundError         404
        ├── RateLimitError        429 (`.retry_after` in seconds, when the server said)
        └── ServerError           5xx
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engram.client.models import IngestJob

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "EngramError",
    "NotFoundError",
    "PermissionDeniedError",
    "PollTimeoutError",
    "RateLimitError",
    "ServerError",
    "ValidationError",
]


class EngramError(Exception):
    """Base class of every error the engram client raises."""

    def __init__(self, message: str, *, code: str | None = None, status_code: int | None = None,
                 request_id: str | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status_code = status_code
        self.request_id = request_id
        self.body = body

    def __str__(self) -> str:
        parts = [f"{self.status_code}" if self.status_code else "", self.code or ""]
        prefix = " ".join(p for p in parts if p)
        suffix = f" (request id {self.request_id})" if self.request_id else ""
        return f"{prefix}: {self.message}{suffix}" if prefix else f"{self.message}{suffix}"


class APIConnectionError(EngramError):
    """No usable answer: connection refused or reset, timed out, or a broken response."""


class PollTimeoutError(EngramError, TimeoutError):
    """`poll_until_done` gave up; the job goes on on the server. `.job` is its last state."""

    def __init__(self, message: str, *, job: "IngestJob") -> None:
        super().__init__(message, code="poll_timeout")
        self.job = job


class APIStatusError(EngramError):
    """The server answered with a 4xx or 5xx status."""


class BadRequestError(APIStatusError):
    """The request cannot be served as sent (400 `invalid_filter`, `invalid_messages`, 413 …)."""


class ValidationError(BadRequestError):
    """422: the body breaks the schema or a rule. `.errors` lists `{loc, msg, type}` per field."""

    def __init__(self, message: str, *, errors: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.errors = errors or []


class AuthenticationError(APIStatusError):
    """401: no API key, or one that is not valid (revoked, mistyped)."""


class PermissionDeniedError(APIStatusError):
    """403: the key lacks a scope, or `X-Org-Id` names another org."""


class NotFoundError(APIStatusError):
    """404: nothing of that id in your org (`memory_not_found`, `job_not_found`, …)."""


class RateLimitError(APIStatusError):
    """429 after the client's own retries. `.retry_after`: seconds the server asked to wait."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(APIStatusError):
    """5xx: the server's fault, never the caller's input."""
