"""Identifiers: memories are UUIDs, events ULIDs (time-ordered), jobs `job_` + a ULID's 32 hex digits."""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid
from datetime import datetime

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every 10-bit value as two Crockford digits: a ULID is encoded in 13 lookups, not 26.
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
_ulid_lock = threading.Lock()
_last_ulid = 0


def new_event_id() -> str:
    """A ULID that is strictly increasing within this process, so events accepted in one
    request sort in the order they were sent even inside one millisecond."""
    return new_event_ids(1)[0]


def new_event_ids(count: int) -> list[str]:
    """`count` increasing ULIDs: one clock read and one draw of randomness for the lot."""
    first = _next_ulids(count)
    return [_ulid_text(value) for value in range(first, first + count)]


def _next_ulids(count: int) -> int:
    global _last_ulid
    with _ulid_lock:
        candidate = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
        first = candidate if candidate > _last_ulid else _last_ulid + 1
        _last_ulid = first + count - 1
    return first


def ulid_floor(at: datetime) -> str:
    """The smallest ULID of the millisecond `at` falls in: ids below it are older."""
    return _ulid_text(int(at.timestamp() * 1000) << 80)


def _ulid_text(value: int) -> str:
    # 128 bits as 26 Crockford base-32 digits, most significant first (the ULID text form).
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in range(120, -1, -10)])


def new_memory_id() -> str:
    return str(uuid.uuid4())


def new_job_id() -> str:
    # 128 bits in time order (a ULID as hex): new jobs land at the end of every index on
    # their id instead of on a random page of it.
    return f"job_{_next_ulids(1):032x}"


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
