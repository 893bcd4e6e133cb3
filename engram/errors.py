"""Every failure a user can see: a stable code, an HTTP status and a message.

The mapping from code to status lives here and nowhere else; the API layer renders an
`ServiceError` into the wire envelope, the worker stores `code`/`message` on failed jobs.
"""

from __future__ import annotations

from typing import Any

# code -> HTTP status. Add a code here before raising it anywhere.
STATUS_BY_CODE: dict[str, int] = {
    # 400: the request is well-formed JSON but asks for something that cannot be done
    "invalid_messages": 400,
    "invalid_filter": 400,
    "invalid_request": 400,
    # 401/403: who you are and what you may do
    "unauthorized": 401,
    "org_mismatch": 403,
    "insufficient_scope": 403,
    "csrf_token_invalid": 403,  # a console form without its session's token (engram/console/session.py)
    "key_limit_reached": 403,
    # what a hosted product offers and a self-hosted engram does not (memsy's typed errors)
    "billing_not_enabled": 403,
    "feature_not_available": 403,
    # 404: nothing of that id in your org (other orgs' ids look exactly like unknown ids)
    "not_found": 404,
    "job_not_found": 404,
    "memory_not_found": 404,
    "key_not_found": 404,
    "org_not_found": 404,
    "group_not_found": 404,
    # 409: an id the request would keep already belongs to another org of this server
    "id_conflict": 409,
    "org_exists": 409,
    # 405: the path exists, the method does not (the Allow header names those that do)
    "method_not_allowed": 405,
    # 408: the request itself did not arrive in time (engram/api/connections.py)
    "request_timeout": 408,
    # 413: too large
    "payload_too_large": 413,
    # 422: the body does not satisfy the schema or a rule of the resource
    "validation_error": 422,
    "invalid_cursor": 422,
    "cursor_mismatch": 422,
    "idempotency_key_reused": 422,
    "immutable_field": 422,
    "reserved_field": 422,
    "empty_text_field": 422,
    "unsupported_include_option": 422,
    "invalid_import": 422,
    "groups_quota_exceeded": 422,
    "invalid_group_ids": 422,
    "contradictory_group_ids": 422,
    "empty_patch": 422,
    "conflicting_fields": 422,  # fields that cannot be sent together (memsy: session_id with exclude_session_id)
    # 429
    "rate_limit_exceeded": 429,
    # 5xx: our fault, never the caller's input
    "server_error": 500,
    "not_supported": 501,  # a documented part of a contract this server does not do (docs/compatibility.md)
    "unavailable": 503,
}

# The few codes the family-X contract answers with a second status, and which one:
# `invalid_request` is 400 for an empty PATCH body but 422 for a text patch on a non-fact.
ALSO_STATUS: dict[str, frozenset[int]] = {"invalid_request": frozenset({422})}

# Codes a failed job or event can carry (SPEC §6.7); they are not HTTP errors.
JOB_FAILURE_CODES = frozenset(
    {"ingest_failed", "rate_limit_exceeded", "content_rejected", "resource_deleted", "not_found"}
)


class ServiceError(Exception):
    """A failure with a stable code, raised by the core and rendered by the API."""

    def __init__(self, code: str, message: str, *, extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None, status: int | None = None) -> None:
        if code not in STATUS_BY_CODE:
            raise ValueError(f"unregistered error code {code!r}")
        if status is not None and status != STATUS_BY_CODE[code] and status not in ALSO_STATUS.get(code, ()):
            raise ValueError(f"error code {code!r} is not answered with status {status}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra or {}
        self.headers = headers or {}
        self._status = status

    @property
    def status(self) -> int:
        return self._status or STATUS_BY_CODE[self.code]

    def __repr__(self) -> str:
        return f"ServiceError({self.code!r}, {self.message!r})"


class ValidationFailed(ServiceError):
    """Request fields that break a rule; carries FastAPI-style per-field entries."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        first = errors[0]
        where = ".".join(str(p) for p in first["loc"])
        super().__init__("validation_error", f"{where}: {first['msg']}", extra={"errors": errors})
        self.errors = errors
