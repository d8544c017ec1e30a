"""A workflow's keyed ``concurrency``: at most N runs per key value, the rest PENDING in order,
the same after a restart and after ``kill -9`` of a real ``sluice serve`` (real engines on one
data dir, real worker processes)."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from engine.api.app import build_app
from engine.engine import Engine
from engine.states import Status
from tests.support.engines import MakeEngine, write_flow
from tests.support.serving import free_port, healthy, serve, stop
from tests.support.waiting import wait_until_sync
from workflows.errors import SpecErrors
from workflows.loader import load_file

HELD = """
name: held
concurrency: {key: "{{ event.detail.customer }}", limit: 2}
steps:
  work: {function: handlers:hold, input: {gate: "{{ params.gate }}"}}
"""

HANDLERS = """
import time
from pathlib import Path

def hold(event, context):
    gate = Path(event["gate"])
    while not gate.exists():
        time.sleep(0.01)
    return "done"
"""

NAPS = """
name: naps
concurrency: {key: "{{ params.customer }}", limit: 2}
params: {customer: {type: string}}
steps:
  nap: {wait: 3s}
"""


async def rows(engine: Engine, run_ids: list[str]) -> list[sqlite3.Row]:
    def read(conn: sqlite3.Connection) -> list[sqlite3.Row]:
        found = {r["id"]: r for r in conn.execute("SELECT id, status, started_at, ended_at FROM runs")}
        return [found[r] for r in run_ids]

    return await engine.store.read(read)


async def settle(engine: Engine, running: int) -> None:
    """Until the store shows ``running`` runs RUNNING and nothing is held; then a moment more, in
    which no further run may start (the limit is what stops them, not the timing)."""

    def count(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT COUNT(*) FROM runs WHERE status='RUNNING'").fetchone()[0])

    deadline = time.monotonic() + 20
    while await engine.store.read(count) < running or engine.orchestrator.held:
        assert time.monotonic() < deadline, f"{engine.orchestrator!r} never had {running} runs going"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    assert await engine.store.read(count) == running


def most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


async def test_at_most_two_runs_per_customer_the_rest_wait_in_order(
    tmp_path: Path, make_engine: MakeEngine
) -> None:
    write_flow(tmp_path / "flows", HELD, HANDLERS)
    engine = await make_engine(tmp_path / "flows", workers=6)
    gates = {name: tmp_path / name for name in ("a1", "a2", "a3", "a4", "b1", "b2")}
    ids = {
        name: await engine.start_run("held", {"customer": name[0], "gate": str(gate)})
        for name, gate in gates.items()
    }
    await settle(engine, 4)
    status = dict(zip(ids, [r["status"] for r in await rows(engine, list(ids.values()))], strict=True))
    assert status == {"a1": "RUNNING", "a2": "RUNNING", "a3": "PENDING", "a4": "PENDING",
                      "b1": "RUNNING", "b2": "RUNNING"}  # fmt: skip
    assert engine.orchestrator.keyed.waiting == 2
    server = TestServer(build_app(engine))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(server.make_url(f"/api/v1/runs/{ids['a4']}")) as resp:
                shown = await resp.json()
            async with http.get(server.make_url("/api/v1/workflows")) as resp:
                (listed,) = (await resp.json())["workflows"]
    finally:
        await server.close()
    assert listed["concurrency"] == {"limit": 2, "key": "{{ event.detail.customer }}"}
    assert shown["status"] == "PENDING"
    assert shown["reason"] == "waiting for concurrency key 'a': 2 runs running, 1 waiting ahead of it"
    gates["a2"].touch()  # one of customer a's ends: the oldest waiting one of a starts, not a4
    assert await engine.orchestrator.wait(ids["a2"], 10) == Status.SUCCEEDED
    await settle(engine, 4)
    a3, a4 = await rows(engine, [ids["a3"], ids["a4"]])
    assert (a3["status"], a4["status"]) == ("RUNNING", "PENDING")
    for gate in gates.values():
        gate.touch()
    done = await asyncio.wait_for(asyncio.gather(*(engine.orchestrator.wait(r) for r in ids.values())), 20)
    assert done == [Status.SUCCEEDED] * 6 and engine.orchestrator.keyed.waiting == 0


async def test_a_waiting_run_can_be_cancelled(tmp_path: Path, make_engine: MakeEngine) -> None:
    write_flow(tmp_path / "flows", HELD, HANDLERS)
    engine = await make_engine(tmp_path / "flows", workers=3)
    gate = tmp_path / "gate"
    ids = [await engine.start_run("held", {"customer": "c", "gate": str(gate)}) for _ in range(3)]
    await settle(engine, 2)
    assert await engine.orchestrator.cancel(ids[2], "not needed") is True
    assert (await rows(engine, ids[2:]))[0]["status"] == Status.CANCELLED
    gate.touch()
    done = await asyncio.wait_for(asyncio.gather(*(engine.orchestrator.wait(r) for r in ids)), 20)
    assert done == [Status.SUCCEEDED, Status.SUCCEEDED, Status.CANCELLED]


async def test_the_limit_and_the_order_hold_across_a_restart(tmp_path: Path, make_engine: MakeEngine) -> None:
    flows, data = tmp_path / "flows", tmp_path / "data"
    write_flow(flows, NAPS)
    first = await make_engine(flows, data_dir=data)
    ids = [await first.start_run("naps", {"customer": "acme"}) for _ in range(5)]
    other = await first.start_run("naps", {"customer": "other"})
    await settle(first, 3)
    before = [r["status"] for r in await rows(first, ids)]
    assert before == ["RUNNING", "RUNNING", "PENDING", "PENDING", "PENDING"]
    await first.stop(grace_s=0)  # the two naps of acme are cut short: they resume RUNNING

    second = await make_engine(flows, data_dir=data)
    await settle(second, 3)
    after = [r["status"] for r in await rows(second, ids)]
    assert after == ["RUNNING", "RUNNING", "PENDING", "PENDING", "PENDING"]  # not a third one of acme
    done = await asyncio.wait_for(asyncio.gather(*(second.orchestrator.wait(r) for r in [*ids, other])), 30)
    assert done == [Status.SUCCEEDED] * 6
    final = await rows(second, ids)
    spans = [(r["started_at"], r["ended_at"]) for r in final]
    assert most_at_once(spans) == 2
    starts = [r["started_at"] for r in final[2:]]
    assert starts == sorted(starts)  # the waiting ones went in the order they came


@pytest.mark.parametrize(
    ("concurrency", "problem"),
    [
        ('{key: "{{ steps.a.output }}", limit: 2}', "may use only event and params"),
        ("{key: x}", "concurrency.limit: is required"),
        ("0", "concurrency"),
        ('{limit: 2, keys: "{{ params.x }}"}', "concurrency.keys: unknown field"),
    ],
)
def test_a_bad_concurrency_is_refused_at_load(tmp_path: Path, concurrency: str, problem: str) -> None:
    path = write_flow(tmp_path, f"name: bad\nconcurrency: {concurrency}\nsteps:\n  a: {{wait: 1s}}\n")
    with pytest.raises(SpecErrors) as info:
        load_file(path)
    assert problem in str(info.value)


# -- kill -9 of a real engine --------------------------------------------------------------------

SERVED = """
name: keyed
concurrency: {key: "{{ event.detail.customer }}", limit: 2}
triggers:
  - event: {pattern: {source: [com.example.crm]}}
steps:
  work: {function: handlers:work}
"""

WORK = """
import time

def work(event, context):
    time.sleep(0.4)
    return event["detail"]["n"]
"""


def _put(base: str, customer: str, n: int) -> None:
    entry = {"Source": "com.example.crm", "DetailType": "Sync", "Detail": {"customer": customer, "n": n}}
    body = json.dumps({"Entries": [entry]}).encode()
    req = urllib.request.Request(base + "/api/v1/events", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["FailedEntryCount"] == 0


def test_kill_9_keeps_the_limit_per_key_and_loses_no_run(tmp_path: Path) -> None:
    write_flow(tmp_path / "flows", SERVED, WORK)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    db = tmp_path / ".sluice" / "sluice.db"
    proc = serve(tmp_path, port)
    try:
        wait_until_sync(lambda: healthy(base), 30, what="the engine answering")
        for n in range(8):
            for customer in ("acme", "globex"):
                _put(base, customer, n)
        time.sleep(0.6)  # the first two of each customer run, the rest wait
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = serve(tmp_path, port)
        wait_until_sync(lambda: healthy(base), 30, what="the engine back")

        def done() -> bool:
            with sqlite3.connect(db) as conn:
                left = conn.execute("SELECT COUNT(*) FROM runs WHERE status IN ('PENDING','RUNNING')")
                return bool(left.fetchone()[0] == 0)

        wait_until_sync(done, 60, what="every run ended")
    finally:
        stop(proc, 30)
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT e.body, r.status, r.started_at, r.ended_at FROM runs r "
            "JOIN events e ON e.id = r.event_id WHERE r.workflow='keyed'"
        ).fetchall()
    assert len(rows) == 16 and {r[1] for r in rows} == {"SUCCEEDED"}
    for customer in ("acme", "globex"):
        mine = [r for r in rows if json.loads(r[0])["detail"]["customer"] == customer]
        assert most_at_once([(r[2], r[3]) for r in mine]) == 2, customer
        by_start = [json.loads(r[0])["detail"]["n"] for r in sorted(mine, key=lambda r: r[2])]
        assert by_start == list(range(8)), customer  # in the order the events came
