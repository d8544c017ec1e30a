"""A retry from the failed steps (Step Functions' redrive): what succeeded is kept with its output,
the failed step and everything downstream of it (the DAG's descendants) run again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.support.engines import write_flow
from tests.support.http import Serve

FLOW = """
name: redrive
params: {gate: {type: string}, log: {type: string}}
steps:
  fetch: {function: "handlers:mark", input: {log: "{{ params.log }}", name: fetch}}
  side: {function: "handlers:mark", input: {log: "{{ params.log }}", name: side}}
  parse:
    needs: [fetch]
    function: "handlers:gated"
    input: {log: "{{ params.log }}", gate: "{{ params.gate }}", got: "{{ steps.fetch.output }}"}
  store: {needs: [parse], function: "handlers:mark", input: {log: "{{ params.log }}", name: store}}
outputs: {parsed: "{{ steps.parse.output }}", stored: "{{ steps.store.output }}"}
"""

HANDLERS = """
import os

def mark(event, context):
    with open(event["log"], "a") as f:
        f.write(event["name"] + "\\n")
    return event["name"] + "-out"

def gated(event, context):
    with open(event["log"], "a") as f:
        f.write("parse\\n")
    if not os.path.exists(event["gate"]):
        raise RuntimeError("gate closed")
    return "parsed " + event["got"]
"""


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with http.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def test_retry_from_failed_keeps_what_succeeded(
    serve: Serve, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    api = await serve(write_flow(tmp_path / "flows", FLOW, HANDLERS).parent)
    gate, log = tmp_path / "gate", tmp_path / "calls.log"
    first = await api.engine.start_run("redrive", {"gate": str(gate), "log": str(log)})
    assert await api.engine.orchestrator.wait(first, 20) == "FAILED"
    assert sorted(log.read_text().split()) == ["fetch", "parse", "side"]

    status, answer = await post(http, f"{api.url}/api/v1/runs/{first}/retry", {"from": "start", "x": 1})
    assert status == 201  # starting over still works, with unrelated keys ignored as before
    await api.engine.orchestrator.wait(answer["run_id"], 20)
    log.write_text("")

    gate.touch()
    status, answer = await post(http, f"{api.url}/api/v1/runs/{first}/retry", {"from": "failed"})
    assert status == 201 and answer["kept"] == ["fetch", "side"], answer
    assert await api.engine.orchestrator.wait(answer["run_id"], 20) == "SUCCEEDED"
    assert log.read_text().split() == ["parse", "store"]  # fetch and side did not run again
    run = await api.engine.describe_run(answer["run_id"])
    assert run is not None
    assert run["outputs"] == {"parsed": "parsed fetch-out", "stored": "store-out"}
    assert run["steps"]["fetch"]["status"] == "SUCCEEDED" and run["steps"]["fetch"]["attempts"] == 0
    assert run["steps"]["fetch"]["reason"] == f"kept from {first}"

    status, answer = await post(http, f"{api.url}/api/v1/runs/{answer['run_id']}/retry", {"from": "failed"})
    assert status == 409 and answer["error"]["code"] == "not_failed"
    assert answer["error"]["message"].endswith('(a retry without "from" starts it over)')
    status, answer = await post(http, f"{api.url}/api/v1/runs/{first}/retry", {"from": "middle"})
    assert status == 400 and "from must be" in answer["error"]["message"]
