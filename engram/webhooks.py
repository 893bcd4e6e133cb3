"""Webhooks (docs/operations.md, "Webhooks"): the org's config, and the thread that sends the
outbox (store/webhooks.py).

A delivery is a POST of the event's JSON with `X-Webhook-Signature: sha256=<hex>` — the
HMAC-SHA256 of the exact body under the org's secret, as the xtrace SDK's
`verifyWebhookSignature` checks it — and `X-Webhook-Event`, `X-Webhook-Id` (the same on every
retry: receivers deduplicate by it; delivery is at least once). A 2xx ends it; anything else
is retried with doubling backoff up to ENGRAM_WEBHOOK_MAX_ATTEMPTS, then given up (`failed`).
The sender is a thread of the API process: the pipeline never waits for a subscriber.

A URL whose host resolves to a private, loopback, link-local or otherwise non-public address
is refused — when set, and again before every delivery (a name may resolve elsewhere later) —
unless ENGRAM_WEBHOOK_ALLOW_PRIVATE=true (a self-hosted deployment's own network).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import socket
import threading
from datetime import timedelta
from typing import Sequence
from urllib.parse import urlsplit

import httpx

from engram import __version__
from engram.config import Settings
from engram.domain.records import utcnow
from engram.errors import ServiceError, ValidationFailed
from engram.store.base import Store
from engram.store.webhooks import EVENTS, Delivery, WebhookConfig

log = logging.getLogger("engram.webhooks")

SECRET_PREFIX = "whsec_"
POLL_S = 0.5
LEASE_S = 60.0


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def masked(secret: str) -> str:
    return f"{SECRET_PREFIX}••••{secret[-4:]}"


def url_problem(url: str, allow_private: bool) -> str | None:
    """Why deliveries to `url` are refused, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an http(s) URL with a host"
    if parts.username or parts.password:
        return "must not carry credentials"
    if allow_private:
        return None
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return f"its host {parts.hostname!r} does not resolve"
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global or address.is_multicast:
            return (f"its host resolves to {address}, a private, loopback or link-local address (refused: set "
                    "ENGRAM_WEBHOOK_ALLOW_PRIVATE=true for a deployment's own network)")
    return None


class Webhooks:
    """The config operations behind PUT/GET/DELETE /v1/webhooks."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def put(self, org_id: str, url: str, events: Sequence[str] | None, enabled: bool,
            rotate_secret: bool) -> tuple[WebhookConfig, bool]:
        """Create or replace the org's config; (the config, whether its secret is new and shown)."""
        problems = []
        if len(url) > 2048:
            problems.append({"loc": ["body", "url"], "msg": "at most 2048 characters", "type": "value_error"})
        elif (why := url_problem(url, self.settings.webhook_allow_private)) is not None:
            problems.append({"loc": ["body", "url"], "msg": why, "type": "value_error"})
        if events is not None and not events:
            problems.append({"loc": ["body", "events"], "msg": "an empty list subscribes to nothing: omit it for all",
                             "type": "value_error"})
        elif events is not None and set(events) - set(EVENTS):
            problems.append({"loc": ["body", "events"], "msg": f"events are {', '.join(EVENTS)}", "type": "value_error"})
        if problems:
            raise ValidationFailed(problems)
        now = utcnow()
        old = self.store.webhook(org_id)
        fresh = old is None or rotate_secret
        secret = SECRET_PREFIX + secrets.token_urlsafe(24) if fresh else old.secret  # type: ignore[union-attr]
        config = WebhookConfig(org_id, url, tuple(dict.fromkeys(events or EVENTS)), enabled, secret,
                               old.created_at if old else now, now if old else None)
        return self.store.put_webhook(config), fresh

    def get(self, org_id: str) -> WebhookConfig:
        config = self.store.webhook(org_id)
        if config is None:
            raise ServiceError("not_found", "this org has no webhook")
        return config

    def delete(self, org_id: str) -> None:
        self.store.delete_webhook(org_id)


class Dispatcher:
    """Sends due deliveries from the outbox, one at a time, on a thread of its own."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False,
                                  headers={"User-Agent": f"engram/{__version__} webhooks"})

    def start(self) -> "Dispatcher":
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._http.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.send_due()
            except Exception:
                log.exception("webhook deliveries failed; trying again shortly")
                sent = 0
            if not sent:
                self._stop.wait(POLL_S)

    def send_due(self) -> int:
        due = self.store.due_deliveries(utcnow(), LEASE_S)
        for delivery in due:
            self._send(delivery)
        return len(due)

    def _send(self, delivery: Delivery) -> None:
        problem = url_problem(delivery.url, self.settings.webhook_allow_private)
        error: str | None = None
        if problem is not None:
            error = f"refused: the URL {problem}"
        else:
            body = delivery.payload.encode()
            try:
                response = self._http.post(delivery.url, content=body, headers={
                    "Content-Type": "application/json", "X-Webhook-Signature": sign(delivery.secret, body),
                    "X-Webhook-Event": delivery.event, "X-Webhook-Id": delivery.id})
                if 200 <= response.status_code < 300:
                    self.store.delivered(delivery, utcnow())
                    return
                error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
        attempts = delivery.attempts + 1
        retry_at = None
        if attempts < self.settings.webhook_max_attempts:
            retry_at = utcnow() + timedelta(seconds=min(3600.0, self.settings.webhook_retry_base_s * 2 ** (attempts - 1)))
        log.warning("webhook %s (%s) to %s: %s; %s", delivery.id, delivery.event, delivery.url, error,
                    f"again at {retry_at:%H:%M:%S}" if retry_at else "given up")
        self.store.delivery_failed(delivery, error, utcnow(), retry_at)
