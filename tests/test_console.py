"""The web console over HTTP, on both stores: sessions, scopes, CSRF, keyset pages.

A real `engram serve` (embedded SQLite, and PostgreSQL with pgvector) holds 121 users
imported through `POST /v1/import` — one of them with 55 conversations — and 55 jobs
ingested through the API; the console's pages are read the way a browser reads them (a
cookie jar, no redirects followed) and walked page by page to the end. The browser itself
is tests/test_console_browser.py.
"""

from __future__ import annotations

import html
import json
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Iterator

import httpx
import pytest
from hypothesis import given, strategies as st

from engram.console.session import Sessions
from engram.search.fusion import relevance, relevance_parts
from tests.conftest import ServerProcess, create_key, serve_on, wait_job

USERS = 120  # besides "many"
CONVERSATIONS = 55  # of "many": more than a page (50)
JOBS = 55
FORM = {"content-type": "application/x-www-form-urlencoded"}
HOSTILE_TEXT = "<script>alert(1)</script> & <b>bold</b>"


def _export() -> bytes:
    """An engram export: user-000 … user-119 with one turn and one fact each, and "many" with
    one fact in each of 55 conversations (vectors left to the importing server)."""
    # Recent turns: older than ENGRAM_EPISODE_IDLE_S, the worker's idle sweep would queue an
    # episode job for every conversation while the tests count jobs and the queue.
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=4)
    lines = [{"record": "header", "format": "engram-export", "version": 1, "exported_at": start.isoformat(),
              "org_id": "x", "scope": {"user_id": None, "conv_id": None}, "embedder": None, "dim": None}]
    memories = []
    people = [(f"user-{i:03d}", "conv-0") for i in range(USERS)] + [("many", f"c-{j:02d}") for j in range(CONVERSATIONS)]
    for n, (user, conv) in enumerate(people):
        at = (start + timedelta(minutes=n)).isoformat()
        text = HOSTILE_TEXT if user == "user-007" else f"{user} keeps bees number {n} in {conv}."
        lines.append({"record": "event", "id": f"ev-{n:04d}", "user_id": user, "conv_id": conv, "role": "user",
                      "kind": "user_message", "content": f"I keep bees, hive {n}.", "metadata": {},
                      "occurred_at": at, "received_at": at, "status": "completed"})
        memories.append({"record": "memory", "id": f"mem-{n:04d}", "type": "fact", "status": "active",
                         "text": text, "user_id": user, "conv_id": conv, "metadata": {"hive": n}, "categories": [],
                         "details": {"fact_type": "biographical", "supersedes": None, "source_role": "user"},
                         "source_event_ids": [f"ev-{n:04d}"], "valid_at": None, "created_at": at,
                         "updated_at": at, "vector": None})
    lines += memories
    lines.append({"record": "end", "events": len(people), "memories": len(people)})
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def console(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with serve_on(request.param, request, tmp_path_factory.mktemp(f"console-{request.param}"),
                  "engram_console", env={"ENGRAM_EPISODE_IDLE_S": "100000"}) as srv:  # ingest jobs only
        keys = {"admin": create_key(srv, "acme", "read,write,admin"), "read": create_key(srv, "acme", "read"),
                "write": create_key(srv, "acme", "write")}
        with srv.client(keys["admin"]) as api:
            report = api.post("/v1/import", content=_export()).json()
            assert report["memories_created"] == USERS + CONVERSATIONS, report
            jobs = [api.post("/v1/memories", json={"user_id": "jobber", "conv_id": f"j-{i}", "messages": [
                {"role": "user", "content": f"I have {i + 2} bicycles."}]}).json()["id"] for i in range(JOBS)]
            for job in jobs:
                assert wait_job(api, job)["status"] == "succeeded"
        yield {"srv": srv, "keys": keys}


def _browser(srv: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=srv.url, follow_redirects=False, timeout=30)


def _login(srv: ServerProcess, key: str | None) -> httpx.Client:
    b = _browser(srv)
    r = b.post("/console/login", content=f"key={key or ''}&next=/console/users", headers=FORM)
    assert r.status_code == 303 and r.headers["location"] == "/console/users", r.text
    return b


def _next(page: str) -> str | None:
    found = re.search(r'rel="next" href="([^"]+)"', page)
    return html.unescape(found.group(1)) if found else None


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def _code(page: str) -> str:
    return re.search(r'<code class="code">([^<]+)</code>', page).group(1)


# ---------------------------------------------------------------------- sessions
def test_login_sets_a_strict_httponly_cookie_holding_no_key(console: dict) -> None:
    srv, admin = console["srv"], console["keys"]["admin"]
    b = _browser(srv)
    r = b.get("/console/jobs?status=failed")
    assert r.status_code == 303 and r.headers["location"] == "/console/login?next=%2Fconsole%2Fjobs%3Fstatus%3Dfailed"
    r = b.post("/console/login", content=f"key={admin}&next=/console/jobs", headers=FORM)
    assert r.status_code == 303 and r.headers["location"] == "/console/jobs"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert admin not in cookie and admin[4:] not in cookie
    assert b.get("/console/jobs").status_code == 200
    # Edited: the tag no longer matches, so the session is gone.
    value = b.cookies.get("engram_console")
    b.cookies.set("engram_console", value[:-2] + ("AA" if not value.endswith("AA") else "BB"), path="/console")
    assert b.get("/console/jobs").status_code == 303


def test_login_refuses_bad_keys_and_foreign_redirects(console: dict) -> None:
    srv, keys = console["srv"], console["keys"]
    b = _browser(srv)
    r = b.post("/console/login", content="key=egm_nope&next=/console/users", headers=FORM)
    assert r.status_code == 401 and "unauthorized" in r.text and "set-cookie" not in r.headers
    r = b.post("/console/login", content=f"key={keys['write']}", headers=FORM)
    assert r.status_code == 403 and "insufficient_scope" in r.text and "set-cookie" not in r.headers
    for target in ("//evil.example/console/x", "https://evil.example/", "/v1/memories", "/console\\..\\x"):
        r = b.post("/console/login", content=httpx.QueryParams({"key": keys["read"], "next": target}).__str__(),
                   headers=FORM)
        assert r.status_code == 303 and r.headers["location"] == "/console/users", target


def test_sessions_expire_and_reject_forgeries() -> None:
    sessions = Sessions(b"s" * 32, lifetime_s=60)
    session, cookie = sessions.issue("digest", now=1000)
    assert sessions.read(cookie, now=1059) == session
    assert sessions.read(cookie, now=1061) is None  # a working day, then the key is typed again
    assert Sessions(b"t" * 32).read(cookie, now=1000) is None  # another server's secret
    other, _ = sessions.issue("digest", now=1000)
    assert sessions.csrf_ok(session, sessions.csrf_token(session))
    assert not sessions.csrf_ok(session, sessions.csrf_token(other)) and not sessions.csrf_ok(session, "")
    for junk in ("", "x", "a.b.c", "!!.??", cookie.replace(".", "x")):
        assert sessions.read(junk, now=1000) is None


def test_a_revoked_key_ends_its_sessions(console: dict) -> None:
    srv, admin = console["srv"], console["keys"]["admin"]
    with srv.client(admin) as api:
        made = api.post("/v1/keys", json={"scopes": ["read"], "name": "doomed"}).json()
    doomed = _login(srv, made["raw_key"])
    assert doomed.get("/console/users").status_code == 200
    boss = _login(srv, admin)
    keys_page = boss.get("/console/keys").text
    assert made["key_id"] in keys_page
    r = boss.post("/console/keys/revoke", content=f"csrf={_csrf(keys_page)}&key_id={made['key_id']}", headers=FORM)
    assert r.status_code == 200 and "revoked" in r.text
    deadline = time.monotonic() + 5  # the authenticator caches a key for a second
    while doomed.get("/console/users").status_code == 200:
        assert time.monotonic() < deadline, "the revoked key's session still reads"
        time.sleep(0.2)
    assert doomed.get("/console/users").headers["location"].startswith("/console/login")


def test_admin_actions_need_admin_and_the_sessions_csrf_token(console: dict) -> None:
    srv, keys = console["srv"], console["keys"]
    reader, boss = _login(srv, keys["read"]), _login(srv, keys["admin"])
    page = reader.get("/console/user?user_id=user-001").text
    assert "Erase this user" not in page
    r = reader.post("/console/users/erase", content=f"csrf={_csrf(page)}&user_id=user-001&confirm=user-001",
                    headers=FORM)
    assert r.status_code == 403 and _code(r.text) == "insufficient_scope"
    assert reader.get("/console/keys").status_code == 403
    r = boss.post("/console/users/erase", content="user_id=user-001&confirm=user-001", headers=FORM)
    assert r.status_code == 403 and _code(r.text) == "csrf_token_invalid"
    r = boss.post("/console/users/erase", content=f"csrf={_csrf(page)}&user_id=user-001&confirm=user-001",
                  headers=FORM)  # the read session's token is not the admin session's
    assert r.status_code == 403 and _code(r.text) == "csrf_token_invalid"
    boss_page = boss.get("/console/user?user_id=user-001").text
    r = boss.post("/console/users/erase", content=f"csrf={_csrf(boss_page)}&user_id=user-001&confirm=nope",
                  headers=FORM)
    assert r.status_code == 422 and _code(r.text) == "validation_error"
    with srv.client(keys["admin"]) as api:
        assert len(api.get("/v1/memories", params={"user_id": "user-001"}).json()["data"]) == 1
    r = reader.post("/console/logout", content="csrf=forged", headers=FORM)
    assert r.status_code == 403 and reader.get("/console/users").status_code == 200  # still logged in
    r = reader.post("/console/logout", content=f"csrf={_csrf(page)}", headers=FORM)
    assert r.status_code == 303 and reader.get("/console/users").status_code == 303


# ---------------------------------------------------------------------- keyset pages
def test_users_page_by_page_to_the_end(console: dict) -> None:
    b = _login(console["srv"], console["keys"]["read"])
    seen: list[str] = []
    url: str | None = "/console/users"
    pages = 0
    while url:
        page = b.get(url).text
        rows = re.findall(r'<tr><td><a href="/console/user\?user_id=([^"]+)">[^<]*</a></td>\s*'
                          r'<td class="num">(\d+)</td><td class="num">(\d+)</td>', page)
        assert len(rows) <= 50
        seen += [html.unescape(u) for u, _, _ in rows]
        url, pages = _next(page), pages + 1
    expected = sorted([f"user-{i:03d}" for i in range(USERS)] + ["many", "jobber"])
    assert seen == expected and pages == 3


def test_cursors_are_signed_and_bound_to_their_listing(console: dict) -> None:
    b = _login(console["srv"], console["keys"]["read"])
    users_next = _next(b.get("/console/users").text)
    cursor = httpx.URL(users_next).params["cursor"]
    r = b.get("/console/jobs", params={"cursor": cursor})
    assert r.status_code == 422 and _code(r.text) == "cursor_mismatch"
    r = b.get("/console/users", params={"cursor": cursor[:-3] + "xyz"})
    assert r.status_code == 422 and _code(r.text) == "invalid_cursor"


def test_conversations_and_memories_page_by_page(console: dict) -> None:
    b = _login(console["srv"], console["keys"]["read"])
    page = b.get("/console/user?user_id=many").text
    first = re.findall(r'conv_id=(c-\d\d)[^"]*">c-\d\d</a>', page)
    assert first == [f"c-{j:02d}" for j in range(50)]
    conv_next = _next(page.split('<section class="wide">')[0])
    rest = re.findall(r'conv_id=(c-\d\d)[^"]*">c-\d\d</a>', b.get(conv_next).text)
    assert rest == [f"c-{j:02d}" for j in range(50, CONVERSATIONS)]
    memory_ids = re.findall(r'href="/console/memories/(mem-\d+)"', page)
    later = re.findall(r'href="/console/memories/(mem-\d+)"', b.get(_next(page.split('<section class="wide">')[1])).text)
    numbers = [int(m[4:]) for m in memory_ids + later]
    assert numbers == sorted(range(USERS, USERS + CONVERSATIONS), reverse=True)  # newest first, each once
    one_conv = b.get("/console/user", params={"user_id": "many", "conv_id": "c-03"}).text
    assert re.findall(r'href="/console/memories/(mem-\d+)"', one_conv) == [f"mem-{USERS + 3:04d}"]


def test_jobs_page_by_page_with_status_filter(console: dict) -> None:
    b = _login(console["srv"], console["keys"]["read"])
    page = b.get("/console/jobs").text
    ids = re.findall(r'<td><a href="/console/jobs/(job_[0-9a-f]+)">', page)
    assert len(ids) == 50 and f"succeeded {JOBS}" in page
    ids += re.findall(r'<td><a href="/console/jobs/(job_[0-9a-f]+)">', b.get(_next(page)).text)
    assert len(ids) == len(set(ids)) == JOBS
    assert ids == sorted(ids, reverse=True)  # job ids grow with time: newest first
    assert _next(b.get("/console/jobs", params={"status": "failed"}).text) is None
    assert "No jobs." in b.get("/console/jobs", params={"status": "failed"}).text
    r = b.get("/console/jobs", params={"status": "exploded"})
    assert r.status_code == 422 and _code(r.text) == "validation_error"
    job = b.get(f"/console/jobs/{ids[0]}").text
    assert re.search(r"<td>extract</td><td class=\"num\">[\d.]+ ms</td>", job)
    assert b.get("/console/jobs/job_nope").status_code == 404


# ---------------------------------------------------------------------- what pages show
def test_memory_page_escapes_what_it_shows_and_lists_its_turns(console: dict) -> None:
    b = _login(console["srv"], console["keys"]["read"])
    page = b.get("/console/memories/mem-0007").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "I keep bees, hive 7." in page and '"hive": 7' in html.unescape(page)
    r = b.get("/console/memories/mem-9999")
    assert r.status_code == 404 and _code(r.text) == "memory_not_found"
    headers = r.headers
    assert "default-src 'none'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"


def test_search_shows_the_apis_ranking_with_parts(console: dict) -> None:
    srv, keys = console["srv"], console["keys"]
    b = _login(srv, keys["read"])
    page = b.get("/console/search", params={"q": "how many bicycles", "user_id": "jobber", "limit": "5"}).text
    shown = re.findall(r'href="/console/memories/([^"]+)"', page)
    with srv.client(keys["read"]) as api:
        ours = api.post("/v1/memories/search", json={"query": "how many bicycles", "user_id": "jobber",
                                                     "limit": 5}).json()["data"]
    assert shown == [h["id"] for h in ours] and len(shown) == 5
    r = b.get("/console/search", params={"q": "bees", "filters": '{"nope": {"$regex": 1}}'})
    assert r.status_code == 400 and _code(r.text) == "invalid_filter"
    r = b.get("/console/search", params={"q": "bees", "limit": "7"})
    assert r.status_code == 422 and _code(r.text) == "validation_error"


def test_health_and_usage_pages(console: dict) -> None:
    b = _login(console["srv"], console["keys"]["read"])
    health = b.get("/console/health").text
    assert re.search(r"<dt>pending</dt><dd>0</dd>", health) and "oldest pending" in health
    usage = b.get("/console/usage").text
    assert re.search(r"<dt>fact:active</dt><dd>\d+</dd>", usage)


def test_open_mode_logs_in_without_a_key(fresh_server: ServerProcess) -> None:
    srv = fresh_server.start()
    b = _browser(srv)
    assert "open mode" in b.get("/console/login").text
    b = _login(srv, None)
    assert "open mode" in b.get("/console/users").text
    create_key(srv, "acme", "read")  # keys exist now: open mode is over, and so is its session
    deadline = time.monotonic() + 5
    while b.get("/console/users").status_code == 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)


@given(st.floats(-1, 1), st.floats(0, 200), st.booleans())
def test_score_parts_add_up_to_the_score(cosine: float, bm25: float, in_range: bool) -> None:
    dense, lexical, time_part = relevance_parts(cosine, bm25, in_range)
    assert dense + lexical + time_part == relevance(cosine, bm25, in_range)


def test_pages_are_rate_limited_as_the_keys_requests(tmp_path) -> None:
    srv = ServerProcess(tmp_path / "data", env={"ENGRAM_RATE_LIMIT_REQUESTS_PER_MIN": "5"}).start()
    try:
        key = create_key(srv, "acme", "read")
        b = _login(srv, key)
        statuses = [b.get("/console/users") for _ in range(8)]
        limited = [r for r in statuses if r.status_code == 429]
        assert limited and _code(limited[0].text) == "rate_limit_exceeded" and "retry-after" in limited[0].headers
        with srv.client(key) as api:  # the same key's bucket: the API is refused too
            assert api.get("/v1/memories").status_code == 429
    finally:
        srv.stop()


HOSTILE_PAGES = [
    "/console/user?user_id=%00", "/console/user?user_id=", "/console/user?user_id=" + "u" * 5000,
    "/console/user?user_id=a&conv_id=%00", "/console/user?user_id=a&status=gone", "/console/user?user_id=a&type=x",
    "/console/user?user_id=a&cursor=abc", "/console/user?user_id=a&conv_cursor=a.b", "/console/memories/%00",
    "/console/memories/" + "m" * 5000, "/console/memories?cursor=%ED%A0%80", "/console/jobs/%00",
    "/console/jobs?cursor=" + "x" * 3000, "/console/search?q=%00", "/console/search?q=" + "q" * 20000,
    "/console/search?q=a&limit=-1", "/console/search?q=a&filters=%5B%5D", "/console/search?q=a&user_id=%00",
    "/console/search?q=a&filters=" + "%7B%22a%22:" * 200, "/console/users?cursor=..", "/console/jobs?status=%00",
]


def test_hostile_page_requests_are_clear_errors(console: dict) -> None:
    b = _login(console["srv"], console["keys"]["read"])
    for url in HOSTILE_PAGES:
        r = b.get(url)
        assert 400 <= r.status_code < 500 or r.status_code == 200, (url, r.status_code)
        if r.status_code != 200:
            assert re.search(r'<code class="code">[a-z_]+</code>', r.text), url
    r = b.post("/console/login", content=b"key=\xff\xfe%00&next=%00", headers=FORM)
    assert r.status_code == 401
