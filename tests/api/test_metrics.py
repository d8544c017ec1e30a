"""``/metrics`` (Prometheus text) and ``/readyz`` of the composed server (engine/server.py)."""

from __future__ import annotations

import socket
import sqlite3
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
        assert got[("sluice_runs_started_total", (("workflow", "quick"),))] == 1
        assert got[("sluice_runs_ended_total", (("status", "SUCCEEDED"), ("workflow", "quick")))] == 1
        step = (("status", "SUCCEEDED"), ("step", "one"), ("workflow", "quick"))
        assert got[("sluice_step_duration_seconds_count", step)] == 1
        assert 0 < got[("sluice_step_duration_seconds_sum", step)] < 20
        assert got[("sluice_store_commit_latency_seconds_count", ())] >= 3  # the event, RUNNING, the end
        assert got[("sluice_function_pool_size", ())] == 1
        assert ("sluice_function_pool_busy", ()) in got and ("sluice_function_pool_waiting", ()) in got
        assert got[("sluice_notify_backlog", (("subscriber", "nobody"),))] >= 1
        assert got[("sluice_events_accepted_total", (("source", "sluice.manual"),))] == 1
        assert got[("sluice_events_accepted_total", (("source", "sluice.run"),))] == 2  # RUNNING, SUCCEEDED
        assert "# TYPE sluice_queue_jobs gauge" in text
        async with http.get(f"{base}/readyz") as resp:
            body = await resp.json()
            assert resp.status == 200 and body["status"] == "ready", body
            assert body["checks"]["store"] == "ok" and body["checks"]["writer"] == "ok"


async def test_a_scrape_counts_what_happened_not_the_history(tmp_path: Path) -> None:
    """/metrics reads no history: 3,000 runs already in the store are not counted on each scrape
    (a GROUP BY over the runs table cost ~200 ms at a million runs, on every scrape)."""
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    data = tmp_path / "data"
    settings = Settings(data_dir=data, workers=1, grace_s=1, port=0)
    async with Engine(settings, load_dir(tmp_path / "flows")):
        pass  # the schema
    conn = sqlite3.connect(data / "sluice.db")
    with conn:
        conn.executemany(
            "INSERT INTO runs (id, workflow, event_id, origin_id, status, params, created_at) "
            "VALUES (?, 'quick', ?, 'o', 'SUCCEEDED', '{}', 1.0)",
            [(f"r-old{i}", f"e-old{i}") for i in range(3000)],
        )
        conn.executemany(
            "INSERT INTO events (id, source, detail_type, time, received_at, body) "
            "VALUES (?, 'old.source', 'x', '', 1.0, '{}')",
            [(f"e-old{i}",) for i in range(3000)],
        )
    conn.close()
    engine = Engine(settings, load_dir(tmp_path / "flows"))
    server: Server = compose(engine, ServerConfig())
    async with engine, aiohttp.ClientSession() as http:
        assert (await engine.run_to_end("quick", timeout_s=20))["status"] == "SUCCEEDED"
        async with http.get(f"http://127.0.0.1:{server.http.port}/metrics") as resp:
            text = await resp.text()
    got = samples(text)
    assert got[("sluice_runs_ended_total", (("status", "SUCCEEDED"), ("workflow", "quick")))] == 1
    assert "old.source" not in text
    assert not [k for k, v in got.items() if v >= 3000 and not k[0].endswith(("_created", "_bucket"))]
