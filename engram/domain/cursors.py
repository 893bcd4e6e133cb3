"""Opaque pagination cursors: signed by the server, bound to the org and the query.

A cursor is `<payload>.<tag>`, both base64url: the payload is JSON `{"o": org tag, "s": scope,
"p": position}` and the tag an HMAC-SHA256 of the payload under the server's secret (one per
database, shared by every API process: `Store.server_secret`). Nothing a client makes up or
edits is ever decoded past the tag check, so a forged position never reaches a query; the
position is still checked for shape before use (`Cursors.decode(…, shape=…)`), so a leaked
secret cannot turn into a crash either.

- tag wrong, or not a cursor at all → `422 invalid_cursor`;
- a real cursor of another org, ordering or query → `422 cursor_mismatch` (SPEC §3).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any, Callable

from engram.errors import ServiceError

MAX_CURSOR_CHARS = 1024  # a real one is ~120 characters


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _invalid() -> ServiceError:
    return ServiceError("invalid_cursor", "the cursor is malformed; pass next_cursor exactly as returned")


class Cursors:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the cursor secret must be at least 16 bytes")
        self._key = hmac.new(secret, b"engram cursor v1", hashlib.sha256).digest()

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:16]

    def _org_tag(self, org_id: str) -> str:
        # Keyed: the org is not readable from a cursor, nor guessable by hashing org names.
        return hmac.new(self._key, b"org\x1f" + org_id.encode(), hashlib.sha256).hexdigest()[:16]

    def encode(self, org_id: str, scope: str, position: Any) -> str:
        payload = json.dumps({"o": self._org_tag(org_id), "s": scope, "p": position},
                             separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._tag(payload))}"

    def decode(self, cursor: str, org_id: str, scope: str, shape: Callable[[Any], bool]) -> Any:
        """The position inside `cursor`, once its tag, org, scope and shape are checked."""
        if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR_CHARS or cursor.count(".") != 1:
            raise _invalid()
        body, tag = cursor.split(".")
        try:
            payload, given = _unb64(body), _unb64(tag)
        except ValueError:
            raise _invalid() from None
        if not hmac.compare_digest(given, self._tag(payload)):
            raise _invalid()
        try:
            fields = json.loads(payload)
            org_tag, cursor_scope, position = fields["o"], fields["s"], fields["p"]
        except (ValueError, KeyError, TypeError):
            raise _invalid() from None
        if org_tag != self._org_tag(org_id) or cursor_scope != scope:
            raise ServiceError("cursor_mismatch", "the cursor belongs to another org, ordering or query")
        if not shape(position):
            raise _invalid()
        return position


def query_scope(*parts: Any) -> str:
    raw = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]
