"""A standalone BatchService on a real dockerd and a temp store, and job bodies for tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.batch.service import BatchService
from engine.bus.bus import Bus
from engine.executors.docker_api import DockerClient
from engine.store.store import Store
from tests.support.docker import TEST_IMAGE, TEST_LABEL
from tests.support.paths import ROOT

MIB = 1 << 20
MakeBatch = Callable[..., Awaitable[BatchService]]


@pytest.fixture
async def batch(
    tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> AsyncIterator[MakeBatch]:
    """Factory of started BatchServices on a temp store, ``local`` sized as asked.

    ``data`` names the data dir under ``tmp_path``: another name is another engine."""
    made: list[tuple[BatchService, Store, asyncio.Task[None]]] = []

    async def make(
        vcpus: float = 2, memory: int = 2 << 30, reserve_after_s: float = 3600.0, data: str = "data"
    ) -> BatchService:
        store = Store(tmp_path / data / "sluice.db")
        await store.open()
        svc = BatchService(
            store,
            Bus(store, {}),
            tmp_path / data,
            DockerClient(),
            stop_grace_s=1.0,
            reserve_after_s=reserve_after_s,
            pull_timeout_s=5.0,
            tick_s=0.2,
        )
        svc.labels[TEST_LABEL] = docker_test_label
        await svc.start()
        await svc.put_environment({"name": "local", "max_vcpus": vcpus, "max_memory": memory}, create=False)
        made.append((svc, store, asyncio.create_task(svc.run())))
        return svc

    yield make
    for svc, store, task in made:
        task.cancel()
        await svc.aclose()
        await store.close()


def box(command: list[str], **kw: Any) -> dict[str, Any]:
    return {
        "image": TEST_IMAGE,
        "command": command,
        "vcpus": 0.5,
        "memory": 32 * MIB,
        "network": "none",
        **kw,
    }


async def run_job(svc: BatchService, timeout_s: float = 60, **req: Any) -> dict[str, Any]:
    out = await svc.submit({"queue": "default", **req})
    await svc.wait(out["job_id"], timeout_s)
    desc = await svc.describe(out["job_id"])
    assert desc is not None
    return desc


def job_events(conn: sqlite3.Connection, job_id: str) -> list[tuple[str, str | None]]:
    """(status, statusReason) of each ``aws.batch`` job event of ``job_id``, in commit order."""
    out = []
    for (body,) in conn.execute("SELECT body FROM events WHERE source='aws.batch' ORDER BY seq"):
        detail = json.loads(body)["detail"]
        if detail["jobId"] == job_id:
            out.append((detail["status"], detail.get("statusReason")))
    return out


async def killed_midway(script: str, *args: str, timeout_s: float = 60) -> dict[str, Any]:
    """Run ``script`` in a Python of its own, which prints one JSON line and then SIGKILLs itself
    (a crash at a moment the script chose); the line, once the process is surely dead."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", script, *args]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, cwd=ROOT, env=env)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout_s)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL and line, line
    return dict(json.loads(line))
