"""engram's MCP server driven by the official SDK's own client, against a real `engram serve`:
over streamable HTTP at /mcp (keys and scopes enforced) and over stdio (`engram mcp`)."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import ServerProcess, create_key

TOOLS = {"remember", "recall", "forget", "list_memories", "get_memory", "status"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # Bound to all interfaces, so there is no open mode: every call needs a key.
    server = ServerProcess(tmp_path_factory.mktemp("mcp") / "data", host="0.0.0.0")
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def keys(srv: ServerProcess) -> dict[str, str]:
    org = f"m{uuid.uuid4().hex[:8]}"
    return {"write": create_key(srv, org, "read,write"), "read": create_key(srv, org, "read"),
            "stranger": create_key(srv, f"s{uuid.uuid4().hex[:8]}", "read,write")}


def over_http(srv: ServerProcess, key: str | None) -> Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return Client(streamable_http_client(f"{srv.url}/mcp", http_client=httpx2.AsyncClient(headers=headers)))


def over_stdio(srv: ServerProcess, key: str) -> Client:
    return Client(StdioServerParameters(command=sys.executable, args=["-m", "engram", "mcp", "--url", srv.url],
                                        env={"ENGRAM_API_KEY": key, "ENGRAM_LOG_LEVEL": "WARNING"}))


async def text(client: Client, tool: str, **args: Any) -> str:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content[0].text
    return result.content[0].text


async def remember_recall_forget(client: Client) -> None:
    user = f"u{uuid.uuid4().hex[:8]}"
    tools = await client.list_tools()
    assert {t.name for t in tools.tools} == TOOLS
    assert all(len(t.description or "") > 80 for t in tools.tools), "every tool explains itself to a model"

    stored = await text(client, "remember", content="I moved to Denver last month.", user_id=user, wait=True)
    assert stored.startswith("Stored (job job_") and "Denver" in stored
    found = await text(client, "recall", query="where does the user live", user_id=user)
    assert "Denver" in found and "## Relevant memories for:" in found, "lines with ids, then the context block"
    memory_id = found.split(" · id ")[1].split("]")[0]
    detail = await text(client, "get_memory", memory_id=memory_id)
    assert f"user: {user}" in detail and "from turns:" in detail
    assert "Denver" in await text(client, "list_memories", user_id=user)
    profile = await client.read_resource(f"engram://users/{user}/profile")
    assert "Denver" in profile.contents[0].text
    prompt = await client.get_prompt("use_memory", {"user_id": user})
    assert "recall" in prompt.messages[0].content.text

    both = await client.call_tool("remember", {"user_id": user, "content": "x", "turns": [{"role": "user", "content": "y"}]})
    assert both.is_error and "either content" in both.content[0].text
    queued = await text(client, "remember", user_id=user, conversation_id="family", turns=[
        {"role": "user", "content": "My sister is called Ines."},
        {"role": "assistant", "content": "Noted — Ines."}])
    job_id = queued.split("job ")[1].split(" ")[0]
    with anyio.fail_after(60):
        while "succeeded" not in await text(client, "status", job_id=job_id):
            await anyio.sleep(0.2)

    assert await text(client, "forget", memory_id=memory_id) == f"Forgotten: {memory_id}."
    gone = await client.call_tool("get_memory", {"memory_id": memory_id})
    assert gone.is_error and "memory_not_found" in gone.content[0].text
    assert "Denver" not in await text(client, "recall", query="where does the user live", user_id=user)


def test_over_http_remember_recall_forget(srv: ServerProcess, keys: dict[str, str]) -> None:
    async def run() -> None:
        async with over_http(srv, keys["write"]) as client:
            await remember_recall_forget(client)
    anyio.run(run)


def test_over_stdio_against_a_running_server(srv: ServerProcess, keys: dict[str, str]) -> None:
    async def run() -> None:
        async with over_stdio(srv, keys["write"]) as client:
            await remember_recall_forget(client)
    anyio.run(run)


def test_http_without_a_valid_key_is_refused_before_mcp(srv: ServerProcess) -> None:
    for headers in ({}, {"Authorization": "Bearer egm_not-a-key"}):
        r = httpx.post(f"{srv.url}/mcp", headers={**headers, "Accept": "application/json, text/event-stream"},
                       json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text


def test_scopes_and_orgs_hold_over_mcp(srv: ServerProcess, keys: dict[str, str]) -> None:
    async def run() -> None:
        user = f"u{uuid.uuid4().hex[:8]}"
        async with over_http(srv, keys["write"]) as writer:
            await text(writer, "remember", content="I play the cello every evening.", user_id=user, wait=True)
        async with over_http(srv, keys["read"]) as reader:
            assert "cello" in await text(reader, "recall", query="instrument", user_id=user)
            refused = await reader.call_tool("remember", {"content": "I also play drums.", "user_id": user})
            assert refused.is_error and "insufficient_scope" in refused.content[0].text
            found = await text(reader, "recall", query="cello", user_id=user)
            memory_id = found.split(" · id ")[1].split("]")[0]
            refused = await reader.call_tool("forget", {"memory_id": memory_id})
            assert refused.is_error and "insufficient_scope" in refused.content[0].text
        async with over_http(srv, keys["stranger"]) as stranger:
            assert await text(stranger, "recall", query="cello", user_id=user) == "No memories match."
            missing = await stranger.call_tool("get_memory", {"memory_id": memory_id})
            assert missing.is_error and "memory_not_found" in missing.content[0].text
    anyio.run(run)


def test_the_generic_configuration_in_this_document_works(srv: ServerProcess, keys: dict[str, str]) -> None:
    """docs/mcp.md's "Any MCP client" entry, launched as a client would launch it (with the
    virtualenv's own `engram`, the URL and a key of a real server), remembers and recalls."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "mcp.md").read_text()
    block = doc.split("<!-- mcp-config -->", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    config = json.loads(block.replace("http://127.0.0.1:8420", srv.url).replace("egm_your_key", keys["write"]))
    assert config["command"] == "engram"
    command = str(Path(sys.executable).with_name("engram"))

    async def run() -> None:
        params = StdioServerParameters(command=command, args=config["args"],
                                       env={**config["env"], "ENGRAM_LOG_LEVEL": "WARNING"})
        async with Client(params) as client:
            user = f"u{uuid.uuid4().hex[:8]}"
            await text(client, "remember", content="My dentist is Dr. Okafor on Elm Street.", user_id=user, wait=True)
            assert "Okafor" in await text(client, "recall", query="who is the user's dentist", user_id=user)
    anyio.run(run)
