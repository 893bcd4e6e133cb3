"""A real HTTP server that speaks the OpenAI chat-completions and embeddings protocol with
scripted answers, for tests and benchmarks of the `llm` extractor and `openai` embedder.

    server = ScriptedOpenAI().start()           # http://127.0.0.1:<free port>/v1
    server.script(rate_limited(), chat({"facts": [], "artifacts": []}))
    ...                                          # point engram (or a Provider) at server.url
    server.chat_requests()                       # what engram sent, in order
    server.stop()

Chat requests take the next scripted reply; a reply may be a `Reply` or a function of the
request body returning one. With the script empty, `default_chat` answers (by default a
500 saying the test did not script this request). Embeddings are answered by
`default_embeddings`: deterministic bag-of-words vectors (texts sharing words are close).
Every request is recorded, including ones the client gave up on (timeouts).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

EMBEDDING_DIM = 64


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list: sent as JSON; str: sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


Handler = Callable[[dict[str, Any]], Reply]


@dataclass
class Recorded:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages", [])

    @property
    def system(self) -> str:
        return next((m["content"] for m in self.messages if m["role"] == "system"), "")

    @property
    def user(self) -> str:
        """The first user message (the request proper; a repair adds later ones)."""
        return next((m["content"] for m in self.messages if m["role"] == "user"), "")


def approx_tokens(text: str) -> int:
    """How the scripted server counts tokens for `usage`: about 4 characters a token,
    the usual ratio of English under OpenAI's tokenizers."""
    return math.ceil(len(text) / 4)


# ---------------------------------------------------------------------- replies
def chat(content: str | dict | list, *, finish_reason: str = "stop", prompt_tokens: int | None = None,
         completion_tokens: int | None = None, usage: bool = True) -> Handler:
    """A successful chat completion whose message content is `content` (JSON-encoded unless a str)."""
    text = content if isinstance(content, str) else json.dumps(content)

    def handler(request: dict[str, Any]) -> Reply:
        body: dict[str, Any] = {
            "id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
            "model": request.get("model", "scripted"),
            "choices": [{"index": 0, "finish_reason": finish_reason,
                         "message": {"role": "assistant", "content": text}}],
        }
        if usage:
            pt = prompt_tokens if prompt_tokens is not None else sum(
                approx_tokens(m.get("content") or "") for m in request.get("messages", []))
            ct = completion_tokens if completion_tokens is not None else approx_tokens(text)
            body["usage"] = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
        return Reply(200, body)

    return handler


def error(status: int, message: str = "scripted error", headers: dict[str, str] | None = None,
          delay_s: float = 0.0) -> Reply:
    return Reply(status, {"error": {"message": message, "type": "scripted", "code": str(status)}},
                 headers or {}, delay_s)


def rate_limited(retry_after: str | None = "0") -> Reply:
    return error(429, "Rate limit reached (scripted)", {"retry-after": retry_after} if retry_after is not None else {})


def slow(delay_s: float, then: Reply | Handler | None = None) -> Handler:
    """Answer after `delay_s` (a client with a shorter timeout gives up first)."""

    def handler(request: dict[str, Any]) -> Reply:
        reply = then(request) if callable(then) else (then or error(500, "slow"))
        reply.delay_s = delay_s
        return reply

    return handler


def unscripted(request: dict[str, Any]) -> Reply:
    return error(500, "the test did not script this chat request")


# ---------------------------------------------------------------------- helpers for handlers
TURN_LINE = re.compile(r"^\[T(\d+)\] (\S+ \S+) UTC — (.+?)(?: \(part \d+ of \d+\))?: (.*)$")
MEMORY_LINE = re.compile(r"^\[(M\d+)\] (.+?) — (.*)$")


def turns_of(request: dict[str, Any]) -> list[tuple[int, str, str]]:
    """(number, speaker, text) of each `[T<n>]` line of the request's user message."""
    out = []
    for line in Recorded("", request, {}).user.splitlines():
        m = TURN_LINE.match(line)
        if m:
            out.append((int(m.group(1)), m.group(3), m.group(4)))
    return out


def memories_of(request: dict[str, Any]) -> dict[str, str]:
    """{"M1": text, …} of the stored memories shown in the request."""
    out = {}
    for line in Recorded("", request, {}).user.splitlines():
        m = MEMORY_LINE.match(line)
        if m:
            out[m.group(1)] = m.group(3)
    return out


def label_of(request: dict[str, Any], needle: str) -> str:
    """The M label of the stored memory whose text contains `needle`."""
    for label, text in memories_of(request).items():
        if needle.lower() in text.lower():
            return label
    raise AssertionError(f"no stored memory containing {needle!r} in the request:\n{Recorded('', request, {}).user}")


def fact(text: str, turns: list[int] | None = None, *, fact_type: str = "statement", key: str | None = None,
         valid_at: str | None = None, action: str = "new", memory: str | None = None) -> dict[str, Any]:
    return {"text": text, "fact_type": fact_type, "key": key, "turns": turns or [1], "valid_at": valid_at,
            "action": action, "memory": memory}


def echo_extractor(request: dict[str, Any]) -> Reply:
    """A stand-in model of realistic output size: one fact per statement turn
    ("<speaker> said: <text>"), none for questions; an episode request gets a title and
    a summary made of the first words of each line."""
    schema_name = ((request.get("response_format") or {}).get("json_schema") or {}).get("name")
    system = Recorded("", request, {}).system
    if schema_name == "episode" or system.startswith("You summarise"):
        lines = [ln.split(": ", 1)[-1] for ln in Recorded("", request, {}).user.splitlines() if ln.strip()]
        summary = " ".join(" ".join(ln.split()[:12]) for ln in lines[:5])
        return chat({"title": "Conversation summary", "summary": summary or "Nothing was said."})(request)
    facts = []
    for number, speaker, text in turns_of(request):
        if text.rstrip().endswith("?") or len(text.split()) < 3:
            continue
        who = speaker.split(" (")[0]
        who = who[0].upper() + who[1:]
        facts.append(fact(f"{who} said: {text.strip()}", [number]))
    return chat({"facts": facts, "artifacts": []})(request)


def bag_of_words_embedding(text: str) -> list[float]:
    vector = [0.0] * EMBEDDING_DIM
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.md5(word.encode()).digest()
        vector[digest[0] % EMBEDDING_DIM] += 1.0 if digest[1] % 2 else -1.0
    if not any(vector):
        vector[0] = 1.0
    return vector


def default_embeddings(request: dict[str, Any]) -> Reply:
    inputs = request.get("input", [])
    inputs = [inputs] if isinstance(inputs, str) else inputs
    data = [{"object": "embedding", "index": i, "embedding": bag_of_words_embedding(t)} for i, t in enumerate(inputs)]
    tokens = sum(approx_tokens(t) for t in inputs)
    return Reply(200, {"object": "list", "data": data, "model": request.get("model", "scripted"),
                       "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


# ---------------------------------------------------------------------- the server
class ScriptedOpenAI:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: deque[Reply | Handler] = deque()
        self.default_chat: Handler = unscripted
        self.embeddings: Handler = default_embeddings
        self.requests: list[Recorded] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> "ScriptedOpenAI":
        owner = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.rstrip("/").endswith("/models"):
                    self._send(Reply(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]}))
                else:
                    self._send(error(404, "not found"))

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._send(error(400, "body is not JSON"))
                    return
                self._send(owner._answer(self.path, body, {k.lower(): v for k, v in self.headers.items()}))

            def _send(self, reply: Reply) -> None:
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if isinstance(reply.body, (dict, list)):
                    payload, ctype = json.dumps(reply.body).encode(), "application/json"
                else:
                    payload, ctype = str(reply.body or "").encode(), "text/plain"
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", ctype)
                    self.send_header("content-length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="scripted-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "ScriptedOpenAI":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # -- scripting
    def script(self, *replies: Reply | Handler) -> "ScriptedOpenAI":
        with self._lock:
            self._script.extend(replies)
        return self

    def reset(self, default_chat: Handler = unscripted) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.default_chat = default_chat
            self.embeddings = default_embeddings

    def pending(self) -> int:
        """Scripted replies not yet used."""
        with self._lock:
            return len(self._script)

    def chat_requests(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def embedding_requests(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/embeddings")]

    def _answer(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append(Recorded(path, body, headers))
            if path.endswith("/chat/completions"):
                step = self._script.popleft() if self._script else self.default_chat
            elif path.endswith("/embeddings"):
                step = self.embeddings
            else:
                return error(404, f"no route {path}")
        reply = step(body) if callable(step) else step
        return Reply(reply.status, reply.body, dict(reply.headers), reply.delay_s)
