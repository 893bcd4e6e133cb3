"""Webhooks' store rules, written once over a SQL dialect (a mixin of RelationalStore): the
org's config, and the outbox — a delivery is written in the transaction that ends its job,
so it exists exactly when the job's end does, and is sent afterwards by the API process
(engram/webhooks.py), never by the pipeline.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable

from engram.domain.records import Job, JobError, iso
from engram.store import codec

if TYPE_CHECKING:
    from engram.store.dialect import Dialect, Tx

COMPLETED, FAILED = "memory.learning.completed", "memory.learning.failed"
EVENTS = (COMPLETED, FAILED)
TOLD = frozenset({"ingest", "replay"})  # the jobs a client started; episode jobs are the server's own


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    org_id: str
    url: str
    events: tuple[str, ...]
    enabled: bool
    secret: str
    created_at: datetime
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class Delivery:
    seq: int
    id: str
    org_id: str
    event: str
    payload: str  # the exact text signed and sent
    attempts: int
    url: str
    secret: str


def completed_payload(job: Job, created: list[dict[str, Any]], updated: list[dict[str, Any]], at: datetime) -> str:
    return json.dumps({"event": COMPLETED, "job_id": job.id, "conv_id": job.conv_id, "user_id": job.user_id,
                       "memories": created, "memories_updated": updated, "timestamp": iso(at)},
                      separators=(",", ":"))


def failed_payload(job: Job, error: JobError, at: datetime) -> str:
    return json.dumps({"event": FAILED, "job_id": job.id, "conv_id": job.conv_id, "user_id": job.user_id,
                       "error": {"type": error.type, "code": error.code, "message": error.message},
                       "timestamp": iso(at)}, separators=(",", ":"))


class WebhookRules:
    dialect: "Dialect"
    _one: Callable[..., Any]
    _all: Callable[..., list[Any]]

    # ------------------------------------------------------------------ the config
    def webhook(self, org_id: str) -> WebhookConfig | None:
        row = self._one("webhook_of_org", org_id=org_id)
        return _config(row) if row else None

    def put_webhook(self, config: WebhookConfig) -> WebhookConfig:
        d = self.dialect
        with d.transaction() as tx:
            tx.run("put_webhook", {"org_id": config.org_id, "url": config.url, "events": d.json(list(config.events)),
                                   "enabled": config.enabled, "secret": config.secret,
                                   "created_at": d.time(config.created_at), "updated_at": d.time(config.updated_at)})
            return _config(tx.one("webhook_of_org", {"org_id": config.org_id}))

    def delete_webhook(self, org_id: str) -> None:
        """Remove the config and every delivery not yet sent: deliveries stop."""
        with self.dialect.transaction() as tx:
            tx.run("delete_webhook", {"org_id": org_id})
            tx.run("drop_pending_deliveries", {"org_id": org_id})

    # ------------------------------------------------------------------ the outbox
    def _tell(self, tx: "Tx", job: Job, event: str, payload: Callable[[], str], at: datetime) -> None:
        """Inside a job's ending transaction: a delivery, if the org subscribed to the event."""
        if job.kind not in TOLD:
            return
        row = tx.one("webhook_of_org", {"org_id": job.org_id})
        if row is None or not row["enabled"] or event not in codec.json_value(row["events"]):
            return
        d = self.dialect
        tx.run("enqueue_delivery", {"id": "whd_" + secrets.token_hex(12), "org_id": job.org_id,
                                    "user_id": job.user_id, "event": event, "payload": payload(),
                                    "now": d.time(at)})

    def due_deliveries(self, now: datetime, lease_for_s: float, limit: int = 20) -> list[Delivery]:
        """Pending deliveries whose time has come, leased to this process for `lease_for_s`
        (another API process skips them meanwhile)."""
        d = self.dialect
        if self._one("any_due_delivery", now=d.time(now)) is None:
            return []  # the sender polls twice a second: no write transaction (SQLite's one writer) for nothing
        with d.transaction() as tx:
            rows = tx.all("due_deliveries", {"now": d.time(now), "limit": limit})
            until = d.time(now + timedelta(seconds=lease_for_s))
            tx.many("lease_delivery", [{"seq": r["seq"], "until": until, "now": d.time(now)} for r in rows])
        return [Delivery(r["seq"], r["id"], r["org_id"], r["event"], r["payload"], int(r["attempts"]), r["url"],
                         r["secret"]) for r in rows]

    def delivered(self, delivery: Delivery, now: datetime) -> None:
        with self.dialect.transaction() as tx:
            tx.run("delivered", {"seq": delivery.seq, "now": self.dialect.time(now)})

    def delivery_failed(self, delivery: Delivery, error: str, now: datetime, retry_at: datetime | None) -> None:
        """A refused or failed send: again at `retry_at`, or given up (`failed`) when None."""
        d = self.dialect
        with d.transaction() as tx:
            tx.run("retry_delivery", {"seq": delivery.seq, "error": error[:500], "now": d.time(now),
                                      "next": d.time(retry_at or now), "status": "pending" if retry_at else "failed"})

    def deliveries(self, org_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The org's latest deliveries, newest first (what was sent, how often, how it ended)."""
        return [{"id": r["id"], "event": r["event"], "status": r["status"], "attempts": int(r["attempts"]),
                 "last_error": r["last_error"], "created_at": iso(codec.time_value(r["created_at"])),
                 "updated_at": iso(codec.time_value(r["updated_at"]))}
                for r in self._all("deliveries_of_org", org_id=org_id, limit=limit)]


def _config(row: Any) -> WebhookConfig:
    return WebhookConfig(row["org_id"], row["url"], tuple(codec.json_value(row["events"])), bool(row["enabled"]),
                         row["secret"], codec.time_value(row["created_at"]),  # type: ignore[arg-type]
                         codec.time_value(row["updated_at"]))
