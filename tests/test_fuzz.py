"""The fuzz suite (issue 12): hostile input against a real `engram serve`, over HTTP.

For every request it sends, it asserts what a hostile client is owed:
  * no 5xx, and an answer within ENGRAM_FUZZ_REQUEST_TIMEOUT_S;
  * every 4xx is the error envelope `{"detail": {"code", "error", "message", …}, "error": {type,
    code, message}}` — or, for 422 on the operations in `engram/api/errors.py` LIST_SHAPED_422,
    `{"detail": [{loc, msg, type}…], "code", "message", "error": {…}}` — with a code registered
    in `engram/errors.py` STATUS_BY_CODE that is answered with that status;
  * every 2xx with a body is strict JSON (no `NaN`, no lone surrogate);
  * after the run the server still answers, its workers still turn an ingest into searchable
    memories, and the fuzzed orgs' list and search still answer 2xx (nothing was poisoned).

The parts, in the order they run:
  test_schemathesis_engram_openapi   schemathesis over the server's own /openapi.json
  test_schemathesis_contract_v01     schemathesis over ../shared/contracts/xtrace-memory-openapi-v0.1.json
                                     (read at run time; skipped if absent), with the contract's
                                     response schemas checked through tests/contract.py
  test_hostile_catalogue[route-cls]  every route × every input class, each value named
  test_hostile_hypothesis[route]     hypothesis: hostile JSON mutations of a valid request
  test_auth_*                        401/403 paths on a server with API keys
  test_hostile_write_does_not_poison_reads[vector]   one org per vector: write, then read it all
  test_server_still_answers_after_the_run[open|keyed]

A failing test lists its *distinct* failures (deduplicated by route, status and the server's
exception and frame), each with the input class, the response excerpt, the server log's
exception line and a reproducing request. Two servers of the suite's own are used: one in open
mode (loopback, no key) for the read routes and schemathesis, one with API keys for the write
routes and the auth paths.

Budget (environment):
  ENGRAM_FUZZ_EXAMPLES           hypothesis examples per schemathesis operation and mode, and per
                                 route for the hostile-JSON strategies (twice that). Default 40:
                                 the whole file then takes about 2.5 minutes on 2 cores. Longer:
                                 ENGRAM_FUZZ_EXAMPLES=500 .venv/bin/python -m pytest tests/test_fuzz.py
  ENGRAM_FUZZ_SEED               unset: derandomized, the same examples on every run (CI); an
                                 integer: that seed instead, to explore other examples.
  ENGRAM_FUZZ_REQUEST_TIMEOUT_S  how long one hostile request may take (default 5).
  ENGRAM_FUZZ_REPORT             a file to which every distinct failure is appended as a JSON line.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import time
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from engram.api.errors import LIST_SHAPED_422
from engram.errors import ALSO_STATUS, STATUS_BY_CODE
from tests import hostile as H
from tests.conftest import ServerProcess, create_key

EXAMPLES = int(os.environ.get("ENGRAM_FUZZ_EXAMPLES", "40"))
SEED = os.environ.get("ENGRAM_FUZZ_SEED")
REQUEST_TIMEOUT_S = float(os.environ.get("ENGRAM_FUZZ_REQUEST_TIMEOUT_S", "5"))
REPORT = os.environ.get("ENGRAM_FUZZ_REPORT")
MAX_BODY = 5 * 1024 * 1024  # SPEC §7, the server's default

SEED_USER, SEED_CONV = "fz-user", "fz-conv"


def fuzz_settings(examples: int = EXAMPLES) -> Callable[[Callable], Callable]:
    """Reproducible: derandomized unless ENGRAM_FUZZ_SEED names a seed. No shrinking: the
    campaigns record every distinct failure themselves instead of stopping at the first."""
    configured = settings(max_examples=max(1, examples), derandomize=SEED is None, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
                          print_blob=False)

    def apply(test: Callable) -> Callable:
        test = configured(test)
        return seed(int(SEED))(test) if SEED is not None else test

    return apply


# ====================================================================== the server's log
_RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d+ ", re.M)
_UNHANDLED = re.compile(r"unhandled error \(request ([^)]*)\)")
_ENGRAM_FRAME = re.compile(r'File "[^"]*?/(engram/[^"]+)", line (\d+), in (\S+)')


class ServerLog:
    """Reads the server's log as it grows: request id → (exception line, innermost engram frame)."""

    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.offset = 0
        self.carry = ""
        self.errors: dict[str, tuple[str, str]] = {}

    def error_of(self, request_id: str) -> tuple[str, str] | None:
        self._read()
        return self.errors.get(request_id)

    def _read(self) -> None:
        if not self.srv.log_path or not self.srv.log_path.exists():
            return
        with open(self.srv.log_path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        text = self.carry + data.decode("utf-8", "replace")
        starts = [m.start() for m in _RECORD_START.finditer(text)]
        records = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
        self.carry = records[-1] if records else text[-20000:]
        for record in records:
            found = _UNHANDLED.search(record.split("\n", 1)[0])
            if found:
                self.errors[found.group(1)] = _summarise_traceback(record)


def _summarise_traceback(record: str) -> tuple[str, str]:
    lines = [line for line in record.splitlines()[1:] if line.strip()]
    exception = next((line for line in reversed(lines) if not line.startswith((" ", "\t", "^", "~"))), "")
    frames = _ENGRAM_FRAME.findall(record)
    where = f"{frames[-1][0]}:{frames[-1][1]} in {frames[-1][2]}" if frames else ""
    return exception.strip(), where


# ====================================================================== findings
@dataclass
class Finding:
    route: str
    input_class: str
    case: str
    status: int | None
    problem: str
    excerpt: str
    server_error: str = ""
    server_frame: str = ""
    repro: str = ""
    count: int = 1
    other_cases: list[str] = field(default_factory=list)

    def key(self) -> tuple[Any, ...]:
        if self.server_error:
            # The exception and its message without the parts that vary (quoted values, numbers).
            shape = re.sub(r"\\[ux][0-9a-fA-F]+", "", self.server_error)
            shape = re.sub(r"'[^'\s]*'|\"[^\"\s]*\"|\d+|(?<=character)s", "", shape)
            shape = re.sub(r"[\s-]+", " ", shape)[:100]
            return self.route, self.status, shape, self.server_frame
        return self.route, self.status, re.sub(r"\d{3,}", "N", self.problem)

    def render(self, n: int) -> str:
        head = f"[{n}] {self.route} · {self.input_class} · {self.status if self.status is not None else 'no answer'}: " \
               f"{self.problem}" + (f"  (×{self.count})" if self.count > 1 else "")
        lines = [head, f"    case: {self.case}"]
        if self.other_cases:
            lines.append(f"    also: {'; '.join(self.other_cases[:8])}{' …' if len(self.other_cases) > 8 else ''}")
        if self.server_error or self.server_frame:
            lines.append(f"    server: {_clip(self.server_error, 300)}  @ {self.server_frame or '?'}")
        lines.append(f"    response: {self.excerpt}")
        lines.append(f"    repro: {self.repro}")
        return "\n".join(lines)


class Findings:
    """Distinct failures of one test, deduplicated by Finding.key()."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.items: dict[tuple[Any, ...], Finding] = {}
        self.sent = 0
        self.unsent = 0  # probes the HTTP client itself refused to build (kept at zero by design)
        self.statuses: dict[str, int] = {}  # what the run got back, for the report file

    def add(self, finding: Finding) -> None:
        known = self.items.get(finding.key())
        if known is None:
            self.items[finding.key()] = finding
            return
        known.count += 1
        if len(finding.repro) < len(known.repro):  # keep the smallest reproduction
            finding.other_cases, finding.count = known.other_cases, known.count
            finding.other_cases.append(f"{known.input_class}: {known.case}")
            self.items[finding.key()] = known = finding
        else:
            known.other_cases.append(f"{finding.input_class}: {finding.case}")
        known.other_cases[:] = [c for c in dict.fromkeys(known.other_cases)
                                if c != f"{known.input_class}: {known.case}"][:50]

    def __bool__(self) -> bool:
        return bool(self.items)

    def report(self) -> str:
        body = "\n".join(f.render(i) for i, f in enumerate(self.items.values(), 1))
        return f"{len(self.items)} distinct failure(s) in {self.test} ({self.sent} requests):\n{body}"

    def saw(self, status: int | None) -> None:
        key = str(status) if status is not None else "no answer"
        self.statuses[key] = self.statuses.get(key, 0) + 1

    def check(self) -> None:
        if REPORT:
            with open(REPORT, "a", encoding="utf-8") as out:
                out.write(json.dumps({"test": self.test, "sent": self.sent, "unsent": self.unsent,
                                      "statuses": dict(sorted(self.statuses.items()))}) + "\n")
                for f in self.items.values():
                    out.write(json.dumps({"test": self.test, **f.__dict__}, ensure_ascii=True) + "\n")
        if self.items:
            pytest.fail(self.report(), pytrace=False)


def _clip(text: str, limit: int) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


# ====================================================================== judging a response
def envelope_problem(method: str, template: str | None, status: int, content: bytes) -> str | None:
    """What is wrong with a 4xx body, or None."""
    if method == "HEAD":
        return None
    try:
        body = json.loads(content)
    except ValueError:
        return f"the body is not JSON: {_clip(content.decode('utf-8', 'replace'), 80)!r}"
    if not isinstance(body, dict) or "detail" not in body:
        return "the body has no 'detail'"
    detail = body["detail"]
    list_shaped = status == 422 and (method, template) in LIST_SHAPED_422
    if isinstance(detail, list):
        if not list_shaped:
            return "'detail' is a list (only 422 on the LIST_SHAPED_422 operations may be)"
        if not all(isinstance(e, dict) and isinstance(e.get("loc"), list) and isinstance(e.get("msg"), str)
                   and isinstance(e.get("type"), str) for e in detail):
            return "a 'detail' entry is not {loc: list, msg: str, type: str}"
        holder = body
    elif isinstance(detail, dict):
        if list_shaped:
            return "422 on a LIST_SHAPED_422 operation answered with the object shape"
        holder = detail
    else:
        return "'detail' is neither an object nor a list"
    code = holder.get("code")
    if code not in STATUS_BY_CODE:
        return f"code {code!r} is not registered in engram/errors.py"
    if status != STATUS_BY_CODE[code] and status not in ALSO_STATUS.get(code, ()):
        return f"code {code!r} (registered as {STATUS_BY_CODE[code]}) answered with {status}"
    if holder is detail and detail.get("error") != code:
        return f"'detail.error' ({detail.get('error')!r}) does not repeat 'code' ({code!r})"
    typed = body.get("error")
    if not isinstance(typed, dict) or typed.get("code") != code or not isinstance(typed.get("type"), str) \
            or typed.get("message") != holder.get("message"):
        return f"the top-level 'error' ({typed!r}) is not {{type, code, message}} of this error"
    if not isinstance(holder.get("message"), str) or not holder["message"]:
        return "no 'message'"
    return None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def success_problem(method: str, status: int, content: bytes, content_type: str = "application/json") -> str | None:
    """Why a 2xx body is not what it says it is: strict JSON, for JSON Lines (an export) strict
    JSON on every line, for Prometheus' text (/metrics) UTF-8."""
    if status == 204 or method == "HEAD" or not content:
        return None
    if content_type.startswith("text/plain"):  # /metrics: Prometheus' text format, UTF-8
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            return "the 2xx text body is not UTF-8"
        return None
    lines = content.split(b"\n") if content_type.startswith("application/x-ndjson") else [content]
    try:
        for line in lines:
            if line or len(lines) == 1:
                text = line.decode("utf-8")  # strict: a lone surrogate written as UTF-8 fails here
                json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:
        return f"the 2xx body is not strict JSON ({_clip(str(exc), 80)})"
    return None


class Routes:
    """The server's route templates, to tell which operation a concrete path reached."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.templates = [(m.upper(), t) for t, item in document.get("paths", {}).items() for m in item
                          if m in ("get", "post", "put", "patch", "delete")]

    def _matching(self, url: str) -> Iterator[tuple[str, str, tuple[int, ...]]]:
        path = unquote(urlsplit(url).path, errors="replace")
        segments = path.strip("/").split("/")
        for m, template in self.templates:
            parts = template.strip("/").split("/")
            if len(parts) == len(segments) and all(segments) and \
                    all(p.startswith("{") or p == s for p, s in zip(parts, segments)):
                yield m, template, tuple(1 if p.startswith("{") else 0 for p in parts)

    def resolve(self, method: str, url: str) -> str | None:
        """The operation a concrete request reaches: literal segments beat parameters."""
        ranked = sorted((rank, template) for m, template, rank in self._matching(url) if m == method)
        return ranked[0][1] if ranked else None

    def methods_of(self, url: str) -> set[str]:
        return {m for m, _, _ in self._matching(url)}


# ====================================================================== sending probes
@dataclass
class Probe:
    """One hostile request: `body` is bytes, or a callable returning an iterator (sent chunked)."""

    route: str
    input_class: str
    case: str
    method: str
    url: str
    body: bytes | Callable[[], Iterator[bytes]] | None = None
    content_type: str | None = "application/json"
    headers: dict[str, str | bytes] = field(default_factory=dict)
    expect: frozenset[int] | None = None
    expect_code: str | None = None
    repro: str | None = None

    def reproduction(self) -> str:
        if self.repro:
            return self.repro
        shown = _clip(self.url, 200)
        parts = [f"{self.method} {shown}"]
        extra = {k: (v.decode("latin-1") if isinstance(v, bytes) else v) for k, v in self.headers.items()}
        if self.content_type != "application/json":
            extra["Content-Type"] = self.content_type
        if extra:
            parts.append("headers " + _clip(json.dumps(extra, ensure_ascii=True), 200))
        if isinstance(self.body, bytes):
            text = self.body.decode("utf-8", "backslashreplace")
            parts.append(f"body ({len(self.body)} bytes) {_clip(text, 400)}")
        elif self.body is not None:
            parts.append("body: streamed (chunked)")
        return "  ".join(parts)


_request_ids = itertools.count(1)


class Target:
    """A running server of the suite's own, as one org sees it."""

    def __init__(self, name: str, srv: ServerProcess, org: str, key: str | None) -> None:
        self.name, self.srv, self.org, self.key = name, srv, org, key
        self.log = ServerLog(srv)
        self.client = httpx.Client(base_url=srv.url, timeout=REQUEST_TIMEOUT_S, headers=_auth(key))
        self.openapi = httpx.get(f"{srv.url}/openapi.json", timeout=30).json()
        self.routes = Routes(self.openapi)
        self.ctx: dict[str, Any] = {}

    def close(self) -> None:
        self.client.close()

    def send(self, probe: Probe, findings: Findings, *, auth: bool = True) -> httpx.Response | None:
        request_id = f"fz-{self.name}-{next(_request_ids)}"
        headers: dict[str, Any] = {"X-Request-Id": request_id}
        if probe.content_type is not None:
            headers["Content-Type"] = probe.content_type
        headers.update(probe.headers)
        content = probe.body() if callable(probe.body) else probe.body
        try:
            if not auth:
                # A probe of the auth paths: the client's default credentials are dropped.
                request = httpx.Request(probe.method, self.srv.url + probe.url, content=content, headers=headers)
            else:
                request = self.client.build_request(probe.method, probe.url, content=content, headers=headers)
        except (httpx.InvalidURL, httpx.LocalProtocolError):
            findings.unsent += 1
            return None
        findings.sent += 1
        started = time.monotonic()
        try:
            response = self.client.send(request)
        except (httpx.LocalProtocolError, httpx.InvalidURL):
            findings.unsent += 1  # the client itself refused to send it: not a finding about the server
            return None
        except httpx.TimeoutException:
            findings.add(self._finding(probe, None, f"no answer within {REQUEST_TIMEOUT_S:g}s", "", request_id))
            return None
        except httpx.TransportError as exc:
            findings.add(self._finding(probe, None, f"no answer: {type(exc).__name__}: {exc}", "", request_id))
            return None
        elapsed = time.monotonic() - started
        findings.saw(response.status_code)
        problems = [p for p in (self.judge(probe, response), self.allow_problem(probe, response)) if p]
        if not problems and elapsed > REQUEST_TIMEOUT_S:
            problems.append(f"answered after {elapsed:.1f}s (budget {REQUEST_TIMEOUT_S:g}s)")
        for problem in problems:
            findings.add(self._finding(probe, response.status_code, problem, _clip(response.text, 300), request_id))
        return response

    def allow_problem(self, probe: Probe, response: httpx.Response) -> str | None:
        """A 405's Allow header must name every method the path has."""
        if response.status_code != 405:
            return None
        allowed = {m.strip().upper() for m in response.headers.get("allow", "").split(",") if m.strip()}
        missing = self.routes.methods_of(probe.url) - allowed
        if missing:
            return f"405 Allow: {', '.join(sorted(allowed)) or '(none)'}, but the path also has {', '.join(sorted(missing))}"
        return None

    def judge(self, probe: Probe, response: httpx.Response) -> str | None:
        status = response.status_code
        template = self.routes.resolve(probe.method, probe.url)
        if probe.expect is not None and status not in probe.expect:
            return f"expected {'/'.join(map(str, sorted(probe.expect)))}, got {status}"
        if status >= 500 and not _declined(response):
            return "server error"
        if 400 <= status < 500 or _declined(response):
            problem = envelope_problem(probe.method, template, status, response.content)
            if problem is None and probe.expect_code is not None:
                code = _code_of(response)
                if code != probe.expect_code:
                    problem = f"expected code {probe.expect_code!r}, got {code!r}"
            return problem
        if 200 <= status < 300:
            if probe.expect_code is not None:
                return f"expected {probe.expect_code!r}, got {status}"
            return success_problem(probe.method, status, response.content, response.headers.get("content-type", ""))
        return None

    def _finding(self, probe: Probe, status: int | None, problem: str, excerpt: str, request_id: str) -> Finding:
        error = self.log.error_of(request_id) if status is None or status >= 500 else None
        if status is not None and status >= 500 and error is None:
            time.sleep(0.05)  # the log line is written before the answer, but give the OS a moment
            error = self.log.error_of(request_id)
        return Finding(route=probe.route, input_class=probe.input_class, case=probe.case, status=status,
                       problem=problem, excerpt=excerpt, server_error=error[0] if error else "",
                       server_frame=error[1] if error else "", repro=probe.reproduction())

    # -------------------------------------------------------------- plain calls (set-up, checks)
    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.client.request(method, url, timeout=60, **kwargs)

    def wait_idle(self, timeout_s: float = 90.0) -> None:
        """Until the queue is empty (every job the fuzzing created has ended)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            queue = httpx.get(f"{self.srv.url}/v1/health", timeout=10).json()["components"]["queue"]
            if queue.get("pending", 0) == 0 and queue.get("running", 0) == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"the queue of {self.name} did not drain in {timeout_s}s: {queue}")


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _code_of(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("detail"), dict):
        return body["detail"].get("code")
    return body.get("code") if isinstance(body, dict) else None


def _wait_job(target: Target, job_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = target.call("GET", f"/v1/memories/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end in {timeout_s}s")


SEED_MESSAGES = [
    {"role": "user", "content": "I live in Lisbon and I work as a nurse.", "name": "Ana", "date": "2026-05-01T10:00:00Z"},
    {"role": "user", "content": "My favorite color is green.", "date": "2026-05-01T10:01:00Z"},
    {"role": "user", "content": "I have two cats named Tom and Jerry.", "date": "2026-05-01T10:02:00Z"},
]


def seed_org(target: Target, user: str = SEED_USER, conv: str = SEED_CONV) -> dict[str, Any]:
    """A few memories, a job, an event and real cursors in the target's org."""
    response = target.call("POST", "/v1/memories", params={"wait": "true"},
                           json={"messages": SEED_MESSAGES, "user_id": user, "conv_id": conv,
                                 "metadata": {"topic": "seed"}})
    assert response.status_code in (200, 202), response.text
    job = _wait_job(target, response.json()["id"])
    assert job["status"] == "succeeded", job
    memories = [ref["id"] for ref in job["result"]["memories_created"]]
    assert len(memories) >= 2, job
    events = target.call("POST", "/v1/ingest", json={"events": [
        {"actor_id": user, "session_id": conv, "kind": "user_message", "content": "I drive a blue van."}]})
    assert events.status_code == 200, events.text
    ctx = {"user": user, "conv": conv, "memory": memories[0], "memories": memories, "job": job["id"],
           "event": events.json()["event_ids"][0], "patch_target": memories[-1]}
    real = {}
    for order in ("created_at_desc", "created_at_asc"):
        page = target.call("GET", "/v1/memories", params={"limit": 1, "order": order}).json()
        assert page["next_cursor"], page
        real[f"list {order}"] = page["next_cursor"]
    # The search route's base body (same query and filters: a search cursor is bound to them).
    page = target.call("POST", "/v1/memories/search", json={"query": "where does the user live",
                                                            "filters": {"user_id": user}, "limit": 1}).json()
    assert page["next_cursor"], page
    real["search"] = page["next_cursor"]
    ctx["cursors"] = real
    return ctx


# ====================================================================== servers
@pytest.fixture(scope="module")
def open_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """Open mode (loopback, no key): the read routes and schemathesis, as org `default`."""
    srv = ServerProcess(tmp_path_factory.mktemp("fuzz-open") / "data")
    try:
        srv.start()
        target = Target("open", srv, "default", None)
        target.ctx = seed_org(target)
        yield target
        target.close()
    finally:
        srv.stop()
        srv.kill()


@dataclass
class Keyed:
    srv: ServerProcess
    writer: Target  # org fz-writes: the write routes are fuzzed here
    keys: dict[str, str]
    other: Target  # org fz-other: the auth paths (valid requests only), never fuzzed
    make_counter: Iterator[int] = field(default_factory=itertools.count)

    def new_org(self, label: str) -> Target:
        org = f"fz-{label}-{next(self.make_counter)}"
        target = Target(org, self.srv, org, create_key(self.srv, org))
        target.log = self.writer.log  # one log per server, read once
        return target


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    """A server with API keys: the write routes (org fz-writes), auth paths, and poison checks."""
    srv = ServerProcess(tmp_path_factory.mktemp("fuzz-keyed") / "data")
    keys = {"writer": create_key(srv, "fz-writes"), "other": create_key(srv, "fz-other"),
            "other reader": create_key(srv, "fz-other", "read")}
    try:
        srv.start()
        writer = Target("keyed", srv, "fz-writes", keys["writer"])
        writer.ctx = seed_org(writer)
        other = Target("keyed-other", srv, "fz-other", keys["other"])
        other.log = writer.log
        other.ctx = seed_org(other, "other-user", "other-conv")
        yield Keyed(srv, writer, keys, other)
        writer.close()
        other.close()
    finally:
        srv.stop()
        srv.kill()


def target_for(request: pytest.FixtureRequest, server: str) -> Target:
    return request.getfixturevalue("open_target") if server == "open" else request.getfixturevalue("keyed").writer


# ====================================================================== schemathesis
def _declined(response: Any) -> bool:
    """A documented refusal, not a fault: `501 not_supported`, which engram answers for a
    published route it does not do (docs/compatibility.md). Its envelope is checked as a 4xx's."""
    if response.status_code != 501:
        return False
    try:
        return response.json()["error"]["code"] == "not_supported"
    except (ValueError, KeyError, TypeError):
        return False


def _schemathesis_campaign(target: Target, schema: Any, findings: Findings, notes: dict[str, str],
                           validate: Callable[[str, str, int, Any], None] | None = None,
                           extra_headers: dict[str, str] | None = None,
                           only: Callable[[str, str], bool] = lambda method, path: True) -> None:
    import requests
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                                   positive_data_acceptance, response_schema_conformance,
                                                   status_code_conformance)

    # The contract's response schemas are checked through tests/contract.py (`validate`), which
    # knows the document's broken Memory.details oneOf; schemathesis' own schema check would
    # report that defect on every memory.
    doc_checks = [status_code_conformance, content_type_conformance]
    if validate is None:
        doc_checks += [response_schema_conformance, positive_data_acceptance, negative_data_rejection]
    session = requests.Session()
    session.headers.update(_auth(target.key))
    real = {"memory_id": target.ctx["memory"], "job_id": target.ctx["job"]}
    for result in schema.get_all_operations():
        operation = result.ok()
        method, template = operation.method.upper(), operation.path
        if not only(method, template):
            continue
        params = {p: real[p] for p in real if "{" + p + "}" in template}
        passes: list[tuple[str, Any, dict[str, str] | None]] = [
            ("positive", GenerationMode.POSITIVE, None), ("negative", GenerationMode.NEGATIVE, None)]
        if params and method != "DELETE":
            passes.append(("positive, real ids", GenerationMode.POSITIVE, params))

        for label, mode, path_parameters in passes:
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

            @fuzz_settings()
            @given(case=strategy)
            def run(case: Any) -> None:
                request_id = f"fz-{target.name}-st-{next(_request_ids)}"
                headers = {"X-Request-Id": request_id, **(extra_headers or {})}
                probe = Probe(f"{method} {template}", f"schemathesis {label}", "", method, case.formatted_path)
                findings.sent += 1
                try:
                    response = case.call(base_url=target.srv.url, session=session, headers=headers,
                                         timeout=REQUEST_TIMEOUT_S)
                except requests.Timeout:
                    probe.repro = case.as_curl_command(headers=headers, base_url=target.srv.url)
                    findings.add(target._finding(probe, None, f"no answer within {REQUEST_TIMEOUT_S:g}s", "",
                                                 request_id))
                    return
                except requests.RequestException as exc:
                    probe.repro = _clip(case.as_curl_command(headers=headers, base_url=target.srv.url), 600)
                    findings.add(target._finding(probe, None, f"no answer: {type(exc).__name__}", "", request_id))
                    return
                problems = []
                findings.saw(response.status_code)
                try:
                    if not _declined(response):
                        case.validate_response(response, checks=[not_a_server_error])
                except BaseExceptionGroup as group:
                    problems += [f"schemathesis {f.code} {f.title}" for f in group.exceptions]
                status = response.status_code
                if 400 <= status < 500 or _declined(response):
                    envelope = envelope_problem(method, template, status, response.content)
                    if envelope:
                        problems.append(envelope)
                elif 200 <= status < 300:
                    content_type = response.headers.get("content-type") or [""]  # schemathesis: lists
                    strict = success_problem(method, status, response.content,
                                             content_type[0] if isinstance(content_type, list) else content_type)
                    if strict:
                        problems.append(strict)
                if validate is not None and status < 500:
                    try:
                        body = response.json() if response.content else None
                    except ValueError:
                        body = None
                    try:
                        validate(method, case.formatted_path, status, body)
                    except AssertionError as exc:
                        text = str(exc)
                        if "is not declared by the contract" in text:
                            notes.setdefault(f"{method} {template}: undocumented status {status} "
                                             f"({_code_of_requests(response)})", "")
                        elif status < 300:
                            problems.append("2xx body does not match the contract: "
                                            + _clip(text.split("\n", 1)[-1].strip(), 300))
                        else:
                            problems.append(f"{status} body does not match the contract: "
                                            + _clip(text.split("\n", 1)[-1].strip(), 300))
                # What the server's own document says and does not do: reported, not asserted.
                try:
                    case.validate_response(response, checks=doc_checks)
                except BaseExceptionGroup as group:
                    for failure in group.exceptions:
                        detail = f"status {status} ({_code_of_requests(response)})" if failure.code == "ST103" \
                            else _clip(failure.message.splitlines()[0] if failure.message else "", 120)
                        if failure.title in ("Schema-violating request accepted", "Schema-valid request rejected"):
                            detail = f"{label}: status {status} ({_code_of_requests(response)})"
                        notes.setdefault(f"{method} {template}: {failure.title}: {detail}", "")
                except Exception:  # noqa: BLE001 - a check that cannot run is no finding
                    pass
                if problems:
                    probe.repro = _clip(case.as_curl_command(headers=headers, base_url=target.srv.url), 800)
                    for problem in dict.fromkeys(problems):
                        findings.add(target._finding(probe, status, problem, _clip(response.text, 300),
                                                     request_id))

            try:
                run()
            except Exception as exc:  # noqa: BLE001 - e.g. Unsatisfiable: nothing negative to generate
                if type(exc).__name__ not in ("Unsatisfiable", "FailedHealthCheck"):
                    raise
                # e.g. no negative example exists for an operation with only a free-form path parameter


def _code_of_requests(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return "not JSON"
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail.get("code") if isinstance(detail, dict) else body.get("code") if isinstance(body, dict) else "")


def _emit_notes(test: str, notes: dict[str, str]) -> None:
    if not notes:
        return
    text = f"{test}: {len(notes)} documentation finding(s) (reported, not asserted):\n  " + "\n  ".join(sorted(notes))
    warnings.warn(text, stacklevel=2)
    if REPORT:
        with open(REPORT, "a", encoding="utf-8") as out:
            out.write(json.dumps({"test": test, "notes": sorted(notes)}) + "\n")


def test_schemathesis_engram_openapi(open_target: Target) -> None:
    """schemathesis, positive and negative, over every operation of the server's own document."""
    import schemathesis

    findings = Findings("schemathesis over /openapi.json")
    notes: dict[str, str] = {}
    schema = schemathesis.openapi.from_dict(copy.deepcopy(open_target.openapi))
    # A key created here would end open mode for the rest of the campaign: the admin routes
    # have a campaign of their own, with the operator's key (below).
    _schemathesis_campaign(open_target, schema, findings, notes, only=lambda method, path: not _admin_route(path))
    _emit_notes("engram /openapi.json", notes)
    findings.check()


def _admin_route(path: str) -> bool:
    return path.startswith(("/v1/keys", "/v1/orgs", "/v1/me"))


def test_schemathesis_admin_routes(keyed: "Keyed") -> None:
    """schemathesis over the admin API's operations, with the server operator's key (an admin
    key of the default org, which may do everything they offer)."""
    import schemathesis

    operator = Target("operator", keyed.srv, "default", create_key(keyed.srv, "default", "read,write,admin"))
    operator.log = keyed.writer.log
    operator.ctx = keyed.writer.ctx
    findings = Findings("schemathesis over the admin routes")
    notes: dict[str, str] = {}
    schema = schemathesis.openapi.from_dict(copy.deepcopy(keyed.writer.openapi))
    _schemathesis_campaign(operator, schema, findings, notes, only=lambda method, path: _admin_route(path))
    _emit_notes("engram /openapi.json (admin)", notes)
    operator.close()
    findings.check()


def test_schemathesis_contract_v01(open_target: Target) -> None:
    """schemathesis over the family-X contract; responses checked against its schemas (2xx and the
    declared error statuses) through tests/contract.py, which validates Memory.details by type."""
    from tests import contract

    if not contract.CONTRACT_PATH.is_file():
        pytest.skip(f"the v0.1 contract is not at {contract.CONTRACT_PATH}")
    import schemathesis

    findings = Findings("schemathesis over xtrace-memory-openapi-v0.1.json")
    notes: dict[str, str] = {}
    schema = schemathesis.openapi.from_path(str(contract.CONTRACT_PATH))
    # The contract's security schemes make schemathesis send an X-Org-Id of its own; name the real org.
    _schemathesis_campaign(open_target, schema, findings, notes, validate=contract.validate_response,
                           extra_headers={"X-Org-Id": open_target.org})
    _emit_notes("xtrace v0.1 contract", notes)
    findings.check()


# ====================================================================== the routes
Path_ = tuple[Any, ...]


@dataclass
class Route:
    method: str
    template: str
    server: str  # "open" (reads) or "keyed" (writes, org fz-writes)
    body: Callable[[dict[str, Any]], Any] | None = None
    strings: list[Path_] = field(default_factory=list)
    times: list[Path_] = field(default_factory=list)
    others: list[Path_] = field(default_factory=list)
    objects: list[Path_] = field(default_factory=list)
    query: Callable[[dict[str, Any]], dict[str, str]] | None = None
    path_param: Callable[[dict[str, Any]], str] | None = None
    extra_classes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"

    def url(self, ctx: dict[str, Any], path_value: str | None = None, query: str = "") -> str:
        path = self.template
        if self.path_param is not None:
            value = path_value if path_value is not None else self.path_param(ctx)
            path = re.sub(r"\{[^}]+\}", lambda _: value, path, count=1)
        return path + (("?" + query) if query else "")

    @property
    def classes(self) -> list[str]:
        found: list[str] = []
        if self.body is not None:
            found += ["surrogates", "control characters", "odd text", "long text", "numbers", "wrong types",
                      "odd keys", "deep nesting"]
            if self.times:
                found.append("timestamps")
            found += ["raw bodies", "content types", "oversize"]
        if self.query is not None:
            found += ["query surrogates", "query control characters", "query odd text", "query long text",
                      "query numbers", "query wrong types"]
        if self.path_param is not None:
            found.append("path ids")
        found += list(self.extra_classes)
        found += ["query junk", "headers"]
        return found


def _x_ingest_body(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "I live in Porto now.", "name": "Ana",
                          "date": "2026-05-02T10:00:00Z", "dia_id": "D1:1"}],
            "user_id": "fz-writer", "conv_id": "fz-writes-conv", "agent_id": "fz-agent", "app_id": "fz-app",
            "metadata": {"topic": "travel"}, "extract_artifacts": False}


def _m_ingest_body(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"events": [{"actor_id": "fz-writer", "session_id": "fz-writes-sess", "kind": "user_message",
                        "content": "I work as a baker.", "ts": "2026-05-02T10:00:00Z",
                        "metadata": '{"topic": "work"}', "role_id": "r1", "team_id": "t1",
                        "event_id": f"fz-{uuid.uuid4().hex}"}]}


ROUTES: list[Route] = [
    Route("POST", "/v1/memories/search", "open",
          body=lambda c: {"query": "where does the user live", "filters": {"user_id": c["user"]}, "limit": 5,
                          "include": ["source_events"]},
          strings=[("query",), ("filters", "user_id"), ("include", 0)],
          others=[("filters",), ("limit",), ("cursor",), ("include",)], objects=[("filters",)],
          extra_classes=("filters", "filter timestamps", "huge arrays", "cursors")),
    Route("GET", "/v1/memories", "open",
          query=lambda c: {"user_id": c["user"], "limit": "5", "order": "created_at_desc"},
          extra_classes=("cursors",)),
    Route("GET", "/v1/memories/{memory_id}", "open", path_param=lambda c: c["memory"]),
    Route("GET", "/v1/memories/{memory_id}/revisions", "open", path_param=lambda c: c["memory"]),
    Route("GET", "/v1/memories/jobs/{job_id}", "open", path_param=lambda c: c["job"]),
    Route("POST", "/v1/status", "open", body=lambda c: {"event_ids": [c["event"]]},
          strings=[("event_ids", 0)], others=[("event_ids",)], extra_classes=("huge arrays",)),
    Route("POST", "/v1/search", "open",
          body=lambda c: {"query": "where does the user live", "actor_id": c["user"], "session_id": c["conv"],
                          "exclude_session_id": "elsewhere", "limit": 5, "threshold": 0.0,
                          "include_source_events": True},
          strings=[("query",), ("actor_id",), ("session_id",), ("exclude_session_id",)],
          others=[("limit",), ("threshold",), ("include_source_events",)]),
    Route("GET", "/v1/health", "open", extra_classes=("body on GET",)),
    Route("ANY", "unknown paths and methods", "open", extra_classes=("unknown paths", "unsupported methods")),
    Route("POST", "/v1/memories", "keyed", body=_x_ingest_body,
          strings=[("messages", 0, "role"), ("messages", 0, "content"), ("messages", 0, "name"),
                   ("messages", 0, "dia_id"), ("user_id",), ("conv_id",), ("agent_id",), ("app_id",),
                   ("metadata", "topic")],
          times=[("messages", 0, "date")],
          others=[("messages",), ("messages", 0), ("metadata",), ("extract_artifacts",)],
          objects=[("metadata",), ("messages", 0)], extra_classes=("huge arrays", "wait parameter")),
    Route("PATCH", "/v1/memories/{memory_id}", "keyed",
          body=lambda c: {"text": "I live in Faro now.", "metadata": {"topic": "moved"}},
          strings=[("text",), ("metadata", "topic")], others=[("metadata",)], objects=[("metadata",)],
          path_param=lambda c: c["patch_target"], extra_classes=("huge arrays",)),
    Route("DELETE", "/v1/memories/{memory_id}", "keyed", path_param=lambda c: "00000000-0000-4000-8000-000000000000"),
    Route("POST", "/v1/ingest", "keyed", body=_m_ingest_body,
          strings=[("events", 0, "actor_id"), ("events", 0, "session_id"), ("events", 0, "kind"),
                   ("events", 0, "content"), ("events", 0, "role_id"), ("events", 0, "team_id"),
                   ("events", 0, "event_id"), ("events", 0, "metadata")],
          times=[("events", 0, "ts")], others=[("events",), ("events", 0)], objects=[("events", 0)],
          extra_classes=("metadata JSON string", "huge arrays")),
]
ROUTES_BY_NAME = {r.name: r for r in ROUTES}


def _set(doc: Any, path: Path_, value: Any) -> Any:
    doc = copy.deepcopy(doc)
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return doc


def _drop(doc: Any, path: Path_) -> Any:
    doc = copy.deepcopy(doc)
    node = doc
    for part in path[:-1]:
        node = node[part]
    node.pop(path[-1], None)
    return doc


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


def _query_text(value: Any) -> str:
    """A value as query-string text: strings percent-encoded (surrogates as WTF-8 bytes)."""
    if isinstance(value, H.Raw):
        return H.pct(value.text)
    if isinstance(value, str):
        return H.pct(value)
    return H.pct(H.dumps(value).decode())


def _qs(params: dict[str, Any]) -> str:
    return "&".join(f"{H.pct(k)}={_query_text(v)}" for k, v in params.items())


# ====================================================================== the catalogue
def catalogue(route: Route, input_class: str, ctx: dict[str, Any]) -> list[Probe]:
    """Every probe of one input class against one route, each named."""
    probes: list[Probe] = []

    def body_probe(case: str, doc: Any, **kw: Any) -> None:
        probes.append(Probe(route.name, input_class, case, route.method, route.url(ctx), H.dumps(doc), **kw))

    def raw_probe(case: str, body: Any, **kw: Any) -> None:
        probes.append(Probe(route.name, input_class, case, route.method, kw.pop("url", None) or route.url(ctx),
                            body, **kw))

    base = route.body(ctx) if route.body is not None else None
    scalar_slots = route.strings + route.times + route.others

    def each_value(slots: list[Path_], values: dict[str, Any]) -> None:
        for slot in slots:
            for name, value in values.items():
                body_probe(f"{_dotted(slot)} = {name}", _set(base, slot, value))

    if input_class == "surrogates":
        each_value(route.strings, H.SURROGATES)
        for obj in route.objects:
            for name, value in H.SURROGATES.items():
                body_probe(f"key {name} in {_dotted(obj)}", _set(base, obj + (value,), "v"))
    elif input_class == "control characters":
        each_value(route.strings, H.CONTROL)
        for obj in route.objects:
            body_probe(f"NUL key in {_dotted(obj)}", _set(base, obj + ("k\x00",), "v"))
    elif input_class == "odd text":
        each_value(route.strings, H.ODD_TEXT)
    elif input_class == "long text":
        sizes = {k: v for k, v in H.LONG_TEXT.items() if k != "4.5 MB"}
        each_value(route.strings, sizes)
        # Every free-text field needs a limit (issue 12): 4.5 MB of text is refused, whichever the field.
        for slot in route.strings:
            body_probe(f"{_dotted(slot)} = 4.5 MB", _set(base, slot, H.LONG_TEXT["4.5 MB"]),
                       expect=frozenset({400, 413, 422}),
                       repro=f"{route.method} {route.url(ctx)}  body {H.dumps(base)[:200]!r} with "
                             f"{_dotted(slot)} = 'w' * 4_500_000")
        if route.template in ("/v1/memories/search", "/v1/search"):
            # Org-wide (no user scope): the query goes through the whole lexical index.
            words = " ".join(f"w{i}" for i in range(150_000))
            body_probe("org-wide query of 150,000 distinct words (1 MB)", {"query": words},
                       repro=f"{route.method} {route.template}  body {{\"query\": \" \".join(f\"w{{i}}\" for i in "
                             f"range(150_000))}}")
    elif input_class == "numbers":
        each_value(scalar_slots, H.NUMBERS)
    elif input_class == "wrong types":
        each_value(scalar_slots, H.WRONG_TYPES)
        for key in list(base):
            body_probe(f"missing {key}", _drop(base, (key,)))
    elif input_class == "timestamps":
        each_value(route.times, H.TIMESTAMPS)
    elif input_class == "odd keys":
        for obj in [()] + route.objects:
            for name, key in H.ODD_KEYS.items():
                body_probe(f"key {name} in {_dotted(obj) or 'the body'}", _set(base, obj + (key,), "v"))
                if obj:
                    body_probe(f"key {name} in {_dotted(obj)} with an object value",
                               _set(base, obj + (key,), {"$gt": 1, "__proto__": {"x": 1}}))
    elif input_class == "deep nesting":
        for slot in route.others + route.objects + route.strings[:1]:
            for depth in (100, 200, 1000, 2000):
                body_probe(f"{_dotted(slot)} = objects {depth} deep", _set(base, slot, H.nest_objects(depth)),
                           repro=f"{route.method} {route.url(ctx)}  body {H.dumps(base)[:160]!r} with "
                                 f"{_dotted(slot)} = {{\"a\": …}} nested {depth} deep")
                body_probe(f"{_dotted(slot)} = lists {depth} deep", _set(base, slot, H.nest_lists(depth)),
                           repro=f"{route.method} {route.url(ctx)}  body {H.dumps(base)[:160]!r} with "
                                 f"{_dotted(slot)} = [[…]] nested {depth} deep")
        for obj in route.objects:
            for depth in (100, 1000):
                body_probe(f"{_dotted(obj)}.deep = objects {depth} deep",
                           _set(base, obj + ("deep",), H.nest_objects(depth)),
                           repro=f"{route.method} {route.url(ctx)}  body {H.dumps(base)[:160]!r} with "
                                 f"{_dotted(obj)}.deep = {{\"a\": …}} nested {depth} deep")
    elif input_class == "raw bodies":
        for name, raw in H.RAW_BODIES.items():
            raw_probe(name, raw)
    elif input_class == "content types":
        for name, ctype in H.CONTENT_TYPES.items():
            raw_probe(f"valid body, content type {name}", H.dumps(base), content_type=ctype)
        raw_probe("form-encoded body", b"query=x&limit=5", content_type="application/x-www-form-urlencoded")
        raw_probe("multipart body", b"--b\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\nx\r\n--b--\r\n",
                  content_type="multipart/form-data; boundary=b")
        raw_probe("gzip claimed, plain sent", H.dumps(base), headers={"Content-Encoding": "gzip"})
    elif input_class == "oversize":
        prefix = b'{"query": "'
        over = MAX_BODY + 100_000
        raw_probe(f"chunked, {over} bytes, no Content-Length", lambda: H.oversized(prefix, over),
                  expect=frozenset({413}),
                  repro=f"{route.method} {route.url(ctx)}  Transfer-Encoding: chunked, body "
                        f"'{{\"query\": \"' + 'a' * {over} + '\"}}' in 64 KiB chunks")
        raw_probe(f"{over} bytes with Content-Length", b"".join(H.oversized(prefix, over)),
                  expect=frozenset({413}), repro=f"{route.method} {route.url(ctx)}  Content-Length: {over + 13}")
        raw_probe("chunked, exactly the limit + 1", lambda: H.chunks(b"x" * (MAX_BODY + 1)),
                  expect=frozenset({413}),
                  repro=f"{route.method} {route.url(ctx)}  Transfer-Encoding: chunked, {MAX_BODY + 1} bytes of 'x'")
    elif input_class == "filters":
        for name, filters in _hostile_filters(ctx).items():
            recipe = FILTER_RECIPES.get(name)
            body_probe(name, {**base, "filters": filters},
                       repro=f'POST /v1/memories/search  body {{"query": "where does the user live", '
                             f'"filters": {recipe}}}' if recipe else None)
    elif input_class == "filter timestamps":
        for fld in ("created_at", "updated_at", "valid_at"):
            for name, ts in H.TIMESTAMPS.items():
                body_probe(f"{fld} $gt {name}", {**base, "filters": {fld: {"$gt": ts}}})
            for name in ("9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"):
                body_probe(f"{fld} $between [{name}, …]",
                           {**base, "filters": {fld: {"$between": [name, "9999-12-31T23:59:59-12:00"]}}})
                body_probe(f"{fld} = {name}", {**base, "filters": {fld: name}})
                body_probe(f"{fld} $in [{name}]", {**base, "filters": {fld: {"$in": [name]}}})
        body_probe("metadata date $gt edge", {**base, "filters": {"when": {"$gt": "9999-12-31T23:59:59-12:00"}}})
    elif input_class == "cursors":
        _cursor_probes(route, ctx, probes, input_class, base)
    elif input_class == "huge arrays":
        _huge_array_probes(route, ctx, base, body_probe)
    elif input_class == "metadata JSON string":
        for name, text in _metadata_strings().items():
            body_probe(f"events.0.metadata = {name}", _set(base, ("events", 0, "metadata"), text))
        for name, value in {"dict with surrogate": {"k": "\udc00"}, "dict with NaN": {"k": H.Raw("NaN")},
                            "dict 1e400": {"k": H.Raw("1e400")}, "dict deep": H.nest_objects(300)}.items():
            body_probe(f"events.0.metadata = {name}", _set(base, ("events", 0, "metadata"), value))
    elif input_class == "wait parameter":
        for name, value in {"word": "maybe", "2": "2", "NaN": "NaN", "surrogate": "\ud800", "NUL": "\x00",
                            "empty": "", "long": "t" * 10_000, "list": "[true]"}.items():
            raw_probe(f"wait={name}", H.dumps(base), url=route.url(ctx, query="wait=" + H.pct(value)))
        raw_probe("wait twice", H.dumps(base), url=route.url(ctx, query="wait=false&wait=maybe"))
    elif input_class.startswith("query ") and route.query is not None:
        _query_probes(route, ctx, probes, input_class)
    elif input_class == "path ids":
        ids = {**H.PATH_IDS, **{f"surrogate: {k}": H.pct(v) for k, v in H.SURROGATES.items()},
               **{f"control: {k}": H.pct(v) for k, v in list(H.CONTROL.items())[:4]}}
        for name, value in ids.items():
            raw_probe(f"id = {name}", H.dumps(base) if base is not None else None,
                      url=route.url(ctx, path_value=value), content_type=None if base is None else "application/json")
    elif input_class == "query junk":
        junk = {"surrogate name": {"\ud800": "x"}, "surrogate value": {"x": "\ud800"}, "NUL": {"x\x00": "\x00"},
                "many params": {f"p{i}": "v" for i in range(2000)}, "long value": {"x": "v" * 30_000},
                "odd names": {"$where": "1", "__proto__": "x", "": "y"}}
        method = route.method if route.method != "ANY" else "GET"
        for name, params in junk.items():
            url = route.url(ctx, query=_qs(params)) if route.method != "ANY" else "/v1/nope?" + _qs(params)
            probes.append(Probe(route.name, input_class, f"query {name}", method, url,
                                H.dumps(base) if base is not None else None,
                                content_type=None if base is None else "application/json"))
        if route.method != "ANY":
            raw_probe("bare ? and &&", H.dumps(base) if base is not None else None, url=route.url(ctx, query="&&=&"),
                      content_type=None if base is None else "application/json")
    elif input_class == "headers":
        url = route.url(ctx) if route.method != "ANY" else "/v1/nope"
        method = route.method if route.method != "ANY" else "GET"
        body = H.dumps(base) if base is not None else None
        for name, headers in _hostile_headers().items():
            probes.append(Probe(route.name, input_class, name, method, url, body, headers=headers,
                                content_type="application/json" if body is not None else None))
    elif input_class == "body on GET":
        for name, raw in list(H.RAW_BODIES.items())[:8]:
            raw_probe(f"GET with body {name}", raw)
        raw_probe("GET with a declared 6 MB body", b"x" * (MAX_BODY + 1), expect=frozenset({200, 413}))
    elif input_class == "unknown paths":
        for path in ["/v1/nope", "/v1/memories/a/b/c", "/v1//memories", "//v1/memories", "/v1/memories/",
                     "/%00", "/v1/%ED%A0%80", "/v1/memories/%2e%2e/%2e%2e/etc", "/v1/" + "p" * 8000,
                     "/v1/memories/jobs", "/v1/memories/jobs/", "/v2/memories", "/V1/MEMORIES", "/v1/conversations/x",
                     "/v1/usage", "/metrics", "/console", "/v1/memories/x/revisions/y", "/;", "/v1/memories;x"]:
            for method in ("GET", "POST"):
                probes.append(Probe(route.name, input_class, f"{method} {path[:60]}", method, path,
                                    b"{}" if method == "POST" else None,
                                    content_type="application/json" if method == "POST" else None))
    elif input_class == "unsupported methods":
        for method, path in [("PUT", "/v1/memories"), ("DELETE", "/v1/memories"), ("PATCH", "/v1/memories"),
                             ("GET", "/v1/ingest"), ("PUT", "/v1/ingest"), ("DELETE", "/v1/ingest"),
                             ("GET", "/v1/status"), ("GET", "/v1/search"), ("POST", "/v1/health"),
                             ("DELETE", "/v1/health"), ("PUT", f"/v1/memories/{ctx['memory']}"),
                             ("POST", f"/v1/memories/{ctx['memory']}"), ("POST", f"/v1/memories/jobs/{ctx['job']}"),
                             ("DELETE", f"/v1/memories/jobs/{ctx['job']}"), ("GET", "/v1/memories/search"),
                             ("OPTIONS", "/v1/memories"), ("OPTIONS", "/v1/ingest"), ("TRACE", "/v1/memories"),
                             ("HEAD", "/v1/ingest"), ("PATCH", "/v1/memories/search")]:
            probes.append(Probe(route.name, input_class, f"{method} {path}", method, path, b"{}",
                                content_type="application/json"))
    else:  # pragma: no cover - a class listed without a generator
        raise AssertionError(f"no probes for {input_class!r}")
    return probes


def _hostile_filters(ctx: dict[str, Any]) -> dict[str, Any]:
    u = ctx["user"]
    filters: dict[str, Any] = {
        "unknown operator $where": {"user_id": {"$where": "1"}},
        "$regex": {"user_id": {"$regex": ".*"}},
        "operator at top level": {"$or": [{"user_id": u}]},
        "filters is a list": [{"user_id": u}],
        "filters is a string": "user_id = 'x'",
        "AND not a list": {"AND": {"user_id": u}},
        "OR empty": {"OR": []},
        "NOT of a list": {"NOT": [{"user_id": u}]},
        "NOT empty": {"NOT": {}},
        "int 2**64": {"n": 2**64},
        "int -(2**63)-1": {"n": -(2**63) - 1},
        "int 10**30 $gt": {"n": {"$gt": 10**30}},
        "int 2**64 $in": {"n": {"$in": [2**64, 1]}},
        "int 2**64 $between": {"n": {"$between": [0, 2**64]}},
        "int 2**64 $ne": {"n": {"$ne": 2**64}},
        "5000 digits": {"n": H.Raw("9" * 5000)},
        "1e308 $gt": {"n": {"$gt": H.Raw("1e308")}},
        "1e400 $lt": {"n": {"$lt": H.Raw("1e400")}},
        "-1e400 eq": {"n": H.Raw("-1e400")},
        "NaN eq": {"n": H.Raw("NaN")},
        "NaN $gt": {"n": {"$gt": H.Raw("NaN")}},
        "Infinity $between": {"n": {"$between": [H.Raw("-Infinity"), H.Raw("Infinity")]}},
        "$between one bound": {"n": {"$between": [1]}},
        "$between mixed": {"n": {"$between": [1, "z"]}},
        "$between nested": {"n": {"$between": [[1], {"a": 2}]}},
        "$in empty": {"user_id": {"$in": []}},
        "$in not a list": {"user_id": {"$in": "x"}},
        "$in of objects": {"user_id": {"$in": [{"a": 1}]}},
        "$in of nulls": {"user_id": {"$in": [None]}},
        "$exists string": {"user_id": {"$exists": "yes"}},
        "$eq object": {"user_id": {"$eq": {"$eq": u}}},
        "core field number": {"user_id": 5},
        "core field bool": {"type": True},
        "status filter": {"status": {"$in": ["active", "superseded", "retracted", "\ud800"]}},
        "type unknown": {"type": "nonsense"},
        "metadata key $gt": {"$gt": 1},
        "key __proto__": {"__proto__": {"polluted": True}},
        "key empty": {"": "x"},
        "key quote": {'a"b': "x"},
        "key backslash": {"a\\b": "x"},
        "key NUL": {"a\x00": "x"},
        "key surrogate": {"\ud800": "x"},
        "key 257": {"k" * 257: "x"},
        "key 10k": {"k" * 10_000: "x"},
        "key dotted": {"a.b": "x"},
        "key json path": {"$.a[0]": "x"},
        "value surrogate": {"user_id": "\ud800"},
        "value surrogate in $in": {"user_id": {"$in": ["ok", "\udc00"]}},
        "value NUL": {"user_id": "a\x00b"},
        "value 300k": {"user_id": "u" * 300_000},
        "metadata value surrogate": {"topic": "\ud800"},
        "metadata $in surrogate": {"topic": {"$in": ["\udfff"]}},
        "metadata value object": {"topic": {"a": 1}},
        "sql in value": {"topic": "x' OR '1'='1"},
        "sql in key": {"topic') OR 1=1 --": "x"},
        "many keys": {f"k{i}": i for i in range(2000)},
    }
    for depth in (100, 200, 500, 1000, 2000):
        for op in ("NOT", "AND", "OR"):
            wrap = '{"NOT": …}' if op == "NOT" else f'{{"{op}": [ … ]}}'
            filters[f"{op} nested {depth} deep"] = H.nest_filter(depth, op, {"user_id": u})
            FILTER_RECIPES[f"{op} nested {depth} deep"] = f'{wrap} nested {depth} deep around {{"user_id": "{u}"}}'
        filters[f"operator objects {depth} deep"] = {"topic": H.nest_objects(depth, "x", "$eq")}
        FILTER_RECIPES[f"operator objects {depth} deep"] = f'{{"topic": {{"$eq": {{"$eq": … "x"}}}}}} ({depth} deep)'
        filters[f"metadata value objects {depth} deep"] = {"topic": H.nest_objects(depth)}
        FILTER_RECIPES[f"metadata value objects {depth} deep"] = f'{{"topic": {{"a": {{"a": … "x"}}}}}} ({depth} deep)'
    big = {
        "$in of 5000 values": ({"user_id": {"$in": [f"u{i}" for i in range(5000)]}},
                               '{"user_id": {"$in": ["u0", …, "u4999"]}}'),
        "$nin of 5000 values": ({"user_id": {"$nin": [f"u{i}" for i in range(5000)]}},
                                '{"user_id": {"$nin": ["u0", …, "u4999"]}}'),
        "metadata $in of 5000 numbers": ({"n": {"$in": list(range(5000))}}, '{"n": {"$in": [0, …, 4999]}}'),
        "OR of 5000 clauses": ({"OR": [{"user_id": f"u{i}"} for i in range(5000)]},
                               '{"OR": [{"user_id": "u0"}, …, {"user_id": "u4999"}]}'),
        "AND of 5000 clauses": ({"AND": [{"topic": {"$ne": f"t{i}"}} for i in range(5000)]},
                                '{"AND": [{"topic": {"$ne": "t0"}}, …, {"topic": {"$ne": "t4999"}}]}'),
        "5000 top-level keys": ({f"m{i}": "x" for i in range(5000)}, '{"m0": "x", …, "m4999": "x"}'),
        "OR of 5000 NOTs": ({"OR": [{"NOT": {"user_id": f"u{i}"}} for i in range(5000)]},
                            '{"OR": [{"NOT": {"user_id": "u0"}}, …, {"NOT": {"user_id": "u4999"}}]}'),
        "many keys": ({f"k{i}": i for i in range(2000)}, '{"k0": 0, …, "k1999": 1999}'),
    }
    filters.pop("many keys")
    for name, (value, recipe) in big.items():
        filters[name] = value
        FILTER_RECIPES[name] = recipe
    return filters


FILTER_RECIPES: dict[str, str] = {}  # how to rebuild the filters too large to quote


def _metadata_strings() -> dict[str, str]:
    return {
        "surrogate escape": '{"k": "\\ud800"}',
        "surrogate key": '{"\\udc00": "v"}',
        "NaN": '{"k": NaN}',
        "Infinity": '{"k": Infinity}',
        "1e400": '{"k": 1e400}',
        "5000 digits": '{"k": ' + "9" * 5000 + "}",
        "objects 1000 deep": H.nested_json_text(1000),
        "objects 200 deep": H.nested_json_text(200),
        "lists 1000 deep": '{"k": ' + H.nested_json_text(1000, "list") + "}",
        "lists 2000 deep": H.nested_json_text(2000, "list"),
        "lists 600 deep": '{"k": ' + H.nested_json_text(600, "list") + "}",
        "truncated deep lists": H.nested_json_text(100_000, "list")[:4096],
        "array": "[1, 2]",
        "string": '"s"',
        "not JSON": "not json {",
        "NUL": '{"k": "a\\u0000b"}',
        "reserved keys": '{"org_id": "other", "user_id": "x", "tag1": "t", "__proto__": {"a": 1}}',
        "4097 chars": '{"k": "' + "x" * 4090 + '"}',
        "65 keys": json.dumps({f"k{i}": i for i in range(65)}),
        "duplicate keys": '{"k": 1, "k": 2}',
        "edge date": '{"when": "9999-12-31T23:59:59-12:00"}',
    }


def _huge_array_probes(route: Route, ctx: dict[str, Any], base: Any, body_probe: Callable[..., None]) -> None:
    if route.template == "/v1/memories/search":
        body_probe("include of 5000 items", {**base, "include": ["source_events"] * 5000})
        body_probe("include of 5000 unknown", {**base, "include": [f"i{i}" for i in range(5000)]})
    elif route.template == "/v1/status":
        for n in (500, 501, 5000, 100_000):
            body_probe(f"{n} event ids", {"event_ids": [f"01J{i:023d}" for i in range(n)]},
                       repro=f"POST /v1/status  body {{\"event_ids\": [{n} ULID-shaped strings]}}")
        body_probe("5000 surrogate ids", {"event_ids": ["\ud800"] * 5000})
    elif route.template == "/v1/memories":
        message = base["messages"][0]
        for n in (1000, 1001, 5000):
            body_probe(f"{n} messages", {**base, "messages": [dict(message, content=f"I own {i} hats.") for i in range(n)]},
                       repro=f"POST /v1/memories  {n} messages like {json.dumps(message)}")
        body_probe("65 metadata keys", {**base, "metadata": {f"k{i}": i for i in range(65)}})
        body_probe("5000 metadata keys", {**base, "metadata": {f"k{i}": i for i in range(5000)}})
        body_probe("metadata list of 5000", {**base, "metadata": {"k": list(range(5000))}})
        body_probe("metadata 4097 chars", {**base, "metadata": {"k": "x" * 4097}})
    elif route.template == "/v1/ingest":
        event = base["events"][0]
        for n in (1000, 1001, 5000):
            body_probe(f"{n} events", {"events": [dict(event, content=f"I own {i} hats.", event_id=None)
                                                   for i in range(n)]},
                       repro=f"POST /v1/ingest  {n} events like {json.dumps(event)}")
        body_probe("metadata dict of 5000 keys", _set(base, ("events", 0, "metadata"), {f"k{i}": i for i in range(5000)}))
    elif route.template == "/v1/memories/{memory_id}":
        body_probe("65 metadata keys", {"metadata": {f"k{i}": i for i in range(65)}})
        body_probe("5000 metadata keys", {"metadata": {f"k{i}": i for i in range(5000)}})
        body_probe("metadata list of 5000", {"metadata": {"k": list(range(5000))}})
        body_probe("metadata 4097 chars", {"metadata": {"k": "x" * 4097}})


def _cursor_probes(route: Route, ctx: dict[str, Any], probes: list[Probe], input_class: str, base: Any) -> None:
    cursors: dict[str, str] = {f"garbage: {k}": v for k, v in H.GARBAGE_CURSORS.items()}
    for scope, real in ctx["cursors"].items():
        is_search = scope == "search"
        if is_search != (route.method == "POST"):
            cursors[f"a real {scope} cursor"] = real  # another operation's cursor
            continue
        payload, suffix = H.split_cursor(real)
        if payload is not None and "p" in payload:
            envelope = {k: v for k, v in payload.items() if k != "p"}
            for name, position in H.CURSOR_POSITIONS.items():
                cursors[f"forged {scope} position: {name}"] = H.forge_cursor(envelope, position, suffix)
        for name, cursor in H.tampered_cursors(real).items():
            cursors[f"{scope} cursor: {name}"] = cursor
        if not is_search:  # the list's cursor, asked with the other order
            other = "created_at_asc" if scope.endswith("desc") else "created_at_desc"
            cursors[f"{scope} cursor used with order {other}"] = real
    for name, cursor in cursors.items():
        if route.method == "POST":
            probes.append(Probe(route.name, input_class, name, "POST", route.url(ctx),
                                H.dumps({**base, "cursor": cursor})))
        else:
            order = "created_at_asc" if "order created_at_asc" in name or "list created_at_asc" in name else "created_at_desc"
            if "used with order" in name:
                order = name.rsplit(" ", 1)[-1]
            if len(H.pct(cursor)) > 60_000:  # httpx's URL limit is 64 KiB
                cursor = cursor[:60_000 // 3]
            probes.append(Probe(route.name, input_class, name, "GET",
                                route.url(ctx, query=f"order={order}&limit=2&cursor={H.pct(cursor)}")))


def _query_probes(route: Route, ctx: dict[str, Any], probes: list[Probe], input_class: str) -> None:
    base = route.query(ctx)
    names = ["user_id", "agent_id", "conv_id", "app_id", "type", "cursor", "limit", "order", "include"]
    values: dict[str, Any] = {
        "query surrogates": H.SURROGATES, "query control characters": H.CONTROL, "query odd text": H.ODD_TEXT,
        "query long text": {k: v for k, v in H.LONG_TEXT.items() if len(v) <= 32_001},
        "query numbers": H.NUMBERS,
    }.get(input_class, {})
    for name in names:
        for label, value in values.items():
            params = {**base, name: value}
            probes.append(Probe(route.name, input_class, f"{name} = {label}", "GET", route.url(ctx, query=_qs(params))))
    if input_class == "query wrong types":
        as_json = H.pct('{"$ne": null}')
        for name in names:
            for label, raw in {"repeated": f"{name}=a&{name}=b", "empty": f"{name}=", "no value": name,
                               "array syntax": f"{name}[]=1", "json": f"{name}={as_json}",
                               "bool": f"{name}=true", "plus and spaces": f"{name}=+a+b+"}.items():
                probes.append(Probe(route.name, input_class, f"{name} {label}", "GET", route.url(ctx, query=raw)))


def _hostile_headers() -> dict[str, dict[str, str | bytes]]:
    return {
        "X-Request-Id 10k": {"X-Request-Id": "r" * 10_000},
        "X-Request-Id latin-1 bytes": {"X-Request-Id": b"\xff\xfe\xe9"},
        "Idempotency-Key 10k": {"Idempotency-Key": "k" * 10_000},
        "Idempotency-Key bytes": {"Idempotency-Key": b"\xff\xed\xa0\x80"},
        "Idempotency-Key empty": {"Idempotency-Key": ""},
        "X-Org-Id bytes": {"X-Org-Id": b"\xff\xfe"},
        "X-Org-Id 10k": {"X-Org-Id": "o" * 10_000},
        "Accept xml": {"Accept": "application/xml"},
        "Accept-Encoding junk": {"Accept-Encoding": "br;q=NaN, *;q=-1"},
        "Expect 100-continue": {"Expect": "100-continue"},
        "many headers": {f"X-Junk-{i}": "v" for i in range(80)},
    }


CATALOGUE_CASES = [(r.name, c) for r in ROUTES for c in r.classes]


@pytest.mark.parametrize("route_name,input_class", CATALOGUE_CASES, ids=[f"{r} · {c}" for r, c in CATALOGUE_CASES])
def test_hostile_catalogue(request: pytest.FixtureRequest, route_name: str, input_class: str) -> None:
    """One route, one input class: every named hostile value in every slot it fits."""
    route = ROUTES_BY_NAME[route_name]
    target = target_for(request, route.server)
    findings = Findings(f"{route_name} · {input_class}")
    for probe in catalogue(route, input_class, target.ctx):
        response = target.send(probe, findings)
        _follow_patch_target(target, route, response)
    findings.check()


def _follow_patch_target(target: Target, route: Route, response: httpx.Response | None) -> None:
    """A text PATCH supersedes its target; aim the next one at the new active fact."""
    if route.method == "PATCH" and response is not None and response.status_code == 200:
        try:
            body = response.json()
        except ValueError:
            return
        if body.get("type") == "fact" and body.get("details", {}).get("status") == "active":
            target.ctx["patch_target"] = body["id"]


# ====================================================================== hypothesis over every route
def _slots(route: Route) -> list[Path_]:
    return route.strings + route.times + route.others


@st.composite
def _hostile_probe(draw: st.DrawFn, route: Route, ctx: dict[str, Any]) -> Probe:
    if route.method == "ANY":
        method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]))
        segments = draw(st.lists(H.hostile_strings().map(lambda s: H.pct(s[:50]) or "x"), min_size=1, max_size=4))
        path = "/" + draw(st.sampled_from(["v1", "v1/memories", "v1/memories/jobs"])) + "/" + "/".join(segments)
        body = H.dumps(draw(H.hostile_json())) if method in ("POST", "PUT", "PATCH") else None
        return Probe(route.name, "hypothesis", f"{method} {path[:80]}", method, path, body,
                     content_type="application/json" if body else None)
    query = ""
    if route.query is not None:
        params: dict[str, Any] = dict(route.query(ctx))
        names = ["user_id", "agent_id", "conv_id", "app_id", "type", "cursor", "limit", "order", "include"]
        for _ in range(draw(st.integers(1, 3))):
            name = draw(st.one_of(st.sampled_from(names), H.hostile_keys().map(lambda k: k[:100])))
            params[name] = draw(st.one_of(H.hostile_strings(), H.hostile_numbers()))
        query = _qs(params)
    elif draw(st.booleans()):  # routes without query parameters get junk ones
        junk = draw(st.dictionaries(H.hostile_keys().map(lambda k: k[:100]), H.hostile_strings(), min_size=1, max_size=3))
        query = _qs(junk)
    path_value = None
    if route.path_param is not None and draw(st.booleans()):
        path_value = draw(st.one_of(H.hostile_strings().map(lambda s: H.pct(s) or "%20"),
                                    st.sampled_from(list(H.PATH_IDS.values()))))
    body: bytes | None = None
    case = ""
    if route.body is not None:
        doc, case = draw(H.mutated(route.body(ctx), _slots(route), route.objects))
        body = H.dumps(doc)
    content_type = draw(st.sampled_from(["application/json"] * 6 + [None, "text/plain"])) if body else None
    url = route.url(ctx, path_value=path_value, query=query)
    return Probe(route.name, "hypothesis", case or url[:120], route.method, url, body, content_type=content_type)


HYPOTHESIS_ROUTES = [r.name for r in ROUTES]


@pytest.mark.parametrize("route_name", HYPOTHESIS_ROUTES)
def test_hostile_hypothesis(request: pytest.FixtureRequest, route_name: str) -> None:
    """Hypothesis: a valid request of the route with one to three hostile mutations (surrogates,
    control characters, huge and tiny numbers, NaN, odd keys, deep nesting, wrong types), sent raw."""
    route = ROUTES_BY_NAME[route_name]
    target = target_for(request, route.server)
    findings = Findings(f"hypothesis · {route_name}")

    @fuzz_settings(EXAMPLES * 2)
    @given(probe=_hostile_probe(route, target.ctx))
    def run(probe: Probe) -> None:
        _follow_patch_target(target, route, target.send(probe, findings))

    run()
    findings.check()


# ====================================================================== auth paths (keyed server)
def _route_requests(ctx: dict[str, Any]) -> list[tuple[str, str, bytes | None, str]]:
    """(method, url, body, scope needed) for every route, with valid bodies."""
    return [
        ("POST", "/v1/memories", H.dumps(_x_ingest_body(ctx)), "write"),
        ("GET", "/v1/memories", None, "read"),
        ("POST", "/v1/memories/search", H.dumps({"query": "where"}), "read"),
        ("GET", f"/v1/memories/{ctx['memory']}", None, "read"),
        ("PATCH", f"/v1/memories/{ctx['memory']}", H.dumps({"metadata": {"seen": True}}), "write"),
        ("DELETE", "/v1/memories/00000000-0000-4000-8000-000000000000", None, "write"),
        ("GET", f"/v1/memories/{ctx['memory']}/revisions", None, "read"),
        ("GET", f"/v1/memories/jobs/{ctx['job']}", None, "read"),
        ("POST", "/v1/ingest", H.dumps(_m_ingest_body(ctx)), "write"),
        ("POST", "/v1/status", H.dumps({"event_ids": [ctx["event"]]}), "read"),
        ("POST", "/v1/search", H.dumps({"query": "where"}), "read"),
    ]


BAD_CREDENTIALS: dict[str, dict[str, str | bytes]] = {
    "no credentials": {},
    "unknown bearer": {"Authorization": "Bearer egm_" + "A" * 43},
    "empty bearer": {"Authorization": "Bearer "},
    "Basic scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
    "Token, no value": {"Authorization": "Token"},
    "bearer 10k": {"Authorization": "Bearer " + "k" * 10_000},
    "bearer latin-1 bytes": {"Authorization": b"Bearer \xff\xfe\xed\xa0\x80"},
    "x-api-key bytes": {"x-api-key": b"\xff\x80"},
    "x-api-key spaces": {"x-api-key": "   "},
    "x-api-key 10k": {"x-api-key": "k" * 10_000},
    "key-shaped latin-1 garbage": {"x-api-key": b"egm_" + b"\xe9" * 43},
}


def test_auth_bad_credentials_are_401(keyed: Keyed) -> None:
    """Every route, every kind of bad credential: 401 unauthorized in the envelope, never 5xx."""
    findings = Findings("auth · bad credentials")
    target = keyed.other
    for method, url, body, _ in _route_requests(target.ctx):
        for name, headers in BAD_CREDENTIALS.items():
            probe = Probe(f"{method} {target.routes.resolve(method, url)}", "bad credentials", name, method,
                          url, body, headers=headers, content_type="application/json" if body else None,
                          expect=frozenset({401}), expect_code="unauthorized")
            target.send(probe, findings, auth=False)
    health = Probe("GET /v1/health", "bad credentials", "health needs no key", "GET", "/v1/health", None,
                   content_type=None, expect=frozenset({200}))
    target.send(health, findings, auth=False)
    findings.check()


def test_auth_read_key_on_write_routes_is_403(keyed: Keyed) -> None:
    """A read-only key: 403 insufficient_scope on every write route, and the reads still answer."""
    findings = Findings("auth · read-only key")
    target = keyed.other
    for method, url, body, scope in _route_requests(target.ctx):
        probe = Probe(f"{method} {target.routes.resolve(method, url)}", "read-only key", f"{scope} route", method,
                      url, body, headers={"Authorization": f"Bearer {keyed.keys['other reader']}"},
                      content_type="application/json" if body else None,
                      expect=frozenset({403}) if scope == "write" else None,
                      expect_code="insufficient_scope" if scope == "write" else None)
        target.send(probe, findings, auth=False)
    findings.check()


def test_auth_org_header(keyed: Keyed) -> None:
    """A valid key with another org's X-Org-Id is 403 org_mismatch; hostile X-Org-Id values never 5xx."""
    findings = Findings("auth · X-Org-Id")
    target = keyed.other
    values: dict[str, str | bytes] = {"another org": "fz-writes", "unknown org": "nobody", "empty": "",
                                      "latin-1 bytes": b"\xff\xfe", "10k": "o" * 10_000, "spaces": "  fz-other  ",
                                      "case": "FZ-OTHER", "escaped NUL": "fz-other\\x00"}
    for method, url, body, _ in _route_requests(target.ctx):
        for name, value in values.items():
            mismatch = name not in ("empty", "spaces")  # a header value's surrounding spaces are not part of it
            probe = Probe(f"{method} {target.routes.resolve(method, url)}", "X-Org-Id", name, method, url, body,
                          headers={"X-Org-Id": value}, content_type="application/json" if body else None,
                          expect=frozenset({403}) if mismatch else None,
                          expect_code="org_mismatch" if mismatch else None)
            target.send(probe, findings)
    findings.check()


# ====================================================================== nothing poisoned (one org per vector)
POISON_VECTORS: dict[str, tuple[str, str, Callable[[dict[str, Any]], Any]]] = {
    # name: (method, url template, body builder); {memory} is the org's seeded memory
    "PATCH metadata lone surrogate": ("PATCH", "/v1/memories/{memory}", lambda c: {"metadata": {"k": "\udc00"}}),
    "PATCH metadata surrogate key": ("PATCH", "/v1/memories/{memory}", lambda c: {"metadata": {"\ud800": "v"}}),
    "PATCH metadata NaN": ("PATCH", "/v1/memories/{memory}", lambda c: {"metadata": {"k": H.Raw("NaN")}}),
    "PATCH metadata 1e400": ("PATCH", "/v1/memories/{memory}", lambda c: {"metadata": {"k": H.Raw("1e400")}}),
    "PATCH metadata 900 deep": ("PATCH", "/v1/memories/{memory}", lambda c: {"metadata": {"k": H.nest_objects(900)}}),
    "PATCH text lone surrogate": ("PATCH", "/v1/memories/{memory}", lambda c: {"text": "I live in \udc00 now."}),
    "PATCH metadata NUL": ("PATCH", "/v1/memories/{memory}", lambda c: {"metadata": {"k\x00": "a\x00b"}}),
    "X ingest metadata lone surrogate": ("POST", "/v1/memories", lambda c: {
        "messages": [{"role": "user", "content": "I live in Oslo."}], "user_id": c["user"], "conv_id": "p",
        "metadata": {"k": "\udc00"}}),
    "X ingest metadata NaN": ("POST", "/v1/memories", lambda c: {
        "messages": [{"role": "user", "content": "I live in Oslo."}], "user_id": c["user"], "conv_id": "p",
        "metadata": {"k": H.Raw("NaN"), "j": H.Raw("-Infinity")}}),
    "X ingest metadata 900 deep": ("POST", "/v1/memories", lambda c: {
        "messages": [{"role": "user", "content": "I live in Oslo."}], "user_id": c["user"], "conv_id": "p",
        "metadata": {"k": H.nest_objects(900)}}),
    "X ingest name and dia_id surrogates": ("POST", "/v1/memories", lambda c: {
        "messages": [{"role": "user", "content": "I live in Oslo.", "name": "\ud800", "dia_id": "\udc00"}],
        "user_id": c["user"], "conv_id": "p"}),
    "X ingest content lone surrogate": ("POST", "/v1/memories", lambda c: {
        "messages": [{"role": "user", "content": "I live in Oslo \udc00."}], "user_id": c["user"], "conv_id": "p"}),
    "X ingest date 9999-12-31T23:59:59-12:00": ("POST", "/v1/memories", lambda c: {
        "messages": [{"role": "user", "content": "I live in Oslo.", "date": "9999-12-31T23:59:59-12:00"}],
        "user_id": c["user"], "conv_id": "p"}),
    "X ingest date 0001-01-01T00:00:00+14:00": ("POST", "/v1/memories", lambda c: {
        "messages": [{"role": "user", "content": "I moved to Oslo yesterday.", "date": "0001-01-01T00:00:00+14:00"}],
        "user_id": c["user"], "conv_id": "p"}),
    "M ingest metadata string with surrogate escape": ("POST", "/v1/ingest", lambda c: {"events": [
        {"actor_id": c["user"], "session_id": "p", "kind": "user_message", "content": "I live in Oslo.",
         "metadata": '{"k": "\\udc00"}'}]}),
    "M ingest metadata string NaN": ("POST", "/v1/ingest", lambda c: {"events": [
        {"actor_id": c["user"], "session_id": "p", "kind": "user_message", "content": "I live in Oslo.",
         "metadata": '{"k": NaN, "j": 1e400}'}]}),
    "M ingest metadata string 1000 deep": ("POST", "/v1/ingest", lambda c: {"events": [
        {"actor_id": c["user"], "session_id": "p", "kind": "user_message", "content": "I live in Oslo.",
         "metadata": '{"k": ' + H.nested_json_text(1000, "list") + "}"}]}),
    "M ingest metadata string 900 deep": ("POST", "/v1/ingest", lambda c: {"events": [
        {"actor_id": c["user"], "session_id": "p", "kind": "user_message", "content": "I live in Oslo.",
         "metadata": '{"k": ' + H.nested_json_text(900, "list") + "}"}]}),
    "M ingest metadata dict surrogate": ("POST", "/v1/ingest", lambda c: {"events": [
        {"actor_id": c["user"], "session_id": "p", "kind": "user_message", "content": "I live in Oslo.",
         "metadata": {"k": "\udc00"}}]}),
    "M ingest ts 9999-12-31T23:59:59-12:00": ("POST", "/v1/ingest", lambda c: {"events": [
        {"actor_id": c["user"], "session_id": "p", "kind": "user_message", "content": "I live in Oslo.",
         "ts": "9999-12-31T23:59:59-12:00"}]}),
    "M ingest ts 0001-01-01T00:00:00+14:00": ("POST", "/v1/ingest", lambda c: {"events": [
        {"actor_id": c["user"], "session_id": "p", "kind": "user_message", "content": "I live in Oslo.",
         "ts": "0001-01-01T00:00:00+14:00"}]}),
}


@pytest.mark.parametrize("vector", list(POISON_VECTORS))
def test_hostile_write_does_not_poison_reads(keyed: Keyed, vector: str) -> None:
    """A hostile write in an org of its own; once its jobs have run, every read of the org —
    list, both searches, the memory, its revisions, what the write created — still answers 2xx."""
    target = keyed.new_org("poison")
    ctx = seed_org(target, "pz-user", "pz-conv")
    method, url, build = POISON_VECTORS[vector]
    findings = Findings(f"poison · {vector}")
    write = Probe(f"{method} {target.routes.resolve(method, url.format(memory=ctx['memory']))}", "poison write",
                  vector, method, url.format(memory=ctx["memory"]), H.dumps(build(ctx)))
    response = target.send(write, findings)
    created: list[str] = []
    if response is not None and response.status_code in (200, 202):
        body = response.json()
        if body.get("object") == "ingest_job":
            job = _wait_job(target, body["id"])
            created = [m["id"] for m in (job.get("result") or {}).get("memories_created", [])]
        elif body.get("id"):
            created = [body["id"]]
    target.wait_idle()
    reads = [("GET", "/v1/memories", None), ("GET", "/v1/memories?order=created_at_asc&limit=100", None),
             ("GET", f"/v1/memories?user_id={ctx['user']}", None),
             ("POST", "/v1/memories/search", {"query": "where does the user live"}),
             ("POST", "/v1/memories/search", {"query": "Oslo", "filters": {"user_id": ctx["user"]},
                                              "include": ["source_events", "full_content", "context_prompt"]}),
             ("POST", "/v1/search", {"query": "where does the user live", "include_source_events": True}),
             ("POST", "/v1/search", {"query": "Oslo", "actor_id": ctx["user"]})]
    for memory_id in dict.fromkeys([ctx["memory"], *created]):
        reads += [("GET", f"/v1/memories/{memory_id}", None), ("GET", f"/v1/memories/{memory_id}/revisions", None)]
    for r_method, r_url, r_body in reads:
        probe = Probe(f"{r_method} {target.routes.resolve(r_method, r_url)}", f"read after: {vector}",
                      f"{r_method} {r_url}", r_method, r_url, H.dumps(r_body) if r_body is not None else None,
                      content_type="application/json" if r_body is not None else None,
                      expect=frozenset({200}),
                      repro=f"after {write.reproduction()}  →  {r_method} {r_url}"
                            + (f" {json.dumps(r_body)}" if r_body else ""))
        target.send(probe, findings)
    target.close()
    findings.check()


# ====================================================================== still answering
@pytest.mark.parametrize("which", ["open", "keyed"])
def test_server_still_answers_after_the_run(request: pytest.FixtureRequest, which: str) -> None:
    """After everything above: health is quick, an ingest still becomes searchable, and the fuzzed
    org's list (every page) and search answer 2xx."""
    target = request.getfixturevalue("open_target") if which == "open" else request.getfixturevalue("keyed").writer
    findings = Findings(f"after the run · {which}")
    started = time.monotonic()
    health = httpx.get(f"{target.srv.url}/v1/health", timeout=10)
    elapsed = time.monotonic() - started
    assert health.status_code == 200 and elapsed < 1.0, (health.status_code, elapsed, health.text)
    workers = health.json()["components"].get("workers", {})
    assert workers.get("alive", 1) == workers.get("processes", 1), workers
    target.wait_idle()

    user = f"after-{uuid.uuid4().hex[:8]}"
    job = target.call("POST", "/v1/memories", json={"messages": [{"role": "user", "content": "I keep bees in Porto."}],
                                                   "user_id": user, "conv_id": "after"})
    assert job.status_code == 202, job.text
    done = _wait_job(target, job.json()["id"])
    assert done["status"] == "succeeded", done
    found = target.call("POST", "/v1/memories/search", json={"query": "bees", "filters": {"user_id": user}})
    assert found.status_code == 200 and any("bees" in m["text"] for m in found.json()["data"]), found.text
    found_m = target.call("POST", "/v1/search", json={"query": "bees", "actor_id": user})
    assert found_m.status_code == 200 and found_m.json()["results"], found_m.text

    def read(case: str, method: str, url: str, body: Any = None) -> httpx.Response | None:
        probe = Probe(f"{method} {target.routes.resolve(method, url.split('?')[0])}", "reads after the run", case,
                      method, url, H.dumps(body) if body is not None else None,
                      content_type="application/json" if body is not None else None, expect=frozenset({200}))
        return target.send(probe, findings)

    for order in ("created_at_desc", "created_at_asc"):
        cursor, pages = None, 0
        while pages < 100:
            url = f"/v1/memories?limit=100&order={order}" + (f"&cursor={cursor}" if cursor else "")
            page = read(f"list every page ({order})", "GET", url)
            if page is None or page.status_code != 200:
                break
            cursor, pages = page.json().get("next_cursor"), pages + 1
            if not cursor:
                break
    read("org-wide family-X search", "POST", "/v1/memories/search", {"query": "where does the user live", "limit": 100})
    read("family-X search, every include", "POST", "/v1/memories/search",
         {"query": "user", "limit": 100, "include": ["source_events", "full_content", "context_prompt"]})
    read("org-wide family-M search", "POST", "/v1/search", {"query": "where does the user live", "limit": 100,
                                                             "include_source_events": True})
    findings.check()
