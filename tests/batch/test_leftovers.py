"""Each engine knows its own containers by its store's id: at start, its leftovers of finished
jobs are removed, another engine's containers on the same daemon are left alone without a word,
and one made by an older Sluice (no store label) is still reported, never removed.

Real containers on the machine's Docker engine (and the second dockerd for a host that comes
into service); each test removes what it made.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from engine.batch.service import BatchService
from engine.executors.docker import LABEL_ATTEMPT, LABEL_JOB, LABEL_MANAGED, LABEL_STORE
from engine.executors.docker_api import DockerClient, DockerError
from tests.batch.test_scaling_hosts import pair
from tests.support.batch import MakeBatch, box, run_job
from tests.support.docker import TEST_IMAGE, TEST_LABEL
from tests.support.docker_b import B
from tests.support.waiting import wait_until as until

pytestmark = pytest.mark.docker


async def running(client: DockerClient, test_label: str, labels: dict[str, str]) -> str:
    """A started container with Sluice's labels, as an engine would have left it."""
    cid = await client.create(
        None,
        {
            "Image": TEST_IMAGE,
            "Cmd": ["sleep", "60"],
            "Labels": {LABEL_MANAGED: "true", TEST_LABEL: test_label, **labels},
            "HostConfig": {"NetworkMode": "none"},
        },
    )
    await client.start(cid)
    return cid


async def exists(client: DockerClient, cid: str) -> bool:
    try:
        await client.inspect(cid)
    except DockerError as exc:
        if exc.status == 404:
            return False
        raise
    return True


async def audit_rows(svc: BatchService, kind: str) -> list[tuple[str, dict[str, Any]]]:
    sql = "SELECT subject, detail FROM audit WHERE kind=?"
    found = await svc.store.read(lambda c: c.execute(sql, (kind,)).fetchall())
    return [(r[0], json.loads(r[1])) for r in found]


def read(path: str) -> str:
    return Path(path).read_text()


def said(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and text in r.getMessage()]


async def finished_with_leftover(
    svc: BatchService, client: DockerClient, test_label: str
) -> tuple[dict[str, Any], str]:
    """A job that ended, and a container with its attempt's labels still on the daemon."""
    done = await run_job(svc, container=box(["echo", "hello"]))
    assert done["status"] == "SUCCEEDED"
    labels = {LABEL_JOB: done["job_id"], LABEL_ATTEMPT: "1", LABEL_STORE: str(svc.attempts.store_id)}
    return done, await running(client, test_label, labels)


async def restart(svc: BatchService, batch: MakeBatch) -> BatchService:
    await svc.aclose()
    await svc.store.close()
    return await batch()


async def test_this_engines_leftover_of_a_finished_job_is_removed_at_start(
    batch: MakeBatch, docker_client: DockerClient, docker_test_label: str, caplog: pytest.LogCaptureFixture
) -> None:
    svc = await batch()
    store_id = svc.attempts.store_id
    assert store_id
    done, cid = await finished_with_leftover(svc, docker_client, docker_test_label)
    try:
        again = await restart(svc, batch)
        assert again.attempts.store_id == store_id  # kept in the store, not made anew
        assert not await exists(docker_client, cid)
        log_path = done["attempts"][0]["log_path"]
        assert read(log_path) == "hello\n"  # what it wrote was already in its log
        assert [s for s, _ in await audit_rows(again, "leftover-removed")] == [cid]
        # other engineers' containers on the machine's engine may be reported; none of this test's
        reported = await audit_rows(again, "unknown-container")
        assert [s for s, d in reported if d["labels"].get(TEST_LABEL) == docker_test_label] == []
        assert not said(caplog, logging.WARNING, cid[:12])
    finally:
        if await exists(docker_client, cid):
            await docker_client.remove(cid, force=True)


async def test_a_leftover_whose_log_file_is_missing_is_left_with_what_to_do(
    batch: MakeBatch, docker_client: DockerClient, docker_test_label: str, caplog: pytest.LogCaptureFixture
) -> None:
    svc = await batch()
    done, cid = await finished_with_leftover(svc, docker_client, docker_test_label)
    try:
        log_path = done["attempts"][0]["log_path"]
        os.unlink(log_path)
        again = await restart(svc, batch)
        assert (await docker_client.inspect(cid))["State"]["Running"]
        warned = said(caplog, logging.WARNING, cid[:12])
        assert warned == [
            f"container {cid[:12]} ({(await docker_client.inspect(cid))['Name'].lstrip('/')}) of job "
            f"{done['job_id']} attempt 1 is this engine's and its job is over, but its log file {log_path} "
            f"is missing; leaving it: keep its output with `docker logs {cid[:12]} > FILE`, then "
            f"`docker rm -f {cid[:12]}`"
        ]
        assert cid in [s for s, _ in await audit_rows(again, "unknown-container")]
    finally:
        await docker_client.remove(cid, force=True)


async def test_another_engines_running_container_is_neither_reported_nor_touched(
    batch: MakeBatch, docker_client: DockerClient, caplog: pytest.LogCaptureFixture
) -> None:
    other = await batch(data="other")
    job = (await other.submit({"queue": "default", "container": box(["sleep", "60"])}))["job_id"]
    await until(lambda: other.jobs[job].status == "RUNNING", 30, what="the other engine's job running")
    cid = other.jobs[job].container_id
    assert cid
    try:
        caplog.set_level(logging.DEBUG, logger="engine.batch.leftovers")
        mine = await batch()
        assert mine.attempts.store_id != other.attempts.store_id
        assert (await docker_client.inspect(cid))["State"]["Running"]
        assert not said(caplog, logging.WARNING, cid[:12])
        assert said(caplog, logging.DEBUG, f"{cid[:12]}")  # seen, and known to be another store's
        for kind in ("unknown-container", "leftover-removed"):
            assert cid not in [s for s, _ in await audit_rows(mine, kind)]
        assert other.jobs[job].status == "RUNNING"
    finally:
        await other.terminate(job, "test over")
        assert await other.wait(job, 30) == "FAILED"


async def test_an_old_style_container_without_a_store_label_is_still_reported(
    batch: MakeBatch, docker_client: DockerClient, docker_test_label: str, caplog: pytest.LogCaptureFixture
) -> None:
    cid = await running(docker_client, docker_test_label, {LABEL_JOB: "j-older-sluice", LABEL_ATTEMPT: "1"})
    try:
        svc = await batch()
        name = (await docker_client.inspect(cid))["Name"].lstrip("/")
        assert said(caplog, logging.WARNING, cid[:12]) == [
            f"container {cid[:12]} ({name}) is labelled sluice.managed but belongs to no unfinished job; "
            f"leaving it alone (remove it with `docker rm -f {cid[:12]}` if it is not needed)"
        ]
        assert (await docker_client.inspect(cid))["State"]["Running"]
        assert cid in [s for s, _ in await audit_rows(svc, "unknown-container")]
    finally:
        await docker_client.remove(cid, force=True)


async def test_a_host_that_comes_into_service_is_cleared_of_this_engines_leftovers_first(
    batch: MakeBatch, docker_b: DockerClient, docker_test_label: str
) -> None:
    svc = await batch()
    # a job of this engine that ended while host b was away, its container still on b
    _, cid = await finished_with_leftover(svc, docker_b, docker_test_label)
    try:
        await pair(svc, first=B, second="local")
        job = (await svc.submit({"queue": "p", "container": box(["true"], vcpus=1)}))["job_id"]
        assert await svc.wait(job, 60) == "SUCCEEDED"
        assert not await exists(docker_b, cid)
        assert [s for s, _ in await audit_rows(svc, "leftover-removed")] == [cid]
    finally:
        if await exists(docker_b, cid):
            await docker_b.remove(cid, force=True)
