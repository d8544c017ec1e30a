"""Schemathesis against a live ``sluice serve``: every operation of /api/v1/openapi.json, fuzzed.

The server is a real subprocess, with a token (so the auth checks mean something) and without
(loopback, as most users start it); the fuzzer is schemathesis' own CLI in another (its requests
client is synchronous: in this test's event loop it would block the server). Bounded: a fixed
seed, 10-20 examples an operation, one worker, a timeout; ~10 s each here. (No ``--max-time``:
with it, fuzzing repeats until the budget is spent.)

Checks: no 5xx, every status, content type, header and body as the document says, auth as the
document says (no token or a wrong one: 401), undeclared methods answered 405, and data that
violates the document refused. Not checked: ``positive_data_acceptance``, that every value the
document allows is accepted: the document gives types and required fields, not every rule a
route applies (a run id must exist, ``since`` must parse as a time).
"""

from __future__ import annotations

import os
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

#: real names for the path parameters, so fuzzing reaches the webhook's body handling and the pause
#: routes rather than their 404s. 503 is an answer here, not a server error (a paused webhook
#: gives it, with Retry-After); status_code_conformance still holds it to the document
CONFIG = """
[parameters]
"path.workflow" = "greet"
"path.trigger" = "hook"
"path.name" = "greet"

[checks.not_a_server_error]
expected-statuses = ["1XX", "2XX", "3XX", "4XX", "503"]
"""

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
pytestmark = pytest.mark.skipif(
    not SCHEMATHESIS.exists() and not os.environ.get("CI"),
    reason="needs schemathesis (pip install -e '.[test]')",
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("token", "phases", "examples"),
    [
        (TOKEN, "examples,coverage,fuzzing,stateful", "20"),  # the auth checks mean something
        (None, "examples,coverage,fuzzing", "10"),  # loopback without a token, as most users start
    ],
    ids=["with-token", "without-token"],
)
def test_the_live_api_keeps_its_document(
    tmp_path: Path, token: str | None, phases: str, examples: str
) -> None:
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve(tmp_path, port, env={"SLUICE_API_TOKEN": token} if token else {})
    try:
        wait_until_sync(lambda: healthy(base), 30, what="sluice serve")
        (tmp_path / "schemathesis.toml").write_text(CONFIG)
        argv = [
            str(SCHEMATHESIS), "--config-file", str(tmp_path / "schemathesis.toml"),
            "run", f"{base}/api/v1/openapi.json",
            *(["--header", f"Authorization: Bearer {token}"] if token else []),
            "--checks", CHECKS, "--phases", phases,
            "--max-examples", examples, "--seed", "1", "--workers", "1",
            "--request-timeout", "10",  # no --max-time: fuzzing would repeat until it is spent
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "SLUICE_API_TOKEN"}
        done = subprocess.run(argv, cwd=tmp_path, env=dict(env, NO_COLOR="1"), capture_output=True, text=True,
                              timeout=90)  # fmt: skip
    finally:
        stop(proc)
    log = (tmp_path / "serve.log").read_text(errors="replace")
    out = done.stdout
    summary = out[out.find("FAILURES") :] if "FAILURES" in out else out[-3000:]
    assert done.returncode == 0, f"schemathesis found:\n{summary[:12000]}\n--- server log ---\n{log[-4000:]}"
    assert "Traceback" not in log, log[-6000:]
