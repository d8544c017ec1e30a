"""The DAG's levels (networkx's topological generations) in the workflow listing and the dashboard."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from tests.support.engines import write_flow
from tests.support.http import Serve

FLOW = """
name: diamond
steps:
  report: {needs: [left, right], function: "handlers:echo"}
  right: {needs: [top], function: "handlers:echo"}
  left: {needs: [top], function: "handlers:echo"}
  top: {function: "handlers:echo"}
  alone: {function: "handlers:echo"}
"""

HANDLERS = """
def echo(event, context):
    return context.step
"""


async def test_levels_in_the_listing_and_the_run_page(
    serve: Serve, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    api = await serve(write_flow(tmp_path / "flows", FLOW, HANDLERS).parent)
    async with http.get(f"{api.url}/api/v1/workflows") as resp:
        (wf,) = (await resp.json())["workflows"]
    assert wf["levels"] == [["alone", "top"], ["left", "right"], ["report"]]
    run_id = await api.engine.start_run("diamond", {})
    assert await api.engine.orchestrator.wait(run_id, 20) == "SUCCEEDED"
    async with http.get(f"{api.url}/runs/{run_id}") as resp:
        page = await resp.text()
    # the DAG's boxes: one column (x) per level, the levels' steps in order within it
    boxes = re.findall(r'data-step="(\w+)"[^>]*><rect x="([\d.]+)" y="([\d.]+)"', page)
    columns: dict[float, list[str]] = {}
    for name, x, _y in boxes:
        columns.setdefault(float(x), []).append(name)
    assert [columns[x] for x in sorted(columns)] == [["alone", "top"], ["left", "right"], ["report"]]
