"""Interruptible (Spot-like) environments on a real dockerd: a reclaim ends their attempts as AWS's Spot does.

A queue lists the interruptible environment first and an on-demand one second. Reclaiming the
interruptible one kills its attempts with ``Host EC2 (instance i-...) terminated.`` and no exit
code, so an ``evaluate_on_exit`` rule on ``Host EC2*`` retries them (on the on-demand
environment, since the reclaimed one takes nothing until it is enabled again), and a job
without such a rule fails with that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import pytest

from engine.batch import config_rows
from engine.batch.jobs import Job, JobError, JobSpec
from engine.executors.docker_api import DockerClient
from tests.support.batch import MakeBatch, box
from tests.support.docker import TEST_IMAGE, TEST_LABEL
from tests.support.waiting import wait_until as until

pytestmark = pytest.mark.docker
DOCKER_SOCKET = "/var/run/docker.sock"

FIRST_LONG = ["sh", "-c", '[ "$AWS_BATCH_JOB_ATTEMPT" = 1 ] && sleep 30; echo "ran in $AWS_BATCH_CE_NAME"']
SPOT_RETRY = {
    "attempts": 3,
    "evaluate_on_exit": [
        {"on_status_reason": "Host EC2*", "action": "RETRY"},
        {"on_reason": "*", "action": "EXIT"},
    ],
}


async def test_reclaim_fails_attempts_as_spot_does_and_evaluate_on_exit_retries_them(
    batch: MakeBatch,
) -> None:
    svc = await batch(vcpus=2)
    await svc.put_environment(
        {"name": "spot", "max_vcpus": 1, "max_memory": 1 << 30, "interruptible": True}, create=True
    )
    await svc.put_environment({"name": "ondemand", "max_vcpus": 1, "max_memory": 1 << 30}, create=True)
    await svc.put_queue({"name": "cheap", "priority": 1, "environments": ["spot", "ondemand"]}, create=True)
    with pytest.raises(JobError, match="ondemand is not interruptible"):
        await svc.reclaim("ondemand")
    retried = await svc.submit({"queue": "cheap", "container": box(FIRST_LONG, retry_strategy=SPOT_RETRY)})
    lost = await svc.submit({"queue": "cheap", "container": box(FIRST_LONG)})
    ids = [retried["job_id"], lost["job_id"]]
    await until(lambda: all(svc.jobs[j].status == "RUNNING" for j in ids), 30, what="both running")
    assert {svc.jobs[j].environment for j in ids} == {"spot"}  # listed first, so preferred

    out = await svc.reclaim("spot")
    assert sorted(out["interrupted_jobs"]) == sorted(ids) and out["state"] == "DISABLED"
    assert out["reclaimed_at"] is not None
    assert await svc.wait(lost["job_id"], 30) == "FAILED"
    assert await svc.wait(retried["job_id"], 60) == "SUCCEEDED"
    failed = await svc.describe(lost["job_id"])
    assert failed is not None and failed["exit_code"] is None
    reason = failed["status_reason"]
    assert reason.startswith("Host EC2 (instance i-") and reason.endswith(") terminated."), reason
    done = await svc.describe(retried["job_id"])
    assert done is not None
    assert [a["environment"] for a in done["attempts"]] == ["spot", "ondemand"]
    assert done["attempts"][0]["reason"] == reason and done["attempts"][0]["exit_code"] is None

    # reclaimed: it takes no new job until enabled again (even with nothing else free)
    later = await svc.submit({"queue": "cheap", "container": box(["sh", "-c", "echo $AWS_BATCH_CE_NAME"])})
    assert await svc.wait(later["job_id"], 30) == "SUCCEEDED"
    desc = await svc.describe(later["job_id"])
    assert desc is not None and desc["environment"] == "ondemand"
    back = await svc.put_environment({"name": "spot", "state": "ENABLED"}, create=False)
    assert back["reclaimed_at"] is None and back["interruptible"] is True
    again = await svc.submit({"queue": "cheap", "container": box(["true"])})
    assert await svc.wait(again["job_id"], 30) == "SUCCEEDED"
    desc = await svc.describe(again["job_id"])
    assert desc is not None and desc["environment"] == "spot"


async def test_a_reclaimed_environment_stays_reclaimed_across_a_restart(batch: MakeBatch) -> None:
    svc = await batch(vcpus=2)
    await svc.put_environment(
        {"name": "spot", "max_vcpus": 1, "max_memory": 1 << 30, "interruptible": True}, create=True
    )
    await svc.put_queue({"name": "cheap", "priority": 1, "environments": ["spot", "local"]}, create=True)
    await svc.reclaim("spot")
    await svc.aclose()
    await svc.store.close()
    again = await batch(vcpus=2)
    spot = again.envs["spot"]
    assert spot.state == "DISABLED" and spot.reclaimed_at is not None and spot.interruptible
    out = await again.submit({"queue": "cheap", "container": box(["true"])})
    assert await again.wait(out["job_id"], 30) == "SUCCEEDED"
    desc = await again.describe(out["job_id"])
    assert desc is not None and desc["environment"] == "local"


class SocketProxy:
    """A unix socket forwarding to the local dockerd: an engine that can be made to go away."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._handle, self.path)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_unix_connection(DOCKER_SOCKET)
        self._writers += [writer, up_w]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    async def vanish(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.transport.abort()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


async def test_an_interruptible_environment_whose_engine_goes_away_is_reclaimed(
    batch: MakeBatch, tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> None:
    proxy = SocketProxy(str(tmp_path / "docker.sock"))
    await proxy.start()
    svc = await batch(vcpus=2)
    env = {"name": "spot", "max_vcpus": 1, "max_memory": 1 << 30, "interruptible": True}
    await svc.put_environment({**env, "endpoint": f"unix://{proxy.path}"}, create=True)
    await svc.put_queue({"name": "cheap", "priority": 1, "environments": ["spot", "local"]}, create=True)
    stand_in = Job("probe", "probe", "cheap", JobSpec(image=TEST_IMAGE), environment="spot")
    svc.attempts.runner_for(stand_in).reconnect_s = 1.0  # give up on the vanished engine quickly
    out = await svc.submit({"queue": "cheap", "container": box(FIRST_LONG, retry_strategy=SPOT_RETRY)})
    job_id = out["job_id"]
    await until(lambda: svc.jobs[job_id].status == "RUNNING", 30, what="running behind the proxy")
    await proxy.vanish()
    try:
        assert await svc.wait(job_id, 60) == "SUCCEEDED"
        desc = await svc.describe(job_id)
        assert desc is not None and [a["environment"] for a in desc["attempts"]] == ["spot", "local"]
        assert desc["attempts"][0]["reason"].startswith("Host EC2 (instance i-")
        assert svc.envs["spot"].state == "DISABLED" and svc.envs["spot"].reclaimed_at is not None
    finally:  # the "host" was only a proxy: its container is still on the local engine
        for c in await docker_client.list({TEST_LABEL: docker_test_label}, all=True):
            await docker_client.remove(c["Id"], force=True)


async def test_a_restart_between_a_reclaim_and_its_kill_still_kills(batch: MakeBatch) -> None:
    """The crash lands after the reclaim was written and before the attempt was killed: the next
    start finds the attempt running in a reclaimed environment and ends it as a reclaim."""
    svc = await batch(vcpus=2)
    spot = {"name": "spot", "max_vcpus": 1, "max_memory": 1 << 30, "interruptible": True}
    await svc.put_environment(spot, create=True)
    await svc.put_queue({"name": "cheap", "priority": 1, "environments": ["spot", "local"]}, create=True)
    out = await svc.submit({"queue": "cheap", "container": box(FIRST_LONG, retry_strategy=SPOT_RETRY)})
    job_id = out["job_id"]
    await until(lambda: svc.jobs[job_id].status == "RUNNING", 30, what="running on spot")
    await svc.aclose()  # like a crash: the container keeps running
    env = svc.envs["spot"]
    env.state, env.reclaimed_at = "DISABLED", time.time()
    # the reclaim's own write
    await svc.store.write(lambda c: config_rows.save_environment(c, env, time.time()))
    await svc.store.close()
    again = await batch(vcpus=2)
    assert await again.wait(job_id, 60) == "SUCCEEDED"
    desc = await again.describe(job_id)
    assert desc is not None and [a["environment"] for a in desc["attempts"]] == ["spot", "local"]
    assert desc["attempts"][0]["reason"].startswith("Host EC2 (instance i-")
