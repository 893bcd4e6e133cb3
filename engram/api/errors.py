"""Render every failure as the one error envelope every published client can read.

    {"detail": {"code": "<stable code>", "error": "<same code>", "message": "<text>"},
     "error": {"type": "<kind>", "code": "<stable code>", "message": "<text>"}}

`detail.error` repeats `code` because the family-M client (memsy) reads its error code from
that key (it merges `detail` over the body, so the string wins for it); the top-level `error`
object is what both xtrace SDKs (0.1.1 and 0.5.0) read their typed errors from. Request-
validation failures are 422 with per-field entries. The family-X contract declares FastAPI's
list shape (`{"detail": [{loc, msg, type}]}`) for 422 on some operations and the envelope on
others; we follow it per operation, and the list shape carries `code`/`message` and the
`error` object at the top level so that every client finds them.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from engram.api.codec import JSONResponse
from engram.errors import ServiceError

log = logging.getLogger("engram.api")

# (method, route path) whose 422 the family-X contract declares as FastAPI's list shape.
LIST_SHAPED_422 = frozenset({
    ("POST", "/v1/memories"),
    ("GET", "/v1/memories/jobs/{job_id}"),
    ("GET", "/v1/memories/{memory_id}"),
    ("DELETE", "/v1/memories/{memory_id}"),
})


def _route_key(request: Request) -> tuple[str, str]:
    route = request.scope.get("route")
    return request.method, getattr(route, "path", request.url.path)


def error_type(status: int) -> str:
    """The xtrace SDKs' `type` of an error, by status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(code: str, message: str, status: int, **extra: Any) -> dict[str, Any]:
    """The envelope (module docstring); `extra` goes into `detail`."""
    return {"detail": {"code": code, "error": code, "message": message, **extra},
            "error": {"type": error_type(status), "code": code, "message": message}}


def field_errors(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep only loc/msg/type: pydantic's entries may carry inputs that are not JSON. A body
    that is not JSON says why (FastAPI keeps the parser's reason in `ctx`)."""
    return [{"loc": list(e.get("loc", ())), "msg": _msg(e), "type": str(e.get("type", ""))} for e in raw]


def _msg(entry: dict[str, Any]) -> str:
    msg = str(entry.get("msg", ""))
    reason = (entry.get("ctx") or {}).get("error") if entry.get("type") == "json_invalid" else None
    return f"{msg}: {reason}" if reason and str(reason) not in msg else msg


def _summary(errors: list[dict[str, Any]]) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def validation_response(request: Request, errors: list[dict[str, Any]], code: str = "validation_error",
                        message: str | None = None) -> JSONResponse:
    errors = field_errors(errors)
    message = message or _summary(errors) or "the request is not valid"
    if _route_key(request) in LIST_SHAPED_422:
        body: dict[str, Any] = {"detail": errors, "code": code, "message": message,
                                "error": {"type": error_type(422), "code": code, "message": message}}
    else:
        body = error_body(code, message, 422, errors=errors)
    return JSONResponse(body, status_code=422)


def error_response(error: ServiceError) -> JSONResponse:
    extra = {k: v for k, v in error.extra.items() if k not in ("errors", "loc")}
    return JSONResponse(error_body(error.code, error.message, error.status, **extra), status_code=error.status,
                        headers=error.headers)


async def handle_service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    errors = exc.extra.get("errors")
    if exc.code == "validation_error" and errors:
        return validation_response(request, errors)
    if exc.status == 422 and _route_key(request) in LIST_SHAPED_422:
        # These operations declare only the list shape for 422: one entry naming the field.
        entry = {"loc": exc.extra.get("loc", ["body"]), "msg": exc.message, "type": exc.code}
        return validation_response(request, [entry], exc.code, exc.message)
    return error_response(exc)


async def handle_request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_response(request, list(exc.errors()))


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "invalid_request"}


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "invalid_request" if exc.status_code < 500 else "server_error")
    message = exc.detail if isinstance(exc.detail, str) else code
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        # Starlette names only the first route of the path; a path served by several routes
        # (GET and POST /v1/memories) allows the methods of all of them.
        allowed = _allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        message = f"{request.method} is not allowed here; use {', '.join(allowed)}"
    return JSONResponse(error_body(code, message, exc.status_code), status_code=exc.status_code, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path, read from the app's OpenAPI paths."""
    methods: set[str] = set()
    for pattern, served in _path_methods(request.app).items():
        if pattern.fullmatch(request.url.path):
            methods.update(served)
    if "GET" in methods:
        methods.add("HEAD")  # Starlette answers HEAD wherever it answers GET
    return sorted(methods)


def _path_methods(app: Any) -> dict[re.Pattern[str], set[str]]:
    cached = getattr(app.state, "path_methods", None)
    if cached is None:
        cached = app.state.path_methods = {
            re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path))): {m.upper() for m in ops}
            for path, ops in app.openapi().get("paths", {}).items()}
    return cached


# ---------------------------------------------------------------------- the OpenAPI document
class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorDetail(BaseModel):
    code: str
    error: str
    message: str
    errors: list[FieldError] | None = None


class TypedError(BaseModel):
    """What the xtrace SDKs read their typed errors from."""

    type: str
    code: str
    message: str


class ErrorEnvelope(BaseModel):
    """Every error: `detail.code` is stable (engram/errors.py), `detail.error` repeats it, and
    `error` carries it for the xtrace SDKs."""

    detail: ErrorDetail
    error: TypedError


class ValidationErrorList(BaseModel):
    """422 on the family-X operations whose contract declares FastAPI's list shape."""

    detail: list[FieldError]
    code: str
    message: str
    error: TypedError


_WHY = {
    400: "The request asks for something that cannot be done (e.g. invalid_filter, invalid_messages).",
    401: "No valid API key (unauthorized).",
    403: "The key lacks the scope, or X-Org-Id names another org (insufficient_scope, org_mismatch).",
    404: "Nothing of that id in this org.",
    409: "An id the request would keep belongs to another org of this server (id_conflict).",
    413: "The body is larger than ENGRAM_MAX_BODY_BYTES (payload_too_large).",
    422: "A field breaks a rule (validation_error, invalid_cursor, cursor_mismatch, …).",
    429: "The embedding provider is rate-limited (rate_limit_exceeded); see Retry-After.",
    501: "A part of a published contract this server does not do (not_supported); docs/compatibility.md.",
    503: "The embedding provider is unavailable (unavailable).",
}


def documented(*statuses: int, list_422: bool = False) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the error statuses it can answer, each with its body schema."""
    return {status: {"model": ValidationErrorList if status == 422 and list_422 else ErrorEnvelope,
                     "description": _WHY[status]} for status in statuses}
