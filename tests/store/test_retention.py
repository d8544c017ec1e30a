"""Retention of run history: finished runs go by age and by count, with their steps, attempts and
logs; unfinished runs stay; the freed pages go back to the file system."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from engine.server import retention_sweeps
from engine.store import retention
from engine.store.retention import RunSweep
from tests.support.engines import MakeEngine, write_flow

HANDLERS = """
import time

def say(event, context):
    print("said", event)
    return event

def hold(event, context):
    time.sleep(30)
"""

SAY = """
name: say
steps:
  s: {function: handlers:say}
"""

HOLD = """
name: hold
steps:
  s: {function: handlers:hold}
"""


async def rows(engine: Any, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return await engine.store.read(lambda c: [tuple(r) for r in c.execute(sql, args).fetchall()])


async def test_runs_go_by_count_and_age_with_steps_attempts_and_logs(
    tmp_path: Path, make_engine: MakeEngine
) -> None:
    flows = tmp_path / "flows"
    write_flow(flows, SAY, HANDLERS)
    write_flow(flows, HOLD, name="hold.yaml")
    engine = await make_engine(flows, workers=2)
    done = [(await engine.run_to_end("say", {"n": i}, timeout_s=20))["run_id"] for i in range(8)]
    held = await engine.start_run("hold")
    logs = engine.orchestrator.logs_dir
    assert all((logs / run_id).is_dir() for run_id in done)

    sweep = RunSweep(90, 3, lambda: list(engine.catalog), logs)
    assert (await retention.compact(engine.store, retention_sweeps(30, sweep)))["runs"] == 5
    kept = {r[0] for r in await rows(engine, "SELECT id FROM runs WHERE workflow='say'")}
    assert kept == set(done[-3:]), "the newest three finished runs stay"
    gone = done[:5]
    marks = ",".join("?" * len(gone))
    for table in ("steps", "attempts"):
        assert not await rows(engine, f"SELECT 1 FROM {table} WHERE run_id IN ({marks})", *gone)
    assert not any((logs / run_id).exists() for run_id in gone)
    assert all((logs / run_id).is_dir() for run_id in done[-3:])

    # 91 days on: every finished run is past its age; the one still running is not touched
    later = time.time() + 91 * 86400
    sweep = RunSweep(90, 0, lambda: list(engine.catalog), logs)
    assert (await retention.compact(engine.store, retention_sweeps(0, sweep), now=later))["runs"] == 3
    assert await rows(engine, "SELECT id, status FROM runs") == [(held, "RUNNING")]
    free, auto = (
        (await rows(engine, "PRAGMA freelist_count"))[0][0],
        (await rows(engine, "PRAGMA auto_vacuum"))[0][0],
    )
    assert auto == 2 and free == 0, "the freed pages went back to the file system"
    await engine.orchestrator.cancel(held)


async def test_zero_keeps_runs_forever(tmp_path: Path, make_engine: MakeEngine) -> None:
    flows = tmp_path / "flows"
    write_flow(flows, SAY, HANDLERS)
    engine = await make_engine(flows)
    await engine.run_to_end("say", {"n": 1}, timeout_s=20)
    sweep = RunSweep(0, 0, lambda: list(engine.catalog), engine.orchestrator.logs_dir)
    later = time.time() + 10_000 * 86400
    assert (await retention.compact(engine.store, retention_sweeps(0, sweep), now=later))["runs"] == 0
    assert len(await rows(engine, "SELECT id FROM runs")) == 1
