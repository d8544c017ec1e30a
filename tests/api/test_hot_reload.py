"""Hot reload (issue 14): ``sluice serve DIR`` follows its workflow folder (engine/reload.py).

Real files, a real watchdog observer and the composed server on 127.0.0.1: a changed file serves
new runs while a run made before finishes on its own version; a broken file changes nothing and
says so; a new workflow's webhook works and a removed one's schedule stops, without a restart."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.engine import Engine, Settings
from engine.server import build_server
from tests.support.waiting import wait_until
from workflows.loader import file_version, load_dir

HANDLERS = "def one(event, context):\n    return 1\n"
HOLD_V1 = """
    name: hold
    steps:
      w: {wait: {seconds: 1.5}}
      old_step: {function: handlers:one, needs: [w]}
"""
HOLD_V2 = """
    name: hold
    steps:
      new_step: {function: handlers:one}
"""
TICK = """
    name: tick
    triggers:
      - schedule: rate(1 second)
        name: every
        catchup: none
    steps:
      one: {function: handlers:one}
"""
HOOK = """
    name: hooked
    triggers:
      - webhook: {name: in, auth: none}
    steps:
      one: {function: handlers:one}
"""


class Served:
    def __init__(self, engine: Engine, base: str, flows: Path) -> None:
        self.engine, self.base, self.flows = engine, base, flows

    def write(self, name: str, text: str) -> str:
        text = textwrap.dedent(text)
        (self.flows / name).write_text(text, encoding="utf-8")
        return text

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.get(self.base + path) as resp:
            is_json = resp.content_type == "application/json"
            return resp.status, await (resp.json() if is_json else resp.text())

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.post(self.base + path, json=body or {}) as resp:
            return resp.status, await resp.json()

    async def runs_of(self, workflow: str) -> int:
        sql = "SELECT count(*) FROM runs WHERE workflow=?"
        return int(await self.engine.store.read(lambda c: c.execute(sql, (workflow,)).fetchone()[0]))

    def version(self, name: str) -> str | None:
        wf = self.engine.catalog.get(name)
        return None if wf is None else wf.version


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "handlers.py").write_text(HANDLERS, encoding="utf-8")
    (flows / "hold.yaml").write_text(textwrap.dedent(HOLD_V1), encoding="utf-8")
    (flows / "tick.yaml").write_text(textwrap.dedent(TICK), encoding="utf-8")
    settings = Settings(data_dir=tmp_path / "data", workers=1, port=0, grace_s=1)
    engine = build_server(settings, load_dir(flows), flows)
    await engine.start()
    try:
        http = next(s for s in engine.services if s.name == "http")
        yield Served(engine, f"http://127.0.0.1:{http.port}", flows)  # type: ignore[attr-defined]
    finally:
        await engine.stop(grace_s=0)


@pytest.mark.timeout(30)
async def test_a_changed_file_serves_new_runs_and_a_running_run_keeps_its_version(served: Served) -> None:
    v1 = served.version("hold")
    assert v1 == file_version(textwrap.dedent(HOLD_V1))
    status, body = await served.post("/api/v1/workflows/hold/runs")
    assert status == 201, body
    first = body["run_id"]
    await wait_until(lambda: served.engine.orchestrator.active, 10, what="the first run driven")
    v2 = file_version(served.write("hold.yaml", HOLD_V2))
    await wait_until(lambda: served.version("hold") == v2, 10, what="the new version loaded")
    status, body = await served.post("/api/v1/workflows/hold/runs")
    second = body["run_id"]
    for run_id in (first, second):
        await served.engine.orchestrator.wait(run_id, 15)
    _, old = await served.get(f"/api/v1/runs/{first}")
    _, new = await served.get(f"/api/v1/runs/{second}")
    assert old["status"] == new["status"] == "SUCCEEDED", (old, new)
    assert set(old["steps"]) == {"w", "old_step"} and old["workflow_version"] == v1, old
    assert set(new["steps"]) == {"new_step"} and new["workflow_version"] == v2, new
    _, page = await served.get(f"/runs/{first}")
    assert v1 in page and "old_step" in page
    assert "new_step" not in page  # its DAG is not drawn from the version it did not run
    _, page = await served.get("/workflows")
    assert v2 in page


@pytest.mark.timeout(30)
async def test_an_invalid_file_keeps_the_old_version_and_says_what_is_wrong(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engine.reload")
    v1 = served.version("hold")
    served.write("hold.yaml", "name: hold\nsteps:\n  a: {function: handlers:one, needs: [nowhere]}\n")
    await wait_until(lambda: served.engine.catalog.errors, 10, what="the reload refused")
    assert served.version("hold") == v1
    status, ready = await served.get("/readyz")
    assert status == 200 and ready["status"] == "ready", ready  # the old version serves
    assert any("hold.yaml" in e and "nowhere" in e for e in ready["reload_errors"]), ready
    _, page = await served.get("/workflows")
    assert "reload-errors" in page and "nowhere" in page
    assert any("reload refused" in r.getMessage() and "nowhere" in r.getMessage() for r in caplog.records)
    summary = await served.engine.run_to_end("hold", timeout_s=15)  # still the old version
    assert set(summary["steps"]) == {"w", "old_step"}, summary
    served.write("hold.yaml", HOLD_V2)  # fixed: the errors go, the new version serves
    await wait_until(lambda: not served.engine.catalog.errors, 10, what="the errors cleared")
    assert (await served.get("/readyz"))[1]["reload_errors"] == []


@pytest.mark.timeout(30)
async def test_an_added_webhook_works_and_a_removed_schedule_stops_without_a_restart(served: Served) -> None:
    assert (await served.post("/hooks/hooked/in", {"x": 1}))[0] == 404
    await wait_until(lambda: served.runs_of("tick"), 10, what="the schedule firing")
    served.write("hooked.yaml", HOOK)
    (served.flows / "tick.yaml").unlink()
    await wait_until(lambda: served.version("tick") is None, 10, what="tick removed")
    status, body = await served.post("/hooks/hooked/in", {"x": 1})
    assert status == 202 and len(body["run_ids"]) == 1, body
    await served.engine.orchestrator.wait(body["run_ids"][0], 10)
    await asyncio.sleep(0.3)  # a fire committing as the trigger stopped
    before = await served.runs_of("tick")
    await asyncio.sleep(2.2)  # rate(1 second): two fires if it still ran
    assert await served.runs_of("tick") == before
    _, ready = await served.get("/readyz")
    assert ready["checks"]["triggers"] == "ok", ready


@pytest.mark.timeout(30)
async def test_a_changed_handler_is_used_by_new_attempts(served: Served) -> None:
    before = await served.engine.run_to_end("hold", timeout_s=15)
    assert before["steps"]["old_step"]["output"] == 1
    reloader: Any = next(s for s in served.engine.services if s.name == "workflow-reload")
    done = reloader.reloads
    (served.flows / "handlers.py").write_text("def one(event, context):\n    return 2\n", encoding="utf-8")
    await wait_until(lambda: reloader.reloads > done, 10, what="the handler change seen")
    after = await served.engine.run_to_end("hold", timeout_s=15)
    assert after["steps"]["old_step"]["output"] == 2, after
