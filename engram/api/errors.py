"""Render every failure as the one error envelope both families' clients can read.

    {"detail": {"code": "<stable code>", "error": "<same code>", "message": "<text>"}}

`error` repeats `code` because the family-M client reads its error code from that key.
Request-validation failures are 422 with per-field entries. The family-X contract
declares FastAPI's list shape (`{"detail": [{loc, msg, type}]}`) for 422 on some
operations and the envelope on others; we follow it per operation, and the list shape
also carries `code`/`error`/`message` at the top level so that every client finds them.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def field_errors(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep only loc/msg/type: pydantic's entries may carry inputs that are not JSON."""
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in raw]


def _summary(errors: list[dict[str, Any]]) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def validation_response(request: Request, errors: list[dict[str, Any]], code: str = "validation_error",
                        message: str | None = None) -> JSONResponse:
    errors = field_errors(errors)
    message = message or _summary(errors) or "the request is not valid"
    if _route_key(request) in LIST_SHAPED_422:
        body: dict[str, Any] = {"detail": errors, "code": code, "error": code, "message": message}
    else:
        body = {"detail": {"code": code, "error": code, "message": message, "errors": errors}}
    return JSONResponse(body, status_code=422)


def error_response(error: ServiceError) -> JSONResponse:
    detail = {"code": error.code, "error": error.code, "message": error.message}
    detail.update({k: v for k, v in error.extra.items() if k not in ("errors", "loc")})
    return JSONResponse({"detail": detail}, status_code=error.status, headers=error.headers)


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


_HTTP_CODES = {404: "not_found", 405: "invalid_request", 413: "payload_too_large", 400: "invalid_request"}


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "invalid_request" if exc.status_code < 500 else "server_error")
    message = exc.detail if isinstance(exc.detail, str) else code
    body = {"detail": {"code": code, "error": code, "message": message}}
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))
