"""dockerd restarted under a running job: the job is followed again (re-adopted), never run twice.

A second dockerd of the test's own (its own socket, data root and exec root, ``--live-restore``
so containers survive the daemon's restart, as production daemons are configured) is the
compute environment; the machine's main daemon is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from engine.executors.docker_api import DockerClient, DockerError
from tests.support.batch import MakeBatch, box
from tests.support.docker import TEST_IMAGE
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


class Daemon:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.bridge = f"sluice-d2-{os.getpid() % 100_000}"  # an interface name holds 15 bytes

    def remove_bridge(self) -> None:
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)

    @property
    def endpoint(self) -> str:
        return f"unix://{self.sock}"

    def start(self) -> None:
        # Its own bridge, never --bridge=none: a dockerd started without a bridge deletes the host's
        # docker0 (moby's removeDefaultBridgeInterface), which breaks every other container here.
        subprocess.run(["ip", "link", "add", "name", self.bridge, "type", "bridge"], capture_output=True)
        args = ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
                "--pidfile", str(self.root / "pid"), "-H", self.endpoint, f"--bridge={self.bridge}",
                "--iptables=false", "--ip6tables=false", "--live-restore"]  # fmt: skip
        with (self.root / "dockerd.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


async def answers(endpoint: str) -> bool:
    try:
        async with DockerClient(endpoint, call_timeout_s=2) as client:
            await client.ping()
            return True
    except DockerError:
        return False


@contextlib.contextmanager
def short_root() -> Iterator[Path]:
    """A short path: a unix socket path must stay under ~100 bytes."""
    root = Path(f"/tmp/sluice-d2-{os.getpid()}")
    root.mkdir(exist_ok=True)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def host_bridge_up() -> bool:
    return Path("/sys/class/net/docker0").exists()


@pytest.fixture
async def second_dockerd() -> AsyncIterator[Daemon]:
    if shutil.which("dockerd") is None:
        pytest.skip("no dockerd on this machine (.ci/docker-setup.sh installs it)")
    had_bridge = host_bridge_up()
    with short_root() as root:
        daemon = Daemon(root)
        daemon.start()
        try:
            await wait_until(lambda: answers(daemon.endpoint), 60, what="the second dockerd")
            await asyncio.to_thread(load_image, daemon)
            yield daemon
        finally:
            await asyncio.to_thread(remove_all, daemon)
            await asyncio.to_thread(daemon.stop)
            daemon.remove_bridge()
    assert host_bridge_up() or not had_bridge, "the second dockerd took the host's docker0 away"


def load_image(daemon: Daemon) -> None:
    script = f"docker save {TEST_IMAGE} | docker -H {daemon.endpoint} load"
    subprocess.run(["sh", "-c", script], check=True, capture_output=True, timeout=120)


def remove_all(daemon: Daemon) -> None:
    left = containers(daemon)
    if left:
        subprocess.run(["docker", "-H", daemon.endpoint, "rm", "-f", *left], capture_output=True, timeout=60)


def containers(daemon: Daemon) -> list[str]:
    out = subprocess.run(["docker", "-H", daemon.endpoint, "ps", "-aq"], capture_output=True, text=True)
    return out.stdout.split()


async def test_a_job_survives_its_daemons_restart_and_runs_once(
    batch: MakeBatch, second_dockerd: Daemon
) -> None:
    svc = await batch()
    await svc.put_environment({"name": "d2", "endpoint": second_dockerd.endpoint, "max_vcpus": 2,
                               "max_memory": 1 << 30}, create=True)  # fmt: skip
    await svc.put_queue({"name": "q2", "environments": ["d2"], "priority": 1}, create=True)
    job = box(["sh", "-c", "echo started; sleep 4; echo done"])
    out = await svc.submit({"queue": "q2", "container": job})
    job_id = out["job_id"]
    await wait_until(lambda: job_id in svc.jobs and svc.jobs[job_id].status == "RUNNING", 30, what="RUNNING")
    await asyncio.to_thread(second_dockerd.stop)
    await asyncio.sleep(0.5)
    second_dockerd.start()
    await wait_until(lambda: answers(second_dockerd.endpoint), 60, what="the daemon to come back")
    assert await svc.wait(job_id, 60) == "SUCCEEDED"
    desc = await svc.describe(job_id)
    assert desc is not None and len(desc["attempts"]) == 1, desc["attempts"]
    log = await asyncio.to_thread(Path(desc["attempts"][0]["log_path"]).read_text)
    assert log.count("started") == 1 and "done" in log
    assert containers(second_dockerd) == [], "the container was not removed after its end"
