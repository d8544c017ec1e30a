"""Notification throughput, and what a dead subscriber costs the engine.

Run: ``.venv/bin/python bench/notify_throughput.py [events] [runs]``. Prints:

1. notifications/s from the outbox to a fast local aiohttp receiver (events put in batches of 10,
   one subscriber matching them all, concurrency 16): from the first put to the last delivery;
2. engine run throughput (concurrent one-step runs to the end) with no subscriber, and with a
   subscriber on every run state change whose URL refuses connections (a dead receiver).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.engine import Engine, Settings
from engine.notify.subscribers import subscribers_from_config
from engine.server import add_notifications
from workflows.loader import load_dir

FLOW = """
name: job
steps:
  a: {function: handlers:inc, input: {n: 1}}
"""
HANDLERS = "def inc(event, context):\n    return event['n'] + 1\n"


def flows(root: Path) -> Path:
    folder = root / "flows"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.yaml").write_text(textwrap.dedent(FLOW))
    (folder / "handlers.py").write_text(HANDLERS)
    return folder


async def notifications_per_s(root: Path, events: int) -> float:
    got = 0
    done = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        nonlocal got
        await request.read()
        got += 1
        if got >= events:
            done.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with TestServer(app) as server:
        sub = {"url": str(server.make_url("/hook")), "pattern": {"source": ["bench"]}, "concurrency": 16}
        engine = Engine(Settings(data_dir=root / "n", workers=1), load_dir(flows(root)))
        add_notifications(engine, subscribers_from_config([sub]))
        async with engine:
            t0 = time.perf_counter()
            batch = [
                ({"source": "bench", "detail-type": "tick", "detail": {"i": i}}, None, None)
                for i in range(10)
            ]
            await asyncio.gather(*(engine.bus.put_many(batch) for _ in range(events // 10)))
            await asyncio.wait_for(done.wait(), 300)
            return events / (time.perf_counter() - t0)


async def runs_per_s(root: Path, runs: int, dead: bool) -> float:
    engine = Engine(Settings(data_dir=root / ("dead" if dead else "none"), workers=2), load_dir(flows(root)))
    if dead:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        sub = {"url": f"http://127.0.0.1:{port}/hook", "on": ["RUNNING", "SUCCEEDED", "FAILED"]}
        add_notifications(engine, subscribers_from_config([sub]))
    async with engine:
        await asyncio.gather(*(engine.run_to_end("job") for _ in range(50)))  # warm up
        t0 = time.perf_counter()
        await asyncio.gather(*(engine.run_to_end("job") for _ in range(runs)))
        return runs / (time.perf_counter() - t0)


async def main(events: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"notifications/s to a fast local receiver: {await notifications_per_s(root, events):8.0f}")
        none = [await runs_per_s(root / f"a{i}", runs, dead=False) for i in range(3)]
        dead = [await runs_per_s(root / f"b{i}", runs, dead=True) for i in range(3)]
        best_none, best_dead = max(none), max(dead)
        print(f"runs/s, no subscriber (best of 3):       {best_none:8.0f}")
        print(
            f"runs/s, dead subscriber (best of 3):     {best_dead:8.0f}  ({best_dead / best_none - 1:+.1%})"
        )


if __name__ == "__main__":
    asyncio.run(
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000, int(sys.argv[2]) if len(sys.argv) > 2 else 500)
    )
