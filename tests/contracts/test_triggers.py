"""One contract, every trigger that is a service (``triggers.base.Trigger``): files and schedules.

- **ready on start**: once ``start()`` has returned the source is armed; what happens between
  ``start()`` and ``run()`` is not lost.
- **acknowledge after emit**: an event whose ``emit`` failed is offered again until one
  succeeds, and then not again.
- **clean cancel**: cancelling ``run()`` ends it at once and leaves no thread behind.

The webhook trigger keeps the same promises through HTTP (202 only after the commit): its own
tests hold it to them (tests/triggers/test_webhook.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.triggers import MemoryKV, RecordingEmit
from triggers import files as files_module
from triggers import schedule as schedule_module
from triggers.base import EmitResult, Unavailable
from triggers.files import FileTriggerRunner
from triggers.schedule import ScheduleTriggerRunner, parse_schedule


@dataclass
class Case:
    make: Callable[[Path], Any]
    provoke: Callable[[Path], Awaitable[None]]  #: cause one event of the source


def _files(tmp: Path) -> FileTriggerRunner:
    (tmp / "inbox").mkdir(exist_ok=True)
    return FileTriggerRunner(name="drop", workflow="wf", path=tmp / "inbox", kv=MemoryKV(), rescan_s=None)


async def _drop(tmp: Path) -> None:
    (tmp / "inbox" / "one.csv").write_bytes(b"1")


def _schedule(tmp: Path) -> ScheduleTriggerRunner:
    return ScheduleTriggerRunner(
        name="tick", workflow="wf", schedule=parse_schedule("rate(1 second)"), kv=MemoryKV()
    )


async def _wait_a_tick(tmp: Path) -> None:
    return None  # the clock is the source


CASES = {"files": Case(_files, _drop), "schedule": Case(_schedule, _wait_a_tick)}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Case:
    monkeypatch.setattr(files_module, "RETRY_S", 0.2)  # retries on a test's time scale
    monkeypatch.setattr(schedule_module, "RETRY_S", (0.2,))
    return CASES[request.param]


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 2)


async def test_what_happens_after_start_and_before_run_is_not_lost(case: Case, tmp_path: Path) -> None:
    trigger, emit = case.make(tmp_path), RecordingEmit()
    await trigger.start()
    await case.provoke(tmp_path)
    await asyncio.sleep(0.2)  # the run loop is not there yet
    task = asyncio.create_task(trigger.run(emit))
    try:
        await emit.wait_for(1, timeout_s=10)
    finally:
        await _stop(task)


async def test_a_failed_emit_is_offered_again_and_then_not_again(case: Case, tmp_path: Path) -> None:
    seen: list[str | None] = []
    inner = RecordingEmit()

    async def flaky(
        event: dict[str, Any], *, dedupe_key: str | None = None, workflow: str | None = None
    ) -> EmitResult:
        seen.append(dedupe_key)
        if len(seen) <= 2:
            raise Unavailable("the store is busy (test)")
        return await inner(event, dedupe_key=dedupe_key, workflow=workflow)

    trigger = case.make(tmp_path)
    await trigger.start()
    task = asyncio.create_task(trigger.run(flaky))
    try:
        await case.provoke(tmp_path)
        first = (await inner.wait_for(1, timeout_s=10))[0]
    finally:
        await _stop(task)
    assert seen[0] == seen[1] == first.dedupe_key, "the same event was offered again, not another one"
    assert [e.dedupe_key for e in inner.events].count(first.dedupe_key) == 1


async def test_cancelling_run_ends_it_at_once_and_leaves_no_thread(case: Case, tmp_path: Path) -> None:
    before = set(threading.enumerate())
    trigger, emit = case.make(tmp_path), RecordingEmit()
    await trigger.start()
    task = asyncio.create_task(trigger.run(emit))
    await case.provoke(tmp_path)
    await emit.wait_for(1, timeout_s=10)
    await _stop(task)
    for _ in range(50):  # an observer thread is joined by the trigger; give it its moment
        # the loop's own executor threads (asyncio_N) end with the loop; any other is the trigger's
        new = set(threading.enumerate()) - before
        left = [t for t in new if t.is_alive() and not t.name.startswith("asyncio_")]
        if not left:
            break
        await asyncio.sleep(0.05)
    assert not left, f"threads left behind: {left}"
