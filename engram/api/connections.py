"""Time limits on HTTP connections, which uvicorn leaves open-ended.

uvicorn closes a keep-alive connection that stays idle after a response, but nothing else:
a connection that never sends a request, or sends its request line and headers one byte at a
time (slowloris), or stops in the middle of its body, holds a socket and a file descriptor for
as long as the client likes. `GuardedHttpProtocol` adds the two limits a front proxy would:

- **headers**: from the moment a connection opens (or the next request on a kept-alive one
  begins), the request line and every header must arrive within `header_timeout_s`;
- **body**: while a body is being received, no gap between two pieces of it may exceed
  `body_timeout_s`.

A connection over either limit is answered `408 Request Timeout` (when no response is under
way) and closed. The time a request spends in the application (a search, `?wait=true`) is not
limited here. A request the HTTP parser refuses is answered `400 invalid_request` in the error
envelope (uvicorn's own answer is plain text).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from engram.api.errors import error_body

def _close_with(status: bytes, code: str, message: str) -> bytes:
    """A whole response in the error envelope, for a connection that is about to be closed."""
    body = json.dumps(error_body(code, message, int(status.split(b" ")[0]))).encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


_408 = _close_with(b"408 Request Timeout", "request_timeout", "the request did not arrive in time")


class GuardedHttpProtocol(HttpToolsProtocol):
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._in_body = False

    @classmethod
    def configured(cls, *, header_timeout_s: float, body_timeout_s: float) -> type["GuardedHttpProtocol"]:
        """This protocol with its limits set (uvicorn takes a class, not an instance)."""
        return type(cls.__name__, (cls,), {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s})

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            self.transport.write(_408)
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        # What the HTTP parser refuses (an unknown method, a bad header byte, both Content-Length
        # and Transfer-Encoding) gets the same envelope as everything else, not plain text.
        self._disarm()
        self.transport.write(_close_with(b"400 Bad Request", "invalid_request", msg))
        self.transport.close()

    # uvicorn's protocol callbacks, each with the limit that applies from then on
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_body = False
        self._arm(self.header_timeout_s)

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._arm(self.body_timeout_s)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._in_body:
            self._arm(self.body_timeout_s)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
