"""``/metrics`` (Prometheus text) and ``/readyz`` of the composed server (engine/server.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from engine.config import ServerConfig
from engine.engine import Engine, Settings
from engine.server import Server, compose
from tests.support.engines import write_flow
from tests.support.waiting import wait_until
from workflows.loader import load_dir

FLOW = """
name: quick
steps:
  one: {function: "handlers:one"}
"""
HANDLERS = "def one(event, context):\n    return 1\n"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_and_readiness(tmp_path: Path) -> None:
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    sub = {
        "name": "nobody",
        "url": f"http://127.0.0.1:{closed_port()}/x",
        "pattern": {"source": ["sluice.run"]},
    }
    engine = Engine(
        Settings(data_dir=tmp_path / "data", workers=1, grace_s=1, port=0), load_dir(tmp_path / "flows")
    )
    server: Server = compose(engine, ServerConfig(subscribers=[sub]))
    async with engine, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{server.http.port}"
        assert (await engine.run_to_end("quick", timeout_s=20))["status"] == "SUCCEEDED"
        await wait_until(lambda: server.notify.backlog().get("nobody", 0) >= 1, 10, what="a backlog")
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 200 and resp.content_type == "text/plain"
            text = await resp.text()
        got = samples(text)
        assert got[("sluice_runs", (("state", "SUCCEEDED"), ("workflow", "quick")))] == 1
        assert got[("sluice_function_pool_size", ())] == 1
        assert ("sluice_function_pool_busy", ()) in got and ("sluice_function_pool_waiting", ()) in got
        assert got[("sluice_notify_backlog", (("subscriber", "nobody"),))] >= 1
        assert got[("sluice_events_accepted_total", ())] >= 1
        assert "# TYPE sluice_queue_jobs gauge" in text
        async with http.get(f"{base}/readyz") as resp:
            body = await resp.json()
            assert resp.status == 200 and body["status"] == "ready", body
            assert body["checks"]["store"] == "ok" and body["checks"]["writer"] == "ok"
