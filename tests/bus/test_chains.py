"""Chaining workflows by Run State Change: outputs flow downstream, loops are refused or capped."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from engine.bus.bus import MAX_DEPTH
from tests.support.engines import MakeEngine, write_flow
from tests.support.waiting import wait_until
from workflows.errors import SpecErrors
from workflows.loader import load_dir

HANDLERS = """
def add(event, context):
    return event["n"] + event["by"]
"""


def stage(name: str, upstream: str | list[Any] | None, by: int, *, status: str = "SUCCEEDED") -> str:
    trigger = ""
    if upstream is not None:
        names = json.dumps(upstream if isinstance(upstream, list) else [upstream])
        trigger = f"""
triggers:
  - event:
      pattern: {{source: [sluice.run], detail-type: [Run State Change],
                detail: {{workflow: {names}, status: [{status}]}}}}
    input: {{n: "{{{{ event.detail.outputs.n }}}}"}}
"""
    return f"""
name: {name}
{trigger}
params: {{n: {{type: integer, default: 0}}}}
steps:
  s: {{function: handlers:add, input: {{n: "{{{{ params.n }}}}", by: {by}}}}}
outputs: {{n: "{{{{ steps.s.output }}}}"}}
"""


async def rows(engine: Any, query: str, *args: Any) -> list[Any]:
    return await engine.store.read(lambda c: [tuple(r) for r in c.execute(query, args).fetchall()])


async def until(engine: Any, query: str, want: Any, timeout_s: float = 20.0) -> list[Any]:
    async def check() -> list[Any] | None:
        got = await rows(engine, query)
        return got if want(got) else None

    found: list[Any] = await wait_until(check, timeout_s, what=query)
    return found


async def test_a_then_b_then_c_pass_outputs_along(make_engine: MakeEngine, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    write_flow(flows, stage("a", None, 1), HANDLERS, name="a.yaml")
    write_flow(flows, stage("b", "a", 10), name="b.yaml")
    write_flow(flows, stage("c", "b", 100), name="c.yaml")
    engine = await make_engine(flows)
    first = await engine.run_to_end("a", {"n": 1}, timeout_s=20)
    assert first["outputs"] == {"n": 2}
    done = await until(
        engine,
        "SELECT workflow, status, outputs, depth FROM runs WHERE workflow='c'",
        lambda r: r and r[0][1] in ("SUCCEEDED", "FAILED"),
    )
    assert done[0][1] == "SUCCEEDED" and json.loads(done[0][2]) == {"n": 112}
    b = await rows(engine, "SELECT outputs, depth FROM runs WHERE workflow='b'")
    assert json.loads(b[0][0]) == {"n": 12} and b[0][1] == 1 and done[0][3] == 2


def test_a_self_loop_is_refused_at_load(tmp_path: Path) -> None:
    write_flow(tmp_path, stage("again", "again", 1), HANDLERS, name="again.yaml")
    with pytest.raises(SpecErrors) as info:
        load_dir(tmp_path)
    (err,) = info.value.errors
    assert err.file.endswith("again.yaml") and err.path == "triggers[0].event.pattern"
    assert "again -> again" in str(err) and "starts itself" in str(err)


def test_a_cycle_through_three_workflows_is_refused_naming_it(tmp_path: Path) -> None:
    write_flow(tmp_path, stage("x", "z", 1), HANDLERS, name="x.yaml")
    write_flow(tmp_path, stage("y", "x", 1), name="y.yaml")
    write_flow(tmp_path, stage("z", "y", 1), name="z.yaml")
    write_flow(tmp_path, stage("w", "z", 1), name="w.yaml")  # downstream of the cycle, not part of it
    with pytest.raises(SpecErrors) as info:
        load_dir(tmp_path)
    (err,) = info.value.errors
    assert "x -> y -> z -> x" in str(err)


def test_patterns_that_cannot_loop_or_cannot_be_resolved_load(tmp_path: Path) -> None:
    write_flow(tmp_path, stage("p", None, 1), HANDLERS, name="p.yaml")
    write_flow(tmp_path, stage("q", [{"anything-but": ["q"]}], 1), name="q.yaml")  # every other workflow
    write_flow(tmp_path, stage("r", [{"prefix": "r"}], 1), name="r.yaml")  # dynamic: the bus caps it
    assert set(load_dir(tmp_path)) == {"p", "q", "r"}


def test_a_pattern_on_every_workflow_includes_itself(tmp_path: Path) -> None:
    write_flow(
        tmp_path,
        """
        name: watcher
        triggers:
          - event: {pattern: {source: [sluice.run], detail: {status: [FAILED]}}}
        steps:
          s: {function: handlers:add, input: {n: 1, by: 1}}
        """,
        HANDLERS,
    )
    with pytest.raises(SpecErrors, match="watcher -> watcher"):
        load_dir(tmp_path)


async def test_a_dynamic_loop_stops_at_the_depth_cap_with_an_audit_row(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    flows = tmp_path / "flows"
    write_flow(flows, stage("loop", [{"prefix": "loop"}], 1), HANDLERS, name="loop.yaml")
    engine = await make_engine(flows)
    await engine.run_to_end("loop", {"n": 0}, timeout_s=20)
    audit = await until(engine, "SELECT subject, detail FROM audit WHERE kind='chain-depth'", bool)
    assert audit[0][0] == "loop" and "deeper than" in json.loads(audit[0][1])["reason"]
    runs = await until(
        engine,
        "SELECT depth, status, outputs FROM runs ORDER BY depth",
        lambda r: len(r) == MAX_DEPTH + 1 and all(x[1] == "SUCCEEDED" for x in r),
    )
    assert [r[0] for r in runs] == list(range(MAX_DEPTH + 1))
    assert json.loads(runs[-1][2]) == {"n": MAX_DEPTH + 1}
    await asyncio.sleep(0.3)
    assert len(await rows(engine, "SELECT id FROM runs")) == MAX_DEPTH + 1


def test_many_workflows_that_start_on_any_run_get_one_error_each_not_one_per_cycle(tmp_path: Path) -> None:
    """Ten watchers of every run form ~10^6 cycles; the loader names each self-start and one loop."""
    for i in range(10):
        write_flow(
            tmp_path,
            f"""
            name: watch{i}
            triggers:
              - event: {{pattern: {{source: [sluice.run]}}}}
            steps:
              s: {{function: handlers:add, input: {{n: 1, by: 1}}}}
            """,
            HANDLERS,
            name=f"watch{i}.yaml",
        )
    with pytest.raises(SpecErrors) as info:
        load_dir(tmp_path)
    problems = [str(err) for err in info.value.errors]
    assert len(problems) == 11
    assert sum("starts itself" in p for p in problems) == 10
    assert any("watch0 -> watch1 -> watch0" in p for p in problems)
