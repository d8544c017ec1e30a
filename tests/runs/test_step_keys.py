"""A function step's keyed ``concurrency``: at most N attempts per key value across the workflow's
runs, the rest WAITING in order (with a reason naming the key), the same after ``kill -9`` of a
real ``sluice serve`` (real engines, real worker processes, the real store)."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from engine.states import Status
from tests.runs.test_keyed_concurrency import most_at_once
from tests.support.engines import MakeEngine, write_flow
from tests.support.serving import free_port, healthy, serve, stop
from tests.support.waiting import wait_until_sync
from workflows.errors import SpecErrors
from workflows.loader import load_file

FAN = """
name: fan
steps:
  list: {function: handlers:items}
  each:
    needs: [list]
    function: handlers:nap
    for_each: "{{ steps.list.output }}"
    input: "{{ item }}"
    concurrency: {key: "{{ item.customer }}", limit: 1}
"""

HANDLERS = """
import time
from pathlib import Path

def items(event, context):
    return [{"customer": "abc"[i % 3], "n": i} for i in range(100)]

def nap(event, context):
    t0 = time.time()
    time.sleep(0.05)
    return {"customer": event["customer"], "n": event["n"], "t0": t0, "t1": time.time()}

def hold(event, context):
    gate = Path(event["gate"])
    while not gate.exists():
        time.sleep(0.01)
    return event["customer"]
"""


async def test_a_fan_out_over_three_customers_with_limit_one_runs_three_at_a_time(
    tmp_path: Path, make_engine: MakeEngine
) -> None:
    write_flow(tmp_path / "flows", FAN, HANDLERS)
    engine = await make_engine(tmp_path / "flows", workers=6)
    summary = await engine.run_to_end("fan", timeout_s=60)
    assert summary["status"] == Status.SUCCEEDED, summary
    out: list[dict[str, Any]] = summary["steps"]["each"]["output"]
    assert [o["n"] for o in out] == list(range(100))
    assert most_at_once([(o["t0"], o["t1"]) for o in out]) == 3  # one per customer, all three at once
    for customer in "abc":
        mine = [o for o in out if o["customer"] == customer]
        assert most_at_once([(o["t0"], o["t1"]) for o in mine]) == 1, customer
        assert [o["n"] for o in sorted(mine, key=lambda o: o["t0"])] == [o["n"] for o in mine]  # in order
    assert engine.orchestrator.keys.waiting == 0


HELD = """
name: held
params: {customer: {type: string}, gate: {type: string}}
steps:
  work:
    function: handlers:hold
    input: {gate: "{{ params.gate }}", customer: "{{ params.customer }}"}
    concurrency: {key: "{{ params.customer }}", limit: 1}
"""


async def test_an_attempt_over_its_key_waits_shown_waiting_with_the_key(
    tmp_path: Path, make_engine: MakeEngine
) -> None:
    write_flow(tmp_path / "flows", HELD, HANDLERS)
    engine = await make_engine(tmp_path / "flows", workers=4)
    gates = {name: tmp_path / name for name in ("a1", "a2", "a3", "b1")}
    ids = {n: await engine.start_run("held", {"customer": n[0], "gate": str(g)}) for n, g in gates.items()}

    async def step(name: str) -> dict[str, Any]:
        summary = await engine.describe_run(ids[name])
        assert summary is not None
        return dict(summary["steps"].get("work") or {})

    deadline = time.monotonic() + 20
    while (await step("a3")).get("status") != "WAITING" or (await step("b1")).get("status") != "RUNNING":
        assert time.monotonic() < deadline, [await step(n) for n in ids]
        await asyncio.sleep(0.02)
    assert (await step("a1"))["status"] == "RUNNING"  # b's attempt did not wait behind a's
    assert (await step("a2"))["status"] == "WAITING"
    assert (await step("a2"))["reason"] == (
        "waiting for concurrency key 'a': 1 of 1 attempts running, 0 waiting ahead of it"
    )
    assert (await step("a3"))["reason"] == (
        "waiting for concurrency key 'a': 1 of 1 attempts running, 1 waiting ahead of it"
    )
    gates["a1"].touch()
    assert await engine.orchestrator.wait(ids["a1"], 10) == Status.SUCCEEDED
    while (await step("a2")).get("status") != "RUNNING":  # the next of key a, not a3
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert (await step("a3"))["status"] == "WAITING"
    assert await engine.orchestrator.cancel(ids["a3"], "not needed") is True  # a waiting one can go
    for gate in gates.values():
        gate.touch()
    done = await asyncio.wait_for(asyncio.gather(*(engine.orchestrator.wait(r) for r in ids.values())), 20)
    assert done == [Status.SUCCEEDED, Status.SUCCEEDED, Status.CANCELLED, Status.SUCCEEDED]
    assert engine.orchestrator.keys.waiting == 0 and not engine.orchestrator.keys._running


@pytest.mark.parametrize(
    ("concurrency", "problem"),
    [
        ("{limit: 2}", "concurrency.key: is required"),
        ('{key: "{{ item.x }}"}', "concurrency.limit: is required"),
        ('{key: "{{ item.x }}", limit: 2}', "item exists only in steps with for_each"),
        ('{key: "{{ steps.b.output }}", limit: 2}', "which is not upstream of a"),
        ('{key: "{{ params.nope }}", limit: 2}', "params.nope, which is not declared"),
        ("{key: [1], limit: 2}", "must be a string template"),
        ("soon", "must be a number of attempts or a mapping"),
        ("0", "concurrency: must be an integer from 1 to 10000"),
    ],
)
def test_a_bad_step_concurrency_is_refused_at_load(tmp_path: Path, concurrency: str, problem: str) -> None:
    text = (
        "name: bad\nparams: {x: {type: string, default: y}}\nsteps:\n"
        f"  a: {{function: handlers:hold, concurrency: {concurrency}}}\n  b: {{function: handlers:hold}}\n"
    )
    with pytest.raises(SpecErrors) as info:
        load_file(write_flow(tmp_path, text, HANDLERS))
    assert "steps.a.concurrency" in str(info.value) and problem in str(info.value)


def test_a_keyed_concurrency_is_for_function_steps(tmp_path: Path) -> None:
    text = 'name: bad\nsteps:\n  a: {wait: 1s, concurrency: {key: "k", limit: 1}}\n'
    with pytest.raises(SpecErrors) as info:
        load_file(write_flow(tmp_path, text))
    assert "steps.a.concurrency: a keyed concurrency is for function steps" in str(info.value)


def test_the_plain_number_still_caps_the_function(tmp_path: Path) -> None:
    text = "name: ok\nsteps:\n  a: {function: handlers:hold, concurrency: 3}\n"
    wf = load_file(write_flow(tmp_path, text, HANDLERS))
    assert wf.steps["a"].concurrency == 3 and wf.steps["a"].keyed is None


# -- kill -9 of a real engine --------------------------------------------------------------------

SERVED = """
name: keyed
params: {customer: {type: string}, delay: {type: number, default: 0}}
steps:
  pre: {function: handlers:pre, input: {delay: "{{ params.delay }}"}}
  work:
    needs: [pre]
    function: handlers:work
    concurrency: {key: "{{ params.customer }}", limit: 1}
"""

WORK = """
import time

def pre(event, context):
    time.sleep(event["delay"])

def work(event, context):
    time.sleep(1.5)
"""


def _call(base: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _start(base: str, customer: str, delay: float) -> str:
    answer = _call(base, "/api/v1/workflows/keyed/runs", {"customer": customer, "delay": delay})
    return str(answer["run_id"])


def _work(base: str, run_id: str) -> dict[str, Any]:
    return dict(_call(base, f"/api/v1/runs/{run_id}")["steps"].get("work") or {})


def test_kill_9_keeps_each_key_to_its_limit_and_the_waiting_order(tmp_path: Path) -> None:
    """Runs made in the order 1, 2, 3 reach the keyed step in the order 1, 3, 2 (their first steps
    take different times). After a ``kill -9`` recovery resumes the runs oldest first, so without
    the tickets 2 would go before 3; and a run made after the restart goes after both."""
    write_flow(tmp_path / "flows", SERVED, WORK)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    db = tmp_path / ".sluice" / "sluice.db"
    proc = serve(tmp_path, port)
    try:
        wait_until_sync(lambda: healthy(base), 30, what="the engine answering")
        r1 = _start(base, "acme", 0)
        r2 = _start(base, "acme", 0.8)
        r3 = _start(base, "acme", 0.3)
        other = _start(base, "globex", 0)
        wait_until_sync(lambda: _work(base, r2).get("status") == "WAITING", 20, what="r2 waiting")
        assert _work(base, r3)["status"] == "WAITING" and _work(base, r1)["status"] == "RUNNING"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = serve(tmp_path, port)
        wait_until_sync(lambda: healthy(base), 30, what="the engine back")
        later = _start(base, "acme", 0)
        # re-queued: WAITING again (a new attempt, recorded once it has waited 50 ms)
        wait_until_sync(lambda: _work(base, r2).get("attempts") == 2, 20, what="r2 re-queued")
        wait_until_sync(lambda: _work(base, r2).get("status") == "WAITING", 20, what="r2 waiting again")
        shown = _work(base, r2)
        assert _call(base, "/api/v1/health")["attempts_waiting_for_key"] in (2, 3)  # r3, r2 (later, if there)
        assert shown["reason"].startswith("waiting for concurrency key 'acme': 1 of 1 attempts running, 1 ")

        def done() -> bool:
            with sqlite3.connect(db) as conn:
                left = conn.execute("SELECT COUNT(*) FROM runs WHERE status IN ('PENDING','RUNNING')")
                return bool(left.fetchone()[0] == 0)

        wait_until_sync(done, 60, what="every run ended")
    finally:
        stop(proc, 30)
    with sqlite3.connect(db) as conn:
        statuses = dict(conn.execute("SELECT id, status FROM runs").fetchall())
        ran = conn.execute(
            "SELECT run_id, started_at, ended_at FROM attempts WHERE step='work' AND status='SUCCEEDED'"
        ).fetchall()
    assert set(statuses.values()) == {"SUCCEEDED"} and len(statuses) == 5
    spans = {run_id: (start, end) for run_id, start, end in ran}
    acme = [r1, r3, r2, later]
    assert sorted(acme, key=lambda r: spans[r][0]) == acme  # the order they asked in, kept
    assert most_at_once([spans[r] for r in acme]) == 1
    assert spans[other][0] < spans[r3][0]  # globex never waited behind acme


async def test_a_clean_restart_keeps_the_waiting_order_too(tmp_path: Path, make_engine: MakeEngine) -> None:
    """The same story through a stop (the attempts closed as cut short by a shutdown, not open)."""
    flows, data = tmp_path / "flows", tmp_path / "data"
    write_flow(flows, SERVED, WORK)
    first = await make_engine(flows, data_dir=data, workers=4)
    r1 = await first.start_run("keyed", {"customer": "acme"})
    r2 = await first.start_run("keyed", {"customer": "acme", "delay": 0.8})
    r3 = await first.start_run("keyed", {"customer": "acme", "delay": 0.3})

    async def work(engine: Any, run_id: str) -> dict[str, Any]:
        summary = await engine.describe_run(run_id)
        return dict(summary["steps"].get("work") or {})

    deadline = time.monotonic() + 20
    while (await work(first, r2)).get("status") != "WAITING":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await first.stop(grace_s=0)
    second = await make_engine(flows, data_dir=data, workers=4)
    later = await second.start_run("keyed", {"customer": "acme"})
    ids = [r1, r3, r2, later]
    done = await asyncio.wait_for(asyncio.gather(*(second.orchestrator.wait(r) for r in ids)), 30)
    assert done == [Status.SUCCEEDED] * 4

    def read(conn: sqlite3.Connection) -> dict[str, tuple[float, float]]:
        rows = conn.execute(
            "SELECT run_id, started_at, ended_at FROM attempts WHERE step='work' AND status='SUCCEEDED'"
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    spans = await second.store.read(read)
    assert sorted(ids, key=lambda r: spans[r][0]) == ids
    assert most_at_once(list(spans.values())) == 1
