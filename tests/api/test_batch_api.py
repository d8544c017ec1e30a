"""The batch HTTP API and the ``sluice jobs|definitions|queues|environments`` CLI, on a real engine.

The app is the real one (engine/api.py with the batch routes added as an extension), served on
a free port; the CLI runs as a subprocess against it (urllib, like a user's shell).
"""

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
from engine.executors.docker_api import DockerClient
from tests.support.docker import TEST_IMAGE, TEST_LABEL
from tests.support.engines import MakeEngine
from tests.support.paths import ROOT

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
    srv = TestServer(build_app(engine, [routes(engine)]))
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


BOX = {"image": TEST_IMAGE, "vcpus": 0.5, "memory": 32 << 20, "network": "none"}


JSON = {"Content-Type": "application/json"}


async def test_api_submit_describe_logs_and_errors(server: tuple[str, Any]) -> None:
    base, engine = server
    status, d = await call(
        base, "POST", "/api/v1/definitions", {"name": "hi", **BOX, "command": ["echo", "hello", "Ref::who"]}
    )
    assert status == 201 and d["revision"] == 1
    status, job = await call(base, "POST", "/api/v1/jobs", {"definition": "hi", "parameters": {"who": "api"}})
    assert status == 201
    await engine.batch.wait(job["job_id"], 30)
    status, desc = await call(base, "GET", f"/api/v1/jobs/{job['job_id']}")
    assert status == 200 and desc["status"] == "SUCCEEDED" and len(desc["attempts"]) == 1
    status, text = await call(base, "GET", f"/api/v1/jobs/{job['job_id']}/logs")
    assert status == 200 and text == "hello api\n"
    status, listing = await call(base, "GET", "/api/v1/jobs?status=SUCCEEDED")
    assert [j["job_id"] for j in listing["jobs"]] == [job["job_id"]]
    # errors: JSON with a code and a message, nothing written
    for body, code in (
        ({"definition": "hi", "queue": "nope"}, 404),
        ({"container": {**BOX, "command": "echo hi"}}, 400),
        ({"container": {**BOX, "command": ["true"], "vcpus": 999}}, 400),
        ({"container": {**BOX, "command": ["true"]}, "array_size": 20_000}, 400),
        ({"definition": "hi", "depends_on": ["j-missing"]}, 400),
    ):
        status, err = await call(base, "POST", "/api/v1/jobs", body)
        assert status == code and set(err["error"]) == {"code", "message"}, (body, err)
    status, err = await call(base, "GET", "/api/v1/jobs/j-nope")
    assert status == 404 and err["error"]["code"] == "unknown_job"
    for raw, code in ((b"{oops", "bad_json"), (b"[1, 2]", "bad_body")):  # the API's one body reader
        async with (
            aiohttp.ClientSession() as s,
            s.post(base + "/api/v1/jobs", data=raw, headers=JSON) as resp,
        ):
            assert resp.status == 400 and (await resp.json())["error"]["code"] == code
    count = await engine.store.read(lambda c: c.execute("SELECT count(*) FROM jobs").fetchone()[0])
    assert count == 1


async def test_api_queues_environments_and_cancel(server: tuple[str, Any]) -> None:
    base, _engine = server
    status, env = await call(
        base, "POST", "/api/v1/environments", {"name": "small", "max_vcpus": 1, "max_memory": 1 << 30}
    )
    assert status == 201 and env["state"] == "ENABLED"
    status, q = await call(
        base, "POST", "/api/v1/queues", {"name": "fast", "priority": 9, "environments": ["small"]}
    )
    assert status == 201 and q["priority"] == 9
    status, q = await call(base, "PATCH", "/api/v1/queues/fast", {"state": "DISABLED"})
    assert status == 200 and q["state"] == "DISABLED"
    for method, path, body, code in (  # POST creates, PATCH changes: never the other way round
        ("POST", "/api/v1/queues", {"name": "fast", "environments": ["small"]}, 409),
        ("PATCH", "/api/v1/queues/nope", {"priority": 1}, 404),
        ("POST", "/api/v1/environments", {"name": "small", "max_vcpus": 1, "max_memory": 1 << 30}, 409),
        ("PATCH", "/api/v1/environments/nope", {"state": "DISABLED"}, 404),
    ):
        status, err = await call(base, method, path, body)
        assert status == code and err["error"]["code"] == ("conflict" if code == 409 else "not_found")
    status, err = await call(
        base, "POST", "/api/v1/jobs", {"queue": "fast", "container": {**BOX, "command": ["true"]}}
    )
    assert status == 400 and err["error"]["code"] == "queue_disabled"
    status, _ = await call(base, "PATCH", "/api/v1/environments/small", {"state": "DISABLED"})
    await call(base, "PATCH", "/api/v1/queues/fast", {"state": "ENABLED"})
    status, job = await call(
        base, "POST", "/api/v1/jobs", {"queue": "fast", "container": {**BOX, "command": ["true"]}}
    )
    assert status == 201
    status, desc = await call(base, "GET", f"/api/v1/jobs/{job['job_id']}")
    assert desc["status"] == "RUNNABLE" and "small is disabled" in desc["status_reason"]
    status, out = await call(
        base, "POST", f"/api/v1/jobs/{job['job_id']}/cancel", {"reason": "no longer needed"}
    )
    assert status == 200 and out["status"] == "FAILED"
    status, queues = await call(base, "GET", "/api/v1/queues")
    assert {q["name"] for q in queues["queues"]} == {"default", "fast"}


async def test_cli_round_trip(server: tuple[str, Any]) -> None:
    base, _engine = server
    spec = json.dumps(
        {"name": "count", **BOX, "command": ["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.3; done"]}
    )
    code, out, err = await cli(base, "definitions", "register", spec, "--json")
    assert code == 0, err
    assert json.loads(out)["revision"] == 1
    code, out, err = await cli(base, "jobs", "submit", "--definition", "count", "--json")
    assert code == 0, err
    job_id = json.loads(out)["job_id"]
    code, out, err = await cli(base, "jobs", "logs", job_id, "--follow")
    assert code == 0 and out.split() == ["1", "2", "3"], err
    retried = {
        "name": "again",
        **BOX,
        "command": ["sh", "-c", "echo try $AWS_BATCH_JOB_ATTEMPT; sleep 0.5; exit 1"],
    }
    await cli(base, "definitions", "register", json.dumps(retried))
    code, out, err = await cli(base, "jobs", "submit", "--definition", "again", "--attempts", "2", "--json")
    code, out, err = await cli(base, "jobs", "logs", json.loads(out)["job_id"], "--follow")
    assert code == 0 and out.split() == ["try", "1", "try", "2"], err
    code, out, _ = await cli(base, "jobs", "describe", job_id)
    assert code == 0 and "SUCCEEDED" in out
    code, out, _ = await cli(base, "jobs", "list", "--json", "--status", "SUCCEEDED")
    assert [j["job_id"] for j in json.loads(out)["jobs"]] == [job_id]
    code, out, err = await cli(
        base, "queues", "create", "batchq", "--priority", "3", "--environments", "local"
    )
    assert code == 0, err
    code, out, _ = await cli(base, "queues", "list")
    assert "batchq" in out and "default" in out
    code, out, _ = await cli(base, "environments", "list", "--json")
    assert json.loads(out)["environments"][0]["name"] == "local"
    code, out, err = await cli(base, "jobs", "submit", "--definition", "count", "--queue", "nope")
    assert code == 2 and "no job queue named 'nope'" in err


async def test_jobs_from_the_api_cannot_read_the_engines_environment(server: tuple[str, Any]) -> None:
    """``secrets`` (sealed ``${env:...}`` references, resolved at launch) come only from workflow
    files: a caller of the API must not be able to pipe the engine's variables into a container."""
    base, _ = server
    body = {"name": "peek", "container": {"image": TEST_IMAGE, "secrets": {"X": "${env:HOME}"}}}
    status, answer = await call(base, "POST", "/api/v1/jobs", body)
    assert status == 400 and "secrets" in answer["error"]["message"], answer
    definition = {"name": "peek", "image": TEST_IMAGE, "secrets": {"X": "${env:HOME}"}}
    status, answer = await call(base, "POST", "/api/v1/definitions", definition)
    assert status == 400 and "secrets" in answer["error"]["message"], answer
    status, answer = await call(base, "GET", "/api/v1/jobs")
    assert answer["jobs"] == []


async def test_a_late_follower_gets_every_attempt_from_the_first(server: tuple[str, Any]) -> None:
    """``jobs logs --follow`` started while attempt 2 runs still prints attempt 1 first."""
    base, _engine = server
    retried = {
        "name": "late",
        **BOX,
        "command": ["sh", "-c", "echo try $AWS_BATCH_JOB_ATTEMPT; sleep 1; exit 1"],
    }
    await cli(base, "definitions", "register", json.dumps(retried))
    code, out, err = await cli(base, "jobs", "submit", "--definition", "late", "--attempts", "2", "--json")
    assert code == 0, err
    job_id = json.loads(out)["job_id"]
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        _, job = await call(base, "GET", f"/api/v1/jobs/{job_id}")
        if len(job["attempts"]) == 2:
            break
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.1)
    code, out, err = await cli(base, "jobs", "logs", job_id, "--follow")
    assert code == 0 and out.split() == ["try", "1", "try", "2"], err


async def test_cli_creates_and_updates_a_slurm_environment(server: tuple[str, Any], tmp_path: Path) -> None:
    base, _engine = server
    shared = str(tmp_path)
    args = (
        "environments",
        "create",
        "hpc",
        "--type",
        "slurm",
        "--max-vcpus",
        "64",
        "--max-memory",
        "1073741824",
    )
    code, out, err = await cli(
        base, *args, "--slurm-shared-dir", shared, "--slurm-partition", "debug", "--json"
    )
    assert code == 0, err
    made = json.loads(out)
    assert (made["type"], made["endpoint"], made["slurm"]["partition"]) == ("slurm", "slurm", "debug")
    code, out, err = await cli(base, "environments", "update", "hpc", "--slurm-qos", "high", "--json")
    assert code == 0, err
    kept = {"shared_dir": shared, "partition": "debug", "qos": "high", "runtime": "docker", "poll_s": 1.0}
    assert json.loads(out)["slurm"] == kept  # an update names only what changes
    code, _, err = await cli(base, *args[:2], "bad", *args[3:], "--slurm-shared-dir", "rel")
    assert code == 2 and "slurm.shared_dir: an absolute path" in err, err


async def test_wrong_shapes_are_400s_that_say_what_is_wrong(server: tuple[str, Any]) -> None:
    """What schemathesis found (tests/api/test_schemathesis.py): each of these was a 500."""
    base, engine = server
    for path, body in (
        ("/api/v1/jobs", {"container": None}),
        ("/api/v1/jobs", {"container": [["a"]]}),
        ("/api/v1/jobs", {"container": "box"}),
        ("/api/v1/jobs", {"container": {**BOX, "command": ["true"]}, "container_overrides": [1]}),
        (
            "/api/v1/jobs",
            {"container": {**BOX, "command": ["true"]}, "container_overrides": {"environment": 1}},
        ),
        ("/api/v1/queues", {"name": "q", "environments": [[]]}),
        ("/api/v1/queues", {"name": "q", "environments": [{"a": 1}]}),
        ("/api/v1/environments", {}),
        ("/api/v1/queues", {"environments": ["x"]}),
    ):
        status, err = await call(base, "POST", path, body)
        assert status == 400 and err["error"]["code"] == "invalid_request", (path, body, status, err)
    assert engine.batch.queues.get("q") is None
