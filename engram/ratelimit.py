"""Rate limits: token buckets per API key, and for a whole org (docs/operations.md).

Two kinds of tokens: every authenticated request takes one request token
(`ENGRAM_RATE_LIMIT_REQUESTS_PER_MIN` per key, `…_ORG_REQUESTS_PER_MIN` per org), and ingest
takes one event token per message or event (`ENGRAM_RATE_LIMIT_EVENTS_PER_MIN`,
`…_ORG_EVENTS_PER_MIN`). A bucket holds a minute's worth and refills continuously; 0 turns a
limit off. An empty bucket answers `429 rate_limit_exceeded` with `Retry-After`, before anything
is written.

The buckets live in the API process. Several API processes on one PostgreSQL each enforce an
equal share (`ENGRAM_RATE_LIMIT_PROCESSES`): together they admit at most the limit (what a
load balancer spreads evenly, each process admits a share of; tests/test_rate_limits.py shows
the bound with two processes). Keeping the state in the database would put a write on every
request's path; a share per process costs nothing on it. The headers describe the bucket of
the process that answered.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

from engram.config import Settings
from engram.metrics import RATE_LIMITED
from engram.errors import ServiceError


@dataclass(frozen=True, slots=True)
class Decision:
    """What a bucket said: the `RateLimit-*` headers' numbers."""

    limit: int  # tokens a full bucket holds (a minute's worth, this process's share)
    remaining: int
    reset_s: int  # seconds until the bucket is full again
    retry_after_s: int = 0  # when refused: seconds until the tokens asked for are there

    def headers(self, now: float | None = None) -> list[tuple[bytes, bytes]]:
        reset_at = int((now if now is not None else time.time()) + self.reset_s)
        return [(b"ratelimit-limit", str(self.limit).encode()), (b"ratelimit-remaining", str(self.remaining).encode()),
                (b"ratelimit-reset", str(self.reset_s).encode()),
                # memsy's clients read these (X-RateLimit-Reset as a Unix time)
                (b"x-ratelimit-limit", str(self.limit).encode()),
                (b"x-ratelimit-remaining", str(self.remaining).encode()),
                (b"x-ratelimit-reset", str(reset_at).encode())]


class _Bucket:
    __slots__ = ("capacity", "per_s", "tokens", "at")

    def __init__(self, capacity: float, now: float) -> None:
        self.capacity = capacity
        self.per_s = capacity / 60.0
        self.tokens = capacity
        self.at = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.per_s)
        self.at = now

    def decision(self, retry_after_s: int = 0) -> Decision:
        missing = self.capacity - self.tokens
        return Decision(int(self.capacity), max(0, int(self.tokens)), math.ceil(missing / self.per_s) if missing > 0 else 0,
                        retry_after_s)


class _Limit:
    """Buckets of one kind, by name (a key, an org); 0 per minute: no limit."""

    def __init__(self, per_min: int, processes: int) -> None:
        self.capacity = per_min / processes if per_min else 0.0
        self._buckets: dict[str, _Bucket] = {}

    def bucket(self, name: str, now: float) -> _Bucket | None:
        if not self.capacity:
            return None
        bucket = self._buckets.get(name)
        if bucket is None:
            if len(self._buckets) > 100_000:  # full buckets carry no state: start over
                self._buckets = {k: b for k, b in self._buckets.items() if b.tokens < b.capacity}
            bucket = self._buckets[name] = _Bucket(self.capacity, now)
        bucket.refill(now)
        return bucket


class RateLimiter:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        n = settings.rate_limit_processes
        self._key_requests = _Limit(settings.rate_limit_requests_per_min, n)
        self._org_requests = _Limit(settings.rate_limit_org_requests_per_min, n)
        self._key_events = _Limit(settings.rate_limit_events_per_min, n)
        self._org_events = _Limit(settings.rate_limit_org_events_per_min, n)
        self._clock = clock
        self._lock = threading.Lock()

    def request(self, org_id: str, key_id: str | None) -> Decision | None:
        """Take one request token from the key's and the org's buckets; the key's bucket (else
        the org's) as it stands; 429 when either is empty."""
        return self._take(self._key_requests, self._org_requests, org_id, key_id, 1, "requests", "requests")

    def events(self, org_id: str, key_id: str | None, n: int) -> Decision | None:
        """Take `n` event tokens (messages or events being ingested)."""
        return self._take(self._key_events, self._org_events, org_id, key_id, n, "ingested events", "events")

    def _take(self, per_key: _Limit, per_org: _Limit, org_id: str, key_id: str | None, n: int,
              what: str, label: str) -> Decision | None:
        now = self._clock()
        with self._lock:
            buckets = [(b, scope) for b, scope in ((per_key.bucket(f"{org_id}\x1f{key_id}", now), "key"),
                                                   (per_org.bucket(org_id, now), "org")) if b is not None]
            for bucket, scope in buckets:
                if bucket.tokens < n:
                    RATE_LIMITED.labels(f"{scope}_{label}").inc()
                    if n > bucket.capacity:
                        raise ServiceError("rate_limit_exceeded", f"{n} {what} in one request are more than this "
                                           f"{scope}'s limit allows in a minute ({int(bucket.capacity)}): send "
                                           "fewer at a time", headers={"Retry-After": "60"})
                    wait = math.ceil((n - bucket.tokens) / bucket.per_s)
                    decision = bucket.decision(wait)
                    headers = {name.decode(): value.decode() for name, value in decision.headers()}
                    raise ServiceError("rate_limit_exceeded", f"this {scope}'s limit on {what} is reached "
                                       f"({decision.limit} a minute); retry in {wait} s",
                                       headers={**headers, "Retry-After": str(wait)})
            for bucket, _ in buckets:
                bucket.tokens -= n
            return buckets[0][0].decision() if buckets else None
