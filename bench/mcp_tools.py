"""Tool latency over MCP (issue 19): remember and recall, over streamable HTTP (`/mcp` on
`engram serve`) and over stdio (`engram mcp`, a child of this process talking HTTP to the
server), next to the same operations on engram's HTTP API directly.

A throwaway `engram serve` on the embedded store (open mode, loopback) is seeded with
`--seed` turns of one user; then, from this process, sequentially (one call in flight, so a
figure is one call's latency, not a queue's):

- `remember`: a new first-person turn, accepted without waiting (the API's `POST /v1/memories`);
- `recall`: a query scoped to the user (the API's `POST /v1/memories/search` with the context block).

    .venv/bin/python bench/mcp_tools.py --calls 200 --seed 300 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import anyio
import httpx
from mcp import Client
from mcp.client.stdio import StdioServerParameters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._server import engram_server  # noqa: E402
from bench._stats import percentile  # noqa: E402

USER = "bench-mcp"
PLACES = ["Lisbon", "Kyoto", "Denver", "Oslo", "Quito", "Hanoi", "Perth", "Cusco", "Tunis", "Bergen"]
QUERIES = ["where did the user travel", "what did the user buy", "which cities has the user seen",
           "when was the user in Kyoto", "the user's trips"]


def turn(i: int) -> str:
    return f"I flew to {PLACES[i % len(PLACES)]} in {2000 + i % 25} and bought souvenir number {i} there."


def seed(base: str, n: int) -> None:
    with httpx.Client(base_url=base, timeout=300) as c:
        for start in range(0, n, 100):
            messages = [{"role": "user", "content": turn(i)} for i in range(start, min(n, start + 100))]
            r = c.post("/v1/memories?wait=true", json={"user_id": USER, "conv_id": f"seed-{start}",
                                                       "messages": messages})
            r.raise_for_status()


async def timed(calls: int, once: Callable[[int], Awaitable[Any]]) -> dict[str, float]:
    for i in range(5):  # warm: connections, the query embedder's first batches
        await once(-1 - i)
    seconds = []
    for i in range(calls):
        started = time.perf_counter()
        await once(i)
        seconds.append(time.perf_counter() - started)
    ms = [s * 1000 for s in seconds]
    return {"p50_ms": round(percentile(ms, 0.5), 2), "p95_ms": round(percentile(ms, 0.95), 2),
            "mean_ms": round(sum(ms) / len(ms), 2), "calls": calls}


async def over_mcp(client: Client, calls: int) -> dict[str, Any]:
    async def remember(i: int) -> None:
        r = await client.call_tool("remember", {"content": turn(10_000 + i), "user_id": USER, "conversation_id": "m"})
        assert not r.is_error, r.content

    async def recall(i: int) -> None:
        r = await client.call_tool("recall", {"query": QUERIES[i % len(QUERIES)], "user_id": USER})
        assert not r.is_error and "id " in r.content[0].text, r.content

    return {"remember": await timed(calls, remember), "recall": await timed(calls, recall)}


async def over_api(base: str, calls: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        async def remember(i: int) -> None:
            r = await c.post("/v1/memories", json={"user_id": USER, "conv_id": "a",
                                                   "messages": [{"role": "user", "content": turn(20_000 + i)}]})
            assert r.status_code == 202, r.text

        async def recall(i: int) -> None:
            r = await c.post("/v1/memories/search", json={"query": QUERIES[i % len(QUERIES)], "limit": 8,
                                                          "filters": {"user_id": USER}, "include": ["context_prompt"]})
            assert r.status_code == 200 and r.json()["data"], r.text

        return {"remember": await timed(calls, remember), "recall": await timed(calls, recall)}


async def measure(base: str, calls: int) -> dict[str, Any]:
    out: dict[str, Any] = {"api": await over_api(base, calls)}
    async with Client(f"{base}/mcp") as http_client:
        out["mcp_http"] = await over_mcp(http_client, calls)
    stdio = StdioServerParameters(command=sys.executable, args=["-m", "engram", "mcp", "--url", base],
                                  env={"ENGRAM_LOG_LEVEL": "WARNING"})
    async with Client(stdio) as stdio_client:
        out["mcp_stdio"] = await over_mcp(stdio_client, calls)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seed", type=int, default=300, help="turns stored for the user before timing")
    parser.add_argument("--url", help="an engram server to use instead of a throwaway one (open mode)")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    with engram_server(args.url, {"ENGRAM_EPISODE_IDLE_S": "100000"}) as base:
        seed(base, args.seed)
        figures = anyio.run(measure, base, args.calls)
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
