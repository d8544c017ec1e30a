"""The compute contract: every backend behind ``ComputeRunner`` (Docker, Podman, Slurm) passes one suite.

Start, logs, exit code, OOM, timeout, terminate, labels and limits, and re-adoption after the
engine that started an attempt was killed with SIGKILL. Each backend is real: the local dockerd,
the Podman service of ``.ci/podman-setup.sh``, and the one-node Slurm cluster of
``.ci/slurm-setup.sh`` (whose node runs the same dockerd).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.executors.compute import ComputeRunner
from engine.executors.docker import (
    CANNOT_PULL,
    EXITED,
    OUT_OF_MEMORY,
    TIMED_OUT,
    ContainerRequest,
    ContainerRunner,
)
from engine.executors.docker_api import DockerClient
from engine.executors.podman import PodmanRunner, default_host
from engine.executors.slurm import SlurmConfig, SlurmRunner
from tests.support.docker import TEST_LABEL
from tests.support.paths import ROOT
from tests.support.podman import remove_leftovers
from tests.support.slurm import RESTD_URL, cancel_and_wait, sluice_slurm_jobs
from tests.support.waiting import wait_until

pytestmark = pytest.mark.docker

MakeRequest = Callable[..., ContainerRequest]


@dataclass
class Backend:
    #: docker, podman, slurm (its node runs docker), slurm-podman (its node runs podman), slurm-rest
    #: (through slurmrestd)
    kind: str
    client: DockerClient  #: the engine the containers run on (Slurm's node: the local one)
    shared_dir: str

    def config(self) -> dict[str, Any]:
        runtime = "podman" if self.kind == "slurm-podman" else "docker"
        rest = {"rest_url": RESTD_URL} if self.kind == "slurm-rest" else {}
        return {"shared_dir": self.shared_dir, "poll_s": 0.3, "runtime": runtime, **rest}

    def make(self) -> ComputeRunner:
        """A runner as a freshly started engine has it: knowing nothing of earlier attempts."""
        if self.kind == "docker":
            return ContainerRunner(self.client, pull_timeout_s=10.0)
        if self.kind == "podman":
            return PodmanRunner(self.client, pull_timeout_s=10.0)
        return SlurmRunner(SlurmConfig.from_json(self.config()), pull_timeout_s=10.0)


@pytest.fixture(params=["docker", "podman", "slurm", "slurm-podman", "slurm-rest"])
async def backend(
    request: pytest.FixtureRequest, docker_client: DockerClient, docker_test_label: str, tmp_path: Path
) -> AsyncIterator[Backend]:
    kind: str = request.param
    if kind.startswith("slurm"):
        request.getfixturevalue("slurm_ready")
    if kind.endswith("podman"):
        request.getfixturevalue("podman_ready")
    if kind == "slurm-rest":
        request.getfixturevalue("slurmrestd_ready")
    client = DockerClient(default_host()) if kind.endswith("podman") else docker_client
    shared = tmp_path / "shared"
    shared.mkdir()
    try:
        yield Backend(kind, client, str(shared))
        if kind.startswith("slurm"):  # a failed test may leave its Slurm jobs: cancel them
            mine = f"sluice.job-id={docker_test_label}"
            await cancel_and_wait(lambda j: str(j.get("comment")).startswith(mine), client, docker_test_label)
        if kind.endswith("podman"):
            await remove_leftovers(client, docker_test_label)
    finally:
        if client is not docker_client:
            await client.aclose()


def read(path: str) -> str:
    p = Path(path)
    return p.read_text() if p.exists() else ""


async def handle_of(runner: ComputeRunner, req: ContainerRequest) -> str:
    return str(await wait_until(lambda: runner.running.get((req.job_id, req.attempt)), timeout_s=60))


async def running_container(client: DockerClient, req: ContainerRequest) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        found = await client.list({"sluice.job-id": req.job_id}, all=True)
        if found and found[0].get("State") == "running":
            return dict(await client.inspect(found[0]["Id"]))
        return None

    return dict(await wait_until(find, timeout_s=60, what="the attempt's container to run", step_s=0.2))


async def test_exit_code_logs_and_times(backend: Backend, make_container_request: MakeRequest) -> None:
    runner = backend.make()
    req = make_container_request(command=["sh", "-c", "echo out; echo err >&2; exit 3"])
    result = await runner.run(req)
    assert (result.exit_code, result.status_reason, result.oom_killed, result.timed_out) == (
        3,
        EXITED,
        False,
        False,
    )
    assert sorted(read(req.log_path).splitlines()) == ["err", "out"]
    assert result.started_at and result.stopped_at and result.started_at <= result.stopped_at
    assert abs(result.stopped_at - time.time()) < 60
    await runner.aclose()


async def test_labels_and_limits_are_on_the_container(
    backend: Backend, make_container_request: MakeRequest
) -> None:
    runner = backend.make()
    req = make_container_request(command=["sleep", "3"], labels={"team": "genomics"}, attempt=2)
    task = asyncio.create_task(runner.run(req))
    shown = await running_container(backend.client, req)
    labels = shown["Config"]["Labels"]
    assert labels["sluice.job-id"] == req.job_id and labels["sluice.attempt"] == "2"
    assert labels["team"] == "genomics" and labels[TEST_LABEL] == req.labels[TEST_LABEL]
    host = shown["HostConfig"]
    assert (host["NanoCpus"], host["Memory"], host["MemorySwap"]) == (int(0.5e9), 64 << 20, 64 << 20)
    assert host["Privileged"] is False and host["NetworkMode"] == "none"
    assert (await task).exit_code == 0
    await runner.aclose()


async def test_out_of_memory(backend: Backend, make_container_request: MakeRequest) -> None:
    runner = backend.make()
    # as in tests/executors/test_docker.py: dd far past an 8 MiB limit; the shell lives on 2 s,
    # long enough on a loaded machine for the kill to be seen
    req = make_container_request(
        command=["sh", "-c", "dd if=/dev/zero of=/dev/null bs=50M count=1; sleep 2"], memory_bytes=8 << 20
    )
    result = await runner.run(req)
    assert (result.exit_code, result.status_reason, result.oom_killed) == (137, OUT_OF_MEMORY, True), read(
        req.log_path
    )
    await runner.aclose()


async def test_timeout_sends_term_then_kill(backend: Backend, make_container_request: MakeRequest) -> None:
    runner = backend.make()
    script = 'trap "echo got TERM" TERM; echo ready; while true; do sleep 0.1; done'
    req = make_container_request(command=["sh", "-c", script], timeout_s=1.0, stop_grace_s=1.0)
    result = await runner.run(req)
    assert (result.exit_code, result.status_reason, result.timed_out) == (
        128 + signal.SIGKILL,
        TIMED_OUT,
        True,
    )
    assert read(req.log_path) == "ready\ngot TERM\n"
    await runner.aclose()


async def test_terminate_with_reason(backend: Backend, make_container_request: MakeRequest) -> None:
    runner = backend.make()
    req = make_container_request(command=["sh", "-c", 'trap "" TERM; while true; do sleep 0.1; done'])
    task = asyncio.create_task(runner.run(req))
    await running_container(backend.client, req)
    t0 = time.monotonic()
    await runner.terminate(await handle_of(runner, req), grace_s=1.0, reason="Terminated by user")
    result = await task
    assert time.monotonic() - t0 < 20
    assert (result.exit_code, result.status_reason, result.timed_out) == (137, "Terminated by user", False)
    await runner.aclose()


async def test_missing_image_is_cannot_pull(backend: Backend, make_container_request: MakeRequest) -> None:
    runner = backend.make()
    req = make_container_request(image="sluice-test/does-not-exist:0.0")
    result = await runner.run(req)
    assert (result.exit_code, result.status_reason) == (None, CANNOT_PULL.format(image=req.image))
    await runner.aclose()


_CRASHING_ENGINE = """
import asyncio, json, sys
from engine.executors.docker_api import DockerClient
from engine.executors.docker import ContainerRequest, ContainerRunner
from engine.executors.podman import PodmanRunner, default_host
from engine.executors.slurm import SlurmConfig, SlurmRunner

async def main(kind, config, body):
    req = ContainerRequest(**json.loads(body))
    async with DockerClient(default_host() if kind == "podman" else None) as client:
        if kind == "docker":
            runner = ContainerRunner(client)
        elif kind == "podman":
            runner = PodmanRunner(client)
        else:
            runner = SlurmRunner(SlurmConfig.from_json(json.loads(config)))
        await runner.run(req)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_readopted_after_kill_9_never_started_twice(
    backend: Backend, make_container_request: MakeRequest
) -> None:
    req = make_container_request(command=["sh", "-c", "echo one; sleep 4; echo two; exit 7"])
    fields = {name: getattr(req, name) for name in req.__dataclass_fields__}
    body = json.dumps({**fields, "env": dict(req.env), "labels": dict(req.labels)})
    engine = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CRASHING_ENGINE, backend.kind, json.dumps(backend.config()), body, cwd=ROOT
    )
    try:
        await wait_until(lambda: "one" in read(req.log_path), timeout_s=60, what="the first line")
    finally:
        engine.kill()  # the engine dies mid-attempt; the container (or the Slurm job) runs on
        await engine.wait()
    runner = backend.make()
    mine = [c for c in await runner.find_managed() if c["labels"].get("sluice.job-id") == req.job_id]
    assert len(mine) == 1 and mine[0]["labels"]["sluice.attempt"] == "1"
    result = await runner.adopt(mine[0]["id"], req)
    assert (result.exit_code, result.status_reason) == (7, EXITED)
    assert read(req.log_path) == "one\ntwo\n"  # appended, not repeated

    async def removed() -> bool:  # Slurm's batch script removes it just after writing the result
        return not await backend.client.list({"sluice.job-id": req.job_id}, all=True)

    await wait_until(removed, timeout_s=30, what="the container's removal", step_s=0.2)
    if backend.kind.startswith("slurm"):
        assert len(sluice_slurm_jobs(req.job_id)) == 1  # one sbatch, before the crash
    await runner.aclose()
