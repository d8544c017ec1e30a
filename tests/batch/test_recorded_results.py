"""A container's result is recorded before the container is removed, so no crash can lose it.

Under the crash harness 3 of 415 jobs whose container had exited 0 ended FAILED ContainerLost:
the engine died after removing the container and before recording the result. Now the result
row is committed first (``ContainerRunner.on_exited``); after a restart recovery finds either
the container (re-adopted) or the recorded result, never neither.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.executors.docker import ContainerRequest, ContainerResult
from engine.executors.docker_api import DockerClient
from tests.support.batch import MakeBatch, box

pytestmark = pytest.mark.docker


async def test_the_result_row_is_durable_while_the_container_still_exists(
    batch: MakeBatch, docker_client: DockerClient
) -> None:
    svc = await batch()
    runner = svc.attempts.runner
    recorded = runner.on_exited
    assert recorded is not None
    seen: list[tuple[bool, Any]] = []

    async def check(req: ContainerRequest, result: ContainerResult) -> None:
        await recorded(req, result)
        assert result.container_id is not None
        inspected = await docker_client.inspect(result.container_id)  # still there
        row = await svc.store.read(
            lambda c: c.execute(
                "SELECT exit_code, reason FROM job_attempts WHERE job_id=? AND attempt=?",
                (req.job_id, req.attempt),
            ).fetchone()
        )
        seen.append((inspected["State"]["Status"] == "exited", tuple(row)))

    runner.on_exited = check
    out = await svc.submit({"queue": "default", "container": box(["sh", "-c", "exit 3"])})
    assert await svc.wait(out["job_id"], 60) == "FAILED"
    assert seen == [(True, (3, "Essential container in task exited"))]


async def test_a_crash_after_the_container_was_removed_keeps_its_success(
    batch: MakeBatch, docker_client: DockerClient
) -> None:
    svc = await batch()
    runner = svc.attempts.runner
    recorded = runner.on_exited
    assert recorded is not None

    async def record_then_die(req: ContainerRequest, result: ContainerResult) -> None:
        await recorded(req, result)
        raise OSError("the engine died here (after the record, before the job's end)")

    runner.on_exited = record_then_die
    out = await svc.submit({"queue": "default", "container": box(["sh", "-c", "echo done"])})
    job_id = out["job_id"]

    async def stuck_running() -> bool:
        desc = await svc.describe(job_id)
        return desc is not None and desc["status"] == "RUNNING" and not svc.attempts.tasks

    from tests.support.waiting import wait_until

    await wait_until(stuck_running, 30, what="the attempt to die after its record")
    containers = await docker_client.list({"sluice.job-id": job_id}, all=True)
    assert containers == [], "the container was removed before the engine 'died'"
    await svc.aclose()
    await svc.store.close()
    again = await batch()
    assert await again.wait(job_id, 30) == "SUCCEEDED"
    desc = await again.describe(job_id)
    assert desc is not None and desc["exit_code"] == 0 and len(desc["attempts"]) == 1
    assert "ContainerLost" not in (desc["status_reason"] or "")
