"""A compute environment of ``type: podman``: jobs on the Podman service's Docker-compatible API.

The compute contract (tests/contracts/test_compute.py) holds the runner to Docker's promises;
these hold the environment: how it is written, and jobs through the queues to it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.batch.jobs import JobError
from engine.batch.service import BatchService
from engine.executors.docker import OUT_OF_MEMORY
from engine.executors.docker_api import DockerClient
from tests.support.batch import MIB, MakeBatch, box
from tests.support.docker import TEST_LABEL

pytestmark = pytest.mark.docker


def read(path: str) -> str:
    return Path(path).read_text()


async def podman_queue(batch: MakeBatch, **env: object) -> BatchService:
    svc = await batch()
    await svc.put_environment(
        {"name": "pm", "type": "podman", "max_vcpus": 2, "max_memory": 1 << 30, **env}, create=True
    )
    await svc.put_queue({"name": "pods", "priority": 1, "environments": ["pm"]}, create=True)
    return svc


async def test_a_job_runs_on_podman_with_its_labels(
    batch: MakeBatch, podman_client: DockerClient, docker_test_label: str
) -> None:
    svc = await podman_queue(batch)
    made = svc.envs["pm"].public()
    assert (made["type"], made["endpoint"]) == ("podman", "local")
    out = await svc.submit(
        {"queue": "pods", "name": "hello", "container": box(["sh", "-c", "echo on podman; exit 4"])}
    )
    assert await svc.wait(out["job_id"], 60) == "FAILED"
    desc = await svc.describe(out["job_id"])
    assert desc["environment"] == "pm" and desc["attempts"][0]["exit_code"] == 4
    assert read(desc["attempts"][0]["log_path"]) == "on podman\n"
    # on Podman, not on the local dockerd; and removed there when it ended
    assert not await podman_client.list({TEST_LABEL: docker_test_label}, all=True)


async def test_the_main_process_killed_for_memory_is_out_of_memory(
    batch: MakeBatch, podman_client: DockerClient
) -> None:
    """Podman 4 reports OOMKilled false; the cgroup watch, set before the command runs, sees it.

    dd is the container's only process here: the container ends the moment the kernel kills it,
    and its cgroup goes with Podman's cleanup right after."""
    svc = await podman_queue(batch)
    hog = box(["dd", "if=/dev/zero", "of=/dev/null", "bs=50M", "count=1"], memory=8 * MIB)
    out = await svc.submit({"queue": "pods", "name": "hog", "container": hog})
    assert await svc.wait(out["job_id"], 60) == "FAILED"
    desc = await svc.describe(out["job_id"])
    assert desc["attempts"][0]["exit_code"] == 137 and desc["status_reason"].startswith(OUT_OF_MEMORY)


async def test_a_podman_environment_is_written_as_its_service_allows(
    batch: MakeBatch, podman_client: DockerClient, tmp_path: Path
) -> None:
    svc = await batch()
    base = {"name": "pm", "type": "podman", "max_vcpus": 1, "max_memory": 1 << 30}
    with pytest.raises(JobError, match="endpoint: a Podman environment is reached through its service"):
        await svc.put_environment({**base, "endpoint": "ssh://me@far"}, create=True)
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    files = {"tls_ca": str(pem), "tls_cert": str(pem), "tls_key": str(pem)}
    with pytest.raises(JobError, match="tls_ca: podman system service serves no TLS"):
        await svc.put_environment({**base, "endpoint": "tcp://127.0.0.1:8888", **files}, create=True)
    assert "pm" not in svc.envs
    made = await svc.put_environment({**base, "endpoint": "unix:///run/podman/podman.sock"}, create=True)
    assert made["endpoint"] == "unix:///run/podman/podman.sock"
    with pytest.raises(JobError, match="type: environment pm is podman; make a new environment for docker"):
        await svc.put_environment({"name": "pm", "type": "docker"}, create=False)


async def test_a_queue_spills_over_from_docker_to_podman(
    batch: MakeBatch, podman_client: DockerClient, docker_test_label: str
) -> None:
    svc = await batch(vcpus=0.5)  # local Docker holds one 0.5-vCPU job at a time
    await svc.put_environment(
        {"name": "pm", "type": "podman", "max_vcpus": 1, "max_memory": 1 << 30}, create=True
    )
    await svc.put_queue({"name": "mixed", "priority": 1, "environments": ["local", "pm"]}, create=True)
    outs = [
        await svc.submit(
            {"queue": "mixed", "name": f"j{i}", "container": box(["sh", "-c", "sleep 2; echo ok"])}
        )
        for i in range(2)
    ]
    for out in outs:
        assert await svc.wait(out["job_id"], 60) == "SUCCEEDED"
    envs = sorted([(await svc.describe(o["job_id"]) or {})["environment"] for o in outs])
    assert envs == ["local", "pm"]  # the second did not wait for Docker: Podman had room
