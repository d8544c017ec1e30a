"""A subscriber that never answers cannot grow its queue without bound.

Each subscriber has a backlog cap (``max_backlog``). At the cap it is paused: its new events go
straight to the dead letters (retry them later with ``sluice notifications dlq retry``), an event
``sluice.notify`` / ``Subscriber State Change`` says so, and the engine stays responsive. Once
its backlog has drained below 90 % of the cap, it is resumed (another state-change event).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.engine import Engine, Settings
from engine.notify.sender import NotifyService
from engine.notify.subscribers import subscribers_from_config
from engine.server import add_notifications
from tests.support.engines import write_flow
from tests.support.waiting import wait_until
from workflows.loader import load_dir

FLOW = """
name: quick
steps:
  one: {function: "handlers:one"}
"""
HANDLERS = "def one(event, context):\n    return 1\n"


async def rows(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await engine.store.read(lambda c: c.execute(sql).fetchall())]


async def test_a_hung_subscriber_is_paused_at_its_cap_and_resumed_when_it_drains(tmp_path: Path) -> None:
    answering = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        if not answering.is_set():
            await asyncio.sleep(3600)  # hangs: the sender's timeout cuts it
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    async with TestServer(app) as server:
        sub = {
            "name": "slow",
            "url": str(server.make_url("/hook")),
            "pattern": {"source": ["load"]},
            "max_backlog": 20,
            "timeout": "0.3s",
            "backoff_base": "0.05s",
            "backoff_cap": "0.2s",
        }
        engine = Engine(
            Settings(data_dir=tmp_path / "data", workers=1, grace_s=1), load_dir(tmp_path / "flows")
        )
        sender: NotifyService = add_notifications(engine, subscribers_from_config([sub]))
        async with engine:
            for i in range(50):
                await engine.bus.put({"source": "load", "detail-type": "tick", "detail": {"i": i}})
            pending = await rows(
                engine, "SELECT COUNT(*) FROM outbox WHERE subscriber='slow' AND status='pending'"
            )
            dead = await rows(
                engine, "SELECT COUNT(*), MIN(last_error) FROM dead_letters WHERE subscriber='slow'"
            )
            assert pending[0][0] == 20 and dead[0][0] == 30, (pending, dead)
            assert "paused" in dead[0][1] and "max_backlog 20" in dead[0][1], dead
            assert sender.backlog()["slow"] == 20
            t0 = time.monotonic()
            assert (await engine.run_to_end("quick", timeout_s=10))["status"] == "SUCCEEDED"
            assert time.monotonic() - t0 < 2, "a hung subscriber slowed the engine"
            answering.set()

            async def resumed() -> list[tuple[Any, ...]]:
                sql = "SELECT body FROM events WHERE source='sluice.notify' ORDER BY seq"
                states = [json.loads(r[0])["detail"]["status"] for r in await rows(engine, sql)]
                return states if states == ["PAUSED", "ACTIVE"] else []

            await wait_until(resumed, 30, what="the subscriber to be resumed")
            await engine.bus.put({"source": "load", "detail-type": "tick", "detail": {"i": 99}})
            await wait_until(lambda: sender.delivered >= 21, 30, what="deliveries after the resume")
            dead_after = await rows(engine, "SELECT COUNT(*) FROM dead_letters WHERE subscriber='slow'")
            assert dead_after[0][0] == 30, "an event after the resume was dead-lettered"
