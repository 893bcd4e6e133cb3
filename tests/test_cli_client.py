"""`engram ingest | search | jobs | status` end to end: the real command against a real server."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

import engram
from tests.conftest import ServerProcess
from tests.test_client_scripted import Reply, ScriptedServer


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # No content dedup window: a repeat that creates nothing is then the CLI's doing (stable
    # idempotency keys and event ids), not the server's 60-second dedup.
    srv = ServerProcess(tmp_path_factory.mktemp("cli") / "data", env={"ENGRAM_DEDUP_WINDOW_S": "0"}).start()
    yield srv
    srv.stop()
    srv.kill()


def run(*args: str, url: str | None = None, env: dict[str, str] | None = None, stdin: str | None = None,
        **kwargs: Any) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ENGRAM_")}
    full_env.update({"ENGRAM_LOG_LEVEL": "WARNING", **(env or {})})
    if url:
        full_env["ENGRAM_BASE_URL"] = url
    return subprocess.run([sys.executable, "-m", "engram", *args], env=full_env, capture_output=True, text=True,
                          timeout=180, input=stdin, **kwargs)


def write_jsonl(path: Path, rows: list[dict[str, Any] | None]) -> Path:
    path.write_text("".join("\n" if row is None else json.dumps(row) + "\n" for row in rows))
    return path


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ ingest: messages (family X)
def test_ingest_messages_then_again_creates_no_second_job(cli_server: ServerProcess, tmp_path: Path) -> None:
    user = uid()
    path = write_jsonl(tmp_path / "chat.jsonl", [
        {"role": "user", "content": "I live in Porto."},
        {"role": "assistant", "content": "Porto is lovely."},
        None,  # a blank line is skipped but still counted
        {"role": "user", "content": "I work as a nurse."},
        {"role": "user", "content": "My dog is called Rex.", "conv_id": "pets"},
    ])
    first = run("ingest", str(path), "--user", user, "--conv", "c1", "--batch-size", "2", "--wait", "--json",
                url=cli_server.url)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["family"] == "x" and report["lines"] == 4 and report["complete"] is True
    assert [(b["first_line"], b["last_line"]) for b in report["batches"]] == [(1, 2), (4, 4), (5, 5)]
    assert [b["status"] for b in report["batches"]] == ["succeeded"] * 3
    assert report["summary"] == {"succeeded": 3, "failed": 0, "pending": 0}
    assert first.stderr == "", "no progress bar and no log lines when stderr is not a terminal"

    again = run("ingest", str(path), "--user", user, "--conv", "c1", "--batch-size", "2", "--json",
                url=cli_server.url)
    assert again.returncode == 0, again.stderr
    assert [b["job_id"] for b in json.loads(again.stdout)["batches"]] == [b["job_id"] for b in report["batches"]]

    with engram.Client(cli_server.url) as client:
        convs = {m.conv_id for m in client.memories.list(user_id=user)}
    assert convs == {"c1", "pets"}

    table = run("ingest", str(path), "--user", user, "--conv", "c1", "--batch-size", "2", url=cli_server.url)
    assert table.returncode == 0 and report["batches"][0]["job_id"] in table.stdout
    assert "4 messages in 3 job(s)" in table.stdout


def test_ingest_messages_resumes_after_a_failure_without_duplicates(cli_server: ServerProcess,
                                                                     tmp_path: Path) -> None:
    user = uid()
    rows: list[dict[str, Any] | None] = [
        {"role": "user", "content": "I play the cello."},
        {"role": "user", "content": "I drive a blue van."},
        {"role": "user", "content": "   "},  # blank content: the server refuses this batch (422)
        {"role": "user", "content": "I am allergic to nuts."},
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    broken = run("ingest", str(path), "--user", user, "--conv", "c1", "--batch-size", "2", "--json",
                 url=cli_server.url)
    assert broken.returncode == 1
    assert "stopped at lines 3-4" in broken.stderr and "validation_error" in broken.stderr
    partial = json.loads(broken.stdout)
    assert partial["complete"] is False and len(partial["batches"]) == 1

    rows[2] = {"role": "user", "content": "I have two sisters."}
    write_jsonl(path, rows)
    resumed = run("ingest", str(path), "--user", user, "--conv", "c1", "--batch-size", "2", "--json", "--wait",
                  url=cli_server.url)
    assert resumed.returncode == 0, resumed.stderr
    batches = json.loads(resumed.stdout)["batches"]
    assert batches[0]["job_id"] == partial["batches"][0]["job_id"], "lines 1-2 must not be ingested twice"
    assert [b["status"] for b in batches] == ["succeeded", "succeeded"]


# ------------------------------------------------------------------ ingest: events (family M)
def test_ingest_events_resumes_with_the_same_event_ids(cli_server: ServerProcess, tmp_path: Path) -> None:
    actor = uid("a")
    rows: list[dict[str, Any] | None] = [
        {"kind": "user_message", "content": "I moved to Lisbon last month.", "ts": "2026-05-16T10:00:00Z"},
        {"kind": "assistant_message", "content": "Congratulations!", "metadata": {"channel": "chat"}},
        {"kind": "shout", "content": "HELLO"},  # not a kind: the server refuses this batch (422)
        {"actor_id": actor, "session_id": "s2", "kind": "user_message", "content": "I own two bikes."},
    ]
    path = write_jsonl(tmp_path / "events.jsonl", rows)
    broken = run("ingest", str(path), "--user", actor, "--conv", "s1", "--batch-size", "2", "--json",
                 url=cli_server.url)
    assert broken.returncode == 1 and "stopped at lines 3-4" in broken.stderr
    first_ids = json.loads(broken.stdout)["batches"][0]["event_ids"]
    assert len(first_ids) == 2

    rows[2] = {"kind": "user_message", "content": "I work as a nurse."}
    write_jsonl(path, rows)
    resumed = run("ingest", str(path), "--user", actor, "--conv", "s1", "--batch-size", "2", "--json", "--wait",
                  url=cli_server.url)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["family"] == "m"
    ids = [i for b in report["batches"] for i in b["event_ids"]]
    assert ids[:2] == first_ids, "the server's dedup window is 0 here: only the CLI's event ids prevent a repeat"
    assert len(set(ids)) == 4
    assert report["summary"]["completed"] == 4 and report["summary"]["pending"] == 0

    status = run("status", *ids, "--json", url=cli_server.url)
    assert status.returncode == 0, status.stderr
    assert sorted(json.loads(status.stdout)["completed_ids"]) == sorted(ids)
    table = run("status", ids[0], "01UNKNOWNUNKNOWNUNKNOWNUNK", url=cli_server.url)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert any(ids[0] in line and "completed" in line for line in lines)
    assert any("01UNKNOWNUNKNOWNUNKNOWNUNK" in line and "not_found" in line for line in lines)
    assert "1 completed, 0 pending, 1 failed" in table.stdout


# ------------------------------------------------------------------ search and jobs
def test_search_command(cli_server: ServerProcess) -> None:
    user = uid()
    with engram.Client(cli_server.url) as client:
        client.memories.ingest(messages=[{"role": "user", "content": "My favorite food is pad see ew."}],
                               user_id=user, conv_id="c1", metadata={"project": "atlas"}, wait=True)
        client.memories.ingest(messages=[{"role": "user", "content": "I like ramen."}],
                               user_id=user, conv_id="c2", metadata={"project": "other"}, wait=True)
    table = run("search", "thai food", "--user", user, url=cli_server.url)
    assert table.returncode == 0, table.stderr
    assert "pad see ew" in table.stdout and table.stdout.splitlines()[0].split()[:4] == ["#", "score", "type", "memory"]

    as_json = run("search", "food", "--user", user, "--filter", '{"project": "atlas"}', "--include",
                  "context_prompt", "--json", url=cli_server.url)
    assert as_json.returncode == 0, as_json.stderr
    results = json.loads(as_json.stdout)
    assert results["data"] and all(m["metadata"]["project"] == "atlas" for m in results["data"])
    assert results["extras"]["context_prompt"]

    nothing = run("search", "food", "--user", uid(), url=cli_server.url)
    assert nothing.returncode == 0 and "(no memories matched)" in nothing.stdout
    bad = run("search", "food", "--filter", '{"project": {"$nope": 1}}', url=cli_server.url)
    assert bad.returncode == 1 and "invalid_filter" in bad.stderr


def test_jobs_command(cli_server: ServerProcess) -> None:
    with engram.Client(cli_server.url) as client:
        job = client.memories.ingest(messages=[{"role": "user", "content": "I live in Oslo."}], user_id=uid(),
                                     conv_id="c1")
    waited = run("jobs", job.id, "--wait", url=cli_server.url)
    assert waited.returncode == 0, waited.stderr
    assert job.id in waited.stdout and "succeeded" in waited.stdout and "Oslo" in waited.stdout
    as_json = run("jobs", job.id, "--json", url=cli_server.url)
    assert json.loads(as_json.stdout)["status"] == "succeeded"
    missing = run("jobs", "job_" + "0" * 32, url=cli_server.url)
    assert missing.returncode == 1 and "job_not_found" in missing.stderr and missing.stdout == ""


# ------------------------------------------------------------------ terminal, flags, input errors
def test_progress_bar_only_on_a_terminal(cli_server: ServerProcess, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "e.jsonl", [{"kind": "user_message", "content": f"I have {n} cats."}
                                              for n in range(3)])
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "engram", "ingest", str(path), "--user", uid(), "--conv", "s", "--batch-size", "1"],
            env={**os.environ, "ENGRAM_BASE_URL": cli_server.url, "ENGRAM_LOG_LEVEL": "WARNING"},
            stdout=subprocess.PIPE, stderr=follower, text=True, timeout=120)
        os.close(follower)
        follower = -1
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    assert done.returncode == 0
    assert b"3/3 lines" in drawn and b"[" in drawn
    assert "3/3" not in done.stdout, "the bar goes to stderr only"


def test_url_and_api_key_flags_reach_the_server(tmp_path: Path) -> None:
    scripted = ScriptedServer().start()
    try:
        scripted.default = Reply(200, {"completedIds": ["e1"], "pendingIds": [], "failedIds": [], "total": 1,
                                       "statuses": {"e1": "completed"}})
        by_flag = run("status", "e1", "--url", scripted.url, "--api-key", "ek_flag")
        assert by_flag.returncode == 0, by_flag.stderr
        assert scripted.requests[-1].headers["authorization"] == "Bearer ek_flag"
        by_env = run("status", "e1", "--json", env={"ENGRAM_BASE_URL": scripted.url, "ENGRAM_API_KEY": "ek_env"})
        assert by_env.returncode == 0 and json.loads(by_env.stdout)["completed_ids"] == ["e1"]
        assert scripted.requests[-1].headers["authorization"] == "Bearer ek_env"
        assert scripted.requests[-1].path == "/v1/status"
    finally:
        scripted.stop()


def test_ingest_idempotency_keys_depend_on_lines_and_content_only(tmp_path: Path) -> None:
    """Two runs over the same file send the same keys; a changed line changes only its batch's key."""
    scripted = ScriptedServer().start()
    try:
        scripted.default = Reply(202, {"object": "ingest_job", "id": "job_" + "b" * 32, "status": "pending",
                                       "created_at": "2026-05-16T10:00:00Z", "updated_at": "2026-05-16T10:00:00Z",
                                       "result": None, "error": None})
        rows: list[dict[str, Any] | None] = [{"role": "user", "content": f"Fact number {n}."} for n in range(4)]
        path = write_jsonl(tmp_path / "m.jsonl", rows)
        args = ("ingest", str(path), "--user", "u", "--conv", "c", "--batch-size", "2", "--url", scripted.url)
        assert run(*args).returncode == 0
        assert run(*args).returncode == 0
        rows[3] = {"role": "user", "content": "Fact number three, corrected."}
        write_jsonl(path, rows)
        assert run(*args).returncode == 0
        keys = [r.headers["idempotency-key"] for r in scripted.requests]
        assert keys[:2] == keys[2:4] and keys[0] != keys[1]
        assert keys[4] == keys[0] and keys[5] != keys[1]
    finally:
        scripted.stop()


@pytest.mark.parametrize("rows, message", [
    ([{"role": "user", "content": "hi"}, {"actor_id": "a", "session_id": "s", "kind": "user_message",
                                          "content": "hi"}], "mixes messages and events"),
    ([{"role": "user", "content": "hi"}], "no user_id/conv_id"),
    ([{"content": "hi"}], "neither a message"),
    ([], "no lines to ingest"),
])
def test_ingest_refuses_bad_files_before_sending_anything(tmp_path: Path, rows: list[dict[str, Any]],
                                                          message: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    result = run("ingest", str(path), "--url", "http://127.0.0.1:9")
    assert result.returncode == 2 and message in result.stderr


def test_ingest_names_the_line_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"role": "user", "content": "hi"}\n{not json}\n')
    result = run("ingest", str(path), "--user", "u", "--conv", "c", "--url", "http://127.0.0.1:9")
    assert result.returncode == 2 and "line 2: not JSON" in result.stderr


def test_ingest_reads_standard_input(cli_server: ServerProcess) -> None:
    lines = json.dumps({"role": "user", "content": "I speak Portuguese."}) + "\n"
    result = run("ingest", "-", "--user", uid(), "--conv", "c", "--json", "--wait", url=cli_server.url, stdin=lines)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["succeeded"] == 1
