"""A trigger's ``batch:``: one run receives a list of events, committed before the run starts;
``kill -9`` of a real ``sluice serve`` loses none and puts none in two batches."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from engine.api.app import build_app
from engine.bus import archive
from engine.engine import Engine
from engine.states import Status
from tests.support.engines import MakeEngine, write_flow
from tests.support.serving import free_port, healthy, serve, stop
from tests.support.waiting import wait_until_sync
from workflows.errors import SpecErrors
from workflows.loader import load_file

HANDLERS = """
def numbers(event, context):
    return [e["detail"]["n"] for e in event["detail"]["events"]]
"""

FLOW = """
name: batched
triggers:
  - event: {pattern: {source: [com.example.orders]}}
    batch: {max: 5, window: WINDOW}
steps:
  take: {function: handlers:numbers}
outputs: {numbers: "{{ steps.take.output }}"}
"""


def order(n: int) -> dict[str, Any]:
    return {"source": "com.example.orders", "detail-type": "Order Placed", "detail": {"n": n}}


async def batch_runs(engine: Engine) -> list[str]:
    def read(conn: sqlite3.Connection) -> list[str]:
        return [r[0] for r in conn.execute("SELECT id FROM runs WHERE workflow='batched' ORDER BY rowid")]

    return await engine.store.read(read)


async def test_a_batch_closes_at_max_or_when_its_window_ends(tmp_path: Path, make_engine: MakeEngine) -> None:
    write_flow(tmp_path / "flows", FLOW.replace("WINDOW", "1s"), HANDLERS)
    engine = await make_engine(tmp_path / "flows")
    results = await engine.bus.put_many([(order(n), None, None) for n in range(12)])
    assert all(r.run_ids == () for r in results)  # committed, waiting for their batch
    waited = time.monotonic()
    deadline = waited + 10
    while len(await batch_runs(engine)) < 3:
        assert time.monotonic() < deadline, "the batches never closed"
        await asyncio.sleep(0.02)
    assert time.monotonic() - waited >= 0.9  # the last two waited out their window
    run_ids = await batch_runs(engine)
    done = await asyncio.wait_for(asyncio.gather(*(engine.orchestrator.wait(r) for r in run_ids)), 20)
    assert done == [Status.SUCCEEDED] * 3
    outputs = [(await engine.describe_run(r))["outputs"]["numbers"] for r in run_ids]
    assert outputs == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]
    summary = await engine.describe_run(run_ids[0])
    assert summary["trigger"] == "event-1"
    report = await archive.replay(engine.bus, 0.0)  # the 12 orders again, not their 3 batches
    assert len(report["planned"]) == 12 and report["started"] == []
    deadline = time.monotonic() + 10
    while len(again := (await batch_runs(engine))[3:]) < 3:
        assert time.monotonic() < deadline, "the replayed batches never closed"
        await asyncio.sleep(0.02)
    await asyncio.wait_for(asyncio.gather(*(engine.orchestrator.wait(r) for r in again)), 20)
    outputs = [(await engine.describe_run(r))["outputs"]["numbers"] for r in again]
    assert outputs == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]


async def test_waiting_events_survive_a_stop_and_close_after_the_restart(
    tmp_path: Path, make_engine: MakeEngine
) -> None:
    flows, data = tmp_path / "flows", tmp_path / "data"
    write_flow(flows, FLOW.replace("WINDOW", "2s"), HANDLERS)
    first = await make_engine(flows, data_dir=data)
    await first.bus.put_many([(order(n), None, None) for n in range(3)])
    await first.stop(grace_s=0)
    second = await make_engine(flows, data_dir=data)
    deadline = time.monotonic() + 10
    while not await batch_runs(second):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    (run_id,) = await batch_runs(second)
    assert await second.orchestrator.wait(run_id, 10) == Status.SUCCEEDED
    assert (await second.describe_run(run_id))["outputs"]["numbers"] == [0, 1, 2]


HOOKED = """
name: hooked
triggers:
  - webhook: {name: in, auth: none}
    batch: {max: 3, window: 60s}
    input: {count: "{{ event.detail.count }}"}
params: {count: {type: integer}}
steps:
  take: {function: handlers:bodies}
outputs: {count: "{{ params.count }}", bodies: "{{ steps.take.output }}"}
"""

BODIES = """
def bodies(event, context):
    return [e["detail"]["body"]["n"] for e in event["detail"]["events"]]
"""


async def test_a_batched_webhook_acknowledges_each_post_and_runs_once_per_batch(
    tmp_path: Path, make_engine: MakeEngine
) -> None:
    write_flow(tmp_path / "flows", HOOKED, BODIES)
    engine = await make_engine(tmp_path / "flows")
    server = TestServer(build_app(engine))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            answers = []
            for n in range(3):
                async with http.post(server.make_url("/hooks/hooked/in"), json={"n": n}) as resp:
                    answers.append((resp.status, await resp.json()))
            async with http.get(server.make_url("/api/v1/workflows")) as resp:
                (listed,) = (await resp.json())["workflows"]
    finally:
        await server.close()
    assert [(status, body["run_ids"]) for status, body in answers] == [(202, [])] * 3
    assert listed["triggers"][0]["batch"] == {"max": 3, "window_s": 60.0}
    deadline = time.monotonic() + 10
    while True:
        run_ids = await engine.store.read(
            lambda c: [r[0] for r in c.execute("SELECT id FROM runs WHERE workflow='hooked'")]
        )
        if run_ids or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    (run_id,) = run_ids  # the third post filled the batch: no waiting for the 60 s window
    assert await engine.orchestrator.wait(run_id, 10) == Status.SUCCEEDED
    summary = await engine.describe_run(run_id)
    assert summary["outputs"] == {"count": 3, "bodies": [0, 1, 2]}  # input renders once, per batch
    report = await archive.replay(engine.bus, 0.0, force=True)
    assert report["planned"] == []  # the batch is made of events, and is not itself replayed


@pytest.mark.parametrize(
    ("trigger", "problem"),
    [
        ("- schedule: rate(1 minute)\n    batch: {max: 5, window: 1s}", "batch: unknown field"),
        (
            "- event: {pattern: {source: [x]}}\n    batch: {max: 5, window: 0s}",
            "batch.window: must be more than 0s",
        ),
        ("- event: {pattern: {source: [x]}}\n    batch: {window: 5s}", "batch.max: is required"),
        ("- event: {pattern: {source: [x]}}\n    batch: {max: 20000, window: 5s}", "batch.max"),
    ],
)
def test_a_bad_batch_is_refused_at_load(tmp_path: Path, trigger: str, problem: str) -> None:
    path = write_flow(tmp_path, f"name: bad\ntriggers:\n  {trigger}\nsteps:\n  a: {{wait: 1s}}\n")
    with pytest.raises(SpecErrors) as info:
        load_file(path)
    assert problem in str(info.value)


# -- kill -9 of a real engine --------------------------------------------------------------------

SERVED = """
name: batched
triggers:
  - event: {pattern: {source: [com.example.orders]}}
    batch: {max: 20, window: 300ms}
steps:
  take: {function: handlers:numbers}
"""


class Producer(threading.Thread):
    """PutEvents of 10 orders at a time, as fast as the engine takes them; keeps what was acked."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base, self.n, self.acked, self.stop = base, 0, set[int](), threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            numbers = list(range(self.n, self.n + 10))
            self.n += 10
            entries = [
                {"Source": "com.example.orders", "DetailType": "Order", "Detail": {"n": i}} for i in numbers
            ]
            body = json.dumps({"Entries": entries}).encode()
            req = urllib.request.Request(
                self.base + "/api/v1/events", body, {"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    answer = json.loads(resp.read())
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)  # the engine is down: the next engine gets the next numbers
                continue
            if answer["FailedEntryCount"] == 0:
                self.acked.update(numbers)


def test_kill_9_loses_no_batched_event_and_repeats_none(tmp_path: Path) -> None:
    write_flow(tmp_path / "flows", SERVED, HANDLERS)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    db = tmp_path / ".sluice" / "sluice.db"
    proc = serve(tmp_path, port)
    producer = Producer(base)
    try:
        wait_until_sync(lambda: healthy(base), 30, what="the engine answering")
        producer.start()
        for _ in range(3):
            time.sleep(1.2)
            proc.send_signal(signal.SIGKILL)  # mid-stream: events arriving, batches closing
            proc.wait(10)
            proc = serve(tmp_path, port)
            wait_until_sync(lambda: healthy(base), 30, what="the engine back")
        time.sleep(0.5)
        producer.stop.set()
        producer.join(10)

        def settled() -> bool:
            with sqlite3.connect(db) as conn:
                waiting = conn.execute("SELECT COUNT(*) FROM batch_items").fetchone()[0]
                active = conn.execute("SELECT COUNT(*) FROM runs WHERE status IN ('PENDING','RUNNING')")
                return waiting == 0 and active.fetchone()[0] == 0

        wait_until_sync(settled, 60, what="every batch run")
    finally:
        producer.stop.set()
        stop(proc, 30)
    with sqlite3.connect(db) as conn:
        bodies = conn.execute(
            "SELECT e.body, r.status FROM runs r JOIN events e ON e.id = r.event_id "
            "WHERE r.workflow='batched'"
        ).fetchall()
    seen = Counter(ev["detail"]["n"] for body, _ in bodies for ev in json.loads(body)["detail"]["events"])
    print(f"acked {len(producer.acked)} of {producer.n}, {len(bodies)} batches")
    assert len(producer.acked) > 100, "too few events got in to mean anything"
    assert not [n for n, c in seen.items() if c > 1], "an event went into two batches"
    lost = sorted(producer.acked - set(seen))
    assert not lost, f"acknowledged events in no batch: {lost[:10]}"
    assert {status for _, status in bodies} == {"SUCCEEDED"}
    assert max(len(json.loads(body)["detail"]["events"]) for body, _ in bodies) <= 20
