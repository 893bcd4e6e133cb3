"""The web console in a real browser: Debian's Chromium, driven by Playwright, against a real
`engram serve` holding memories extracted from real turns.

An admin logs in, browses users → a user → a memory → its revisions and source turns,
searches and reads each result's score parts, opens a job's stage timings, health and usage,
and erases a user through the form; a read key logs in, sees no admin controls, and is
refused an admin page and an admin POST (with a valid CSRF token) with `insufficient_scope`.
The main pages are saved as screenshots (docs/console-*.png; CONSOLE_SCREENSHOT_DIR moves
them), which the README and docs/console.md show.

`scripts/setup test` installs Playwright (PyPI) and Chromium (apt-get, when missing); the
browser is launched from /usr/bin/chromium, since Playwright's own download cannot run here.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.conftest import ServerProcess, create_key, wait_job

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(os.environ.get("CONSOLE_SCREENSHOT_DIR", Path(__file__).resolve().parents[1] / "docs"))

CONVERSATIONS = [  # (user, conversation, turns): the rules extractor turns each into facts
    ("maria", "settling-in", [("user", "I live in Berlin and I work as a nurse."),
                              ("assistant", "Berlin is a lovely city to work in."),
                              ("user", "My favourite food is ramen.")]),
    ("maria", "big-news", [("user", "I moved to Lisbon last month.")]),
    ("maria", "hobbies", [("user", "I play the cello every weekend."),
                          ("user", "My sister Ana lives in Porto.")]),
    ("bob", "workshop", [("user", "I work as a carpenter in Leeds.")]),
]


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str, str]]:
    srv = ServerProcess(tmp_path_factory.mktemp("console") / "data").start()
    try:
        admin_key = create_key(srv, "acme", "read,write,admin")
        read_key = create_key(srv, "acme", "read")
        with srv.client(admin_key) as api:
            for user, conv, turns in CONVERSATIONS:
                job = api.post("/v1/memories", json={"user_id": user, "conv_id": conv, "messages": [
                    {"role": role, "content": text} for role, text in turns]}).json()
                assert wait_job(api, job["id"])["status"] == "succeeded"
        yield srv, admin_key, read_key
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright  # installed by scripts/setup test

    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), \
        f"no Chromium at {CHROMIUM}: run scripts/setup test (apt-get install chromium)"
    with sync_playwright() as p:
        # Each new_context is a fresh profile: no cookie or cache is shared between the two users.
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield launched
        launched.close()


def _shot(page: object, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    assert path.stat().st_size > 5_000  # a rendered page, not an empty canvas


def _log_in(browser: object, srv: ServerProcess, key: str) -> tuple[object, object]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=srv.url)  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto("/console/users")
    assert page.url.startswith(f"{srv.url}/console/login?next=")  # no session: sent to the login page
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{srv.url}/console/users")
    return context, page


def test_console_in_chromium(browser: object, console_server: tuple[ServerProcess, str, str]) -> None:
    srv, admin_key, read_key = console_server
    api = srv.client(admin_key)
    lisbon = next(m for m in api.get("/v1/memories", params={"user_id": "maria", "limit": 100}).json()["data"]
                  if "Lisbon" in m["text"])
    chain = api.get(f"/v1/memories/{lisbon['id']}/revisions").json()["data"]
    assert len(chain) == 2, chain  # the move superseded where Maria lived: a revision chain to browse

    # ---- the login page refuses a wrong key, then an admin logs in
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=srv.url)  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto("/console")
    page.fill("#key", "egm_not-a-key")
    page.click("button[type=submit]")
    assert "unauthorized" in page.inner_text("[role=alert]")
    _shot(page, "login")
    context.close()

    context, page = _log_in(browser, srv, admin_key)
    cookie = next(c for c in context.cookies() if c["name"] == "engram_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert admin_key not in cookie["value"]  # the session holds the key's hash, never the key
    assert page.evaluate("document.cookie") == ""  # and no script can read it

    # ---- users → a user: conversations and memories
    rows = page.locator("#users tbody tr")
    assert [rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())] == ["bob", "maria"]
    maria_row = rows.nth(1).locator("td")
    assert int(maria_row.nth(1).inner_text()) > int(maria_row.nth(2).inner_text()) >= 4  # one superseded
    _shot(page, "users")
    page.click("#users >> text=maria")
    page.wait_for_url(re.compile(r".*/console/user\?user_id=maria$"))
    conversations = page.locator("#conversations li a").all_inner_texts()
    assert conversations == ["All conversations", "big-news", "hobbies", "settling-in"]
    texts = page.locator("table.memories tbody td:first-child").all_inner_texts()
    assert any("Lisbon" in t for t in texts) and any("cello" in t for t in texts)
    assert not any("Berlin" in t for t in texts)  # superseded: not among the active ones
    _shot(page, "user")
    page.click("#conversations >> text=hobbies")
    texts = page.locator("table.memories tbody td:first-child").all_inner_texts()
    assert texts and all("Lisbon" not in t for t in texts) and any("cello" in t for t in texts)

    # ---- a memory: details, metadata, revisions, source turns; then its older revision
    page.goto(f"/console/memories/{lisbon['id']}")
    assert "Lisbon" in page.inner_text("#memory-text")
    revisions = page.locator("#revisions li")
    assert revisions.count() == 2 and "Berlin" in revisions.nth(0).inner_text()
    assert "superseded" in revisions.nth(0).inner_text() and "active" in revisions.nth(1).inner_text()
    assert "I moved to Lisbon last month." in page.inner_text("#sources")
    assert '"supersedes"' in page.inner_text("#details")
    _shot(page, "memory")
    revisions.nth(0).locator("a").click()
    page.wait_for_url(f"{srv.url}/console/memories/{chain[0]['id']}")
    assert "superseded by" in page.inner_text("dl.facts")
    assert "I live in Berlin and I work as a nurse." in page.inner_text("#sources")

    # ---- search: each hit's score is its dense, lexical and time parts plus the adjustment
    page.goto("/console/search")
    page.fill("input[name=q]", "where does she live now")
    page.fill("input[name=user_id]", "maria")
    page.click("form.search button[type=submit]")
    page.wait_for_selector("#hits")
    hits = page.locator("#hits tbody tr")
    assert hits.count() >= 3
    ours = api.post("/v1/memories/search", json={"query": "where does she live now", "user_id": "maria",
                                                 "limit": 10}).json()["data"]
    shown = [hits.nth(i).locator("td").nth(1).locator("a").get_attribute("href").rsplit("/", 1)[1]
             for i in range(hits.count())]
    assert shown == [h["id"] for h in ours]  # the API's ranking, unchanged
    for i in range(hits.count()):
        cells = [hits.nth(i).locator("td").nth(k).inner_text() for k in range(2, 7)]
        total, dense, lexical, time_part, adjust = map(float, cells)
        assert abs(dense + lexical + time_part + adjust - total) < 3e-4, cells
        assert abs(total - ours[i]["score"]) < 1e-4
    assert any(float(hits.nth(i).locator("td").nth(3).inner_text()) > 0 for i in range(hits.count()))
    _shot(page, "search")
    page.fill("textarea[name=filters]", '{"type": {"$in": ["fact"]}, "conv_id": "hobbies"}')
    page.click("form.search button[type=submit]")
    page.wait_for_selector("#hits")
    assert all("hobbies" in t for t in page.locator("#hits tbody td:nth-child(2) .small").all_inner_texts())
    page.fill("textarea[name=filters]", '{"type": ')
    page.click("form.search button[type=submit]")
    assert "invalid_filter" in page.inner_text("[role=alert]")

    # ---- jobs with stage timings, health, usage
    page.click("header nav >> text=Jobs")
    assert page.locator("#jobs tbody tr").count() == len(CONVERSATIONS)
    assert "extract" in page.inner_text("#jobs")
    _shot(page, "jobs")
    page.locator("#jobs tbody tr").first.locator("td a").first.click()
    stages = page.locator("#stages tbody").inner_text()
    assert "extract" in stages and "embed" in stages and "commit" in stages
    page.click("header nav >> text=Health")
    assert "pending" in page.inner_text("#queue") and page.locator("#workers").count() == 1
    _shot(page, "health")
    page.click("header nav >> text=Usage")
    assert page.locator("#daily tbody tr").count() >= 1
    _shot(page, "usage")

    # ---- a read key: no admin controls, admin page and admin POST refused
    read_context, read_page = _log_in(browser, srv, read_key)
    read_page.goto("/console/user?user_id=bob")
    assert read_page.locator("details.danger").count() == 0
    assert read_page.locator("header nav >> text=Keys").count() == 0
    response = read_page.goto("/console/keys")
    assert response.status == 403 and "insufficient_scope" in read_page.inner_text("[role=alert]")
    csrf = read_page.locator("header input[name=csrf]").get_attribute("value")
    forged = read_context.request.post("/console/users/erase",
                                       form={"csrf": csrf, "user_id": "bob", "confirm": "bob"})
    assert forged.status == 403 and "insufficient_scope" in forged.text()
    assert api.get("/v1/memories", params={"user_id": "bob"}).json()["data"]  # bob is still there
    read_context.close()

    # ---- the admin erases bob through the form; a POST without the token is refused first
    without = context.request.post("/console/users/erase", form={"user_id": "bob", "confirm": "bob"})
    assert without.status == 403 and "csrf_token_invalid" in without.text()
    page.goto("/console/user?user_id=bob")
    page.click("details.danger summary")
    page.fill("input[name=confirm]", "bob")
    page.click("button.danger")
    assert "User bob erased" in page.inner_text("[role=status]")
    assert api.get("/v1/memories", params={"user_id": "bob"}).json()["data"] == []
    page.goto("/console/users")
    assert page.locator("#users tbody tr").all_inner_texts()[0].startswith("maria")

    # ---- logging out ends the session
    page.click("header button.link")
    page.goto("/console/users")
    assert "/console/login" in page.url
    context.close()
    api.close()


def test_console_serves_everything_it_loads(browser: object, console_server: tuple[ServerProcess, str, str]) -> None:
    """Every request a page makes goes to engram itself: no CDN, no font, no script."""
    srv, admin_key, _ = console_server
    context, page = _log_in(browser, srv, admin_key)
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    for path in ("/console/users", "/console/user?user_id=maria", "/console/search?q=cello", "/console/jobs",
                 "/console/health", "/console/usage", "/console/keys", "/console/memories"):
        response = page.goto(path)
        assert response.status == 200, path
        assert "script-src" not in response.headers["content-security-policy"]  # default-src 'none': no script
    assert seen and all(url.startswith(srv.url + "/console") for url in seen), seen
    assert any(url.endswith("/console/static/console.css") for url in seen)
    assert httpx.get(f"{srv.url}/console/static/console.css").status_code == 200
    context.close()
