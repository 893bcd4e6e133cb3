"""What the two API families hand the core, after their wire shapes are parsed.

Routes build these; the service validates the rules that depend on configured limits and
turns them into events and jobs. Neither family's field names leak past this point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engram.domain.filters import MATCH_ALL, Node

# Metadata keys a client may not set: internal storage keys and names of core fields.
RESERVED_METADATA_KEYS = frozenset(
    {"tag1", "tag2", "tag3", "tag4", "tag5", "kb_type", "org_id",
     "id", "user_id", "agent_id", "conv_id", "app_id", "type", "status",
     "created_at", "updated_at", "valid_at"}
)

# family M kind <-> the role the extractor sees
ROLE_BY_KIND = {"user_message": "user", "assistant_message": "assistant", "tool_result": "tool", "app_event": "app"}
KIND_BY_ROLE = {role: kind for kind, role in ROLE_BY_KIND.items()}


def kind_for_role(role: str) -> str:
    return KIND_BY_ROLE.get(role, "app_event")


@dataclass(slots=True)
class MessageIn:
    role: str
    content: str
    name: str | None = None
    date: datetime | None = None
    dia_id: str | None = None


@dataclass(slots=True)
class MessagesIngest:
    """Family X: one call, one conversation, one job."""

    user_id: str
    conv_id: str
    messages: list[MessageIn]
    agent_id: str | None = None
    app_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    extract_artifacts: bool = False
    group_ids: list[str] = field(default_factory=list)  # v1.0 contract; no groups exist yet


@dataclass(slots=True)
class EventIn:
    """Family M: one event; a call may span many actors and sessions."""

    actor_id: str
    session_id: str
    kind: str
    content: str
    ts: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    role_id: str | None = None
    team_id: str | None = None
    event_id: str | None = None  # the client's idempotency key


@dataclass(slots=True)
class SearchQuery:
    text: str
    where: Node = MATCH_ALL
    limit: int = 20
    cursor: str | None = None
    threshold: float = 0.0
    with_source_events: bool = False
    with_full_content: bool = False
    with_context_prompt: bool = False
