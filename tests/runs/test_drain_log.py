"""The shutdown line counts what really ended: a run paused between steps is not "finished"."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from tests.support.engines import MakeEngine, write_flow
from tests.support.waiting import wait_until

FLOW = """
name: two
params: {gate: {type: string}}
steps:
  first: {function: "handlers:gated", input: {gate: "{{ params.gate }}"}}
  second: {function: "handlers:gated", input: {gate: "{{ params.gate }}"}, needs: [first]}
"""

HANDLERS = """
import os, time

def gated(event, context):
    deadline = time.monotonic() + 20
    while not os.path.exists(event["gate"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "ok"
"""


async def test_drain_line_does_not_call_a_paused_run_finished(
    make_engine: MakeEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flows = tmp_path / "flows"
    write_flow(flows, FLOW, HANDLERS)
    engine = await make_engine(flows)
    gate = tmp_path / "gate"
    run_id = await engine.start_run("two", {"gate": str(gate)})

    async def first_running() -> bool:
        summary = await engine.describe_run(run_id)
        step = (summary or {}).get("steps", {}).get("first")
        return step is not None and step["status"] == "RUNNING"

    await wait_until(first_running, 20, what="the first step running")
    caplog.set_level(logging.INFO, logger="engine.runs.orchestrator")
    gate.touch()  # the running step ends within the grace; the drain keeps `second` from starting
    await engine.stop(grace_s=10)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("drained:")]
    assert line.startswith("drained: 0 runs ended, 1 paused between steps, 0 interrupted"), line
    with sqlite3.connect(engine.settings.data_dir / "sluice.db") as conn:
        assert conn.execute("SELECT status FROM runs").fetchone()[0] == "RUNNING"  # resumes on restart


async def test_a_forced_exit_counts_its_runs_interrupted_and_records_them(
    make_engine: MakeEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The second CTRL+C (``orchestrator.aclose`` while the drain waits): the runs it cuts short
    are interrupted, not "paused between steps", and their attempts are closed as a shutdown's."""
    flows = tmp_path / "flows"
    write_flow(flows, FLOW, HANDLERS)
    engine = await make_engine(flows)
    run_id = await engine.start_run("two", {"gate": str(tmp_path / "never")})

    async def first_running() -> bool:
        summary = await engine.describe_run(run_id)
        step = (summary or {}).get("steps", {}).get("first")
        return step is not None and step["status"] == "RUNNING"

    await wait_until(first_running, 20, what="the first step running")
    caplog.set_level(logging.INFO, logger="engine.runs.orchestrator")
    stop = asyncio.create_task(engine.stop(grace_s=30))
    await wait_until(lambda: engine.orchestrator.draining, 10, what="the drain")
    await asyncio.sleep(0.2)
    await engine.orchestrator.aclose()  # what the engine does on the second signal
    await asyncio.wait_for(stop, 20)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("drained:")]
    assert line.startswith("drained: 0 runs ended, 0 paused between steps, 1 interrupted"), line
    with sqlite3.connect(engine.settings.data_dir / "sluice.db") as conn:
        ((status, error),) = conn.execute("SELECT status, error FROM attempts").fetchall()
    assert status == "CANCELLED" and "Sluice.EngineShutdown" in error
