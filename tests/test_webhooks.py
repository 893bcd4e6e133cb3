"""Webhooks over HTTP, on both stores (engram/webhooks.py, docs/operations.md "Webhooks"): the
config as the xtrace v1.0 contract declares it (secret shown once, masked, rotated); a job's
end delivered from the outbox to a real HTTP receiver, signed so that the published
`@xtraceai/memory` SDK's own `verifyWebhookSignature` (run in Node, unmodified) and an
independent HMAC both accept it; retried after failures with the same delivery id; and
private addresses refused unless allowed."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import ServerProcess, create_key, serve_on, wait_job

SDK = Path(__file__).resolve().parents[1].parent / "shared" / "clients" / "xtrace-memory-sdk-ts-0.5.0"
ENV = {"ENGRAM_WEBHOOK_ALLOW_PRIVATE": "true", "ENGRAM_WEBHOOK_RETRY_BASE_S": "0.2"}


class Receiver:
    """A subscriber: records every POST; answers 500 to the first `fail_first` of them."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_first = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append({"headers": dict(self.headers), "body": body})
                failing = receiver.fail_first > 0
                receiver.fail_first -= failing
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/engram"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout_s: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < n:
            assert time.monotonic() < deadline, f"{len(self.received)} of {n} deliveries"
            time.sleep(0.05)
        return self.received


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serve_on(request.param, request, tmp_path_factory.mktemp(f"webhooks-{request.param}"), "engram_webhooks", env=ENV) as server:
        yield server


def _sdk_verifies(payload: bytes, signature: str, secret: str) -> bool:
    """The published SDK's verifyWebhookSignature, in Node, as an application would call it."""
    script = ("const [p, s, k] = process.argv.slice(1);"
              f"import({json.dumps(str(SDK / 'dist' / 'index.js'))}).then(m => m.verifyWebhookSignature("
              "{payload: Buffer.from(p, 'base64'), signature: s, secret: k})).then(ok => console.log(ok ? 'yes' : 'no'))")
    import base64

    out = subprocess.run(["node", "--input-type=module", "-e", script, base64.b64encode(payload).decode(), signature,
                          secret], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip() == "yes"


def test_a_jobs_end_is_delivered_signed_and_retried_until_taken(srv: ServerProcess, receiver: Receiver) -> None:
    key = create_key(srv, f"hooks-{srv.port}-{id(receiver)}", "read,write")
    with srv.client(key) as c:
        assert c.get("/v1/webhooks").status_code == 404
        r = c.put("/v1/webhooks", json={"url": receiver.url})
        assert r.status_code == 200, r.text
        config = r.json()
        secret = config["secret"]
        assert secret.startswith("whsec_") and len(secret) > 20 and config["object"] == "webhook"
        assert config["events"] == ["memory.learning.completed", "memory.learning.failed"] and config["enabled"]
        shown = c.get("/v1/webhooks").json()["secret"]
        assert shown != secret and shown.endswith(secret[-4:]), "masked after creation"
        edited = c.put("/v1/webhooks", json={"url": receiver.url, "enabled": True}).json()
        assert edited["secret"] == shown and edited["updated_at"], "an edit keeps the secret, masked"

        receiver.fail_first = 2  # the subscriber is down for two attempts
        job = c.post("/v1/memories", json={"user_id": "ann", "conv_id": "c1",
                                           "messages": [{"role": "user", "content": "I keep bees."}]}).json()
        done = wait_job(c, job["id"])
        attempts = receiver.wait(3)
        delivery = attempts[-1]
        body = json.loads(delivery["body"])
        assert body["event"] == "memory.learning.completed" and body["job_id"] == job["id"]
        assert body["user_id"] == "ann" and body["conv_id"] == "c1" and body["timestamp"]
        assert [m["id"] for m in body["memories"]] == [m["id"] for m in done["result"]["memories_created"]]
        assert len({a["headers"]["X-Webhook-Id"] for a in attempts}) == 1, "one delivery id across retries"
        signature = delivery["headers"]["X-Webhook-Signature"]
        assert hmac.compare_digest(signature, "sha256=" + hmac.new(secret.encode(), delivery["body"],
                                                                   hashlib.sha256).hexdigest())
        if shutil.which("node"):
            assert _sdk_verifies(delivery["body"], signature, secret)
            assert not _sdk_verifies(delivery["body"] + b" ", signature, secret), "a changed body fails"
        log = c.get("/v1/webhooks/deliveries").json()["data"]
        assert log[0]["status"] == "delivered" and log[0]["attempts"] == 3

        # A job that fails as a whole is told too.
        job = c.post("/v1/memories", json={"user_id": "ann", "conv_id": "c2", "messages": [
            {"role": "user", "content": "my key is AKIAIOSFODNN7EXAMPLE and secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}]}).json()
        assert wait_job(c, job["id"])["status"] == "failed"
        failed = json.loads(receiver.wait(4)[-1]["body"])
        assert failed["event"] == "memory.learning.failed" and failed["error"]["code"] == "content_rejected"

        rotated = c.put("/v1/webhooks", params={"rotate_secret": "true"}, json={"url": receiver.url}).json()
        assert rotated["secret"].startswith("whsec_") and rotated["secret"] != secret and "•" not in rotated["secret"]
        assert c.delete("/v1/webhooks").status_code == 204 and c.delete("/v1/webhooks").status_code == 204
        assert c.get("/v1/webhooks").status_code == 404
        job = c.post("/v1/memories", json={"user_id": "ann", "conv_id": "c3",
                                           "messages": [{"role": "user", "content": "I ski."}]}).json()
        wait_job(c, job["id"])
        time.sleep(1.5)
        assert len(receiver.received) == 4, "no deliveries after the webhook is deleted"


def test_private_addresses_and_bad_configs_are_refused(tmp_path: Path, receiver: Receiver) -> None:
    srv = ServerProcess(tmp_path / "data").start()  # ENGRAM_WEBHOOK_ALLOW_PRIVATE unset: the default
    try:
        with srv.client() as c:
            for url in (receiver.url, "http://10.1.2.3/hook", "http://169.254.169.254/latest", "http://[::1]:8080/x",
                        "http://localhost/x", "ftp://example.com/x", "https://user:pw@example.com/x", "not a url"):
                r = c.put("/v1/webhooks", json={"url": url})
                assert r.status_code == 422 and "url" in r.text, (url, r.text)
            r = c.put("/v1/webhooks", json={"url": "https://example.com/x", "events": []})
            assert r.status_code == 422
            r = c.put("/v1/webhooks", json={"url": "https://example.com/x", "events": ["memory.deleted"]})
            assert r.status_code == 422
            assert c.get("/v1/webhooks").status_code == 404, "nothing refused was stored"
    finally:
        srv.stop()
