"""Dashboard pages over real HTTP (no browser): fan-out progress, masked credentials, HTML errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.support.engines import write_flow
from tests.support.http import Serve

FLOW = """
name: fan
triggers:
  - webhook: {name: hook, secret: "written-in-clear-123"}
params: {items: {type: array, default: [1, 2, 3]}}
steps:
  work: {function: "handlers:double", for_each: "{{ params.items }}", input: {n: "{{ item }}"}}
"""
HANDLERS = "def double(event, context):\n    return event['n'] * 2\n"


async def test_fan_out_progress_masked_yaml_and_html_errors(
    serve: Serve, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    served = await serve(tmp_path / "flows")
    run = await served.engine.run_to_end("fan", timeout_s=30)
    assert run["status"] == "SUCCEEDED", run
    async with http.get(f"{served.url}/runs/{run['run_id']}") as resp:
        page = await resp.text()
    assert '<td class="progress">3/3</td>' in page and "work 3/3" in page
    async with http.get(f"{served.url}/workflows") as resp:
        page = await resp.text()
    assert "written-in-clear-123" not in page and "secret: *****" in page
    async with http.get(f"{served.url}/runs/r-nope", headers={"Accept": "text/html"}) as resp:
        assert resp.status == 404 and "no run r-nope" in await resp.text()
    async with http.get(f"{served.url}/nothing/here", headers={"Accept": "text/html"}) as resp:
        assert resp.status == 404 and resp.content_type == "text/html"
    async with http.get(f"{served.url}/api/v1/nothing", headers={"Accept": "text/html"}) as resp:
        assert resp.status == 404 and resp.content_type == "application/json"


SINGLE = """
name: single
params: {s: {type: number}}
steps:
  only: {function: "handlers:nap", concurrency: 1, input: "{{ params.s }}"}
"""
NAP = "import time\ndef nap(event, context):\n    time.sleep(event)\n    return event\n"


async def test_a_step_waiting_for_a_worker_shows_waiting_on_its_page_and_in_the_api(
    serve: Serve, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    write_flow(tmp_path / "flows", SINGLE, NAP)
    served = await serve(tmp_path / "flows")
    first = await served.engine.start_run("single", {"s": 1.0})
    second = await served.engine.start_run("single", {"s": 0.01})
    for _ in range(500):
        async with http.get(f"{served.url}/api/v1/runs/{second}") as resp:
            run = await resp.json()
        if run["steps"].get("only", {}).get("status") == "WAITING":
            break
        await asyncio.sleep(0.01)
    assert run["steps"]["only"]["status"] == "WAITING" and run["steps"]["only"]["waiting_since"], run
    async with http.get(f"{served.url}/runs/{second}") as resp:
        page = await resp.text()
    assert resp.status == 200 and '<span class="status WAITING">WAITING</span>' in page
    assert "for a worker" in page
    assert await served.engine.orchestrator.wait(second, 30) == "SUCCEEDED"
    assert await served.engine.orchestrator.wait(first, 30) == "SUCCEEDED"
    async with http.get(f"{served.url}/runs/{second}") as resp:
        page = await resp.text()
    assert "s for a worker" in page  # the attempt's line: waited 0.9xs for a worker


FANNED = """
name: fanned
steps:
  each: {function: "handlers:nap", for_each: "{{ [0.0] * 40 }}", input: "{{ item }}"}
"""


async def test_a_few_ms_in_the_queue_is_not_drawn_as_waiting_for_a_worker(
    serve: Serve, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Items of a fan-out queue a few ms each for the warm workers: that is the dispatch itself,
    and a run page saying "waited 0.00s for a worker" forty times is noise."""
    write_flow(tmp_path / "flows", FANNED, NAP)
    served = await serve(tmp_path / "flows")
    run_id = await served.engine.start_run("fanned", {})
    assert await served.engine.orchestrator.wait(run_id, 30) == "SUCCEEDED"
    async with http.get(f"{served.url}/api/v1/runs/{run_id}") as resp:
        attempts = (await resp.json())["attempts"]["each"]
    assert any(0 < (a["waited_s"] or 0) < 0.05 for a in attempts), attempts  # the case at hand
    async with http.get(f"{served.url}/runs/{run_id}") as resp:
        page = await resp.text()
    assert resp.status == 200 and "for a worker" not in page, page
