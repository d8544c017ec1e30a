"""ContainerRunner and DockerClient against a real dockerd and the local busybox image."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.executors.docker import (
    CANNOT_PULL,
    EXITED,
    NEVER_STARTED,
    OUT_OF_MEMORY,
    TIMED_OUT,
    ContainerRequest,
    ContainerResult,
    ContainerRunner,
    container_config,
)
from engine.executors.docker_api import DockerClient, DockerError, _split_ref
from tests.support.paths import ROOT
from tests.support.waiting import wait_until

pytestmark = pytest.mark.docker

MakeRequest = Callable[..., ContainerRequest]
REPO = ROOT


def read(path: str) -> str:
    p = Path(path)
    return p.read_text() if p.exists() else ""


async def running_id(runner: ContainerRunner, req: ContainerRequest) -> str:
    return await wait_until(lambda: runner.running.get((req.job_id, req.attempt)))


# -- DockerClient ----------------------------------------------------------------------


def test_split_ref() -> None:
    assert _split_ref("busybox:1.36") == ("busybox", "1.36")
    assert _split_ref("busybox") == ("busybox", "latest")
    assert _split_ref("localhost:5000/team/app") == ("localhost:5000/team/app", "latest")
    assert _split_ref("localhost:5000/app:2") == ("localhost:5000/app", "2")
    assert _split_ref("app@sha256:abc") == ("app@sha256:abc", None)


async def test_client_daemon_calls(docker_client: DockerClient) -> None:
    assert await docker_client.ping() is True
    info = await docker_client.info()
    assert info["NCPU"] >= 1 and info["MemTotal"] > 0
    assert "ApiVersion" in await docker_client.version()
    assert await docker_client.image_exists("busybox:1.36")
    assert not await docker_client.image_exists("sluice-test/nothing:0")
    with pytest.raises(DockerError) as err:
        await docker_client.inspect("sluice-no-such-container")
    assert err.value.status == 404 and "No such container" in err.value.message


async def test_client_unreachable_is_clear() -> None:
    async with DockerClient("unix:///nonexistent/docker.sock") as client:
        with pytest.raises(DockerError) as err:
            await client.ping()
    assert err.value.status == 0 and "/nonexistent/docker.sock" in err.value.message
    with pytest.raises(DockerError, match="unix:///"):
        DockerClient("npipe:////./pipe/docker_engine")


async def test_client_pull_fails_fast(docker_client: DockerClient) -> None:
    started = time.monotonic()
    with pytest.raises(DockerError):
        await docker_client.pull("sluice-test/does-not-exist:0", timeout_s=10)
    assert time.monotonic() - started < 11


async def test_client_logs_demux_and_list(docker_client: DockerClient, docker_test_label: str) -> None:
    config = {
        "Image": "busybox:1.36",
        "Cmd": ["sh", "-c", "echo out; echo err >&2; exit 4"],
        "Labels": {"sluice.test": docker_test_label},
        "HostConfig": {"NetworkMode": "none"},
    }
    cid = await docker_client.create(None, config)
    try:
        await docker_client.start(cid)
        assert await docker_client.wait(cid) == 4
        chunks = [item async for item in docker_client.logs(cid, follow=True)]
        assert sorted(chunks) == [("stderr", b"err\n"), ("stdout", b"out\n")]
        listed = await docker_client.list({"sluice.test": docker_test_label})
        assert [c["Id"] for c in listed] == [cid]
    finally:
        await docker_client.remove(cid, force=True)


# -- ContainerRunner: run --------------------------------------------------------------


async def test_limits_labels_and_security_applied_while_running(
    container_runner: ContainerRunner, docker_client: DockerClient, make_container_request: MakeRequest
) -> None:
    req = make_container_request(
        command=["sleep", "30"], vcpus=0.5, memory_bytes=48 << 20, labels={"team": "a"}, stop_grace_s=0.5
    )
    task = asyncio.create_task(container_runner.run(req))
    cid = await running_id(container_runner, req)
    info = await wait_until(lambda: _running_inspect(docker_client, cid))
    host, config = info["HostConfig"], info["Config"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == host["MemorySwap"] == 48 << 20
    assert host["Privileged"] is False and host["NetworkMode"] == "none"
    assert config["Labels"]["sluice.managed"] == "true"
    assert config["Labels"]["sluice.job-id"] == req.job_id and config["Labels"]["sluice.attempt"] == "1"
    assert config["Labels"]["team"] == "a"
    assert config["Cmd"] == ["sleep", "30"] and config["Tty"] is False
    # cancelling run() is how the engine terminates an attempt: stop, remove, re-raise
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(DockerError) as err:
        await docker_client.inspect(cid)
    assert err.value.status == 404


async def _running_inspect(client: DockerClient, cid: str) -> dict[str, Any] | None:
    info = await client.inspect(cid)
    return info if info["State"]["Running"] else None


async def test_env_values_and_argv_stay_literal(
    container_runner: ContainerRunner, make_container_request: MakeRequest
) -> None:
    payload = "$(rm -rf /); `id`; echo pwned && true"
    req = make_container_request(
        command=["sh", "-c", 'printf "[%s]\\n" "$GREETING" "$PAYLOAD" "$1"', "sh", payload],
        env={"GREETING": "hello world", "PAYLOAD": payload},
    )
    result = await container_runner.run(req)
    assert (result.exit_code, result.status_reason) == (0, EXITED)
    assert read(req.log_path) == f"[hello world]\n[{payload}]\n[{payload}]\n"
    echo = make_container_request(command=["echo", payload, "$HOME"])
    assert (await container_runner.run(echo)).exit_code == 0
    assert read(echo.log_path) == f"{payload} $HOME\n"


async def test_volumes_user_workdir_and_network(
    container_runner: ContainerRunner, make_container_request: MakeRequest, tmp_path: Path
) -> None:
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir(mode=0o777)
    ro.mkdir()
    rw.chmod(0o777)  # the container user is nobody
    (ro / "in.txt").write_text("input")
    script = "id -u; pwd; cat /in/in.txt; echo; echo made >/out/out.txt; touch /in/x 2>&- || echo ro-refused"
    req = make_container_request(
        command=["sh", "-c", script],
        volumes=[(str(rw), "/out", False), (str(ro), "/in", True)],
        user="65534",
        working_dir="/tmp",
    )
    result = await container_runner.run(req)
    assert result.exit_code == 0
    assert read(req.log_path).splitlines()[:3] == ["65534", "/tmp", "input"]
    assert "ro-refused" in read(req.log_path)
    assert (rw / "out.txt").read_text() == "made\n"
    assert not (ro / "x").exists()

    bridged = make_container_request(command=["ip", "-o", "link"], network=None)
    isolated = make_container_request(command=["ip", "-o", "link"], network="none")
    await asyncio.gather(container_runner.run(bridged), container_runner.run(isolated))
    assert "eth0" in read(bridged.log_path)
    assert "eth0" not in read(isolated.log_path) and "lo" in read(isolated.log_path)


async def test_exit_codes_and_times(
    container_runner: ContainerRunner, make_container_request: MakeRequest, docker_leftovers: Any
) -> None:
    reqs = [
        make_container_request(command=["sh", "-c", f"echo to-stderr >&2; exit {code}"])
        for code in (0, 3, 255)
    ]
    results = await asyncio.gather(*(container_runner.run(r) for r in reqs))
    assert [r.exit_code for r in results] == [0, 3, 255]
    for req, result in zip(reqs, results, strict=True):
        assert result.status_reason == EXITED and not result.oom_killed and not result.timed_out
        assert result.started_at and result.stopped_at and result.started_at <= result.stopped_at
        assert abs(result.stopped_at - time.time()) < 60
        assert read(req.log_path) == "to-stderr\n"
    assert await docker_leftovers() == []


async def test_oom_kill_is_reported(
    container_runner: ContainerRunner, make_container_request: MakeRequest
) -> None:
    # dd fills a 50 MB buffer: far past an 8 MiB limit with no swap, so the kernel kills it (it is
    # by far the biggest process). The shell then lives on for a moment: with cgroup v1, dockerd
    # learns of the OOM kill from an event that a container whose last process died at once can
    # outrun under CPU load (OOMKilled stays false, ~1 run in 3 with two busy loops beside it).
    # (A pipeline of helpers was flaky too: the kernel may kill a helper and the shell carries on.)
    req = make_container_request(
        command=["sh", "-c", "dd if=/dev/zero of=/dev/null bs=50M count=1; sleep 2"],
        memory_bytes=8 << 20,
    )
    result = await container_runner.run(req)
    assert result.oom_killed is True
    assert (result.exit_code, result.status_reason) == (137, OUT_OF_MEMORY)
    assert "records out" not in read(req.log_path)  # dd never finished its copy


async def test_timeout_sends_term_then_kill(
    container_runner: ContainerRunner, make_container_request: MakeRequest
) -> None:
    # The shell traps TERM, says so and keeps going: only the SIGKILL after the grace ends it.
    script = 'trap "echo got TERM" TERM; echo ready; while true; do sleep 0.1; done'
    req = make_container_request(command=["sh", "-c", script], timeout_s=1.0, stop_grace_s=1.0)
    started = time.monotonic()
    result = await container_runner.run(req)
    elapsed = time.monotonic() - started
    assert result.timed_out is True
    assert (result.exit_code, result.status_reason) == (128 + signal.SIGKILL, TIMED_OUT)
    assert read(req.log_path) == "ready\ngot TERM\n"
    assert 2.0 <= elapsed < 15


async def test_timeout_with_polite_exit(
    container_runner: ContainerRunner, make_container_request: MakeRequest
) -> None:
    script = 'trap "echo bye; exit 143" TERM; while true; do sleep 0.1; done'
    req = make_container_request(command=["sh", "-c", script], timeout_s=0.5, stop_grace_s=10)
    started = time.monotonic()
    result = await container_runner.run(req)
    assert (result.exit_code, result.status_reason, result.timed_out) == (143, TIMED_OUT, True)
    assert time.monotonic() - started < 8  # did not sit out the 10 s grace
    assert read(req.log_path) == "bye\n"


async def test_missing_image_fails_fast_and_leaves_nothing(
    container_runner: ContainerRunner, make_container_request: MakeRequest, docker_leftovers: Any
) -> None:
    req = make_container_request(image="sluice-test/does-not-exist:0.0")
    started = time.monotonic()
    result = await container_runner.run(req)
    assert time.monotonic() - started < 12
    assert result == ContainerResult(None, None, CANNOT_PULL.format(image=req.image))
    assert result.status_reason.startswith("CannotPullContainerError: ")
    assert await docker_leftovers() == []


async def test_unstartable_command_is_reported_and_removed(
    container_runner: ContainerRunner, make_container_request: MakeRequest, docker_leftovers: Any
) -> None:
    req = make_container_request(command=["/no/such/binary"])
    result = await container_runner.run(req)
    assert result.exit_code is None or result.exit_code != 0
    assert result.status_reason.startswith(("CannotStartContainerError: ", EXITED))
    assert await docker_leftovers() == []


async def test_logs_stream_while_running(
    container_runner: ContainerRunner, make_container_request: MakeRequest
) -> None:
    req = make_container_request(command=["sh", "-c", "echo first; echo err-first >&2; sleep 2; echo second"])
    task = asyncio.create_task(container_runner.run(req))
    await wait_until(lambda: "first" in read(req.log_path) and "err-first" in read(req.log_path))
    assert not task.done(), "the log file must grow before the container exits"
    assert "second" not in read(req.log_path)
    result = await task
    assert result.exit_code == 0
    assert read(req.log_path).endswith("second\n")


async def test_terminate_with_reason(
    container_runner: ContainerRunner, make_container_request: MakeRequest
) -> None:
    req = make_container_request(command=["sh", "-c", 'trap "" TERM; while true; do sleep 0.1; done'])
    task = asyncio.create_task(container_runner.run(req))
    cid = await running_id(container_runner, req)
    await wait_until(lambda: _running_inspect(container_runner.client, cid))
    started = time.monotonic()
    await container_runner.terminate(cid, grace_s=0.5, reason="Terminated by user")
    result = await task
    assert time.monotonic() - started < 10
    assert (result.exit_code, result.status_reason, result.timed_out) == (137, "Terminated by user", False)


async def test_runs_overlap(container_runner: ContainerRunner, make_container_request: MakeRequest) -> None:
    reqs = [make_container_request(command=["sleep", "2"]) for _ in range(4)]
    started = time.monotonic()
    results = await asyncio.gather(*(container_runner.run(r) for r in reqs))
    assert [r.exit_code for r in results] == [0, 0, 0, 0]
    assert time.monotonic() - started < 7, "four 2 s containers must overlap, not queue"


async def test_container_removed_behind_our_back(
    container_runner: ContainerRunner, docker_client: DockerClient, make_container_request: MakeRequest
) -> None:
    req = make_container_request(command=["sleep", "30"])
    task = asyncio.create_task(container_runner.run(req))
    cid = await running_id(container_runner, req)
    # removed while it runs: its id is known at create, and a removal before the start is another
    # case (the start fails, CannotStartContainerError)
    await wait_until(lambda: _running_inspect(docker_client, cid), 20)
    await docker_client.remove(cid, force=True)
    result = await task  # a result, not an exception: the engine itself is fine
    # Whether `wait` or `inspect` sees the kill first or the removal is up to dockerd.
    lost = result.exit_code is None and result.status_reason.startswith("ContainerLost: ")
    killed = result.exit_code == 137 and result.status_reason == EXITED
    assert lost or killed, result


# -- recovery: find_managed, adopt -----------------------------------------------------

_CRASHING_ENGINE = """
import asyncio, json, sys
from engine.executors.docker_api import DockerClient
from engine.executors.docker import ContainerRequest, ContainerRunner
async def main():
    req = ContainerRequest(**json.loads(sys.argv[1]))
    async with DockerClient() as client:
        await ContainerRunner(client).run(req)
asyncio.run(main())
"""


def _as_json(req: ContainerRequest) -> str:
    fields = {name: getattr(req, name) for name in req.__dataclass_fields__}
    return json.dumps({**fields, "env": dict(req.env), "labels": dict(req.labels)})


async def test_adopt_running_container_after_engine_kill(
    docker_client: DockerClient, make_container_request: MakeRequest, docker_leftovers: Any
) -> None:
    req = make_container_request(
        command=["sh", "-c", "echo one; sleep 4; echo two; exit 7"], labels={"sluice.test-case": "adopt"}
    )
    engine = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CRASHING_ENGINE, _as_json(req), cwd=REPO
    )
    try:
        await wait_until(lambda: "one" in read(req.log_path))
    finally:
        engine.kill()  # kill -9: the engine dies mid-attempt, the container keeps running
        await engine.wait()

    runner = ContainerRunner(docker_client)  # a new engine, knowing nothing but labels
    managed = [c for c in await runner.find_managed() if c["labels"].get("sluice.job-id") == req.job_id]
    assert len(managed) == 1 and managed[0]["state"] == "running"
    assert managed[0]["labels"]["sluice.attempt"] == "1"
    result = await runner.adopt(managed[0]["id"], req)
    assert (result.exit_code, result.status_reason) == (7, EXITED)
    assert read(req.log_path) == "one\ntwo\n"  # appended, not repeated
    assert await docker_leftovers() == []


async def test_adopt_exited_and_never_started(
    docker_client: DockerClient, make_container_request: MakeRequest, docker_leftovers: Any
) -> None:
    runner = ContainerRunner(docker_client)
    done = make_container_request(command=["sh", "-c", "echo finished; exit 5"])
    cid = await docker_client.create(None, container_config(done))
    await docker_client.start(cid)
    await docker_client.wait(cid)
    result = await runner.adopt(cid, done)
    assert (result.exit_code, result.status_reason, result.container_id) == (5, EXITED, cid)
    assert read(done.log_path) == "finished\n"

    never = make_container_request(command=["echo", "must not run"])
    cid = await docker_client.create(None, container_config(never))
    result = await runner.adopt(cid, never)
    assert (result.exit_code, result.status_reason) == (None, NEVER_STARTED)
    assert "must not run" not in read(never.log_path)
    assert await docker_leftovers() == []


async def test_adopt_applies_remaining_timeout(
    docker_client: DockerClient, make_container_request: MakeRequest
) -> None:
    req = make_container_request(command=["sleep", "60"], timeout_s=1.5, stop_grace_s=0.5)
    cid = await docker_client.create(None, container_config(req))
    await docker_client.start(cid)
    started = time.monotonic()
    result = await ContainerRunner(docker_client).adopt(cid, req)
    assert result.timed_out and result.status_reason == TIMED_OUT
    assert time.monotonic() - started < 10
