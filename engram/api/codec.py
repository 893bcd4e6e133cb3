"""The service's one JSON reader and one JSON writer.

**Reading.** Every request body is parsed by pydantic-core's JSON parser (`jiter`), for the
routes FastAPI parses (`StrictJSONRoute`) and for the hot routes that validate bytes
directly (`deps.json_body`) alike. It is strict where Python's `json` module is lenient: a
lone UTF-16 surrogate (`"\\udc00"`), invalid UTF-8 and `NaN`/`Infinity` are errors, and
nesting stops at 200 levels (`RecursionError` never happens). So no string that cannot be
encoded as UTF-8 reaches the core, the stores or a response. A body it refuses is FastAPI's
usual `422 json_invalid`, located at the offending character.

**Writing.** `JSONResponse` renders with `ensure_ascii=False` like Starlette's, but a string
that cannot be encoded (a row written before the reader was strict) is written escaped
instead of failing the response: a read never answers 500 because of what a row holds.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Coroutine

import pydantic_core
from fastapi import Request, Response
from fastapi.responses import JSONResponse as _StarletteJSONResponse
from fastapi.routing import APIRoute

_POSITION = re.compile(r"line (\d+) column (\d+)")


def read_json(body: bytes | str) -> Any:
    """Parse a JSON document strictly; `json.JSONDecodeError` (a `ValueError`) when it is not
    one engram accepts (see the module docstring)."""
    try:
        return pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        raise json.JSONDecodeError(str(exc), text, _offset(text, str(exc))) from None


def _offset(text: str, message: str) -> int:
    """The character offset a parser message ("… at line L column C") points at."""
    found = _POSITION.search(message)
    if not found:
        return 0
    line, column = int(found.group(1)), int(found.group(2))
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    return min(len(text), starts[min(line, len(starts)) - 1] + max(column - 1, 0))


class _StrictRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = read_json(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose declared JSON body is read by `read_json` (FastAPI turns its
    `JSONDecodeError` into the usual 422)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(_StrictRequest(request.scope, request.receive))

        return strict_handler


class JSONResponse(_StarletteJSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            # Only rows written before every body was read strictly can hold a lone surrogate.
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
