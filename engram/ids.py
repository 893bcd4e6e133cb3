"""Identifiers: memories are UUIDs, events ULIDs (time-ordered), jobs `job_` + 32 hex."""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid

from ulid import ULID

_ulid_lock = threading.Lock()
_last_ulid = 0


def new_event_id() -> str:
    """A ULID that is strictly increasing within this process, so events accepted in one
    request sort in the order they were sent even inside one millisecond."""
    global _last_ulid
    with _ulid_lock:
        candidate = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
        _last_ulid = candidate if candidate > _last_ulid else _last_ulid + 1
        return str(ULID.from_int(_last_ulid))


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
