"""The console's routes: HTML pages under /console, each a thin shell over `ConsoleReads`.

A page authenticates from the session cookie (session.py), checks its scope as the API does
(reading needs `read`; an admin action needs `admin` and is a POST with the session's CSRF
token), then renders a template. A ServiceError becomes an error page with the status and
the stable code the API would answer; a missing or dead session goes to the login page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from engram import __version__
from engram.api.deps import admit
from engram.auth import Authenticator, Principal, hash_key
from engram.console import render
from engram.console.reads import (
    JOB_STATUSES, MEMORY_STATUSES, MEMORY_TYPES, SEARCH_LIMITS, ConsoleReads, SearchForm,
)
from engram.console.session import COOKIE, COOKIE_PATH, Session, Sessions
from engram.errors import ServiceError

PREFIX = "/console"
HERE = Path(__file__).parent
# Pages send nothing to any other origin and run no script: everything is engram's own.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}

templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                        trim_blocks=True, lstrip_blocks=True)
render.install(templates)

router = APIRouter(prefix=PREFIX, include_in_schema=False)


class LoginNeeded(Exception):
    """No live session: the browser is sent to the login page."""


def _parts(request: Request) -> tuple[ConsoleReads, Sessions, Authenticator]:
    state = request.app.state
    if not hasattr(state, "console_reads"):  # made at first use: the service's store is open by then
        state.console_reads = ConsoleReads(state.service)
        state.console_sessions = Sessions(state.service.store.server_secret())
    return state.console_reads, state.console_sessions, state.authenticator


async def _who(request: Request) -> tuple[Principal, Session]:
    _, sessions, authenticator = _parts(request)
    session = sessions.read(request.cookies.get(COOKIE))
    if session is None:
        raise LoginNeeded()
    try:
        principal = await run_in_threadpool(authenticator.authenticate_digest, session.key_digest or None)
    except ServiceError as exc:
        if exc.code == "unauthorized":
            raise LoginNeeded() from None
        raise
    admit(request, principal)  # a page is a request of the key: rate limited and counted as the API's are
    return principal, session


def _html(request: Request, template: str, http_status: int = 200, **context: Any) -> HTMLResponse:
    body = templates.get_template(template).render(request=request, version=__version__, prefix=PREFIX, **context)
    return HTMLResponse(body, status_code=http_status, headers=SECURITY_HEADERS)


async def _page(request: Request, scope: str, build: Callable[[Principal, Session], Awaitable[tuple[str, dict]]],
                ) -> Response:
    """Authenticate, build, render; errors as pages."""
    try:
        principal, session = await _who(request)
    except LoginNeeded:
        return _to_login(request)
    except ServiceError as exc:
        return _error(request, exc, None, None)
    reads, sessions, _ = _parts(request)
    chrome = {"principal": principal, "csrf": sessions.csrf_token(session),
              "org": await run_in_threadpool(_org_name, reads, principal.org_id)}
    try:
        principal.require(scope)
        template, context = await build(principal, session)
    except ServiceError as exc:
        return _error(request, exc, principal, chrome)
    return _html(request, template, **chrome, **context)


def _org_name(reads: ConsoleReads, org_id: str) -> str:
    org = reads.store.get_org(org_id)
    return org.name if org else org_id


def _error(request: Request, exc: ServiceError, principal: Principal | None, chrome: dict | None) -> HTMLResponse:
    response = _html(request, "error.html", http_status=exc.status, code=exc.code, message=exc.message,
                     **(chrome or {"principal": principal, "csrf": None, "org": None}))
    response.headers.update(exc.headers)  # a 429's Retry-After
    return response


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{PREFIX}/login?{urlencode({'next': target})}", status_code=303,
                            headers=SECURITY_HEADERS)


def _safe_next(value: str | None) -> str:
    """Only a console path: a login never sends the browser anywhere else."""
    if value and value.startswith(PREFIX + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return f"{PREFIX}/users"


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form body (the only kind the console's forms send), last value of each field."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in fields.items()}


def _arg(request: Request, name: str) -> str:
    return request.query_params.get(name, "")


# ---------------------------------------------------------------------- login
@router.get("")
async def console_root() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/users", status_code=303)


@router.get("/login")
async def login_form(request: Request) -> HTMLResponse:
    _, _, authenticator = _parts(request)
    open_mode = await run_in_threadpool(_open_mode, authenticator)
    return _html(request, "login.html", open_mode=open_mode, next=_safe_next(_arg(request, "next")), error=None,
                 principal=None)


def _open_mode(authenticator: Authenticator) -> bool:
    try:
        return authenticator.authenticate_digest(None).key_id is None
    except ServiceError:
        return False


@router.post("/login")
async def login(request: Request) -> Response:
    _, sessions, authenticator = _parts(request)
    form = await _form(request)
    secret = form.get("key", "").strip()
    target = _safe_next(form.get("next"))
    digest = hash_key(secret) if secret else None
    try:
        principal = await run_in_threadpool(authenticator.authenticate_digest, digest)
        principal.require("read")
    except ServiceError as exc:
        open_mode = await run_in_threadpool(_open_mode, authenticator)
        return _html(request, "login.html", http_status=exc.status, open_mode=open_mode, next=target,
                     error=f"{exc.code}: {exc.message}", principal=None)
    _, cookie = sessions.issue(digest if principal.key_id is not None else "")
    response = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(COOKIE, cookie, max_age=sessions.lifetime_s, path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    _, sessions, _ = _parts(request)
    session = sessions.read(request.cookies.get(COOKIE))
    if session is not None and not sessions.csrf_ok(session, (await _form(request)).get("csrf")):
        # Another site cannot end a session either (its form has no token).
        return _error(request, ServiceError("csrf_token_invalid", "the form's CSRF token is not this session's"),
                      None, None)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303, headers=SECURITY_HEADERS)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


# ---------------------------------------------------------------------- read pages
@router.get("/users")
async def users_page(request: Request) -> Response:
    async def build(principal: Principal, _: Session) -> tuple[str, dict]:
        reads, _, _ = _parts(request)
        page = await run_in_threadpool(reads.users, principal.org_id, _arg(request, "cursor") or None)
        return "users.html", {"page": page}
    return await _page(request, "read", build)


@router.get("/user")
async def user_page(request: Request) -> Response:
    async def build(principal: Principal, _: Session) -> tuple[str, dict]:
        reads, _, _ = _parts(request)
        user_id, conv_id, status = _arg(request, "user_id"), _arg(request, "conv_id"), _arg(request, "status")
        if not user_id:
            raise ServiceError("validation_error", "user_id is required")
        conversations = await run_in_threadpool(reads.conversations, principal.org_id, user_id,
                                                _arg(request, "conv_cursor") or None)
        memories = await run_in_threadpool(lambda: reads.memories(
            principal.org_id, user_id=user_id, conv_id=conv_id or None, status=status or None,
            type_=_arg(request, "type") or None, cursor=_arg(request, "cursor") or None))
        return "user.html", {"user_id": user_id, "conv_id": conv_id, "status": status, "type": _arg(request, "type"),
                             "conversations": conversations, "memories": memories,
                             "statuses": MEMORY_STATUSES, "types": MEMORY_TYPES}
    return await _page(request, "read", build)


@router.get("/memories")
async def memories_page(request: Request) -> Response:
    async def build(principal: Principal, _: Session) -> tuple[str, dict]:
        reads, _, _ = _parts(request)
        status, type_ = _arg(request, "status"), _arg(request, "type")
        memories = await run_in_threadpool(lambda: reads.memories(
            principal.org_id, user_id=None, conv_id=None, status=status or None, type_=type_ or None,
            cursor=_arg(request, "cursor") or None))
        return "memories.html", {"memories": memories, "status": status, "type": type_,
                                 "statuses": MEMORY_STATUSES, "types": MEMORY_TYPES}
    return await _page(request, "read", build)


@router.get("/memories/{memory_id}")
async def memory_page(request: Request, memory_id: str) -> Response:
    async def build(principal: Principal, _: Session) -> tuple[str, dict]:
        reads, _, _ = _parts(request)
        return "memory.html", {"view": await run_in_threadpool(reads.memory, principal.org_id, memory_id)}
    return await _page(request, "read", build)


@router.get("/search")
async def search_page(request: Request) -> Response:
    async def build(principal: Principal, _: Session) -> tuple[str, dict]:
        reads, _, _ = _parts(request)
        limit = _arg(request, "limit") or "10"
        form = SearchForm(query=_arg(request, "q"), user_id=_arg(request, "user_id"),
                          filters=_arg(request, "filters"), limit=int(limit) if limit.isdigit() else -1)
        try:
            await reads.search(principal, form)
        except ServiceError as exc:  # shown beside the form, so the query can be fixed
            return "search.html", {"form": form, "limits": SEARCH_LIMITS, "error": exc, "http_status": exc.status}
        return "search.html", {"form": form, "limits": SEARCH_LIMITS, "error": None}
    return await _page(request, "read", build)


@router.get("/jobs")
async def jobs_page(request: Request) -> Response:
    async def build(principal: Principal, _: Session) -> tuple[str, dict]:
        reads, _, _ = _parts(request)
        status = _arg(request, "status")
        page = await run_in_threadpool(reads.jobs, principal.org_id, status or None, _arg(request, "cursor") or None)
        counts = await run_in_threadpool(reads.job_counts, principal.org_id)
        return "jobs.html", {"page": page, "status": status, "statuses": JOB_STATUSES, "counts": counts}
    return await _page(request, "read", build)


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: str) -> Response:
    async def build(principal: Principal, _: Session) -> tuple[str, dict]:
        reads, _, _ = _parts(request)
        return "job.html", {"job": await run_in_threadpool(reads.job, principal.org_id, job_id)}
    return await _page(request, "read", build)


@router.get("/health")
async def health_page(request: Request) -> Response:
    async def build(principal: Principal, _: Session) -> tuple[str, dict]:
        reads, _, _ = _parts(request)
        return "health.html", {"health": await run_in_threadpool(reads.health)}
    return await _page(request, "read", build)


@router.get("/usage")
async def usage_page(request: Request) -> Response:
    async def build(principal: Principal, _: Session) -> tuple[str, dict]:
        reads, _, _ = _parts(request)
        return "usage.html", {"usage": await run_in_threadpool(reads.usage, principal.org_id)}
    return await _page(request, "read", build)


@router.get("/keys")
async def keys_page(request: Request) -> Response:
    async def build(principal: Principal, _: Session) -> tuple[str, dict]:
        reads, _, _ = _parts(request)
        return "keys.html", {"keys": await run_in_threadpool(reads.keys, principal)}
    return await _page(request, "admin", build)


# ---------------------------------------------------------------------- admin actions (POST + CSRF)
async def _action(request: Request, act: Callable[[ConsoleReads, Principal, dict[str, str]], Any],
                  done: Callable[[dict[str, str], Any], tuple[str, dict]]) -> Response:
    form = await _form(request)

    async def build(principal: Principal, session: Session) -> tuple[str, dict]:
        reads, sessions, _ = _parts(request)
        if not sessions.csrf_ok(session, form.get("csrf")):
            raise ServiceError("csrf_token_invalid", "the form's CSRF token is missing or not this session's;"
                                                     " reload the page and try again")
        principal.require("admin")
        outcome = await run_in_threadpool(act, reads, principal, form)
        return done(form, outcome)
    # Authenticated with `read`: the admin check is after the CSRF check, so a forged form is
    # refused as forged whatever the key, and a real form of a read key as insufficient_scope.
    return await _page(request, "read", build)


@router.post("/keys/revoke")
async def revoke_key(request: Request) -> Response:
    return await _action(request, lambda reads, principal, form: reads.revoke_key(principal, form.get("key_id", "")),
                         lambda form, _: ("done.html", {"what": f"Key {form.get('key_id', '')} revoked.",
                                                        "back": f"{PREFIX}/keys"}))


@router.post("/users/erase")
async def erase_user(request: Request) -> Response:
    def act(reads: ConsoleReads, principal: Principal, form: dict[str, str]) -> Any:
        user_id = form.get("user_id", "")
        if form.get("confirm", "") != user_id:
            raise ServiceError("validation_error", "type the user id into the confirmation field to erase the user")
        return reads.erase_user(principal, user_id)

    def done(form: dict[str, str], erased: Any) -> tuple[str, dict]:
        return "done.html", {"what": f"User {form.get('user_id')} erased: {erased.events} events, "
                                     f"{erased.memories} memories, {erased.jobs_deleted} jobs deleted.",
                             "back": f"{PREFIX}/users"}
    return await _action(request, act, done)
