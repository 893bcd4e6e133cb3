"""engram's export format: JSON Lines, one record per line (docs/lifecycle.md).

    {"record": "header", "format": "engram-export", "version": 1, "exported_at": …, "org_id": …,
     "scope": {"user_id": …, "conv_id": …|null}, "embedder": "local:…", "dim": 384}
    {"record": "event", "id": …, "user_id": …, "conv_id": …, "role": …, "content": …, …}
    {"record": "memory", "id": …, "type": …, "status": …, "text": …, "details": {…},
     "source_event_ids": […], "valid_at": …, "vector": "<base64 of little-endian float32>", …}
    {"record": "end", "events": 12, "memories": 7}

Events come first (in id order), then memories (in id order, every type and status: a
revision chain is its memories, linked by `details.supersedes`). The header names the
embedder whose vectors the memory lines carry; an importer whose store records another
embedder makes them again from the text. The `end` line says the file is whole: an export
cut short (a dropped connection) has none, and an import says so.

Job ids are not part of the format: jobs are this server's work, not the data.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, Mapping

import numpy as np

from engram.domain.records import Event, Memory, iso, parse_iso
from engram.domain.text import unstorable
from engram.domain.validation import json_value_problem
from engram.store.lifecycle import ExportedEvent, ExportedMemory

FORMAT = "engram-export"
VERSION = 1

EVENT_STATUSES = frozenset({"pending", "completed", "failed", "deleted"})
MEMORY_TYPES = frozenset({"fact", "artifact", "episode"})
MEMORY_STATUSES = frozenset({"active", "superseded", "retracted"})


class BadLine(ValueError):
    """A line that is not a record of this format; says which line and why."""

    def __init__(self, number: int, reason: str) -> None:
        super().__init__(f"line {number}: {reason}")
        self.number = number
        self.reason = reason


def dumps(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def header(org_id: str, user_id: str, conv_id: str | None, embedder: str | None, dim: int | None,
           at: datetime) -> dict[str, Any]:
    return {"record": "header", "format": FORMAT, "version": VERSION, "exported_at": iso(at), "org_id": org_id,
            "scope": {"user_id": user_id, "conv_id": conv_id}, "embedder": embedder, "dim": dim}


def end(events: int, memories: int) -> dict[str, Any]:
    return {"record": "end", "events": events, "memories": memories}


def event_record(x: ExportedEvent) -> dict[str, Any]:
    e = x.event
    return {"record": "event", "id": e.id, "user_id": e.user_id, "conv_id": e.conv_id, "agent_id": e.agent_id,
            "app_id": e.app_id, "role": e.role, "kind": e.kind, "name": e.name, "content": e.content,
            "dia_id": e.dia_id, "metadata": e.metadata, "occurred_at": iso(e.occurred_at),
            "received_at": iso(e.received_at), "client_event_id": e.client_event_id, "dedup_hash": e.dedup_hash,
            "status": e.status, "fail_reason": e.fail_reason, "episode_id": x.episode_id}


def memory_record(x: ExportedMemory) -> dict[str, Any]:
    m = x.memory
    return {"record": "memory", "id": m.id, "type": m.type, "status": m.status, "text": m.text, "key": m.key,
            "user_id": m.user_id, "agent_id": m.agent_id, "conv_id": m.conv_id, "app_id": m.app_id,
            "metadata": m.metadata, "categories": m.categories, "details": m.details,
            "source_event_ids": m.source_event_ids, "valid_at": iso(m.valid_at), "created_at": iso(m.created_at),
            "updated_at": iso(m.updated_at), "group_ids": list(x.group_ids),
            "vector": None if x.vector is None else base64.b64encode(np.asarray(x.vector, "<f4").tobytes()).decode()}


# ---------------------------------------------------------------------- reading
def parse(number: int, line: bytes | str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadLine(number, f"not JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("record") not in {"header", "event", "memory", "end"}:
        raise BadLine(number, "not a record of an engram export (no `record` of header, event, memory or end)")
    return record


def check_header(number: int, record: Mapping[str, Any]) -> None:
    if record.get("format") != FORMAT:
        raise BadLine(number, f"the header names format {record.get('format')!r}, not {FORMAT!r}")
    if record.get("version") != VERSION:
        raise BadLine(number, f"export version {record.get('version')!r}; this engram reads version {VERSION}")


def to_event(number: int, r: Mapping[str, Any]) -> ExportedEvent:
    status = _choice(number, r, "status", EVENT_STATUSES)
    event = Event(id=_text(number, r, "id"), org_id="", user_id=_text(number, r, "user_id"),
                  conv_id=_text(number, r, "conv_id"), role=_text(number, r, "role"), kind=_text(number, r, "kind"),
                  content=_text(number, r, "content", empty=True), occurred_at=_time(number, r, "occurred_at"),
                  received_at=_time(number, r, "received_at"), agent_id=_maybe_text(number, r, "agent_id"),
                  app_id=_maybe_text(number, r, "app_id"), name=_maybe_text(number, r, "name"),
                  dia_id=_maybe_text(number, r, "dia_id"), metadata=_object(number, r, "metadata"),
                  client_event_id=_maybe_text(number, r, "client_event_id"),
                  dedup_hash=_maybe_text(number, r, "dedup_hash"), status=status,  # type: ignore[arg-type]
                  fail_reason=_maybe_text(number, r, "fail_reason"))
    return ExportedEvent(event, _maybe_text(number, r, "episode_id"))


def to_memory(number: int, r: Mapping[str, Any], dim: int | None) -> ExportedMemory:
    sources = r.get("source_event_ids", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) and not unstorable(s) for s in sources):
        raise BadLine(number, "`source_event_ids` must be a list of event ids")
    categories = r.get("categories", [])
    if not isinstance(categories, list) or not all(isinstance(c, str) and not unstorable(c) for c in categories):
        raise BadLine(number, "`categories` must be a list of strings")
    memory = Memory(id=_text(number, r, "id"), org_id="", type=_choice(number, r, "type", MEMORY_TYPES),  # type: ignore[arg-type]
                    status=_choice(number, r, "status", MEMORY_STATUSES),  # type: ignore[arg-type]
                    text=_text(number, r, "text"), user_id=_maybe_text(number, r, "user_id"),
                    conv_id=_maybe_text(number, r, "conv_id"), agent_id=_maybe_text(number, r, "agent_id"),
                    app_id=_maybe_text(number, r, "app_id"), key=_maybe_text(number, r, "key"),
                    metadata=_object(number, r, "metadata"), categories=list(categories),
                    details=_object(number, r, "details"), source_event_ids=list(sources),
                    valid_at=_maybe_time(number, r, "valid_at"), created_at=_time(number, r, "created_at"),
                    updated_at=_time(number, r, "updated_at"))
    groups = r.get("group_ids", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) and g and not unstorable(g) for g in groups):
        raise BadLine(number, "`group_ids` must be a list of group ids")
    return ExportedMemory(memory, _vector(number, r.get("vector"), dim), tuple(dict.fromkeys(groups)))


def _vector(number: int, value: Any, dim: int | None) -> np.ndarray | None:
    if value is None:
        return None
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or not raw or len(raw) % 4:
        raise BadLine(number, "`vector` must be base64 of little-endian float32 values")
    vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if dim is not None and vector.size != dim:
        raise BadLine(number, f"`vector` has {vector.size} dimensions; the header says {dim}")
    if not np.isfinite(vector).all():
        raise BadLine(number, "`vector` holds a value that is not a finite number")
    return vector


def _text(number: int, r: Mapping[str, Any], name: str, *, empty: bool = False) -> str:
    value = r.get(name)
    if not isinstance(value, str) or (not empty and not value):
        raise BadLine(number, f"`{name}` must be a {'' if empty else 'non-empty '}string")
    return _storable(number, name, value)


def _maybe_text(number: int, r: Mapping[str, Any], name: str) -> str | None:
    value = r.get(name)
    if value is not None and not isinstance(value, str):
        raise BadLine(number, f"`{name}` must be a string or null")
    return None if value is None else _storable(number, name, value)


def _storable(number: int, name: str, value: str) -> str:
    why = unstorable(value)
    if why is not None:
        raise BadLine(number, f"`{name}` {why}")
    return value


def _choice(number: int, r: Mapping[str, Any], name: str, allowed: frozenset[str]) -> str:
    value = r.get(name)
    if value not in allowed:
        raise BadLine(number, f"`{name}` must be one of {', '.join(sorted(allowed))}")
    return value  # type: ignore[return-value]


def _object(number: int, r: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = r.get(name, {})
    if not isinstance(value, dict):
        raise BadLine(number, f"`{name}` must be an object")
    problem = json_value_problem(value)
    if problem is not None:
        where, why = problem
        raise BadLine(number, f"`{'.'.join(str(p) for p in (name, *where))}`: {why}")
    return value


def _time(number: int, r: Mapping[str, Any], name: str) -> datetime:
    value = _maybe_time(number, r, name)
    if value is None:
        raise BadLine(number, f"`{name}` must be an ISO-8601 time")
    return value


def _maybe_time(number: int, r: Mapping[str, Any], name: str) -> datetime | None:
    value = r.get(name)
    if value is None:
        return None
    try:
        return parse_iso(value) if isinstance(value, str) else _raise()
    except ValueError:
        raise BadLine(number, f"`{name}` must be an ISO-8601 time") from None


def _raise() -> datetime:
    raise ValueError()
