"""End to end through ``build_server``: a dropped file, a webhook and a chained workflow."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from engine.engine import Engine, Settings
from engine.server import build_server
from tests.support.engines import write_flow
from workflows.loader import load_dir

HANDLERS = """
import urllib.parse

def count_lines(event, context):
    # written for S3 -> Lambda: reads Records[0].s3.object.key and size, unchanged
    record = event["Records"][0]
    key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
    return {"key": key, "size": record["s3"]["object"]["size"], "bucket": record["s3"]["bucket"]["name"]}

def greet(event, context):
    return "hello " + event["name"]

def shout(event, context):
    return event["text"].upper()
"""

FLOWS = {
    "ingest.yaml": """
        name: ingest
        triggers:
          - files: {path: inbox, suffix: .csv, after: "move:done"}
        steps:
          count: {function: handlers:count_lines, input: "{{ event.detail }}"}
        outputs: {file: "{{ steps.count.output }}"}
    """,
    "hello.yaml": """
        name: hello
        triggers:
          - webhook: {name: greet, secret: s3cr3t-value}
            input: {name: "{{ event.detail.body.name }}"}
        params: {name: {type: string}}
        steps:
          greet: {function: handlers:greet, input: {name: "{{ params.name }}"}}
        outputs: {greeting: "{{ steps.greet.output }}"}
    """,
    "loud.yaml": """
        name: loud
        triggers:
          - event:
              pattern:
                source: [sluice.run]
                detail: {workflow: [hello], status: [SUCCEEDED]}
            input: {text: "{{ event.detail.outputs.greeting }}"}
        params: {text: {type: string}}
        steps:
          shout: {function: handlers:shout, input: {text: "{{ params.text }}"}}
        outputs: {loud: "{{ steps.shout.output }}"}
    """,
}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Engine, str, Path]]:
    flows = tmp_path / "flows"
    for name, text in FLOWS.items():
        write_flow(flows, text, HANDLERS, name=name)
    (flows / "inbox").mkdir()
    settings = Settings(data_dir=tmp_path / "data", workers=2, port=0, grace_s=2)
    engine = build_server(settings, load_dir(flows), flows)
    await engine.start()
    http = next(s for s in engine.services if s.name == "http")
    try:
        yield engine, f"http://127.0.0.1:{http.port}", flows  # type: ignore[attr-defined]
    finally:
        await engine.stop(grace_s=0)


async def _wait_for_run(engine: Engine, workflow: str, timeout_s: float = 20) -> dict:
    async with asyncio.timeout(timeout_s):
        while True:
            rows = await engine.store.read(
                lambda c: c.execute(
                    "SELECT id FROM runs WHERE workflow=? AND status IN ('SUCCEEDED','FAILED')", (workflow,)
                ).fetchall()
            )
            if rows:
                summary = await engine.describe_run(rows[0][0])
                assert summary is not None
                return summary
            await asyncio.sleep(0.02)


async def test_a_dropped_file_runs_its_workflow_once_and_is_moved(server: tuple[Engine, str, Path]) -> None:
    engine, _, flows = server
    (flows / "inbox" / "red flower.csv").write_text("a,b\n1,2\n")
    (flows / "inbox" / "ignored.txt").write_text("not a csv")
    run = await _wait_for_run(engine, "ingest")
    assert run["status"] == "SUCCEEDED"
    assert run["outputs"] == {"file": {"key": "red flower.csv", "size": 8, "bucket": "inbox"}}
    moved = flows / "inbox" / "done" / "red flower.csv"
    for _ in range(500):  # moved only after the event was committed
        if moved.exists():
            break
        await asyncio.sleep(0.02)
    assert moved.exists() and not (flows / "inbox" / "red flower.csv").exists()
    count = await engine.store.read(lambda c: c.execute("SELECT count(*) FROM runs").fetchone()[0])
    assert count == 1


async def test_a_signed_webhook_starts_a_run_and_its_success_starts_another(
    server: tuple[Engine, str, Path],
) -> None:
    engine, base, _ = server
    body = json.dumps({"name": "ada"}).encode()
    signature = "sha256=" + hmac.new(b"s3cr3t-value", body, hashlib.sha256).hexdigest()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/hooks/hello/greet?wait=20",
            data=body,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
        ) as resp:
            answer = await resp.json()
            assert resp.status == 200, answer
        assert answer["status"] == "SUCCEEDED"
        assert answer["outputs"] == {"greeting": "hello ada"}
        async with http.post(
            f"{base}/hooks/hello/greet", data=body, headers={"X-Hub-Signature-256": "sha256=00"}
        ) as resp:
            assert resp.status == 401
    chained = await _wait_for_run(engine, "loud")
    assert chained["outputs"] == {"loud": "HELLO ADA"}
