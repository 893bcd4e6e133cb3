"""The console's session: which key a browser logged in with, in a signed cookie.

The cookie holds the key's SHA-256 (`auth.hash_key`), never the key: it names a key to the
console, but is useless against the API (which wants the key itself), and the key typed into
the login form is forgotten once hashed. The value is `<payload>.<tag>`, the payload JSON
`{"d": key hash ("" in open mode), "t": issued at (unix seconds), "n": nonce}` and the tag an
HMAC-SHA256 under a key derived from the server's secret (`Store.server_secret`, one per
database, as cursors are signed) — so every API process of a deployment reads every other's
sessions, and nothing a browser makes up or edits is believed. Each request re-checks the
key itself (`Authenticator.authenticate_digest`): a revoked or expired key ends its sessions
at once.

The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it),
path `/console`, and Secure when the request came over HTTPS. A form that changes something
also carries a CSRF token: an HMAC of the session's nonce, so a token is good for one session
only, and is checked in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE = "engram_console"
COOKIE_PATH = "/console"
SESSION_S = 12 * 3600  # a session lasts a working day; then the key is typed again


@dataclass(frozen=True, slots=True)
class Session:
    key_digest: str  # "" in open mode
    issued_at: int
    nonce: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    def __init__(self, secret: bytes, lifetime_s: int = SESSION_S) -> None:
        self._key = hmac.new(secret, b"engram console session v1", hashlib.sha256).digest()
        self.lifetime_s = lifetime_s

    def _tag(self, label: bytes, payload: bytes) -> bytes:
        return hmac.new(self._key, label + b"\x1f" + payload, hashlib.sha256).digest()

    def issue(self, key_digest: str, now: float | None = None) -> tuple[Session, str]:
        session = Session(key_digest, int(time.time() if now is None else now), secrets.token_urlsafe(16))
        payload = json.dumps({"d": session.key_digest, "t": session.issued_at, "n": session.nonce},
                             separators=(",", ":")).encode()
        return session, f"{_b64(payload)}.{_b64(self._tag(b'session', payload))}"

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie carries, or None when it is absent, forged, edited or old."""
        if not cookie or len(cookie) > 512 or cookie.count(".") != 1:
            return None
        body, tag = cookie.split(".")
        try:
            payload, given = _unb64(body), _unb64(tag)
        except ValueError:
            return None
        if not hmac.compare_digest(given, self._tag(b"session", payload)):
            return None
        try:
            fields = json.loads(payload)
            session = Session(str(fields["d"]), int(fields["t"]), str(fields["n"]))
        except (ValueError, KeyError, TypeError):
            return None
        age = (time.time() if now is None else now) - session.issued_at
        return session if 0 <= age <= self.lifetime_s else None

    def csrf_token(self, session: Session) -> str:
        return _b64(self._tag(b"csrf", session.nonce.encode())[:18])

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token.encode(), self.csrf_token(session).encode())
