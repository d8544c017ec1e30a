"""Dashboard pages over real HTTP (no browser): fan-out progress, masked credentials, HTML errors."""

from __future__ import annotations

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
