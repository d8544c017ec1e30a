"""File-trigger fixtures: a runner on a real folder with real inotify, stopped after the test.

Only the bus is a boundary fake (``RecordingEmit``); the folder, the observer thread and the
kernel's inotify and lease machinery are the real ones.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.triggers import Emitted, MemoryKV, RecordingEmit
from tests.support.waiting import wait_until
from triggers.files import FileTriggerRunner
from triggers.s3 import encode_key

MakeFileTrigger = Callable[..., Any]


class Running:
    """One started runner with its task; ``stop()`` cancels it and waits for the observer to stop."""

    def __init__(self, runner: FileTriggerRunner, emit: RecordingEmit, task: asyncio.Task[None]) -> None:
        self.runner, self.emit, self.task = runner, emit, task

    async def stop(self) -> None:
        if not self.task.done():
            self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def barrier(self, folder: Path, rel: str = "zz-barrier.flag") -> list[Emitted]:
        """Drop a marker file and wait for its event: every earlier event has been delivered by then."""
        before = len(self.emit.events)
        (folder / rel).write_bytes(b"barrier")
        key = encode_key(rel)
        await wait_until(
            lambda: any(e.event["detail"]["object"]["key"] == key for e in self.emit.events[before:])
        )
        return [e for e in self.emit.events if e.event["detail"]["object"]["key"] != key]


@pytest.fixture
async def make_file_trigger(tmp_path: Path) -> AsyncIterator[MakeFileTrigger]:
    """Factory: start a runner on ``tmp_path/inbox`` (or ``path=``); everything it built is stopped."""
    built: list[Running] = []

    async def create(emit: RecordingEmit | None = None, kv: MemoryKV | None = None, **kwargs: Any) -> Running:
        kwargs.setdefault("name", "drop")
        kwargs.setdefault("workflow", "wf")
        kwargs.setdefault("path", tmp_path / "inbox")
        kwargs.setdefault("rescan_s", None)
        kwargs.setdefault("stable_s", 0.3)
        runner = FileTriggerRunner(kv=kv if kv is not None else MemoryKV(), **kwargs)
        emit = emit if emit is not None else RecordingEmit()
        await runner.start()
        running = Running(runner, emit, asyncio.create_task(runner.run(emit)))
        built.append(running)
        return running

    yield create
    for running in built:
        await running.stop()


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def keys(events: list[Emitted]) -> list[str]:
    return [e.event["detail"]["Records"][0]["s3"]["object"]["key"] for e in events]
