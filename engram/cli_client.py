"""The command line for people: `engram ingest | search | jobs | status` against a running server.

These commands talk HTTP through `engram.Client` (never to the store directly), to the server
named by `--url` / `ENGRAM_BASE_URL` with `--api-key` / `ENGRAM_API_KEY`. Output is a readable
table by default and JSON with `--json`.

`engram ingest FILE` is resumable: every request it sends is named by the file's content and
line numbers (family X: an `Idempotency-Key` per batch; family M: an `event_id` per line), so
running it again after an interruption sends the same names and the server stores nothing twice.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence, TextIO

EVENT_KEYS = frozenset({"kind", "actor_id", "session_id"})
MESSAGE_FIELDS = ("role", "content", "name", "date", "dia_id")


class InputError(Exception):
    """A problem with the input file, found before anything is sent."""


# ---------------------------------------------------------------------------- parser
def add_client_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register the client commands on `engram`'s sub-command parser."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help="the server (default ENGRAM_BASE_URL, else http://127.0.0.1:8420)")
        p.add_argument("--api-key", help="API key (default ENGRAM_API_KEY)")
        p.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")

    ingest = sub.add_parser(
        "ingest", help="send a JSON Lines file of messages or events to a server (resumable)",
        description="Each line is a message ({role, content, name?, date?, dia_id?, user_id?, conv_id?}: family X, "
                    "one job per batch) or an event ({actor_id, session_id, kind, content, ts?, metadata?, "
                    "event_id?}: family M). Re-running the same file never ingests a line twice: family-X batches "
                    "carry an Idempotency-Key derived from their lines (remembered 24 h by the server), "
                    "family-M events an event_id derived from their line (remembered forever).")
    ingest.add_argument("file", help="JSON Lines file ('-' for standard input)")
    ingest.add_argument("--user", help="user_id (actor_id) for lines that carry none")
    ingest.add_argument("--conv", help="conv_id (session_id) for lines that carry none")
    ingest.add_argument("--agent", help="agent_id for messages")
    ingest.add_argument("--app", help="app_id for messages")
    ingest.add_argument("--metadata", help="JSON object stored on every memory of these messages")
    ingest.add_argument("--extract-artifacts", action="store_true", help="also extract artifacts (messages)")
    ingest.add_argument("--batch-size", type=int, default=100, help="lines per request (default 100)")
    ingest.add_argument("--wait", action="store_true", help="wait until the server has processed everything")
    ingest.add_argument("--timeout", type=float, default=600.0, help="how long --wait waits (seconds)")
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar (it only shows on a terminal)")
    common(ingest)
    ingest.set_defaults(func=cmd_ingest)

    search = sub.add_parser("search", help="search memories (family X)")
    search.add_argument("query")
    search.add_argument("--user", help="only this user's memories")
    search.add_argument("--conv", help="only this conversation's memories")
    search.add_argument("--filter", help='a filter object, e.g. \'{"project": "atlas"}\' (ANDed with --user/--conv)')
    search.add_argument("--limit", type=int, default=10)
    search.add_argument("--include", action="append", default=[],
                        help="full_content, source_events or context_prompt (repeatable)")
    common(search)
    search.set_defaults(func=cmd_search)

    jobs = sub.add_parser("jobs", help="show an ingest job (family X)")
    jobs.add_argument("job_id")
    jobs.add_argument("--wait", action="store_true", help="poll until the job succeeds or fails")
    jobs.add_argument("--timeout", type=float, default=120.0, help="how long --wait waits (seconds)")
    common(jobs)
    jobs.set_defaults(func=cmd_jobs)

    status = sub.add_parser("status", help="processing status of events (family M)")
    status.add_argument("event_ids", nargs="+", metavar="EVENT_ID")
    common(status)
    status.set_defaults(func=cmd_status)


# ---------------------------------------------------------------------------- shared plumbing
def _client(args: argparse.Namespace) -> Any:
    from engram.client import Client

    logging.getLogger("httpx").setLevel(logging.WARNING)  # no per-request log lines on a person's terminal
    return Client(args.url, args.api_key)


def _run(args: argparse.Namespace, body: Any) -> int:
    from engram.client import EngramError

    try:
        return body()
    except InputError as exc:
        print(f"engram: {exc}", file=sys.stderr)
        return 2
    except EngramError as exc:
        print(f"engram: error: {exc}", file=sys.stderr)
        return 1


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    cells = [[("" if v is None else str(v)).replace("\n", " ") for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()
    print(line, file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=out)


def _clip(text: str, width: int = 72) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.done = 0
        self.enabled = enabled and sys.stderr.isatty()

    def advance(self, n: int) -> None:
        self.done += n
        if self.enabled:
            width = 30
            filled = int(width * self.done / self.total) if self.total else width
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} lines")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.enabled = False


# ---------------------------------------------------------------------------- ingest
@dataclass
class Batch:
    first_line: int
    last_line: int
    items: list[dict[str, Any]]
    user_id: str | None = None
    conv_id: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


def read_jsonl(stream: TextIO) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; numbering counts blank lines too."""
    lines = []
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise InputError(f"line {number}: not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise InputError(f"line {number}: expected a JSON object")
        lines.append((number, value))
    return lines


def detect_family(lines: list[tuple[int, dict[str, Any]]]) -> str:
    """'m' when every line is an event, 'x' when every line is a message."""
    families = set()
    for number, obj in lines:
        if EVENT_KEYS & obj.keys():
            families.add("m")
        elif "role" in obj:
            families.add("x")
        else:
            raise InputError(f"line {number}: neither a message (role, content) nor an event (actor_id, kind, …)")
        if len(families) > 1:
            raise InputError(f"line {number}: the file mixes messages and events; use one kind per file")
    if not families:
        raise InputError("the file holds no lines to ingest")
    return families.pop()


def _digest(*parts: Any) -> str:
    raw = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


def message_batches(lines: list[tuple[int, dict[str, Any]]], args: argparse.Namespace) -> list[Batch]:
    """Consecutive messages of one (user, conversation), at most `--batch-size` per batch."""
    batches: list[Batch] = []
    for number, obj in lines:
        user = obj.get("user_id") or args.user
        conv = obj.get("conv_id") or args.conv
        if not user or not conv:
            raise InputError(f"line {number}: no user_id/conv_id on the line and no --user/--conv given")
        message = {k: obj[k] for k in MESSAGE_FIELDS if obj.get(k) is not None}
        last = batches[-1] if batches else None
        if last and (last.user_id, last.conv_id) == (user, conv) and len(last.items) < args.batch_size:
            last.items.append(message)
            last.last_line = number
        else:
            batches.append(Batch(number, number, [message], user, conv))
    return batches


def batch_key(batch: Batch, body: dict[str, Any]) -> str:
    """The Idempotency-Key of a batch: its line range and its request body, nothing else."""
    return "cli-" + _digest(batch.first_line, batch.last_line, body)[:48]


def event_batches(lines: list[tuple[int, dict[str, Any]]], args: argparse.Namespace) -> list[Batch]:
    batches: list[Batch] = []
    for number, obj in lines:
        event = dict(obj)
        event.setdefault("actor_id", args.user)
        event.setdefault("session_id", args.conv)
        if not event.get("actor_id") or not event.get("session_id"):
            raise InputError(f"line {number}: no actor_id/session_id on the line and no --user/--conv given")
        if not event.get("event_id"):
            event["event_id"] = line_event_id(number, event)
        if batches and len(batches[-1].items) < args.batch_size:
            batches[-1].items.append(event)
            batches[-1].last_line = number
        else:
            batches.append(Batch(number, number, [event]))
    return batches


def line_event_id(number: int, event: dict[str, Any]) -> str:
    """A stable event id for a line that has none: its line number and its content."""
    return "cli-" + _digest(number, event)[:40]


def cmd_ingest(args: argparse.Namespace) -> int:
    def body() -> int:
        if args.batch_size < 1:
            raise InputError("--batch-size must be at least 1")
        metadata = _json_object(args.metadata, "--metadata")
        if args.file == "-":
            lines = read_jsonl(sys.stdin)
        else:
            try:
                with open(args.file, encoding="utf-8") as stream:
                    lines = read_jsonl(stream)
            except OSError as exc:
                raise InputError(f"cannot read {args.file}: {exc.strerror}") from None
        family = detect_family(lines)
        batches = message_batches(lines, args) if family == "x" else event_batches(lines, args)
        from engram.client import EngramError

        with _client(args) as client:
            progress = Progress(len(lines), enabled=not args.no_progress)
            try:
                for batch in batches:
                    if family == "x":
                        _send_messages(client, batch, args, metadata)
                    else:
                        batch.result["event_ids"] = client.ingest(batch.items).event_ids
                    progress.advance(len(batch.items))
            except EngramError:
                progress.close()
                sent = [b for b in batches if b.result]
                if sent:
                    _report_ingest(args, family, sum(len(b.items) for b in sent), sent, None, complete=False)
                print(f"engram: stopped at lines {batch.first_line}-{batch.last_line}; run the same command again "
                      "to resume (lines already sent are not ingested twice)", file=sys.stderr)
                raise
            progress.close()
            summary = _wait_for(client, family, batches, args.timeout) if args.wait else None
        _report_ingest(args, family, len(lines), batches, summary)
        if summary and (summary.get("failed") or summary.get("pending")):
            return 1
        return 0

    return _run(args, body)


def _send_messages(client: Any, batch: Batch, args: argparse.Namespace, metadata: dict[str, Any] | None) -> None:
    request: dict[str, Any] = {"messages": batch.items, "user_id": batch.user_id, "conv_id": batch.conv_id,
                               "agent_id": args.agent, "app_id": args.app, "metadata": metadata,
                               "extract_artifacts": args.extract_artifacts}
    job = client.memories.ingest(**request, idempotency_key=batch_key(batch, request))
    batch.result.update({"job_id": job.id, "status": job.status})


def _wait_for(client: Any, family: str, batches: list[Batch], timeout: float) -> dict[str, Any]:
    from engram.client import PollTimeoutError

    deadline = time.monotonic() + timeout
    if family == "x":
        counts = {"succeeded": 0, "failed": 0, "pending": 0}
        for batch in batches:
            try:
                job = client.memories.jobs.poll_until_done(batch.result["job_id"],
                                                           timeout=max(0.0, deadline - time.monotonic()))
            except PollTimeoutError as exc:
                job = exc.job
            batch.result["status"] = job.status
            if job.error:
                batch.result["error"] = job.error.model_dump()
            counts["pending" if not job.is_done else job.status] += 1
        return counts
    ids = [i for batch in batches for i in batch.result["event_ids"]]
    delay = 0.5
    while True:
        status = client.status(ids)
        if not status.pending_ids or time.monotonic() >= deadline:
            return {"completed": len(status.completed_ids), "pending": len(status.pending_ids),
                    "failed": len(status.failed_ids), "failed_ids": status.failed_ids, "reasons": status.reasons}
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(5.0, delay * 2)


def _report_ingest(args: argparse.Namespace, family: str, n_lines: int, batches: list[Batch],
                   summary: dict[str, Any] | None, complete: bool = True) -> None:
    if args.json:
        _print_json({"file": args.file, "family": family, "lines": n_lines, "complete": complete,
                     "batches": [{"first_line": b.first_line, "last_line": b.last_line, **b.result} for b in batches],
                     "summary": summary})
        return
    if family == "x":
        _table(["lines", "user", "conv", "job", "status"],
               [[f"{b.first_line}-{b.last_line}", b.user_id, b.conv_id, b.result["job_id"], b.result["status"]]
                for b in batches])
        tail = f"; {', '.join(f'{v} {k}' for k, v in summary.items())}" if summary else ""
        print(f"\n{n_lines} messages in {len(batches)} job(s){tail}")
    else:
        _table(["lines", "events", "first event id", "last event id"],
               [[f"{b.first_line}-{b.last_line}", len(b.result["event_ids"]), b.result["event_ids"][0],
                 b.result["event_ids"][-1]] for b in batches])
        tail = ""
        if summary:
            tail = f"; {summary['completed']} completed, {summary['pending']} pending, {summary['failed']} failed"
        print(f"\n{n_lines} events in {len(batches)} request(s){tail}")


def _json_object(text: str | None, option: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{option}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{option}: expected a JSON object")
    return value


# ---------------------------------------------------------------------------- search, jobs, status
def cmd_search(args: argparse.Namespace) -> int:
    def body() -> int:
        filters = _json_object(args.filter, "--filter") or {}
        if args.user:
            filters = {**filters, "user_id": args.user}
        if args.conv:
            filters = {**filters, "conv_id": args.conv}
        with _client(args) as client:
            results = client.memories.search(query=args.query, filters=filters or None, limit=args.limit,
                                             include=args.include or None)
        if args.json:
            _print_json(results.model_dump(mode="json"))
            return 0
        _table(["#", "score", "type", "memory", "user", "id"],
               [[i, f"{m.score:.3f}" if m.score is not None else "", m.type, _clip(m.text), m.user_id, m.id]
                for i, m in enumerate(results.data, start=1)])
        if not results.data:
            print("(no memories matched)")
        if results.extras and results.extras.context_prompt:
            print()
            print(results.extras.context_prompt)
        return 0

    return _run(args, body)


def cmd_jobs(args: argparse.Namespace) -> int:
    def body() -> int:
        from engram.client import PollTimeoutError

        with _client(args) as client:
            timed_out = False
            if args.wait:
                try:
                    job = client.memories.jobs.poll_until_done(args.job_id, timeout=args.timeout)
                except PollTimeoutError as exc:
                    job, timed_out = exc.job, True
            else:
                job = client.memories.jobs.get(args.job_id)
        if args.json:
            _print_json(job.model_dump(mode="json"))
        else:
            rows: list[list[Any]] = [["id", job.id], ["status", job.status],
                                     ["created", f"{job.created_at:%Y-%m-%d %H:%M:%S}"],
                                     ["updated", f"{job.updated_at:%Y-%m-%d %H:%M:%S}"]]
            if job.result is not None:
                rows += [["memories created", len(job.result.memories_created)],
                         ["memories updated", len(job.result.memories_updated)],
                         ["memories superseded", len(job.result.memories_superseded_by)]]
            if job.error is not None:
                rows += [["error", f"{job.error.code}: {job.error.message}"]]
            _table(["field", "value"], rows)
            if job.result is not None and job.result.memories_created:
                print()
                _table(["type", "created memory", "id"],
                       [[r.type, _clip(r.text), r.id] for r in job.result.memories_created])
        if timed_out:
            print(f"engram: job {job.id} is still {job.status} after {args.timeout:g}s", file=sys.stderr)
            return 1
        return 1 if job.status == "failed" else 0

    return _run(args, body)


def cmd_status(args: argparse.Namespace) -> int:
    def body() -> int:
        with _client(args) as client:
            status = client.status(args.event_ids)
        if args.json:
            _print_json(status.model_dump(mode="json"))
            return 0
        _table(["event id", "status", "reason"],
               [[i, status.statuses.get(i, ""), status.reasons.get(i, "")] for i in args.event_ids])
        print(f"\n{len(status.completed_ids)} completed, {len(status.pending_ids)} pending, "
              f"{len(status.failed_ids)} failed")
        return 0

    return _run(args, body)
