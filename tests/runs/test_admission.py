"""Admission (intake first): runs past the gate are held PENDING, in order, and none is lost.

The gate's threshold is patched to 0 to hold runs deterministically, then raised to let them go.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from engine.engine import Engine
from engine.states import Status
from tests.support.engines import MakeEngine, write_flow

HANDLERS = """
from pathlib import Path

def inc(event, context):
    Path(event["mark"]).write_text("ran")
    return event["n"] + 1
"""

FLOW = """
name: step
params: {n: {type: integer}, mark: {type: string}}
steps:
  a: {function: handlers:inc, input: {n: "{{ params.n }}", mark: "{{ params.mark }}"}}
outputs: {n: "{{ steps.a.output }}"}
"""

SLEEPER = """
name: sleeper
steps:
  nap: {wait: 30s}
"""


async def statuses(engine: Engine, run_ids: list[str]) -> list[str]:
    def read(conn: sqlite3.Connection) -> list[str]:
        holes = ",".join("?" * len(run_ids))
        rows = dict(conn.execute(f"SELECT id, status FROM runs WHERE id IN ({holes})", run_ids).fetchall())
        return [rows[r] for r in run_ids]

    return await engine.store.read(read)


@pytest.fixture
async def engine(tmp_path: Path, make_engine: MakeEngine) -> Engine:
    """An engine serving the one-step workflow ``step``."""
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    return await make_engine(tmp_path / "flows")


@pytest.fixture
async def gated(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """An engine whose admission gate is shut: every new run is held until a test opens it."""
    monkeypatch.setattr(engine.orchestrator.admission.settings, "admit_at", 0)
    return engine


async def test_held_runs_wait_pending_then_all_run_in_arrival_order(
    gated: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = gated
    marks = [tmp_path / f"mark{i}" for i in range(30)]
    run_ids = [await engine.start_run("step", {"n": i, "mark": str(m)}) for i, m in enumerate(marks)]
    await asyncio.sleep(0.2)
    assert engine.orchestrator.held == 30 and engine.orchestrator.active == 0
    assert await statuses(engine, run_ids) == [Status.PENDING] * 30  # durable, not started
    assert not any(m.exists() for m in marks)

    monkeypatch.setattr(engine.orchestrator.admission.settings, "admit_at", 2)
    done = await asyncio.wait_for(asyncio.gather(*(engine.orchestrator.wait(r) for r in run_ids)), 20)
    assert done == [Status.SUCCEEDED] * 30 and engine.orchestrator.held == 0
    outputs = [(await engine.describe_run(r))["outputs"] for r in run_ids]
    assert outputs == [{"n": i + 1} for i in range(30)]
    started = await engine.store.read(
        lambda c: [r[0] for r in c.execute("SELECT id FROM runs ORDER BY started_at, rowid")]
    )
    assert started == run_ids  # first in, first started


async def test_a_held_run_can_be_cancelled_and_never_runs(
    gated: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = gated
    mark = tmp_path / "mark"
    run_id = await engine.start_run("step", {"n": 1, "mark": str(mark)})
    waiter = asyncio.ensure_future(engine.orchestrator.wait(run_id, timeout_s=10))
    await asyncio.sleep(0.05)
    assert not waiter.done()  # a held run is waited for like a running one
    assert await engine.orchestrator.cancel(run_id, "not needed") is True
    assert await waiter == Status.CANCELLED
    summary = await engine.describe_run(run_id)
    assert summary["status"] == Status.CANCELLED and summary["reason"] == "not needed"
    assert all(step["status"] == Status.CANCELLED for step in summary["steps"].values())
    monkeypatch.setattr(engine.orchestrator.admission.settings, "admit_at", 8)
    await asyncio.sleep(0.3)
    assert not mark.exists() and engine.orchestrator.held == 0
    attempts = await engine.store.read(lambda c: c.execute("SELECT COUNT(*) FROM attempts").fetchone()[0])
    assert attempts == 0


async def test_held_runs_survive_a_stop_and_run_after_the_restart(
    tmp_path: Path, make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    data = tmp_path / "data"
    first = await make_engine(tmp_path / "flows", data_dir=data)
    monkeypatch.setattr(first.orchestrator.admission.settings, "admit_at", 0)
    run_ids = [await first.start_run("step", {"n": i, "mark": str(tmp_path / f"m{i}")}) for i in range(5)]
    assert first.orchestrator.held == 5
    await first.stop(grace_s=1)
    second = await make_engine(tmp_path / "flows", data_dir=data)
    done = await asyncio.wait_for(asyncio.gather(*(second.orchestrator.wait(r) for r in run_ids)), 20)
    assert done == [Status.SUCCEEDED] * 5


async def test_sleeping_runs_hold_nothing_back(tmp_path: Path, make_engine: MakeEngine) -> None:
    """Runs parked on a timer are not engine work: 200 of them, and a new run still starts at once."""
    flows = tmp_path / "flows"
    write_flow(flows, FLOW, HANDLERS)
    write_flow(flows, SLEEPER, name="sleeper.yaml")
    engine = await make_engine(flows)
    sleepers = [await engine.start_run("sleeper") for _ in range(200)]
    deadline = time.monotonic() + 10
    while engine.orchestrator.held or engine.orchestrator.in_engine:
        assert time.monotonic() < deadline, "the sleepers never all got to their wait"
        await asyncio.sleep(0.01)
    assert engine.orchestrator.active == 200
    t0 = time.monotonic()
    summary = await engine.run_to_end("step", {"n": 41, "mark": str(tmp_path / "m")}, timeout_s=10)
    assert summary["outputs"] == {"n": 42} and time.monotonic() - t0 < 2
    assert await statuses(engine, sleepers[:3]) == [Status.RUNNING] * 3


async def test_a_burst_holds_runs_and_they_go_in_together_once_it_has_passed(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While events pour in, runs wait for intake; after the burst the held ones drain at full width."""
    monkeypatch.setattr(engine.orchestrator.admission.settings, "admit_at", 1)
    monkeypatch.setattr(engine.orchestrator.admission.settings, "quiet_factor", 100)
    run_ids = await asyncio.gather(
        *(engine.start_run("step", {"n": i, "mark": str(tmp_path / f"m{i}")}) for i in range(40))
    )
    assert engine.bus.in_burst()
    assert engine.orchestrator.held >= 30, "during the burst one run at a time may start"
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, engine.orchestrator.in_engine)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        done = await asyncio.wait_for(asyncio.gather(*(engine.orchestrator.wait(r) for r in run_ids)), 20)
    finally:
        watcher.cancel()
    assert done == [Status.SUCCEEDED] * 40
    assert not engine.bus.in_burst()
    assert peak > 10, f"held runs went in {peak} at a time after the burst, not together"


async def test_a_flood_holds_every_run_until_it_ebbs(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events faster than runs could drain beside them: intake goes first, then all runs go."""
    monkeypatch.setattr(
        engine.orchestrator.admission.settings, "admit_at", 8
    )  # a burst alone would let 8 runs start
    marks = [tmp_path / f"m{i}" for i in range(40)]
    run_ids = await asyncio.gather(
        *(engine.start_run("step", {"n": i, "mark": str(m)}) for i, m in enumerate(marks))
    )
    assert engine.bus.flooding()
    assert engine.orchestrator.held == 40 and engine.orchestrator.in_engine == 0
    assert not any(m.exists() for m in marks)
    done = await asyncio.wait_for(asyncio.gather(*(engine.orchestrator.wait(r) for r in run_ids)), 20)
    assert done == [Status.SUCCEEDED] * 40 and not engine.bus.flooding()


async def test_an_endless_flood_holds_no_run_longer_than_max_hold(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine.orchestrator.admission.settings, "max_hold_s", 0.3)
    flooding = True

    async def flood() -> None:  # events no rule matches: they keep the flood up and start nothing
        while flooding:
            await engine.bus.put_many([({"source": "noise", "detail": {}}, None, None)] * 40)
            await asyncio.sleep(0.005)

    flooder = asyncio.create_task(flood())
    try:
        await asyncio.sleep(0.05)
        assert engine.bus.flooding()
        t0 = time.monotonic()
        run_id = await engine.start_run("step", {"n": 1, "mark": str(tmp_path / "m")})
        assert engine.orchestrator.held == 1
        assert await engine.orchestrator.wait(run_id, timeout_s=10) == Status.SUCCEEDED
        waited = time.monotonic() - t0
        assert engine.bus.flooding(), "the run ended while the flood went on"
    finally:
        flooding = False
        await flooder
    assert 0.25 < waited < 3, f"held {waited:.2f}s against MAX_HOLD_S 0.3"
