"""Rows to records: one mapping for both dialects.

A row is whatever the dialect's driver returns (`sqlite3.Row`, psycopg's dict rows), read by
column name. Where the dialects store a value differently, the reading tells them apart by
type: JSON is text in SQLite and already parsed in PostgreSQL; a time is ISO-8601 text in
SQLite and a `datetime` in PostgreSQL. Writing goes the other way through the dialect's
binders (`Dialect.json`, `Dialect.time`, …), so this module never needs to know which it is.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from engram.domain.records import ApiKey, Event, Group, Job, JobError, Memory, Org, parse_iso


def json_value(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def time_value(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_iso(value)
    return value.astimezone(timezone.utc)


def org(row: Any) -> Org:
    return Org(id=row["id"], name=row["name"], created_at=time_value(row["created_at"]),  # type: ignore[arg-type]
               focus=row["focus"], promotion_prompt=row["promotion_prompt"],
               prompt_meta=json_value(row["prompt_meta"]), updated_at=time_value(row["updated_at"]))


def group(row: Any) -> Group:
    return Group(org_id=row["org_id"], id=row["id"], name=row["name"], prompt=row["prompt"], status=row["status"],
                 created_at=time_value(row["created_at"]), updated_at=time_value(row["updated_at"]))  # type: ignore[arg-type]


def api_key(row: Any) -> ApiKey:
    return ApiKey(id=row["id"], org_id=row["org_id"], name=row["name"], prefix=row["prefix"],
                  scopes=tuple(json_value(row["scopes"])), created_at=time_value(row["created_at"]),  # type: ignore[arg-type]
                  revoked_at=time_value(row["revoked_at"]), expires_at=time_value(row["expires_at"]))


def job_error(value: Any) -> JobError | None:
    error = json_value(value)
    if not error:
        return None
    return JobError(code=error["code"], message=error["message"], type=error.get("type", "ingest_error"))


def job(row: Any) -> Job:
    return Job(
        id=row["id"], org_id=row["org_id"], user_id=row["user_id"], conv_id=row["conv_id"], kind=row["kind"],
        status=row["status"], created_at=time_value(row["created_at"]),  # type: ignore[arg-type]
        updated_at=time_value(row["updated_at"]),  # type: ignore[arg-type]
        params=json_value(row["params"]), attempts=row["attempts"], result=json_value(row["result"]),
        error=job_error(row["error"]),
    )


def event(row: Any) -> Event:
    return Event(
        id=row["id"], org_id=row["org_id"], user_id=row["user_id"], conv_id=row["conv_id"], role=row["role"],
        kind=row["kind"], content=row["content"], occurred_at=time_value(row["occurred_at"]),  # type: ignore[arg-type]
        received_at=time_value(row["received_at"]), job_id=row["job_id"],  # type: ignore[arg-type]
        agent_id=row["agent_id"], app_id=row["app_id"], name=row["name"], dia_id=row["dia_id"],
        metadata=json_value(row["metadata"]), client_event_id=row["client_event_id"],
        dedup_hash=row["dedup_hash"], status=row["status"], fail_reason=row["fail_reason"],
    )


def memory(row: Any) -> Memory:
    return Memory(
        id=row["id"], org_id=row["org_id"], type=row["type"], text=row["text"], user_id=row["user_id"],
        conv_id=row["conv_id"], agent_id=row["agent_id"], app_id=row["app_id"], status=row["status"],
        metadata=json_value(row["metadata"]), categories=json_value(row["categories"]),
        details=json_value(row["details"]), key=row["key"], valid_at=time_value(row["valid_at"]),
        source_event_ids=json_value(row["source_event_ids"]), job_id=row["job_id"],
        created_at=time_value(row["created_at"]), updated_at=time_value(row["updated_at"]),  # type: ignore[arg-type]
    )
