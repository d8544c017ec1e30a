"""Schemathesis against a live ``sluice serve``: every operation of /api/v1/openapi.json, fuzzed.

The server is a real subprocess with a token (so the auth checks mean something), the fuzzer is
schemathesis' own CLI in another (its requests client is synchronous: in this test's event loop it
would block the server). Bounded: a fixed seed, 6 examples an operation, one worker, a time
budget; ~15 s here.

Checks: no 5xx, every status, content type, header and body as the document says, auth as the
document says (no token or a wrong one: 401), undeclared methods answered 405, and data that
violates the document refused. Not checked: ``positive_data_acceptance``, that every value the
document allows is accepted: the document gives types and required fields, not every rule a
route applies (a run id must exist, ``since`` must parse as a time).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.engines import write_flow
from tests.support.serving import free_port, healthy, serve, stop
from tests.support.waiting import wait_until_sync

TOKEN = "schemathesis-test-token-0123456789"
FLOW = """
name: greet
triggers:
  - webhook: {name: hook, auth: none}
  - schedule: rate(1 day)
params:
  who: {type: string, default: world}
steps:
  hello: {function: "handlers:hello", input: {who: "{{ params.who }}"}}
"""
HANDLERS = "def hello(event, context):\n    return 'hello ' + str(event['who'])\n"
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
    "response_schema_conformance,negative_data_rejection,missing_required_header,unsupported_method,"
    "ignored_auth,use_after_free,ensure_resource_availability"
)

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
pytestmark = pytest.mark.skipif(
    not SCHEMATHESIS.exists() and not os.environ.get("CI"),
    reason="needs schemathesis (pip install -e '.[test]')",
)


@pytest.mark.timeout(120)
def test_the_live_api_keeps_its_document(tmp_path: Path) -> None:
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve(tmp_path, port, env={"SLUICE_API_TOKEN": TOKEN})
    try:
        wait_until_sync(lambda: healthy(base), 30, what="sluice serve")
        argv = [
            str(SCHEMATHESIS), "run", f"{base}/api/v1/openapi.json",
            "--header", f"Authorization: Bearer {TOKEN}",
            "--checks", CHECKS,
            "--max-examples", "6", "--seed", "1", "--workers", "1",
            "--max-time", "35", "--request-timeout", "10",
            "--report", "junit", "--report-dir", str(tmp_path / "report"),
        ]  # fmt: skip
        env = dict(os.environ, SCHEMATHESIS_HOOKS="", NO_COLOR="1")
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)
    finally:
        stop(proc)
    log = (tmp_path / "serve.log").read_text(errors="replace")
    summary = (
        done.stdout[done.stdout.find("FAILURES") :] if "FAILURES" in done.stdout else done.stdout[-3000:]
    )
    assert done.returncode == 0, (
        f"schemathesis found problems:\n{summary[:12000]}\n--- server log ---\n{log[-4000:]}"
    )
    assert "Traceback" not in log, log[-6000:]
    shutil.rmtree(tmp_path / "report", ignore_errors=True)
