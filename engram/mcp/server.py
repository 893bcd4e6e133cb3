"""engram's MCP server: the tools, resources and prompt an agent uses to remember and recall.

Built on the official SDK's `MCPServer` (its high-level server; FastMCP's successor inside the
SDK), so the protocol — handshake, schemas from type hints, stdio and streamable HTTP — is the
SDK's, and this module holds only what engram means. Every tool goes through engram's own HTTP
API with engram's Python client (`connect` hands one out per call), so an MCP call is exactly
an API call: the same keys, scopes, limits, validation and errors, whether the server runs
beside an IDE over stdio (`engram mcp`) or mounted on `engram serve` at `/mcp` (engram/mcp/http.py).

Answers are compact text for a model to read: one line per memory with its id, type and date,
so the agent can cite, fetch or forget it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Awaitable, Callable, Literal

from mcp.server.mcpserver import Context, MCPServer
from pydantic import BaseModel
from mcp.server.mcpserver.exceptions import ResourceError, ToolError

from engram import __version__
from engram.client import AsyncClient, EngramError, Memory

Connect = Callable[[Context], Awaitable[AsyncClient]]


class Turn(BaseModel):
    """One turn of a conversation, as `remember` takes several."""

    role: Literal["user", "assistant"]
    content: str
DEFAULT_CONVERSATION = "mcp-notes"

INSTRUCTIONS = """engram is this user's long-term memory. Before answering anything that may depend on
who the user is, what they prefer or what was decided before, call `recall` with a short query
and the user's id. When the user tells you something worth keeping (a preference, a fact about
their life or work, a decision, a correction), call `remember` with it. Memories are extracted in
the background: a `remember` returns at once with a job id; `recall` finds them seconds later
(pass `wait: true` to `remember` when you need them in the very next step). If the user says
something you remembered is wrong, `forget` it by id and `remember` the correction."""


def _date(value: datetime | None) -> str:
    return value.date().isoformat() if value else "undated"


def memory_line(m: Memory) -> str:
    """One memory as the model reads it: `- [fact · 2026-05-16 · id …] text`."""
    when = getattr(m.details, "valid_at", None) or m.created_at
    score = f" · score {m.score:.2f}" if m.score is not None else ""
    status = getattr(m.details, "status", None)
    state = f" · {status}" if status and status != "active" else ""
    return f"- [{m.type} · {_date(when)}{state}{score} · id {m.id}] {m.text}"


def _failed(exc: EngramError) -> ToolError:
    return ToolError(f"engram answered {exc.status_code or ''} {exc.code or 'error'}: {exc.message}".replace("  ", " "))


def build_server(connect: Connect) -> MCPServer:
    """The MCP server; `connect(ctx)` gives the engram client a call runs with."""
    mcp = MCPServer(name="engram", title="engram memory", version=__version__, instructions=INSTRUCTIONS)

    async def call(ctx: Context, run: Callable[[AsyncClient], Awaitable[Any]]) -> Any:
        client = await connect(ctx)
        try:
            return await run(client)
        except EngramError as exc:
            raise _failed(exc) from None
        finally:
            await client.aclose()

    @mcp.tool(title="Remember")
    async def remember(user_id: str, ctx: Context, content: str | None = None, turns: list[Turn] | None = None,
                       conversation_id: str = DEFAULT_CONVERSATION, role: Literal["user", "assistant"] = "user",
                       metadata: dict[str, Any] | None = None, wait: bool = False) -> str:
        """Store something the user said (or a note about them) in their long-term memory.

        Use it whenever the user shares a lasting fact, preference, plan, decision or correction.
        Give either `content` — one thing said, in the speaker's words (e.g. "I moved to Denver
        last month"), with `role` saying who said it — or `turns`, several turns of the
        conversation in order ({"role": "user" | "assistant", "content": …}). Turns of one
        conversation share a `conversation_id`. Memories are extracted in the background: this
        returns a job id at once, and `recall` finds them a few seconds later; set `wait` to true
        to return only once they are stored, listing them."""
        if (content is None) == (turns is None):
            raise ToolError("give either content (one turn or a note) or turns (a list of {role, content})")
        messages = [{"role": role, "content": content}] if content is not None else \
            [{"role": t.role, "content": t.content} for t in turns or []]

        async def run(client: AsyncClient) -> str:
            job = await client.memories.ingest(messages=messages, user_id=user_id,
                                               conv_id=conversation_id, metadata=metadata, wait=wait)
            if job.status == "succeeded" and job.result is not None:
                made = job.result.memories_created
                lines = [f"- [{r.type} · id {r.id}] {r.text}" for r in made]
                updated = len(job.result.memories_updated)
                head = f"Stored (job {job.id}): {len(made)} new memories" + (
                    f", {updated} existing ones confirmed" if updated else "")
                return "\n".join([head + ("." if not lines else ":"), *lines])
            if job.status == "failed" and job.error is not None:
                return f"Job {job.id} failed: {job.error.code}: {job.error.message}"
            return f"Accepted: job {job.id} is {job.status}; its memories are searchable within seconds."
        return await call(ctx, run)

    @mcp.tool(title="Recall")
    async def recall(query: str, ctx: Context, user_id: str | None = None, group_ids: list[str] | None = None,
                     filters: dict[str, Any] | None = None, limit: int = 8) -> str:
        """Search the user's long-term memory in natural language before you answer.

        Give the user's id (or group ids, for memories shared with a group) and a short query
        ("where does the user live", "dietary restrictions"). `filters` narrows further with
        engram's filter language, e.g. {"type": "fact"} or {"created_at": {"$gte": "2026-01-01"}}.
        Returns the best matches, one per line with type, date and id, then a ready-to-use
        context block."""
        where: dict[str, Any] = dict(filters or {})
        if user_id is not None:
            where["user_id"] = user_id
        if group_ids:
            where["group_ids"] = {"$in": list(group_ids)}

        async def run(client: AsyncClient) -> str:
            found = await client.memories.search(query=query, filters=where or None, limit=max(1, min(limit, 50)),
                                                 include=["context_prompt"])
            if not found.data:
                return "No memories match."
            lines = [memory_line(m) for m in found.data]
            block = found.extras.context_prompt if found.extras and found.extras.context_prompt else ""
            return "\n".join(lines) + (f"\n\n{block}" if block else "")
        return await call(ctx, run)

    @mcp.tool(title="Forget")
    async def forget(memory_id: str, ctx: Context) -> str:
        """Delete one memory for good, by the id `recall` or `list_memories` showed. Use it when
        the user says a memory is wrong or asks you to forget it; remember the correction after."""
        async def run(client: AsyncClient) -> str:
            await client.memories.delete(memory_id)
            return f"Forgotten: {memory_id}."
        return await call(ctx, run)

    @mcp.tool(title="List memories")
    async def list_memories(user_id: str, ctx: Context, type: Literal["fact", "artifact", "episode"] | None = None,
                            limit: int = 20) -> str:
        """List a user's current memories, newest first (facts, artifacts and episodes, or one
        `type`). Use `recall` to search; this is for looking over what is kept."""
        async def run(client: AsyncClient) -> str:
            lines: list[str] = []
            async for m in client.memories.list(user_id=user_id, type=type, page_size=max(1, min(limit, 100))):
                lines.append(memory_line(m))
                if len(lines) >= limit:
                    break
            return "\n".join(lines) if lines else f"No memories for {user_id}."
        return await call(ctx, run)

    @mcp.tool(title="Get memory")
    async def get_memory(memory_id: str, ctx: Context, revisions: bool = True) -> str:
        """One memory in full: its text, type, status, dates, metadata and the turns it came from,
        and (with `revisions`) its history — earlier values it replaced, oldest first."""
        async def run(client: AsyncClient) -> str:
            m = await client.memories.get(memory_id)
            out = [memory_line(m), f"user: {m.user_id} · conversation: {m.conv_id}"]
            if m.metadata:
                out.append(f"metadata: {m.metadata}")
            sources = getattr(m.details, "source_event_ids", None)
            if sources:
                out.append(f"from turns: {', '.join(sources)}")
            if revisions:
                chain = await client.memories.revisions(memory_id)
                if len(chain) > 1:
                    out += ["history (oldest first):", *(memory_line(r) for r in chain)]
            return "\n".join(out)
        return await call(ctx, run)

    @mcp.tool(title="Status")
    async def status(ctx: Context, job_id: str | None = None, event_ids: list[str] | None = None) -> str:
        """Whether stored turns have become memories yet: give the job id `remember` returned (or
        event ids from engram's events API)."""
        if job_id is None and not event_ids:
            raise ToolError("give job_id or event_ids")

        async def run(client: AsyncClient) -> str:
            lines = []
            if job_id is not None:
                job = await client.memories.jobs.get(job_id)
                made = len(job.result.memories_created) if job.result else 0
                error = f" ({job.error.code}: {job.error.message})" if job.error else ""
                lines.append(f"job {job.id}: {job.status}{error}" + (f", {made} memories created" if made else ""))
            if event_ids:
                report = await client.status(list(event_ids))
                lines += [f"event {e}: {report.statuses.get(e, 'unknown')}" for e in event_ids]
            return "\n".join(lines)
        return await call(ctx, run)

    @mcp.resource("engram://users/{user_id}/recent", title="Recent memories", mime_type="text/markdown")
    async def recent(user_id: str, ctx: Context) -> str:
        """The user's 20 newest memories."""
        try:
            return await list_memories(user_id, ctx, limit=20)
        except ToolError as exc:
            raise ResourceError(str(exc)) from None

    @mcp.resource("engram://users/{user_id}/profile", title="Profile", mime_type="text/markdown")
    async def profile(user_id: str, ctx: Context) -> str:
        """What engram currently holds true about the user: their active facts, newest first."""
        async def run(client: AsyncClient) -> str:
            facts = []
            async for m in client.memories.list(user_id=user_id, type="fact", page_size=100):
                facts.append(f"- {m.text}")
                if len(facts) >= 100:
                    break
            return f"# What engram knows about {user_id}\n\n" + ("\n".join(facts) if facts else "(nothing yet)")
        try:
            return await call(ctx, run)
        except ToolError as exc:
            raise ResourceError(str(exc)) from None

    @mcp.prompt(title="Use memory")
    def use_memory(user_id: str) -> str:
        """How to use engram's memory tools in this conversation."""
        return (f"You are talking with the user whose id is {user_id!r}. {INSTRUCTIONS}\n\n"
                f"Start by reading what you know: call `recall` with user_id={user_id!r} and a query "
                f"about the topic at hand.")

    return mcp
