"""What an org used, counted and shown (docs/operations.md, "Usage").

Counted in the process that sees it — requests, messages ingested and searches in the API
process, job outcomes in the worker — into memory, and added to the store's per-day counters
(`usage_counters`) about once a second by a background thread (and at exit), so no request
waits on a counter's write and no two workers' commits contend for one counter row. A crash
loses at most that second. Each count is kept for the org and for the API key that made the
request (`key:<id>:<name>`). Provider tokens are added in the job's commit, as before.

`GET /v1/usage` answers in the shape the xtrace v1.0 contract declares (the current calendar
month, UTC), with engram's own counters beside it; memsy's control client reads
`/v1/usage/summary` and `/v1/usage/timeseries`.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from typing import Any, Mapping

from engram.domain.records import iso, utcnow
from engram.errors import ValidationFailed
from engram.store.base import Store

log = logging.getLogger("engram.usage")

FLUSH_EVERY_S = 1.0
KEY_PREFIX = "key:"  # per-key counters: key:<key id>:<name>

# The counters, and what each memsy dimension and xtrace operation is made of.
REQUESTS, MESSAGES, SEARCHES = "requests", "messages_ingested", "searches"
JOBS_SUCCEEDED, JOBS_FAILED = "jobs_succeeded", "jobs_failed"
LLM = ("llm_requests", "prompt_tokens", "completion_tokens", "embedding_requests", "embedding_tokens")
DIMENSIONS = {"api_calls": (REQUESTS,), "events_ingested": (MESSAGES,), "search_queries": (SEARCHES,),
              "llm_tokens": ("prompt_tokens", "completion_tokens")}


class UsageMeter:
    """Counts in memory; `flush` adds them to the store. Thread-safe."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, date], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, org_id: str, counts: Mapping[str, int], key_id: str | None = None, day: date | None = None) -> None:
        day = day or datetime.now(timezone.utc).date()
        with self._lock:
            into = self._counts[(org_id, day)]
            for name, n in counts.items():
                if n:
                    into[name] += n
                    if key_id is not None:
                        into[f"{KEY_PREFIX}{key_id}:{name}"] += n

    def flush(self) -> None:
        with self._lock:
            pending, self._counts = self._counts, defaultdict(lambda: defaultdict(int))
        for (org_id, day), counts in pending.items():
            try:
                self._store.record_usage(org_id, datetime(day.year, day.month, day.day, tzinfo=timezone.utc),
                                         dict(counts))
            except Exception:  # the store is away: count again next time rather than lose it
                log.exception("usage counters of org %s not written; kept for the next flush", org_id)
                self.add(org_id, counts, day=day)  # per-key names included: added as they are

    def start(self) -> "UsageMeter":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="usage-meter", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_EVERY_S):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.flush()


# ---------------------------------------------------------------------- views
def month_of(now: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) holding `now`: [start, next month's start)."""
    start = datetime(now.year, now.month, 1, tzinfo=timezone.utc)
    end = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=timezone.utc)
    return start, end


def _days(rows: list[tuple[date, str, int]], key_id: str | None = None) -> dict[date, dict[str, int]]:
    """Counters by day: the org's own, or (with `key_id`) that key's."""
    prefix = f"{KEY_PREFIX}{key_id}:" if key_id else None
    out: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for day, name, value in rows:
        if prefix is not None:
            if name.startswith(prefix):
                out[day][name[len(prefix):]] += value
        elif not name.startswith(KEY_PREFIX):
            out[day][name] += value
    return out


def _keys(rows: list[tuple[date, str, int]]) -> dict[str, dict[str, int]]:
    """Each key's totals over the rows, by key id."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for _, name, value in rows:
        if name.startswith(KEY_PREFIX):
            key_id, _, counter = name[len(KEY_PREFIX):].partition(":")
            out[key_id][counter] += value
    return out


def _total(by_day: Mapping[date, Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for counts in by_day.values():
        for name, value in counts.items():
            out[name] += value
    return dict(out)


def xtrace_usage(store: Store, org_id: str, *, daily: bool, by_api_key: bool, rate_limit_per_min: int,
                 now: datetime | None = None) -> dict[str, Any]:
    """`GET /v1/usage`: the xtrace v1.0 contract's UsageResponse for the current month, with
    engram's own counters (`engram`) beside it."""
    now = now or utcnow()
    start, end = month_of(now)
    rows = store.usage_days(org_id, start, now)
    by_day, by_key = _days(rows), _keys(rows)
    total = _total(by_day)
    counts = store.memory_counts(org_id)
    active = {t: counts.get((t, "active"), 0) for t in ("fact", "episode", "artifact")}
    days = [start.date() + timedelta(days=i) for i in range((now.date() - start.date()).days + 1)]
    keys = {k.id: k for k in store.list_keys(org_id)} if by_api_key else {}
    operations = {name: total.get(name, 0) for name in (MESSAGES, SEARCHES, REQUESTS)}
    failed = {name.split(":", 1)[1]: v for name, v in total.items() if name.startswith(f"{JOBS_FAILED}:")}
    return {
        "object": "usage",
        "as_of": iso(now),
        "period": {"key": f"{start:%Y-%m}", "start": iso(start), "end": iso(end), "type": "calendar_month"},
        "tier": "self-hosted",
        "operations": operations,
        "daily": [{"date": day.isoformat(), **{name: by_day.get(day, {}).get(name, 0) for name in
                                               (MESSAGES, SEARCHES, REQUESTS, JOBS_SUCCEEDED, JOBS_FAILED)}}
                  for day in days] if daily else None,
        "by_api_key": [{"api_key_hash": key_id, "first_n": keys[key_id].prefix if key_id in keys else None,
                        "name": keys[key_id].name if key_id in keys else None,
                        **{name: c.get(name, 0) for name in (MESSAGES, SEARCHES, REQUESTS)}, "last_used_at": None}
                       for key_id, c in sorted(by_key.items())] if by_api_key else None,
        "storage": {"memories_active": active["fact"], "episodes_active": active["episode"],
                    "artifacts_active": active["artifact"], "as_of": iso(now)},
        "quota": {"rate_limit_req_per_min": rate_limit_per_min,
                  "monthly": {"period_key": f"{start:%Y-%m}", "resets_at": iso(end),
                              "messages_ingested": {"used": operations[MESSAGES], "limit": None},
                              "searches": {"used": operations[SEARCHES], "limit": None}}},
        "engram": {
            "jobs": {"succeeded": total.get(JOBS_SUCCEEDED, 0), "failed": total.get(JOBS_FAILED, 0),
                     "failed_by_code": failed},
            "memories": {f"{t}:{s}": n for (t, s), n in sorted(counts.items())},
            "llm": {name: total.get(name, 0) for name in LLM},
            "all_time": {k: v for k, v in sorted(store.usage_totals(org_id).items())
                         if not k.startswith(KEY_PREFIX)},
        },
    }


def memsy_summary(store: Store, org_id: str, now: datetime | None = None) -> dict[str, Any]:
    """memsy's `control.usage.summary()`: the month's totals per dimension (no limits here)."""
    now = now or utcnow()
    start, end = month_of(now)
    total = _total(_days(store.usage_days(org_id, start, now)))
    counts = store.memory_counts(org_id)
    dimensions = [{"dimension": d, "used": sum(total.get(n, 0) for n in names), "limit": None}
                  for d, names in DIMENSIONS.items()]
    dimensions.append({"dimension": "memory_stored", "used": sum(n for (_, s), n in counts.items() if s == "active"),
                       "limit": None})
    return {"org_id": org_id, "tier": "self-hosted", "period_start": iso(start), "period_end": iso(end),
            "dimensions": dimensions}


def memsy_timeseries(store: Store, org_id: str, start: datetime | None, end: datetime | None,
                     dimension: str | None, key_id: str | None = None) -> list[dict[str, Any]]:
    """memsy's timeseries points: one per day and dimension that has a count (a key's, if
    named), from `start` to `end` (default: the 30 days up to now)."""
    end = end or utcnow()
    if start is None:
        floor = datetime.min.replace(tzinfo=timezone.utc)  # an end in the first month of year 1
        start = end - timedelta(days=30) if end - floor > timedelta(days=30) else floor
    if start > end:
        raise ValidationFailed([{"loc": ["query", "period_start"], "msg": "must not be after period_end",
                                 "type": "value_error"}])
    source = _days(store.usage_days(org_id, start, end), key_id)
    points = []
    for day in sorted(source):
        for d, names in DIMENSIONS.items():
            if dimension not in (None, d):
                continue
            quantity = sum(source[day].get(n, 0) for n in names)
            if quantity:
                points.append({"date": day.isoformat(), "dimension": d, "quantity": quantity})
    return points
