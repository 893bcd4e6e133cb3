"""Hostile input for the fuzz suite (tests/test_fuzz.py): exact JSON text, named catalogues of
bad values, and hypothesis strategies that put them where a route reads its input.

Everything here produces *bytes*: `dumps` writes the JSON text itself so the suite controls it
exactly — lone UTF-16 surrogates come out as `\\udXXX` escapes (what `json.dumps` writes and
what a JavaScript client sends), `Raw` literals (`NaN`, `-1e400`, a 5,000-digit number) are
written verbatim, and nesting 2,000 levels deep needs no recursion.
"""

from __future__ import annotations

import base64
import copy
import json
import math
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import quote

from hypothesis import strategies as st


# ---------------------------------------------------------------------- exact JSON text
@dataclass(frozen=True)
class Raw:
    """A JSON literal written as it is: `Raw("NaN")`, `Raw("-1e400")`, `Raw("9" * 5000)`."""

    text: str

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}{'…' if len(self.text) > 40 else ''})"


def _scalar(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # ensure_ascii: a lone surrogate becomes a \udXXX escape
    raise TypeError(f"not JSON: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """JSON text of `value` (dicts, lists, str, int, float, bool, None, `Raw`), iteratively."""
    out: list[str] = []
    # The stack holds either values to write or literal text (tagged) to emit after them.
    stack: list[tuple[bool, Any]] = [(False, value)]
    while stack:
        is_text, item = stack.pop()
        if is_text:
            out.append(item)
        elif isinstance(item, dict):
            out.append("{")
            pending: list[tuple[bool, Any]] = [(True, "}")]
            entries = list(item.items())
            for i in range(len(entries) - 1, -1, -1):
                key, child = entries[i]
                pending.append((False, child))
                pending.append((True, ("," if i else "") + _scalar(str(key) if not isinstance(key, str) else key) + ":"))
            stack.extend(pending)
        elif isinstance(item, (list, tuple)):
            out.append("[")
            pending = [(True, "]")]
            for i in range(len(item) - 1, -1, -1):
                pending.append((False, item[i]))
                if i:
                    pending.append((True, ","))
            stack.extend(pending)
        else:
            out.append(_scalar(item))
    return "".join(out).encode("utf-8")


# ---------------------------------------------------------------------- deep structures
def nest_objects(depth: int, leaf: Any = "x", key: str = "a") -> Any:
    value = leaf
    for _ in range(depth):
        value = {key: value}
    return value


def nest_lists(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def nest_filter(depth: int, op: str, leaf: dict[str, Any] | None = None) -> dict[str, Any]:
    """`{"NOT": {"NOT": …}}`, `{"AND": [{"AND": […]}]}` or `{"OR": …}`, `depth` levels."""
    value: dict[str, Any] = leaf or {"user_id": "fz-user"}
    for _ in range(depth):
        value = {op: value} if op == "NOT" else {op: [value]}
    return value


def nested_json_text(depth: int, kind: str = "object") -> str:
    """Deep JSON *text* (for family M's metadata string)."""
    if kind == "object":
        return '{"a":' * depth + "1" + "}" * depth
    return "[" * depth + "]" * depth


# ---------------------------------------------------------------------- URL text
_UNRESERVED = "-._~"


def pct(value: str) -> str:
    """Percent-encode for a URL; a lone surrogate is sent as its 3-byte (WTF-8) form, i.e.
    bytes that are not UTF-8, which is what a client that does not check its strings sends."""
    return quote(value.encode("utf-8", "surrogatepass"), safe=_UNRESERVED)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def forge_cursor(envelope: dict[str, Any], position: Any, suffix: str = "") -> str:
    """A cursor with a real envelope (org tag, scope) around a forged position; `suffix` is what
    followed the real payload (a signature `.<tag>`, kept as it was, so it no longer matches)."""
    return b64url(dumps({**envelope, "p": position})) + suffix


def split_cursor(cursor: str) -> tuple[dict[str, Any] | None, str]:
    """A real cursor's JSON payload and what follows it (`.<tag>` for a signed cursor); the payload
    is None when the cursor is not base64url JSON (then only garbage and tampering are sent)."""
    body, dot, rest = cursor.partition(".")
    try:
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        return None, ""
    return (payload if isinstance(payload, dict) else None), dot + rest


def tampered_cursors(cursor: str) -> dict[str, str]:
    """Edits of a real cursor: every one must be refused as a 4xx, never read."""
    flipped = cursor[:-1] + ("A" if cursor[-1] != "A" else "B")
    body, dot, rest = cursor.partition(".")
    out = {
        "real, last char changed": flipped,
        "real, one char short": cursor[:-1],
        "real plus junk": cursor + "AAAA",
        "real twice": cursor + cursor,
        "real with a NUL": cursor[:5] + "\x00" + cursor[5:],
        "real with a surrogate": cursor[:5] + "\ud800" + cursor[5:],
        "real, 1000 times": cursor * 1000,
    }
    if dot:
        out["real, signature removed"] = body
        out["real, two signatures"] = cursor + dot + rest
        out["real, empty signature"] = body + "."
        out["real payload, signature of zeros"] = body + "." + b64url(bytes(len(base64.urlsafe_b64decode(
            rest + "=" * (-len(rest) % 4)))))
    return out


# ---------------------------------------------------------------------- named catalogues
SURROGATES: dict[str, str] = {
    "lone high surrogate": "\ud800",
    "lone low surrogate": "a\udc00b",
    "reversed pair": "\udc00\ud83d",
    "high at the end": "fine text \udbff",
}

CONTROL: dict[str, str] = {
    "NUL inside": "a\x00b",
    "only NUL": "\x00",
    "C0 controls": "".join(chr(i) for i in range(1, 32)) + "\x7f",
    "C1 controls": "".join(chr(i) for i in range(0x80, 0xA0)),
    "bidi and zero-width": "\u202eevil\u200b\ufeff\u2066",
    "noncharacters": "\ufffe\uffff\U0010ffff\U000effff",
    "astral": "\U0001f600\U0001f4a9" * 8,
    "combining pile": "e" + "\u0301" * 500,
}

ODD_TEXT: dict[str, str] = {
    "empty": "",
    "blank": " \t\r\n ",
    "sql": "'; DROP TABLE memories; --",
    "fts5 syntax": 'NEAR("a" "b", 2) AND * OR ^x "unterminated',
    "fts5 column": "text: content : {a b}",
    "like wildcards": "%_\\%",
    "json in a string": '{"$where": "1 == 1"}',
    "path traversal": "../../../etc/passwd",
    "percent escapes": "%00%ED%A0%80%2F",
    "only punctuation": "?!.,;:()[]{}",
}

LONG_TEXT: dict[str, str] = {
    "257 chars": "i" * 257,
    "8001 chars": "c" * 8001,
    "32001 chars": "x" * 32001,
    "300k chars": "word " * 60_000,
    "4.5 MB": "w" * (4_500_000),
}

NUMBERS: dict[str, Any] = {
    "1e308": Raw("1e308"),
    "-1e400": Raw("-1e400"),
    "1e400": Raw("1e400"),
    "1e-400": Raw("1e-400"),
    "10**30": 10**30,
    "2**64": 2**64,
    "-(2**63)-1": -(2**63) - 1,
    "2**63": 2**63,
    "-0": Raw("-0"),
    "-0.0": Raw("-0.0"),
    "NaN": Raw("NaN"),
    "Infinity": Raw("Infinity"),
    "-Infinity": Raw("-Infinity"),
    "5000 digits": Raw("9" * 5000),
    "exponent 1e999999999": Raw("1e999999999"),
    "1.0": 1.0,
    "0.5": 0.5,
    "-1": -1,
    "0": 0,
}

WRONG_TYPES: dict[str, Any] = {
    "null": None,
    "true": True,
    "false": False,
    "int": 7,
    "float": 2.5,
    "string": "s",
    "empty list": [],
    "list": ["a", 1, None],
    "empty object": {},
    "object": {"a": 1},
}

ODD_KEYS: dict[str, str] = {
    "$where": "$where",
    "__proto__": "__proto__",
    "constructor": "constructor",
    "empty key": "",
    "quote": '"',
    "backslash": "\\",
    "quote inside": 'a"b',
    "backslash inside": "a\\b",
    "dotted": "a.b.c",
    "bracketed": "a[0]",
    "$in at field position": "$in",
    "AND": "AND",
    "NUL in key": "k\x00",
    "surrogate key": "\ud800",
    "control in key": "k\x1b[31m",
    "10k key": "k" * 10_000,
    "257 key": "k" * 257,
    "reserved tag1": "tag1",
    "reserved org_id": "org_id",
    "core user_id": "user_id",
    "core id": "id",
    "status": "status",
    "space": " ",
    "emoji": "\U0001f511",
}

TIMESTAMPS: dict[str, Any] = {
    "9999-12-31T23:59:59-12:00": "9999-12-31T23:59:59-12:00",
    "0001-01-01T00:00:00+14:00": "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59.999999Z": "9999-12-31T23:59:59.999999Z",
    "0001-01-01T00:00:00Z": "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-23:59": "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59": "0001-01-01T00:00:00+23:59",
    "year 0": "0000-01-01T00:00:00Z",
    "year 10000": "10000-01-01T00:00:00Z",
    "Feb 30": "2026-02-30T00:00:00Z",
    "hour 24": "2026-01-01T24:00:00Z",
    "leap second": "2016-12-31T23:59:60Z",
    "offset +24:00": "2026-01-01T00:00:00+24:00",
    "naive": "2026-01-01T00:00:00",
    "date only": "2026-01-01",
    "not a date": "yesterday-ish",
    "epoch beyond 9999": 253402300800,
    "negative epoch": -62135596801,
    "epoch 1e20": Raw("1e20"),
    "epoch ms": 1767225600000,
}

# Positions to put in a real cursor envelope: wrong types and wrong sizes.
CURSOR_POSITIONS: dict[str, Any] = {
    "string": "x",
    "negative": -1,
    "2**64": 2**64,
    "10**30": 10**30,
    "1e308": Raw("1e308"),
    "1e400": Raw("1e400"),
    "NaN": Raw("NaN"),
    "float": 1.5,
    "null": None,
    "true": True,
    "empty list": [],
    "one item": [1],
    "one string": ["a"],
    "three items": ["a", "b", "c"],
    "two nulls": [None, None],
    "int and string": [2**64, "x"],
    "edge date": ["9999-12-31T23:59:59-12:00", "00000000-0000-0000-0000-000000000000"],
    "bad date": ["not-a-date", "x"],
    "date and int": ["2026-01-01T00:00:00Z", 5],
    "surrogate pair items": ["\ud800", "\udc00"],
    "object": {"a": 1},
    "5000 digits": Raw("9" * 5000),
    "deep list": nest_lists(500),
    "huge list": list(range(5000)),
}

GARBAGE_CURSORS: dict[str, str] = {
    "empty": "",
    "punctuation": "!!!",
    "one char": "a",
    "padding only": "====",
    "not json": b64url(b"not json"),
    "json array": b64url(b"[1,2]"),
    "no position": b64url(b'{"o":"x","s":"y"}'),
    "other org": b64url(b'{"o":"000000000000","s":"0000000000000000","p":1}'),
    "invalid utf-8 inside": b64url(b'{"o":"\xff\xfe","s":1,"p":1}'),
    "surrogate escape inside": b64url(b'{"o":"\\ud800","s":"\\udc00","p":"\\ud800"}'),
    "100k chars": "A" * 100_000,
    "lone surrogate": "\ud800",
    "NUL": "\x00",
}

RAW_BODIES: dict[str, bytes] = {
    "empty": b"",
    "whitespace": b"  \n",
    "null": b"null",
    "array": b"[]",
    "string": b'"hello"',
    "number": b"42",
    "NaN": b"NaN",
    "huge number": b"9" * 5000,
    "truncated": b'{"query": "x", "filters": {',
    "trailing garbage": b'{"query": "x"} trailing',
    "two documents": b'{"query": "x"}{"query": "y"}',
    "single quotes": b"{'query': 'x'}",
    "comments": b'{"query": "x" /* comment */}',
    "trailing comma": b'{"query": "x",}',
    "invalid UTF-8": b'{"query": "\xff\xfe\xc0\xaf"}',
    "overlong UTF-8 NUL": b'{"query": "\xc0\x80"}',
    "CESU surrogate bytes": b'{"query": "\xed\xa0\x80"}',
    "UTF-8 BOM": b'\xef\xbb\xbf{"query": "x"}',
    "UTF-16": '{"query": "x"}'.encode("utf-16"),
    "bad escape": b'{"query": "\\x41"}',
    "truncated escape": b'{"query": "\\ud8"}',
    "raw control char": b'{"query": "a\x01b"}',
    "duplicate keys": b'{"query": "x", "query": 5}',
    "deep array 2000": b"[" * 2000 + b"]" * 2000,
    "deep object 2000": b'{"a":' * 2000 + b"1" + b"}" * 2000,
}

CONTENT_TYPES: dict[str, str | None] = {
    "none": None,
    "text/plain": "text/plain",
    "form": "application/x-www-form-urlencoded",
    "multipart without boundary": "multipart/form-data",
    "json latin-1": "application/json; charset=latin-1",
    "json utf-16": "application/json; charset=utf-16",
    "vendor json": "application/vnd.api+json",
    "xml": "application/xml",
}

PATH_IDS: dict[str, str] = {
    "surrogate bytes": "%ED%A0%80",
    "NUL": "%00",
    "invalid UTF-8": "%FF%FE",
    "encoded slash": "a%2Fb",
    "dot dot": "%2E%2E",
    "10k id": "i" * 10_000,
    "uuid-like with NUL": "00000000-0000-0000-0000-00000000000%00",
    "quotes": "%22%27",
    "sql": "1%27%20OR%20%271%27%3D%271",
    "space": "%20",
    "unicode": pct("\u202e\U0001f600"),
    "job prefix only": "job_",
    "job with surrogate": "job_%ED%A0%80",
    "huge int": "9" * 400,
}


# ---------------------------------------------------------------------- hypothesis strategies
def hostile_strings() -> st.SearchStrategy[str]:
    """Named hostile strings, and arbitrary text *including* lone surrogates (category Cs)."""
    named = {**SURROGATES, **CONTROL, **ODD_TEXT}
    return st.one_of(
        st.sampled_from(sorted(SURROGATES.values())),
        st.sampled_from(sorted(named.values())),
        st.text(st.characters(exclude_categories=()), max_size=40),
        st.text(st.characters(categories=["Cs", "Cc", "Cf", "Co", "Cn"]), min_size=1, max_size=8),
    )


def hostile_numbers() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(list(NUMBERS.values())),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=True, allow_infinity=True),
    )


def hostile_keys() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(sorted(ODD_KEYS.values())), hostile_strings())


def hostile_leaves() -> st.SearchStrategy[Any]:
    return st.one_of(
        hostile_strings(),
        hostile_numbers(),
        st.sampled_from(list(TIMESTAMPS.values())),
        st.sampled_from([None, True, False, [], {}]),
    )


def deep_values() -> st.SearchStrategy[Any]:
    depth = st.sampled_from([100, 200, 500, 1000, 2000])
    return st.one_of(
        st.builds(nest_objects, depth, hostile_leaves(), st.sampled_from(["a", "$in", "NOT", "", "\ud800"])),
        st.builds(nest_lists, depth, hostile_leaves()),
    )


def hostile_json() -> st.SearchStrategy[Any]:
    """Any JSON value built from hostile leaves and odd keys, sometimes very deep."""
    small = st.recursive(
        hostile_leaves(),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(hostile_keys(), children, max_size=4),
        ),
        max_leaves=12,
    )
    return st.one_of(hostile_leaves(), hostile_leaves(), small, deep_values())


Path = tuple[Any, ...]


def _get_parent(doc: Any, path: Path) -> tuple[Any, Any]:
    node = doc
    for part in path[:-1]:
        node = node[part]
    return node, path[-1]


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any], slots: list[Path], objects: list[Path] | None = None) -> tuple[Any, str]:
    """`base` with one to three hostile mutations; returns (document, what was done).

    `slots` are paths of values that may be replaced or dropped; `objects` are paths of
    objects that may get an extra hostile key (the root always may)."""
    doc = copy.deepcopy(base)
    notes = []
    objects = [()] + list(objects or [])
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        action = draw(st.sampled_from(["replace"] * 6 + ["add key"] * 2 + ["drop", "top level"]))
        if action == "top level":
            doc = draw(hostile_json())
            notes = ["top level replaced"]
            break
        if action == "add key":
            where = draw(st.sampled_from(objects))
            node = doc
            try:
                for part in where:
                    node = node[part]
            except (KeyError, IndexError, TypeError):
                continue
            if isinstance(node, dict):
                key = draw(hostile_keys())
                node[key] = draw(hostile_json())
                notes.append(f"add key {key[:20]!r} at {'.'.join(map(str, where)) or 'root'}")
            continue
        path = draw(st.sampled_from(slots))
        try:
            parent, last = _get_parent(doc, path)
            if action == "drop":
                if isinstance(parent, dict):
                    parent.pop(last, None)
                    notes.append(f"drop {'.'.join(map(str, path))}")
            else:
                parent[last] = draw(hostile_json())
                notes.append(f"replace {'.'.join(map(str, path))}")
        except (KeyError, IndexError, TypeError):
            continue
    return doc, "; ".join(notes) or "unchanged"


def chunks(body: bytes, size: int = 65536) -> Iterator[bytes]:
    """The body as a generator, so that httpx sends it chunked (no Content-Length)."""
    for i in range(0, len(body), size):
        yield body[i:i + size]


def oversized(prefix: bytes, total: int, suffix: bytes = b'"}') -> Iterator[bytes]:
    """A syntactically plausible JSON body of about `total` bytes, streamed in chunks."""
    yield prefix
    sent = len(prefix)
    block = b"a" * 65536
    while sent < total:
        yield block
        sent += len(block)
    yield suffix
