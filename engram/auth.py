"""API keys: created once, shown once, stored as a hash, scoped to one org."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from engram.domain.records import ApiKey, iso, utcnow
from engram.errors import ServiceError
from engram.ids import new_key_id
from engram.store.base import Store

SCOPES = ("read", "write", "admin")
DEFAULT_ORG = "default"
KEY_PREFIX = "egm_"


@dataclass(frozen=True, slots=True)
class Principal:
    org_id: str
    scopes: frozenset[str]
    key_id: str | None  # None in open mode

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise ServiceError("insufficient_scope", f"this key lacks the {scope!r} scope")


def hash_key(secret: str) -> str:
    # Keys are 256 random bits, so a plain SHA-256 is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_key(store: Store, org_id: str, scopes: tuple[str, ...], *, name: str = "",
              expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """A new key of an existing org, stored as its hash; the secret is returned once."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be a non-empty subset of {', '.join(SCOPES)}")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=new_key_id(), org_id=org_id, name=name or org_id, prefix=secret[:10],
                 scopes=tuple(dict.fromkeys(scopes)), created_at=utcnow(), expires_at=expires_at)
    store.create_key(key, hash_key(secret))
    return key, secret


def create_key(store: Store, org_name: str, scopes: tuple[str, ...], name: str = "") -> tuple[ApiKey, str]:
    """A key of the org of that name (made if new): what tests and set-up scripts reach for."""
    return issue_key(store, store.ensure_org(org_name).id, scopes, name=name)


OPERATOR = Principal(DEFAULT_ORG, frozenset(SCOPES), None)  # the CLI on the store's machine


class Authenticator:
    """Turns request credentials into a Principal.

    Open mode (bound to loopback and no key exists yet): every request acts as the
    built-in org `default` with all scopes, whatever credentials it carries — the
    family-M client cannot send a request without some bearer value.
    """

    def __init__(self, store: Store, *, open_mode_allowed: bool, cache_s: float = 1.0) -> None:
        self.store = store
        self.open_mode_allowed = open_mode_allowed
        self._cache_s = cache_s
        self._lock = threading.Lock()
        self._keys_exist: tuple[float, bool] = (0.0, False)
        self._known: dict[str, tuple[float, ApiKey | None]] = {}

    def _any_key(self) -> bool:
        now = time.monotonic()
        checked_at, exists = self._keys_exist
        if now - checked_at > self._cache_s:
            exists = self.store.count_active_keys() > 0
            self._keys_exist = (now, exists)
        return exists

    def _lookup(self, digest: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._known.get(digest)
        if cached is not None and now - cached[0] <= self._cache_s:
            return cached[1]
        key = self.store.find_key(digest)
        with self._lock:
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[digest] = (now, key)
        return key

    def authenticate_cached(self, secret: str | None, org_header: str | None) -> Principal | None:
        """The principal if everything needed is fresh in memory (no store call), else None."""
        now = time.monotonic()
        checked_at, exists = self._keys_exist
        if now - checked_at > self._cache_s:
            return None
        if self.open_mode_allowed and not exists:
            principal = _open_principal()
        else:
            cached = self._known.get(hash_key(secret)) if secret else None
            if cached is None or now - cached[0] > self._cache_s or cached[1] is None \
                    or cached[1].expires_at is not None:
                return None  # the slow path raises the right error, or refreshes (and checks expiry)
            principal = _principal_of(cached[1])
        if org_header and org_header != principal.org_id:
            return None
        return principal

    def authenticate(self, secret: str | None, org_header: str | None) -> Principal:
        principal = self.authenticate_digest(hash_key(secret) if secret else None)
        if org_header and org_header != principal.org_id:
            org = self.store.get_org(principal.org_id)
            if org is None or org_header != org.name:
                raise ServiceError("org_mismatch", "X-Org-Id does not name the org of this API key")
        return principal

    def authenticate_digest(self, digest: str | None) -> Principal:
        """Who a key is, known by its hash (`hash_key`): what `authenticate` checks, and what the
        web console's session holds instead of the key itself (engram/console/session.py)."""
        if self.open_mode_allowed and not self._any_key():
            return _open_principal()
        if not digest:
            raise ServiceError("unauthorized", "an API key is required (Authorization: Bearer <key> or x-api-key)")
        key = self._lookup(digest)
        if key is None:
            raise ServiceError("unauthorized", "the API key is not valid or was revoked")
        if key.expired(utcnow()):
            raise ServiceError("unauthorized", f"the API key expired at {iso(key.expires_at)}")
        return _principal_of(key)


def _open_principal() -> Principal:
    """Who a request is on a loopback server that has no API keys yet: the default org, every
    scope — the operator, as the CLI is."""
    return OPERATOR


def _principal_of(key: ApiKey) -> Principal:
    return Principal(key.org_id, frozenset(key.scopes), key.id)


def credentials_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() in ("bearer", "token") and value.strip():
            return value.strip()
    return None
