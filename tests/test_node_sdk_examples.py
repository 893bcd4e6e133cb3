"""The xtrace SDKs' own smoke examples (`examples/*.ts` of 0.1.1 and 0.5.0, read from
../shared/clients) pass against a real `engram serve`. They are run as published except for the
import path — they import the SDK's TypeScript source (`../src/index.js`), which is not shipped,
so the built `dist/index.js` stands in — transpiled by esbuild (pinned in tests/js/package.json,
installed by `scripts/setup test`) and run by Node with XTRACE_API_KEY/ORG_ID/BASE_URL."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import ServerProcess, create_key
from tests.node_clients import JS, NODE, XTRACE_SDKS, node_ready, require_packages

pytestmark = pytest.mark.skipif(node_ready() is not None, reason=str(node_ready()))

ESBUILD = JS / "node_modules" / ".bin" / "esbuild"
SOURCE_IMPORT = '"../src/index.js"'
ORG = "sdk-examples"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("node-examples") / "data")
    yield server.start()
    server.stop()
    server.kill()


def run_example(srv: ServerProcess, version: str, name: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    require_packages()
    sdk = XTRACE_SDKS[version]
    source = (sdk / "examples" / name).read_text()
    assert SOURCE_IMPORT in source, f"{name} no longer imports {SOURCE_IMPORT}"
    source = source.replace(SOURCE_IMPORT, '"' + (sdk / "dist" / "index.js").as_uri() + '"')
    built = subprocess.run([str(ESBUILD), "--loader=ts", "--format=esm", "--log-level=warning"], input=source,
                           capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    script = tmp / f"{version}-{name}.mjs"
    script.write_text(built.stdout)
    env = {**os.environ, "XTRACE_API_KEY": create_key(srv, ORG), "XTRACE_ORG_ID": ORG, "XTRACE_BASE_URL": srv.url}
    return subprocess.run([NODE or "node", str(script)], env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("version", ["0.1.1", "0.5.0"])
def test_the_sdks_smoke_example_passes(srv: ServerProcess, version: str, tmp_path: Path) -> None:
    done = run_example(srv, version, "smoke.ts", tmp_path)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[smoke] done ✓" in lines, done.stdout  # not "done (partial)": search found what was ingested
    created = re.search(r"^\[smoke\]     final: succeeded memories_created: (\d+)", done.stdout, re.M)
    assert created and int(created.group(1)) > 0, done.stdout
    assert any(line.startswith("[smoke]     sync status: succeeded, memories inline:") for line in lines), done.stdout
    hard_delete = {"0.1.1": "[smoke]     note: get returned 404 (hard-delete semantics — spec said soft-delete)",
                   "0.5.0": "[smoke]     hard-deleted ✓ (get returns 404, point removed)"}  # docs/compatibility.md
    assert hard_delete[version] in lines, done.stdout


def test_the_groups_smoke_example_passes(srv: ServerProcess, tmp_path: Path) -> None:
    done = run_example(srv, "0.5.0", "groups-smoke.ts", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "[groups-smoke] ALL CHECKS PASSED ✓" in lines, done.stdout
    assert "[groups-smoke]     at least one shareable memory was tagged with the catch-all group ✓" in lines, done.stdout
    assert "[groups-smoke]     the personal (therapy) memory exists and carries NO group tags ✓" in lines, done.stdout
