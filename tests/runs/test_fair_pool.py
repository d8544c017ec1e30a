"""Runs share the function pool fairly, and a step waiting for a worker shows WAITING, not RUNNING."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from engine.engine import Engine
from engine.executors.fairness import reserve_for_others
from engine.states import Status
from engine.store import queries
from tests.support.engines import MakeEngine, write_flow
from tests.support.serving import free_port, healthy, serve
from tests.support.waiting import wait_until, wait_until_sync
from workflows.errors import SpecErrors
from workflows.loader import load_dir

HANDLERS = """
import time

def nap(event, context):
    time.sleep(event)
    return event

def quick(event, context):
    time.sleep(0.002)
    return "done"
"""

FAN = """
name: fan
params: {n: {type: integer}, s: {type: number}}
steps:
  each:
    function: handlers:nap
    for_each: "{{ range(params.n) | list }}"
    input: "{{ params.s }}"
    timeout: 60s
"""
QUICK = """
name: quick
steps:
  one: {function: handlers:quick}
"""
LIMITED = """
name: limited
steps:
  each: {function: handlers:nap, for_each: [0.3, 0.3, 0.3, 0.3, 0.3, 0.3], max_concurrency: 2, input: 0.3}
"""
ONE_AT_A_TIME = """
name: single
params: {s: {type: number}}
steps:
  only: {function: handlers:nap, concurrency: 1, input: "{{ params.s }}"}
"""


def flows(tmp_path: Path) -> Path:
    folder = tmp_path / "flows"
    write_flow(folder, FAN, HANDLERS, name="fan.yaml")
    write_flow(folder, QUICK, name="quick.yaml")
    write_flow(folder, LIMITED, name="limited.yaml")
    write_flow(folder, ONE_AT_A_TIME, name="single.yaml")
    return folder


async def attempts_of(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    async with engine.store.reader() as db:
        return await queries.run_attempts(db, run_id)


async def saturate(engine: Engine, n: int, seconds: float) -> str:
    """Start a fan-out of ``n`` long items; return once it holds its share of the pool and waits for more."""
    fan = await engine.start_run("fan", {"n": n, "s": seconds})
    pool = engine.functions.pool  # type: ignore[attr-defined]
    cap = pool()["max"] - reserve_for_others(pool()["max"])
    await wait_until(lambda: pool()["busy"] >= cap and pool()["waiting"] > 0, timeout_s=20)
    return fan


async def test_a_short_run_is_not_queued_behind_another_runs_fan_out(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    """60 x 30 s items of run A fill the pool; a 2 ms run B started then ends at once, not in 30 s."""
    engine = await make_engine(flows(tmp_path), workers=2, max_workers=32)
    fan = await saturate(engine, 60, 30.0)
    t0 = time.monotonic()
    quick = await engine.run_to_end("quick", timeout_s=30)
    elapsed = time.monotonic() - t0
    assert quick["status"] == Status.SUCCEEDED, quick
    # under 100 ms on a quiet machine (~30 ms here); the bound leaves room for a loaded CI, and a
    # first-come pool makes B wait for an item of A to end: 30 s
    assert elapsed < 2.0, f"the 2 ms run took {elapsed:.3f}s behind the fan-out"
    shown = await engine.describe_run(fan)
    assert shown is not None and shown["steps"]["each"]["status"] == Status.RUNNING
    assert shown["steps"]["each"]["items_waiting"] > 0, "the fan-out's items wait their turn"
    assert await engine.orchestrator.cancel(fan)


async def test_max_concurrency_caps_the_items_in_flight(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = await make_engine(flows(tmp_path), workers=4)
    t0 = time.monotonic()
    run = await engine.run_to_end("limited", timeout_s=30)
    elapsed = time.monotonic() - t0
    assert run["status"] == Status.SUCCEEDED, run
    assert elapsed >= 0.85, f"6 items of 0.3 s, 2 at a time, took {elapsed:.2f}s: more than 2 ran at once"
    attempts = await attempts_of(engine, run["run_id"])
    spans = sorted((a["started_at"], a["ended_at"]) for a in attempts)
    overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlap == 2


async def test_a_step_waiting_for_a_worker_shows_waiting_and_starts_when_taken(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    """concurrency: 1 and two runs: the second waits WAITING; its attempt starts when the first ends."""
    engine = await make_engine(flows(tmp_path), workers=2)
    first = await engine.start_run("single", {"s": 0.6})
    await wait_until(lambda: engine.functions.pool()["busy"] == 1, timeout_s=10)  # type: ignore[attr-defined]
    second = await engine.start_run("single", {"s": 0.01})

    async def shown() -> dict[str, Any]:
        summary = await engine.describe_run(second)
        assert summary is not None
        return summary

    deadline = time.monotonic() + 10
    while (await shown())["steps"].get("only", {}).get("status") != Status.WAITING:
        assert time.monotonic() < deadline, await shown()
        await asyncio.sleep(0.01)
    await engine.orchestrator.wait(first, 30)
    await engine.orchestrator.wait(second, 30)
    a1 = (await attempts_of(engine, first))[0]
    a2 = (await attempts_of(engine, second))[0]
    assert a2["status"] == Status.SUCCEEDED and a2["queued_at"] is not None
    assert a2["started_at"] >= a1["ended_at"] - 0.05, "the attempt started when a worker took it"
    assert 0.3 < a2["waited_s"] < 5, a2
    assert a1["waited_s"] is None  # it got a worker at once: one write, as before


async def test_the_step_event_says_how_long_it_waited_and_a_cancel_closes_a_waiting_attempt(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    engine = await make_engine(flows(tmp_path), workers=2)
    first = await engine.start_run("single", {"s": 0.5})
    await wait_until(lambda: engine.functions.pool()["busy"] == 1, timeout_s=10)  # type: ignore[attr-defined]
    waits = await engine.start_run("single", {"s": 0.01})
    cancelled = await engine.start_run("single", {"s": 0.01})

    async def attempts(run_id: str) -> list[dict[str, Any]]:
        return await attempts_of(engine, run_id)

    deadline = time.monotonic() + 10
    while not (await attempts(cancelled)) or (await attempts(cancelled))[0]["status"] != Status.WAITING:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert await engine.orchestrator.cancel(cancelled)
    assert await engine.orchestrator.wait(cancelled, 10) == Status.CANCELLED
    assert [a["status"] for a in await attempts(cancelled)] == [Status.CANCELLED]
    assert await engine.orchestrator.wait(waits, 30) == Status.SUCCEEDED
    assert await engine.orchestrator.wait(first, 30) == Status.SUCCEEDED
    async with engine.store.reader() as db:
        events = await queries.list_events(db, source="sluice.step", limit=100)
    running = [
        e["detail"]
        for e in events
        if e["detail"]["run_id"] == waits and e["detail"]["status"] == Status.RUNNING
    ]
    assert len(running) == 1 and running[0]["waited_s"] > 0.2, running


async def test_a_stop_closes_a_waiting_attempt_and_the_restart_runs_the_step(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    folder, data = flows(tmp_path), tmp_path / "data"
    engine = await make_engine(folder, data_dir=data, workers=2)
    first = await engine.start_run("single", {"s": 1.0})
    await wait_until(lambda: engine.functions.pool()["busy"] == 1, timeout_s=10)  # type: ignore[attr-defined]
    second = await engine.start_run("single", {"s": 0.01})
    deadline = time.monotonic() + 10
    while [a["status"] for a in await attempts_of(engine, second)] != [Status.WAITING]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await engine.stop(grace_s=0)
    again = await make_engine(folder, data_dir=data, workers=2)
    assert await again.orchestrator.wait(second, 30) == Status.SUCCEEDED
    assert await again.orchestrator.wait(first, 30) == Status.SUCCEEDED
    attempts = await attempts_of(again, second)
    assert [a["status"] for a in attempts] == [Status.CANCELLED, Status.SUCCEEDED], attempts


HOOKED = """
name: hooked
triggers:
  - webhook: {name: go, auth: none}
steps:
  only: {function: handlers:nap, concurrency: 1, input: "{{ event.detail.body.s }}"}
"""


def test_kill_9_while_a_step_waits_for_a_worker_loses_nothing(tmp_path: Path) -> None:
    """The WAITING attempt is closed as interrupted on the restart, and the step runs to the end."""
    write_flow(tmp_path / "flows", HOOKED, HANDLERS)
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> dict[str, Any]:
        with urllib.request.urlopen(base + path, timeout=5) as resp:
            return dict(json.loads(resp.read()))

    def post(seconds: float) -> str:
        body = json.dumps({"s": seconds}).encode()
        req = urllib.request.Request(base + "/hooks/hooked/go", data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return str(json.loads(resp.read())["run_ids"][0])

    def step_status(run_id: str) -> str | None:
        return get(f"/api/v1/runs/{run_id}")["steps"].get("only", {}).get("status")

    proc = serve(tmp_path, port)
    try:
        wait_until_sync(lambda: healthy(base), 30, what="the server to start")
        first = post(3.0)
        wait_until_sync(lambda: step_status(first) == "RUNNING", 20, what="the first step to start")
        waiting = post(0.01)
        wait_until_sync(lambda: step_status(waiting) == "WAITING", 20, what="the second step to wait")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = serve(tmp_path, port)
        wait_until_sync(lambda: healthy(base), 30, what="the server to start again")
        ended = ("SUCCEEDED", "FAILED", "CANCELLED")
        wait_until_sync(lambda: get(f"/api/v1/runs/{waiting}")["status"] in ended, 30, what="the run to end")
        run = get(f"/api/v1/runs/{waiting}")
        assert run["status"] == "SUCCEEDED", run
        attempts = [(a["status"], (a["error"] or {}).get("errorType")) for a in run["attempts"]["only"]]
        assert attempts == [("CANCELLED", "Sluice.EngineRestarted"), ("SUCCEEDED", None)], run["attempts"]
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        ("{function: handlers:environ, max_concurrency: 2}", "this step has no for_each"),
        ("{function: handlers:environ, for_each: [1], max_concurrency: 0}", "max_concurrency"),
        (
            "{container: {image: busybox:1.36}, array: 2, max_concurrency: 2}",
            "for function steps with for_each",
        ),
    ],
)
def test_a_bad_max_concurrency_is_refused_at_load(tmp_path: Path, step: str, problem: str) -> None:
    write_flow(
        tmp_path, f"name: bad\nsteps:\n  s: {step}\n", HANDLERS + "\ndef environ(e, c):\n    return 1\n"
    )
    with pytest.raises(SpecErrors) as info:
        load_dir(tmp_path)
    assert problem in str(info.value)
