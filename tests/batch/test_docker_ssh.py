"""A compute environment on a Docker engine reached over ssh (``docker system dial-stdio``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.batch.jobs import JobError
from tests.support.batch import MakeBatch, box
from tests.support.ssh import Sshd

pytestmark = pytest.mark.docker


def read(path: str) -> str:
    return Path(path).read_text()


async def test_a_job_runs_on_a_docker_engine_over_ssh(batch: MakeBatch, sshd: Sshd) -> None:
    svc = await batch()
    env = {"name": "far", "endpoint": sshd.url, "max_vcpus": 2, "max_memory": 1 << 30}
    keys = {"ssh_identity": str(sshd.identity), "ssh_known_hosts": str(sshd.known_hosts)}
    made = await svc.put_environment({**env, **keys}, create=True)
    assert made["docker"] == keys
    await svc.put_queue({"name": "remote", "priority": 1, "environments": ["far"]}, create=True)
    out = await svc.submit({"queue": "remote", "name": "ssh", "container": box(["echo", "over ssh"])})
    assert await svc.wait(out["job_id"], 90) == "SUCCEEDED"
    desc = await svc.describe(out["job_id"])
    assert desc is not None and desc["environment"] == "far"
    assert read(desc["attempts"][0]["log_path"]) == "over ssh\n"


async def test_a_key_sshd_does_not_know_fails_the_attempt(batch: MakeBatch, sshd: Sshd) -> None:
    svc = await batch()
    env = {"name": "far", "endpoint": sshd.url, "max_vcpus": 2, "max_memory": 1 << 30}
    keys = {"ssh_identity": str(sshd.stranger), "ssh_known_hosts": str(sshd.known_hosts)}
    await svc.put_environment({**env, **keys}, create=True)
    await svc.put_queue({"name": "remote", "priority": 1, "environments": ["far"]}, create=True)
    out = await svc.submit({"queue": "remote", "name": "nope", "container": box(["echo", "never"])})
    assert await svc.wait(out["job_id"], 90) == "FAILED"
    desc = await svc.describe(out["job_id"])
    assert desc is not None and desc["status_reason"].startswith("CannotStartContainerError: "), desc
    with pytest.raises(JobError, match="ssh_identity: for an ssh:// endpoint"):
        await svc.put_environment(
            {**env, "name": "x", "endpoint": "unix:///var/run/docker.sock", **keys}, create=True
        )
