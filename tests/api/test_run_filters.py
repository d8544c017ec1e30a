"""``GET /api/v1/runs`` filters by trigger and time range, as the dashboard's runs list does."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from tests.support.engines import write_flow
from tests.support.http import Serve

FLOW = """
name: greet
triggers:
  - webhook: {name: hook, auth: none}
steps:
  hello: {function: "handlers:hello"}
"""
HANDLERS = "def hello(event, context):\n    return 'hi'\n"


async def test_filter_runs_by_trigger_and_time(
    serve: Serve, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    served = await serve(tmp_path / "flows")
    manual = await served.engine.run_to_end("greet", timeout_s=20)
    async with http.post(f"{served.url}/hooks/greet/hook?wait=20", json={}) as resp:
        assert resp.status in (200, 202), await resp.text()
        answer = await resp.json()
        hooked = answer.get("run_id") or answer["run_ids"][0]

    async def ids(query: str) -> list[str]:
        async with http.get(f"{served.url}/api/v1/runs?{query}") as resp:
            assert resp.status == 200, await resp.text()
            return [r["run_id"] for r in (await resp.json())["runs"]]

    assert await ids("trigger=manual") == [manual["run_id"]]
    assert await ids("trigger=hook") == [hooked]
    assert sorted(await ids(f"since={time.time() - 600:.0f}")) == sorted([manual["run_id"], hooked])
    assert await ids(f"since={time.time() + 600:.0f}") == []
    assert await ids("until=2000-01-01T00:00:00Z") == []
    async with http.get(f"{served.url}/api/v1/runs?since=yesterday") as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_param"
    async with http.get(f"{served.url}/?trigger=hook&hours=24") as resp:  # the dashboard's filter
        page = await resp.text()
        assert hooked in page and manual["run_id"] not in page
