"""Opaque pagination cursors, bound to the org and the ordering that produced them."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from engram.errors import ServiceError


def encode(org_id: str, scope: str, position: Any) -> str:
    payload = {"o": _org_tag(org_id), "s": scope, "p": position}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, org_id: str, scope: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        tag, cursor_scope, position = payload["o"], payload["s"], payload["p"]
    except (ValueError, KeyError, TypeError):
        raise ServiceError("invalid_cursor", "the cursor is malformed; pass next_cursor exactly as returned") from None
    if tag != _org_tag(org_id) or cursor_scope != scope:
        raise ServiceError("cursor_mismatch", "the cursor belongs to another org, ordering or query")
    return position


def _org_tag(org_id: str) -> str:
    # The org is not readable from the cursor, but a cursor from another org never matches.
    return hashlib.sha256(org_id.encode()).hexdigest()[:12]


def query_scope(*parts: Any) -> str:
    raw = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]
