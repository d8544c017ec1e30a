"""An environment with several Docker hosts through the HTTP API, the CLI, the AWS API and the
dashboard, on a real engine and two real daemons (the second from .ci/docker-b-setup.sh)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from engine.api.batch import routes
from engine.aws.batch import add_routes as aws_routes
from engine.executors.docker_api import DockerClient
from tests.support.docker import TEST_IMAGE, TEST_LABEL
from tests.support.docker_b import B
from tests.support.engines import MakeEngine
from tests.support.paths import ROOT
from tests.support.waiting import wait_until as until

pytestmark = pytest.mark.docker


@pytest.fixture
async def server(
    make_engine: MakeEngine, tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> AsyncIterator[tuple[str, Any]]:
    from engine.api.app import build_app

    flows = tmp_path / "flows"
    flows.mkdir()
    engine = await make_engine(flows)
    engine.batch.labels[TEST_LABEL] = docker_test_label
    srv = TestServer(build_app(engine, [routes(engine), lambda app: aws_routes(app, engine, None)]))
    await srv.start_server()
    try:
        yield str(srv.make_url("")).rstrip("/"), engine
    finally:
        await srv.close()


async def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, base + path, json=body) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if resp.content_type == "application/json" else text)


async def cli(base: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli", *args, "--server", base,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_hosts_and_their_states_through_every_surface(
    server: tuple[str, Any],
    docker_b: DockerClient,
) -> None:
    base, engine = server
    hosts = [
        {"name": "a", "endpoint": "local", "vcpus": 1, "memory": "256MiB"},
        {"name": "b", "endpoint": B, "vcpus": 1, "memory": "256MiB"},
    ]
    status, err = await call(base, "POST", "/api/v1/environments", {"name": "pair", "hosts": hosts[:1] * 2})
    assert status == 400 and "hosts[1]" in err["error"]["message"], err
    # a long cooldown: the hosts stay DRAINING, so every surface can be read in that state
    body = {"name": "pair", "hosts": hosts, "scale_in_cooldown": "1h"}
    status, env = await call(base, "POST", "/api/v1/environments", body)
    assert status == 201 and env["max_vcpus"] == 2 and [h["state"] for h in env["hosts"]] == ["OUT", "OUT"]
    assert env["scale_in_cooldown_s"] == 3600
    queue = {"name": "p", "priority": 1, "environments": ["pair"]}
    status, _ = await call(base, "POST", "/api/v1/queues", queue)
    assert status == 201
    container = {"image": TEST_IMAGE, "command": ["sleep", "1"], "vcpus": 1, "memory": 32 << 20}
    container["network"] = "none"
    ids = []
    for _ in range(2):
        status, job = await call(base, "POST", "/api/v1/jobs", {"queue": "p", "container": container})
        assert status in (200, 201), job
        ids.append(job["job_id"])
    for job_id in ids:
        assert await engine.batch.wait(job_id, 60) == "SUCCEEDED"
    found = set()
    for job_id in ids:
        status, desc = await call(base, "GET", f"/api/v1/jobs/{job_id}")
        found.add(desc["host"])
    assert found == {"a", "b"}
    await until(lambda: engine.batch.envs["pair"].hosts[1].state == "DRAINING", 20, what="b draining")

    status, listing = await call(base, "GET", "/api/v1/environments")
    pair = next(e for e in listing["environments"] if e["name"] == "pair")
    assert pair["endpoint"] == "hosts" and pair["hosts"][1]["state"] == "DRAINING"
    assert "vCPUs are covered without it; takes no new job" in pair["hosts"][1]["reason"]
    code, out, err = await cli(
        base, "environments", "create", "by-cli", "--host", "local,vcpus=1,memory=256MiB,name=a",
        "--host", f"{B},vcpus=0.5,memory=128MiB", "--json",
    )  # fmt: skip
    assert code == 0, err
    made = json.loads(out)
    assert [(h["name"], h["vcpus"]) for h in made["hosts"]] == [("a", 1), ("host-2", 0.5)], made
    code, _, err = await cli(base, "environments", "create", "bad", "--host", "local,cpus=1")
    assert code == 2 and "write ENDPOINT,vcpus=N,memory=SIZE" in err
    code, out, err = await cli(base, "environments", "list")
    assert code == 0 and "a:DRAINING b:DRAINING" in out, (out, err)
    wanted = {"computeEnvironments": ["pair"]}
    status, aws = await call(base, "POST", "/v1/describecomputeenvironments", wanted)
    ce = aws["computeEnvironments"][0]
    assert ce["computeResources"]["desiredvCpus"] == 0 and ce["computeResources"]["maxvCpus"] == 2
    assert ce["tags"]["sluice:hosts"] == "a=DRAINING,b=DRAINING"
    status, jobs = await call(base, "POST", "/v1/describejobs", {"jobs": ids})
    arns = {j["container"]["containerInstanceArn"].rsplit("/", 1)[1] for j in jobs["jobs"]}
    assert arns == {"a", "b"}
    status, html = await call(base, "GET", "/batch")
    assert status == 200 and 'class="status DRAINING"' in html and B in html


async def test_a_host_that_dies_while_idle_shows_why_on_every_surface(
    server: tuple[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.batch import scaling
    from tests.batch.test_interruptible import SocketProxy

    monkeypatch.setattr(scaling, "HEALTH_EVERY_S", 0.5)
    base, engine = server
    proxy = SocketProxy(str(tmp_path / "engine.sock"))  # the machine's engine, until it vanishes
    await proxy.start()
    hosts = [
        {"name": "a", "endpoint": f"unix://{proxy.path}", "vcpus": 1, "memory": "256MiB"},
        {"name": "b", "endpoint": "local", "vcpus": 1, "memory": "256MiB"},
    ]
    status, env = await call(
        base, "POST", "/api/v1/environments", {"name": "pair", "hosts": hosts, "min_vcpus": 1}
    )
    assert status == 201, env
    try:
        pair = engine.batch.envs["pair"]
        await until(lambda: pair.hosts[0].state == "IN_SERVICE", 20, what="a in service")
        await proxy.vanish()
        await until(
            lambda: [h.state for h in pair.hosts] == ["UNHEALTHY", "IN_SERVICE"], 15, what="a replaced by b"
        )
    finally:
        await proxy.vanish()
    status, listing = await call(base, "GET", "/api/v1/environments")
    a = next(e for e in listing["environments"] if e["name"] == "pair")["hosts"][0]
    assert a["state"] == "UNHEALTHY" and a["reason"].startswith("health check failed while in service: ")
    assert "engine.sock" in a["reason"]
    status, html = await call(base, "GET", "/batch")
    assert status == 200 and 'class="status UNHEALTHY"' in html
    assert "health check failed while in service: Docker: cannot reach the Docker daemon" in html
