"""Both published xtrace SDKs (`@xtraceai/memory` 0.1.1 and 0.5.0, built, in ../shared/clients/,
run unmodified in Node) get engram's errors as their own typed errors with engram's code: they
read `error: {type, code, message}` beside `detail` (engram/api/errors.py). Before, every SDK
error arrived as `unknown_error`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import ServerProcess, create_key

CLIENTS = Path(__file__).resolve().parents[1].parent / "shared" / "clients"
SDKS = ["xtrace-memory-sdk-ts-0.1.1", "xtrace-memory-sdk-ts-0.5.0"]

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed on this machine")

SCRIPT = """
const [sdk, baseUrl, key, wrongKey, orgId] = process.argv.slice(1);
const m = await import(sdk);
const client = new m.MemoryClient({apiKey: key, orgId, baseUrl, maxRetries: 0});
const stranger = new m.MemoryClient({apiKey: wrongKey, orgId, baseUrl, maxRetries: 0});
const out = {};
async function caught(name, call) {
  try { await call(); out[name] = "no error"; }
  catch (e) { out[name] = {cls: e.constructor.name, code: e.code, type: e.errorType, status: e.status}; }
}
await caught("missing", () => client.memories.get("00000000-0000-4000-8000-000000000000"));
await caught("unauthorized", () => stranger.memories.get("00000000-0000-4000-8000-000000000000"));
await caught("no_messages", () => client.memories.ingest({user_id: "u", conv_id: "c", messages: []}));
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("xtrace-errors") / "data")
    yield server.start()
    server.stop()


@pytest.mark.parametrize("sdk", SDKS)
def test_the_sdks_typed_errors_carry_engrams_codes(srv: ServerProcess, sdk: str) -> None:
    key = create_key(srv, "sdk-errors", "read,write")
    entry = CLIENTS / sdk / "dist" / "index.js"
    done = subprocess.run(["node", "--input-type=module", "-e", SCRIPT, str(entry), srv.url, key, "egm_not-a-key",
                           "sdk-errors"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["missing"] == {"cls": "MemoryNotFound", "code": "memory_not_found", "type": "invalid_request_error",
                              "status": 404}, out
    assert out["unauthorized"]["cls"] == "Unauthorized" and out["unauthorized"]["code"] == "unauthorized", out
    assert out["no_messages"]["cls"] == "BadRequest" and out["no_messages"]["code"] == "invalid_messages", out
