"""What the pipeline makes of conversations, observed over HTTP: speakers, dates, episodes,
artifacts, reconciliation, deletes, and failures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from tests.conftest import ServerProcess, wait_job
from tests.test_family_x import checked


def uid() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(server: ServerProcess) -> httpx.Client:
    with server.client() as c:
        yield c


def run(client: httpx.Client, user: str, conv: str, messages: list[dict], **extra: object) -> dict:
    job = client.post("/v1/memories", json={"messages": messages, "user_id": user, "conv_id": conv, **extra}).json()
    done = wait_job(client, job["id"])
    assert done["status"] == "succeeded", done
    return done["result"]


def get(client: httpx.Client, memory_id: str) -> dict:
    return checked(client.get(f"/v1/memories/{memory_id}")).json()


def test_facts_name_their_speaker_and_resolve_relative_dates(client: httpx.Client) -> None:
    result = run(client, uid(), "s1", [
        {"role": "user", "name": "Caroline", "content": "I went to a LGBTQ support group yesterday.",
         "date": "2023-05-08T13:56:00Z", "dia_id": "D1:3"},
        {"role": "user", "name": "Melanie", "content": "How did it go?", "date": "2023-05-08T13:57:00Z"},
    ])
    facts = [get(client, ref["id"]) for ref in result["memories_created"] if ref["type"] == "fact"]
    support = [f for f in facts if "support group" in f["text"]]
    assert len(support) == 1
    fact = support[0]
    assert fact["text"].startswith("Caroline") and "7 May 2023" in fact["text"]
    assert fact["details"]["valid_at"].startswith("2023-05-07")
    assert fact["details"]["source_role"] == "user" and fact["details"]["fact_type"]
    assert not any("How did it go" in f["text"] for f in facts), "questions without content are dropped"


def test_episode_after_enough_turns(client: httpx.Client) -> None:
    # The shared server writes an episode every 6 turns (ENGRAM_EPISODE_EVERY_TURNS=6).
    user = uid()
    lines = ["I started learning the violin this spring.", "My teacher is called Ms. Alvarez.",
             "I practise scales every morning.", "Next month I play my first recital.",
             "My sister will come to the recital.", "I am nervous but excited about it."]
    first = run(client, user, "music", [{"role": "user", "content": l} for l in lines[:3]])
    assert not any(r["type"] == "episode" for r in first["memories_created"])
    second = run(client, user, "music", [{"role": "user", "content": l} for l in lines[3:]])
    episodes = [r for r in second["memories_created"] if r["type"] == "episode"]
    assert len(episodes) == 1
    episode = get(client, episodes[0]["id"])
    assert episode["details"]["title"] and episode["details"]["started_at"] and episode["details"]["ended_at"]
    assert len(episode["details"]["fact_ids"]) >= 5, "the episode links the facts of the turns it covers"
    fact = get(client, episode["details"]["fact_ids"][0])
    assert fact["details"]["episode_id"] == episode["id"]


def test_idle_conversation_gets_an_episode(tmp_path) -> None:
    srv = ServerProcess(tmp_path / "data", env={"ENGRAM_EPISODE_IDLE_S": "1"}).start()
    try:
        with srv.client() as c:
            run(c, "idle-user", "quiet", [{"role": "user", "content": "I bought a kayak."},
                                          {"role": "user", "content": "I paddle on the river at weekends."}])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                episodes = c.get("/v1/memories", params={"user_id": "idle-user", "type": "episode"}).json()["data"]
                if episodes:
                    break
                time.sleep(0.2)
            assert episodes, "an idle conversation is summarised"
            assert "kayak" in episodes[0]["text"].lower() or "paddle" in episodes[0]["text"].lower()
    finally:
        srv.stop()


def test_artifacts_only_when_asked(client: httpx.Client) -> None:
    code = "Here is the helper:\n```python\ndef slugify(text):\n    return text.lower().replace(' ', '-')\n```\n"
    message = [{"role": "assistant", "content": code}]
    without = run(client, uid(), "c", message)
    assert not any(r["type"] == "artifact" for r in without["memories_created"])
    user = uid()
    with_artifacts = run(client, user, "c", message, extract_artifacts=True)
    refs = [r for r in with_artifacts["memories_created"] if r["type"] == "artifact"]
    assert len(refs) == 1
    artifact = get(client, refs[0]["id"])
    assert "def slugify" in artifact["details"]["full_content"]
    assert artifact["details"]["version"] == 1 and artifact["details"]["root_id"] == artifact["id"]
    listed = checked(client.get("/v1/memories", params={"user_id": user, "type": "artifact"})).json()["data"]
    assert listed[0]["details"]["full_content"] is None, "bodies only when asked for"
    full = checked(client.get("/v1/memories", params={"user_id": user, "type": "artifact",
                                                      "include": "full_content"})).json()["data"]
    assert "def slugify" in full[0]["details"]["full_content"]


def test_repeated_fact_updates_and_changed_attribute_supersedes(client: httpx.Client) -> None:
    user = uid()
    first = run(client, user, "c1", [{"role": "user", "content": "I live in Paris."}])
    original = first["memories_created"][0]["id"]
    again = run(client, user, "c2", [{"role": "user", "content": "I live in Paris."}])
    assert again["memories_created"] == [] and [r["id"] for r in again["memories_updated"]] == [original]
    assert len(get(client, original)["details"]["source_event_ids"]) == 2

    moved = run(client, user, "c3", [{"role": "user", "content": "I moved to Rome."}])
    new_id = moved["memories_created"][0]["id"]
    assert moved["memories_superseded_by"] == {original: new_id}
    assert get(client, original)["details"]["status"] == "superseded"
    assert get(client, new_id)["details"]["supersedes"] == original
    hits = client.post("/v1/memories/search", json={"query": "where does the user live",
                                                    "filters": {"user_id": user}}).json()["data"]
    assert [h["id"] for h in hits] == [new_id], "superseded facts are hidden from search"
    history = client.post("/v1/memories/search", json={
        "query": "where does the user live", "filters": {"user_id": user, "status": "superseded"}}).json()["data"]
    assert [h["id"] for h in history] == [original]


def test_delete_removes_facts_and_episodes(client: httpx.Client) -> None:
    user = uid()
    result = run(client, user, "c", [{"role": "user", "content": f"I have {n} houseplants named after planets."}
                                     for n in range(6)])
    fact = next(r["id"] for r in result["memories_created"] if r["type"] == "fact")
    episode = next(r["id"] for r in result["memories_created"] if r["type"] == "episode")
    assert checked(client.delete(f"/v1/memories/{fact}")).status_code == 204
    assert checked(client.get(f"/v1/memories/{fact}")).status_code == 404
    listed = client.get("/v1/memories", params={"user_id": user, "type": "fact", "limit": 100}).json()["data"]
    assert fact not in {m["id"] for m in listed}
    again = checked(client.delete(f"/v1/memories/{fact}"))
    assert again.status_code == 404 and again.json()["detail"]["code"] == "memory_not_found"
    assert checked(client.delete(f"/v1/memories/{episode}")).status_code == 204
    assert checked(client.get(f"/v1/memories/{episode}")).status_code == 404


def test_wait_true_returns_failed_job_as_terminal(client: httpx.Client) -> None:
    response = checked(client.post("/v1/memories?wait=true", json={
        "messages": [{"role": "user", "content": "token ghp_abcdefghijklmnopqrstuvwxyz0123456789"}],
        "user_id": uid(), "conv_id": "c"}))
    assert response.status_code == 200
    assert response.json()["status"] == "failed" and response.json()["error"]["code"] == "content_rejected"


def test_bad_setting_stops_start_up_naming_it(tmp_path) -> None:
    for env, name in (({"ENGRAM_WORKERS": "many"}, "ENGRAM_WORKERS"),
                      ({"ENGRAM_CONTENT_FILTER_PATTERNS": "([unclosed"}, "ENGRAM_CONTENT_FILTER_PATTERNS"),
                      ({"ENGRAM_DATABASE_URL": "mysql://x"}, "ENGRAM_DATABASE_URL")):
        result = subprocess.run([sys.executable, "-m", "engram", "serve", "--data", str(tmp_path / "d")],
                                env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        assert name in result.stderr
