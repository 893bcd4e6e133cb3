"""`engram mcp`: the MCP server over stdio, for an IDE's agent, talking to a running engram.

The server is named by `--url` / `ENGRAM_BASE_URL` and the key by `--api-key` /
`ENGRAM_API_KEY`, so one configuration line points an agent at a team's engram (docs/mcp.md).
stdout carries the protocol only; logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging

import httpx

from mcp.server.mcpserver import Context

from engram.client import AsyncClient
from engram.mcp.server import build_server


def run(url: str | None, api_key: str | None, org_id: str | None = None) -> None:
    # One connection pool for the session: a new httpx client per call would cost more than the
    # call (it builds an SSL context each time).
    http = httpx.AsyncClient()

    async def connect(ctx: Context) -> AsyncClient:
        return AsyncClient(url, api_key, org_id=org_id, http_client=http)

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per call is noise on an IDE's stderr
    build_server(connect).run("stdio")


def add_command(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    mcp = sub.add_parser("mcp", help="serve engram's MCP tools over stdio, against a running engram",
                         description="An MCP server on standard input/output (for Claude Code, Cursor and other "
                                     "MCP clients) whose tools remember and recall through the engram server at "
                                     "--url with --api-key. engram serve also offers the same tools over HTTP at /mcp.")
    mcp.add_argument("--url", help="the engram server (default ENGRAM_BASE_URL, else http://127.0.0.1:8420)")
    mcp.add_argument("--api-key", help="API key (default ENGRAM_API_KEY); read scope recalls, write remembers")
    mcp.add_argument("--org", help="X-Org-Id to send with the key (optional)")
    mcp.set_defaults(func=lambda args: run(args.url, args.api_key, args.org) or 0)
