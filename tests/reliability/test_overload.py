"""Overload: a 10,000-webhook burst from 16 clients on loopback at a real ``sluice serve``.

Every accepted webhook's run ends SUCCEEDED; the engine's peak RSS stays bounded; the health
endpoint keeps answering during the burst. The figures (rate, peak RSS, health p50/p99) are
printed and recorded in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.engines import write_flow
from tests.support.paths import ROOT
from tests.support.serving import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(300)

FLOW = """
name: burst
triggers:
  - webhook: {name: in, auth: none}
steps:
  one: {function: "handlers:one"}
"""
HANDLERS = "def one(event, context):\n    return event['detail']['body']['n']\n"
EVENTS, CLIENTS = 10_000, 16
MAX_RSS_MB = 400


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_server(cwd: Path, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with (cwd / "serve.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "serve", "flows", "--port", str(port)],
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip


async def test_a_ten_thousand_webhook_burst(tmp_path: Path) -> None:
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = await asyncio.to_thread(start_server, tmp_path, port)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS + 2)) as http:

            async def up() -> bool:
                try:
                    async with http.get(base + "/api/v1/health") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(up, 30, what="the server to answer")
            todo = iter(range(EVENTS))
            accepted: list[str] = []
            health: list[float] = []
            done = asyncio.Event()

            async def client() -> None:
                for n in todo:
                    while True:
                        async with http.post(f"{base}/hooks/burst/in", json={"n": n}) as resp:
                            if resp.status == 202:
                                accepted.append((await resp.json())["event_id"])
                                break
                            assert resp.status in (429, 503), await resp.text()
                            await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))

            async def probe() -> None:
                while not done.is_set():
                    t0 = time.perf_counter()
                    async with http.get(base + "/api/v1/health") as resp:
                        assert resp.status == 200
                    health.append(time.perf_counter() - t0)
                    await asyncio.sleep(0.05)

            prober = asyncio.create_task(probe())
            t0 = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(CLIENTS)))
            took = time.perf_counter() - t0
            done.set()
            await prober
        db = tmp_path / ".sluice" / "sluice.db"

        def settled() -> bool:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                left = conn.execute(
                    "SELECT COUNT(*) FROM runs WHERE status IN ('PENDING','RUNNING')"
                ).fetchone()[0]
                return left == 0

        await wait_until(lambda: asyncio.to_thread(settled), 120, what="every run to end")
        rss = peak_rss_mb(proc.pid)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            statuses = dict(conn.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
        assert len(accepted) == EVENTS == len(set(accepted))
        assert statuses == {"SUCCEEDED": EVENTS}, statuses
        p50 = statistics.median(health)
        p99 = statistics.quantiles(health, n=100)[98] if len(health) >= 100 else max(health)
        print(f"overload: {EVENTS} webhooks from {CLIENTS} clients in {took:.1f}s ({EVENTS / took:.0f}/s), "
              f"peak RSS {rss:.0f} MB, health p50 {p50 * 1000:.1f} ms p99 {p99 * 1000:.1f} ms "
              f"({len(health)} probes)")  # fmt: skip
        assert rss < MAX_RSS_MB, f"peak RSS {rss:.0f} MB"
        assert p99 < 2.0, f"health p99 {p99:.2f}s during the burst"
    finally:
        await asyncio.to_thread(stop_server, proc)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
