"""Archive and replay through real engines: the window, the current rules, no duplicates, retention."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from engine.api.notify import routes
from engine.bus import archive
from engine.server import retention_sweeps
from engine.store import retention
from tests.support.engines import MakeEngine, write_flow

HANDLERS = """
def echo(event, context):
    return event
"""

NIGHTLY = """
name: nightly
triggers:
  - {schedule: "rate(1 day)", name: tick}
steps:
  s: {function: handlers:echo, input: {at: "{{ event.time }}"}}
"""

ORDERS = """
name: orders
triggers:
  - event: {pattern: {source: [shop], detail-type: [order]}}
    input: {n: "{{ event.detail.n }}"}
params: {n: {type: integer}}
steps:
  s: {function: handlers:echo, input: {n: "{{ params.n }}"}}
outputs: {n: "{{ steps.s.output.n }}"}
"""


def order(n: int) -> dict[str, Any]:
    return {"source": "shop", "detail-type": "order", "detail": {"n": n}}


async def q(engine: Any, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return await engine.store.read(lambda c: [tuple(r) for r in c.execute(sql, args).fetchall()])


async def settle(engine: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while await q(engine, "SELECT id FROM runs WHERE status IN ('PENDING','RUNNING')"):
        assert time.monotonic() < deadline, "runs did not finish"
        await asyncio.sleep(0.05)


async def test_replay_starts_exactly_the_runs_of_the_window_and_not_again(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    flows = tmp_path / "flows"
    write_flow(flows, NIGHTLY, HANDLERS, name="nightly.yaml")
    first = await make_engine(flows)
    for n in (1, 2):  # before the window
        await first.bus.put(order(n))
    await asyncio.sleep(0.01)
    since = time.time()
    for n in (3, 4, 5):  # no rule matches these yet: archived, nothing started
        await first.bus.put(order(n))
    tick = await first.bus.emitter("nightly", "tick")(
        {"source": "sluice.schedule", "detail-type": "Scheduled Event"}
    )
    await settle(first)
    until = time.time()
    await first.bus.put(order(6))  # after the window
    await first.stop(grace_s=0)

    write_flow(flows, ORDERS, name="orders.yaml")  # a new rule: replay sends old events to it
    engine = await make_engine(flows)
    dry = await archive.replay(engine.bus, since, until, dry_run=True)
    assert sorted((p["workflow"], p["via"]) for p in dry["planned"]) == [("orders", "rule")] * 3
    assert [s["workflow"] for s in dry["skipped"]] == ["nightly"]  # its run exists already
    assert not dry["started"] and len(await q(engine, "SELECT id FROM runs")) == 1

    report = await archive.replay(engine.bus, since, until, name="catch-up")
    await settle(engine)
    started = await q(
        engine,
        "SELECT r.params, r.status, e.replay_name, e.origin_id, r.origin_id FROM runs r "
        "JOIN events e ON e.id = r.event_id WHERE r.workflow='orders'",
    )
    assert sorted(json.loads(r[0])["n"] for r in started) == [3, 4, 5]
    assert all(r[1] == "SUCCEEDED" and r[2] == "catch-up" and r[3] == r[4] for r in started)
    assert len(report["started"]) == 3

    again = await archive.replay(engine.bus, since, until)
    assert not again["started"] and len(again["skipped"]) == 4  # three orders and the tick
    forced = await archive.replay(engine.bus, since, until, workflow="nightly", force=True)
    await settle(engine)
    assert [(s["workflow"]) for s in forced["started"]] == ["nightly"]
    origins = await q(engine, "SELECT origin_id FROM runs WHERE workflow='nightly' ORDER BY created_at")
    assert origins == [(tick.event_id,), (tick.event_id,)]
    assert len(await q(engine, "SELECT id FROM runs")) == 5


async def test_replay_over_http_and_the_cli(
    make_engine: MakeEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flows = tmp_path / "flows"
    write_flow(flows, ORDERS, HANDLERS, name="orders.yaml")
    engine = await make_engine(flows)
    await engine.bus.put({"source": "other", "detail-type": "x", "detail": {}})
    since = time.time() - 60
    from engine.api.app import build_app

    async with TestServer(build_app(engine, [routes(engine.bus, None)])) as server:
        url = str(server.make_url("")).rstrip("/")
        from engine.cli.main import main

        code = await asyncio.to_thread(
            main, ["events", "replay", "--since", "1m", "--dry-run", "--json", "--server", url]
        )
        out = json.loads(capsys.readouterr().out)
        assert code == 0 and out["dry_run"] is True and out["events"] == 0
        code = await asyncio.to_thread(
            main, ["events", "replay", "--since", "yesterday-ish", "--server", url]
        )
        assert code == 2 and "cannot read the time" in capsys.readouterr().err
        code = await asyncio.to_thread(main, ["notifications", "dlq", "list", "--server", url])
        assert code == 0 and "no dead letters" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no workflow named"):
        await archive.replay(engine.bus, since, workflow="nope")


async def test_compaction_keeps_what_unfinished_work_needs(make_engine: MakeEngine, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    write_flow(
        flows,
        """
        name: slow
        steps:
          w: {wait: {seconds: 600}}
        """,
        name="slow.yaml",
    )
    write_flow(flows, ORDERS, HANDLERS, name="orders.yaml")
    engine = await make_engine(flows)
    for n in range(5):
        await engine.bus.put(order(n))
    waiting = await engine.start_run("slow")
    await settle_except(engine, waiting)
    now = time.time()

    def outbox(c: Any) -> None:
        insert = (
            "INSERT INTO outbox (subscriber, url, event_id, body, created_at, next_at, status, delivered_at) "
            "VALUES (?,?,?,?,?,?,?,?)"
        )
        ev = c.execute("SELECT id FROM events WHERE source='shop' ORDER BY seq LIMIT 1").fetchone()[0]
        c.execute(insert, ("g", "http://x/", ev, "{}", now, now, "pending", None))
        c.execute(insert, ("g", "http://x/", "old", "{}", now, now, "delivered", now - 7200))
        c.execute(insert, ("g", "http://x/", "new", "{}", now, now, "delivered", now))

    await engine.store.write(outbox)
    total = len(await q(engine, "SELECT id FROM events"))
    assert await retention.compact(engine.store, retention_sweeps(30), now=now) == {"events": 0, "outbox": 1}
    assert await retention.compact(engine.store, retention_sweeps(0), now=now + 40 * 86400) == {
        "events": 0,
        "outbox": 1,
    }  # 0 = forever
    result = await retention.compact(engine.store, retention_sweeps(30), now=now + 31 * 86400)
    kept = await q(engine, "SELECT source, detail_type FROM events")
    # kept: the slow run's trigger event (it is unfinished) and the event a pending notification carries
    assert result["events"] == total - 2 and len(kept) == 2
    assert ("sluice.manual", "Manual Run") in kept and ("shop", "order") in kept


async def settle_except(engine: Any, run_id: str) -> None:
    deadline = time.monotonic() + 20
    while await q(engine, "SELECT id FROM runs WHERE status IN ('PENDING','RUNNING') AND id != ?", run_id):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


def test_parse_time_forms() -> None:
    assert archive.parse_time("2026-01-31T12:00:00Z") == 1769860800.0
    assert archive.parse_time("1769860800") == 1769860800.0
    assert archive.parse_time("2h", now=10_000.0) == 10_000.0 - 7200
    with pytest.raises(ValueError, match="no zone"):
        archive.parse_time("2026-01-31T12:00:00")
