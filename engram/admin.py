"""Orgs and API keys: the admin API's operations, and the CLI's (docs/operations.md).

Who may do what:

- an `admin` key manages the keys of its own org (create, list, revoke);
- the server's operator — an `admin` key of the built-in org `default`, or anyone on a loopback
  server in open mode (no key yet) — also creates orgs, sees every org and manages any org's
  keys (what else an org's keys may do with its record: engram/onboarding.py);
- the CLI on the store's machine is the operator.

A key is shown once, when it is created; it may carry a name and an expiry (past it, it
authenticates no one: `401 unauthorized` saying it expired).
"""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

from engram.auth import DEFAULT_ORG, SCOPES, Principal, issue_key
from engram.config import Settings
from engram.domain.records import ApiKey, Org, utcnow
from engram.domain.validation import FieldChecks
from engram.errors import ServiceError
from engram.store.base import Store


class Admin:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    # ------------------------------------------------------------------ who
    @staticmethod
    def is_operator(principal: Principal) -> bool:
        return principal.org_id == DEFAULT_ORG and "admin" in principal.scopes

    def _operator(self, principal: Principal, what: str) -> None:
        principal.require("admin")
        if not self.is_operator(principal):
            raise ServiceError("insufficient_scope", f"{what} takes the server operator's key: an admin key of the "
                               f"{DEFAULT_ORG!r} org", extra={"required_scope": "admin"})

    def _org_of(self, principal: Principal, org_id: str | None) -> str:
        """The org a key request is about: the caller's own, or (for the operator) the one named."""
        principal.require("admin")
        if org_id is None or org_id == principal.org_id:
            return principal.org_id
        self._operator(principal, "managing another org's keys")
        if self.store.get_org(org_id) is None:
            raise ServiceError("org_not_found", f"no org {org_id!r}")
        return org_id

    # ------------------------------------------------------------------ orgs
    def create_org(self, principal: Principal, name: str) -> Org:
        self._operator(principal, "creating an org")
        check = FieldChecks(self.settings.limits)
        check.id(("body", "name"), name, required=True)
        check.raise_if_any()
        if any(o.name == name or o.id == name for o in self.store.list_orgs()):
            raise ServiceError("org_exists", f"an org named {name!r} exists")
        return self.store.ensure_org(name)

    # ------------------------------------------------------------------ keys
    def create_key(self, principal: Principal, scopes: Sequence[str], *, name: str = "",
                   expires_at: datetime | None = None, org_id: str | None = None) -> tuple[ApiKey, str]:
        """A new key of the org (the caller's, or the one the operator names); its secret is
        returned once and never again."""
        org = self._org_of(principal, org_id)
        check = FieldChecks(self.settings.limits)
        check.label(("body", "name"), name)
        if not scopes or set(scopes) - set(SCOPES):
            check.fail(("body", "scopes"), f"scopes must be a non-empty subset of {', '.join(SCOPES)}")
        if expires_at is not None and expires_at <= utcnow():
            check.fail(("body", "expires_at"), "an expiry must lie in the future")
        check.raise_if_any()
        limit = self.settings.max_keys_per_org
        current = self.store.count_keys(org)
        if current >= limit:
            raise ServiceError("key_limit_reached", f"the org has {current} keys, the most ENGRAM_MAX_KEYS_PER_ORG "
                               f"allows; revoke one first", extra={"limit": limit, "current": current})
        return issue_key(self.store, org, tuple(scopes), name=name, expires_at=expires_at)

    def list_keys(self, principal: Principal, org_id: str | None = None) -> list[ApiKey]:
        return self.store.list_keys(self._org_of(principal, org_id))

    def key(self, principal: Principal, key_id: str) -> ApiKey:
        """One key of the caller's org (the operator: of any org); another org's looks unknown."""
        principal.require("admin")
        key = next((k for k in self.store.list_keys(None if self.is_operator(principal) else principal.org_id)
                    if k.id == key_id), None)
        if key is None:
            raise ServiceError("key_not_found", f"no key {key_id!r} in this org")
        return key

    def revoke_key(self, principal: Principal, key_id: str) -> None:
        """Revoke a key of the caller's org (the operator: of any org)."""
        principal.require("admin")
        scope = None if self.is_operator(principal) else principal.org_id
        if not self.store.revoke_key(key_id, utcnow(), org_id=scope):
            raise ServiceError("key_not_found", f"no active key {key_id!r} in this org")
