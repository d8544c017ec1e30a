"""Fixtures for tests against the real one-node Slurm cluster that ``.ci/slurm-setup.sh`` starts.

Mark such tests ``@pytest.mark.slurm``. As for Docker, nothing skips silently in CI: with ``CI``
set and no cluster answering, every Slurm test *fails* saying what to run; elsewhere it skips
with the same reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.batch.service import BatchService
from engine.executors.docker_api import DockerClient
from tests.support.batch import MakeBatch
from tests.support.docker import TEST_LABEL
from tests.support.waiting import wait_until as until

MakeSlurmBatch = Callable[..., Awaitable[BatchService]]


def _probe() -> str | None:
    """None when a node of the cluster is up (idle, mixed or allocated); otherwise why not."""
    if shutil.which("sinfo") is None:
        return "the Slurm client (sinfo) is not installed"
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 10s"
    states = out.stdout.split()
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()[:200]}"
    if not any(s.rstrip("*~#") in ("idle", "mix", "alloc") for s in states):
        return f"no Slurm node is up (states: {states or 'none'})"
    return None


@pytest.fixture(scope="session")
def slurm_ready() -> None:
    """Skip (locally) or fail (when ``CI`` is set) unless the Slurm cluster answers."""
    problem = _probe()
    if problem is None:
        return
    message = f"Slurm is not usable: {problem} (run .ci/slurm-setup.sh as root)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so Slurm tests may not skip. {message}", pytrace=False)
    pytest.skip(message)


#: where .ci/slurm-setup.sh runs slurmrestd (rest_auth/local)
RESTD_URL = "unix:/run/sluice-slurm/slurmrestd.sock"


@pytest.fixture(scope="session")
def slurmrestd_ready(slurm_ready: None) -> str:
    """The ``rest_url`` of the cluster's slurmrestd; skips (locally) or fails (in CI) without one."""
    try:
        out = subprocess.run(
            ["curl", "-sf", "--max-time", "5", "--unix-socket", RESTD_URL[5:], "http://x/slurm/v0.0.38/ping"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        problem = None if out.returncode == 0 else f"no answer on {RESTD_URL} (curl exit {out.returncode})"
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = str(exc)
    if problem is None:
        return RESTD_URL
    message = f"slurmrestd is not usable: {problem} (run .ci/slurm-setup.sh as root)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so slurmrestd tests may not skip. {message}", pytrace=False)
    pytest.skip(message)


def sluice_slurm_jobs(job_id_prefix: str = "") -> list[dict[str, Any]]:
    """Every job Slurm still knows that Sluice submitted (by its comment), any state."""
    out = subprocess.run(["squeue", "--json", "--states=all"], capture_output=True, text=True, timeout=30)
    out.check_returncode()
    return [
        j
        for j in json.loads(out.stdout)["jobs"]
        if str(j.get("comment") or "").startswith(f"sluice.job-id={job_id_prefix}")
    ]


@pytest.fixture
async def slurm_batch(
    slurm_ready: None, batch: MakeBatch, tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> AsyncIterator[MakeSlurmBatch]:
    """Factory of BatchServices with a Slurm environment ``slurm`` behind the queue ``hpc``.

    The shared directory is ``tmp_path/shared``; whatever Slurm job a test leaves is cancelled.
    """
    shared = tmp_path / "shared"
    shared.mkdir(exist_ok=True)
    made: list[BatchService] = []

    async def make(
        vcpus: float = 16,
        memory: int = 16 << 30,
        poll_s: float = 0.3,
        runtime: str = "docker",
        rest_url: str | None = None,
    ) -> BatchService:
        svc = await batch()
        body = {"shared_dir": str(shared), "partition": "debug", "poll_s": poll_s, "runtime": runtime}
        if rest_url:
            body["rest_url"] = rest_url
        if "slurm" in svc.envs:
            await svc.put_environment({"name": "slurm", "slurm": body}, create=False)
        else:
            await svc.put_environment(
                {"name": "slurm", "type": "slurm", "max_vcpus": vcpus, "max_memory": memory, "slurm": body},
                create=True,
            )
        if "hpc" not in svc.queues:
            await svc.put_queue({"name": "hpc", "priority": 5, "environments": ["slurm"]}, create=True)
        made.append(svc)
        return svc

    yield make
    ids = {f"sluice.job-id={j}{tail}" for svc in made for j in svc.jobs for tail in ("", ":%a")}
    await cancel_and_wait(
        lambda j: j.get("comment", "").rsplit(" ", 1)[0] in ids, docker_client, docker_test_label
    )


async def cancel_and_wait(
    match: Callable[[dict[str, Any]], bool], docker_client: DockerClient, docker_test_label: str
) -> None:
    """scancel the pending and running Sluice jobs ``match`` picks, then wait for their containers.

    The batch scripts stop and remove their containers; docker_client's teardown fails a test
    for any container still there, so give them the time."""
    for j in sluice_slurm_jobs():
        if match(j) and j.get("job_state") in ("PENDING", "RUNNING"):
            cancel = await asyncio.create_subprocess_exec("scancel", str(j["job_id"]))
            await asyncio.wait_for(cancel.wait(), 30)

    async def gone() -> bool:
        return not await docker_client.list({TEST_LABEL: docker_test_label}, all=True)

    # 90 s: a batch script's `podman rm -f` once took over 30 s in a fresh-clone CI run
    await until(gone, timeout_s=90, what="the Slurm jobs' containers to go", step_s=0.3)
