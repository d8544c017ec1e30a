"""for_each: one attempt chain per item, outputs in item order, and a few hundred items in flight."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.runs.driver import FAN_OUT_LANES
from engine.states import Status
from tests.support.engines import MakeEngine, write_flow

HANDLERS = """
def echo(event, context):
    return event

def square(event, context):
    if event["x"] == event.get("bad"):
        raise KeyError(event["x"])
    return event["x"] * event["x"]

def total(event, context):
    return sum(event["values"])
"""


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    return tmp_path / "flows"


async def test_for_each_fans_out_and_keeps_item_order(make_engine: MakeEngine, flows: Path) -> None:
    write_flow(
        flows,
        """
        name: fan
        params: {n: {type: integer, default: 40}, bad: {type: integer, default: -1}}
        steps:
          items: {function: handlers:echo, input: "{{ range(params.n) | list }}"}
          square:
            needs: [items]
            for_each: "{{ steps.items.output }}"
            function: handlers:square
            input: {x: "{{ item }}", i: "{{ index }}", bad: "{{ params.bad }}"}
          total: {function: handlers:total, needs: [square], input: {values: "{{ steps.square.output }}"}}
        outputs: {total: "{{ steps.total.output }}", first: "{{ steps.square.output[:4] }}"}
        """,
        HANDLERS,
    )
    engine = await make_engine(flows)
    run = await engine.run_to_end("fan", timeout_s=30)
    assert run["status"] == Status.SUCCEEDED, run
    assert run["outputs"] == {"total": sum(i * i for i in range(40)), "first": [0, 1, 4, 9]}
    assert run["steps"]["square"]["items"] == 40
    failed = await engine.run_to_end("fan", {"n": 10, "bad": 7}, timeout_s=30)
    assert failed["status"] == Status.FAILED
    assert failed["steps"]["square"]["error"]["errorMessage"].startswith("1 of 10 items failed; item 7")
    assert failed["steps"]["total"]["status"] == "SKIPPED"


async def test_a_big_fan_out_holds_a_few_hundred_items_in_flight_not_all(
    make_engine: MakeEngine, flows: Path
) -> None:
    """Items start as lanes free up (Step Functions' Map with a concurrency): memory stays flat."""
    write_flow(
        flows,
        """
        name: wide
        params: {n: {type: integer}}
        steps:
          each: {function: handlers:echo, for_each: "{{ range(params.n) | list }}", input: "{{ item }}"}
        outputs: {n: "{{ steps.each.output | length }}", last: "{{ steps.each.output[-1] }}"}
        """,
        HANDLERS,
    )
    engine = await make_engine(flows)
    n, peak = 3 * FAN_OUT_LANES, 0
    run = asyncio.ensure_future(engine.run_to_end("wide", {"n": n}, timeout_s=120))
    while not run.done():
        peak = max(peak, len(asyncio.all_tasks()))
        await asyncio.sleep(0.005)
    summary = await run
    assert summary["outputs"] == {"n": n, "last": n - 1}
    assert peak < FAN_OUT_LANES + 100, f"{peak} tasks at once for {n} items"
