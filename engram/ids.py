"""Identifiers: memories are UUIDs, events ULIDs (time-ordered), jobs `job_` + 32 hex."""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ulid_lock = threading.Lock()
_last_ulid = 0


def new_event_id() -> str:
    """A ULID that is strictly increasing within this process, so events accepted in one
    request sort in the order they were sent even inside one millisecond."""
    global _last_ulid
    with _ulid_lock:
        candidate = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
        _last_ulid = value = candidate if candidate > _last_ulid else _last_ulid + 1
    # 128 bits as 26 Crockford base-32 digits, most significant first (the ULID text form).
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def new_memory_id() -> str:
    return str(uuid.uuid4())


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
