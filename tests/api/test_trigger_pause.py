"""Pausing and resuming triggers (issue 14): a paused trigger emits nothing, what arrives while it
is paused follows its kind's documented rule (engine/pauses.py), and a pause survives a restart."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.engine import Engine, Settings
from engine.server import build_server
from tests.support.engines import write_flow
from tests.support.waiting import wait_until
from workflows.loader import load_dir

HANDLERS = "def one(event, context):\n    return 1\n"
FLOWS = {
    "tick.yaml": """
        name: tick
        triggers:
          - schedule: rate(1 second)
            name: every
            catchup: none
        steps:
          one: {function: handlers:one}
    """,
    "ingest.yaml": """
        name: ingest
        triggers:
          - files: {path: inbox, suffix: .csv}
            name: drops
        steps:
          one: {function: handlers:one}
    """,
    "hook.yaml": """
        name: hook
        triggers:
          - webhook: {name: in, secret: s3cr3t-value}
        steps:
          one: {function: handlers:one}
    """,
    "after.yaml": """
        name: after
        triggers:
          - event:
              pattern: {source: [sluice.run], detail: {workflow: [hook], status: [SUCCEEDED]}}
            name: chained
        steps:
          one: {function: handlers:one}
    """,
}

Start = Callable[[], Awaitable[tuple[Engine, str]]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Start]:
    flows = tmp_path / "flows"
    for name, text in FLOWS.items():
        write_flow(flows, text, HANDLERS, name=name)
    (flows / "inbox").mkdir()
    running: list[Engine] = []

    async def start() -> tuple[Engine, str]:
        for old in running:  # one engine at a time on the data dir: a restart
            await old.stop(grace_s=0)
        running.clear()
        settings = Settings(data_dir=tmp_path / "data", workers=1, port=0, grace_s=1)
        engine = build_server(settings, load_dir(flows), flows)
        await engine.start()
        running.append(engine)
        http = next(s for s in engine.services if s.name == "http")
        return engine, f"http://127.0.0.1:{http.port}"  # type: ignore[attr-defined]

    try:
        yield start
    finally:
        for engine in running:
            await engine.stop(grace_s=0)


async def runs_of(engine: Engine, workflow: str) -> int:
    sql = "SELECT count(*) FROM runs WHERE workflow=?"
    return int(await engine.store.read(lambda c: c.execute(sql, (workflow,)).fetchone()[0]))


async def workflows(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(base + "/api/v1/workflows") as resp:
        return {w["name"]: w for w in (await resp.json())["workflows"]}


async def post(base: str, path: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(base + path, json={}) as resp:
        return resp.status, await resp.json()


async def test_a_paused_schedule_fires_nothing_across_a_restart_and_resumes(serve: Start) -> None:
    engine, base = await serve()
    await wait_until(lambda: runs_of(engine, "tick"), 10, what="a first fire")
    trigger = (await workflows(base))["tick"]["triggers"][0]
    assert time.time() - 0.5 < trigger["next_fire"] <= time.time() + 1.5, trigger  # rate(1 second)
    status, body = await post(base, "/api/v1/workflows/tick/triggers/every/pause")
    assert status == 200 and body["paused"] is True and body["changed"] is True, body
    assert body["kind"] == "schedule" and body["paused_at"] > 0
    assert (await post(base, "/api/v1/workflows/tick/triggers/every/pause"))[1]["changed"] is False
    async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
        text = await resp.text()
    assert 'sluice_trigger_paused{trigger="every",workflow="tick"} 1.0' in text
    assert 'sluice_trigger_paused{trigger="drops",workflow="ingest"} 0.0' in text
    async with aiohttp.ClientSession() as http, http.get(base + "/readyz") as resp:
        ready = await resp.json()
    assert resp.status == 200 and ready["paused_triggers"] == ["tick/every"], ready  # said, not failed
    await asyncio.sleep(0.3)  # a fire already being committed when the pause came may still land
    count = await runs_of(engine, "tick")
    await asyncio.sleep(2.2)
    assert await runs_of(engine, "tick") == count, "a paused schedule fired"

    engine, base = await serve()  # the pause is in the store: the restarted engine keeps it
    trigger = (await workflows(base))["tick"]["triggers"][0]
    assert trigger["paused"] is True and trigger["next_fire"] is None  # a paused trigger fires never
    await asyncio.sleep(1.5)
    assert await runs_of(engine, "tick") == count, "a schedule paused before the restart fired"

    status, body = await post(base, "/api/v1/workflows/tick/triggers/every/resume")
    assert status == 200 and body["paused"] is False and body["paused_at"] is None and body["changed"]
    await wait_until(lambda: runs_of(engine, "tick"), 10, what="fires after the resume")
    # catchup: none: the ~4 fires missed while paused were skipped, not run in a burst
    assert await runs_of(engine, "tick") <= count + 2


async def test_files_that_land_while_paused_are_picked_up_on_resume(serve: Start) -> None:
    engine, base = await serve()
    inbox = Path(engine.catalog["ingest"].file).parent / "inbox"
    assert (await post(base, "/api/v1/workflows/ingest/triggers/drops/pause"))[0] == 200
    (inbox / "a.csv").write_text("1\n")
    (inbox / "b.csv").write_text("2\n")
    await asyncio.sleep(1.5)
    assert await runs_of(engine, "ingest") == 0, "a paused file trigger emitted"
    assert (await post(base, "/api/v1/workflows/ingest/triggers/drops/resume"))[0] == 200
    await wait_until(lambda: _at_least(engine, "ingest", 2), 15, what="both files")
    await asyncio.sleep(0.5)
    assert await runs_of(engine, "ingest") == 2  # once each


async def _at_least(engine: Engine, workflow: str, n: int) -> bool:
    return await runs_of(engine, workflow) >= n


def _signed(body: bytes) -> dict[str, str]:
    signature = "sha256=" + hmac.new(b"s3cr3t-value", body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Hub-Signature-256": signature}


async def test_a_paused_webhook_answers_503_after_auth_and_a_paused_rule_starts_nothing(
    serve: Start,
) -> None:
    engine, base = await serve()
    assert (await post(base, "/api/v1/workflows/hook/triggers/in/pause"))[0] == 200
    assert (await post(base, "/api/v1/workflows/after/triggers/chained/pause"))[0] == 200
    body = json.dumps({"n": 1}).encode()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/hooks/hook/in", data=body, headers=_signed(body)) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "60"
            assert (await resp.json())["error"]["code"] == "trigger_paused"
        unsigned = {"Content-Type": "application/json"}
        async with http.post(f"{base}/hooks/hook/in", data=body, headers=unsigned) as resp:
            assert resp.status == 401  # an anonymous caller learns nothing of the pause
        assert await runs_of(engine, "hook") == 0
        assert (await post(base, "/api/v1/workflows/hook/triggers/in/resume"))[0] == 200
        async with http.post(f"{base}/hooks/hook/in?wait=10", data=body, headers=_signed(body)) as resp:
            assert resp.status == 200, await resp.text()
        await asyncio.sleep(0.5)
        assert await runs_of(engine, "after") == 0, "a paused event rule started its workflow"
        assert (await post(base, "/api/v1/workflows/after/triggers/chained/resume"))[0] == 200
        async with http.post(f"{base}/hooks/hook/in?wait=10", data=body, headers=_signed(body)) as resp:
            assert resp.status == 200
        await wait_until(lambda: runs_of(engine, "after"), 10, what="the rule's run after the resume")
        assert await runs_of(engine, "after") == 1  # the event of the paused time is not replayed


async def test_pausing_an_unknown_trigger_says_what_exists(serve: Start) -> None:
    engine, base = await serve()
    status, body = await post(base, "/api/v1/workflows/tick/triggers/nope/pause")
    assert status == 404 and body["error"]["code"] == "unknown_trigger"
    assert "every" in body["error"]["message"]
    status, body = await post(base, "/api/v1/workflows/nope/triggers/every/resume")
    assert status == 404 and body["error"]["code"] == "unknown_workflow"
    pause = base + "/api/v1/workflows/tick/triggers/every/pause"
    async with aiohttp.ClientSession() as http, http.post(pause, json=[None]) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_body"  # schemathesis
    assert not engine.pauses.is_paused("tick", "every")
