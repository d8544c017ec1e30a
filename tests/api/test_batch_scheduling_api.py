"""Scheduling settings through the HTTP API, the CLI, the AWS API and the dashboard, on a real engine.

Preemption on queues, ``preemptible`` on jobs, interruptible environments and their reclaim,
fair-share policies, and scaling bounds: each is written through one surface and read back
through the others; bad input gets a clear 4xx and changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
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
from tests.support.docker import TEST_LABEL
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


async def aws(base: str, operation: str, body: dict[str, Any]) -> tuple[int, Any]:
    return await call(base, "POST", f"/v1/{operation.lower()}", body)


async def cli(base: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli", *args, "--server", base,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_preemption_settings_through_api_cli_aws_and_dashboard(server: tuple[str, Any]) -> None:
    base, engine = server
    body = {"name": "urgent", "priority": 50, "environments": ["local"], "preemption": {"grace": "5s"}}
    status, q = await call(base, "POST", "/api/v1/queues", body)
    assert status == 201 and q["preemption"] == {"enabled": True, "grace_s": 5.0}
    for bad, words in (
        ({"enabled": "yes"}, "preemption.enabled: true or false"),
        ({"grace": "soon"}, "preemption.grace"),
        ({"grace": 7200}, "preemption.grace: seconds from 0 to 3600"),
        ({"after": 1}, "unknown field(s) after"),
    ):
        status, err = await call(base, "PATCH", "/api/v1/queues/urgent", {"preemption": bad})
        assert status == 400 and words in err["error"]["message"], err
    assert engine.batch.queues["urgent"].preemption.grace_s == 5.0  # unchanged by the refusals
    code, out, err = await cli(base, "queues", "create", "calm", "--priority", "2", "--environments", "local")
    assert code == 0 and out.startswith("queue calm created\n") and "QUEUE" in out, (out, err)
    code, out, err = await cli(base, "queues", "update", "calm", "--preemption-grace", "3s")
    assert code == 0 and "queue calm updated" in out and "grace 3s" in out, (out, err)
    code, out, err = await cli(base, "queues", "update", "calm", "--preemption-grace", "3s", "--json")
    assert code == 0 and json.loads(out)["preemption"] == {"enabled": True, "grace_s": 3.0}, (out, err)
    code, out, _ = await cli(base, "queues", "update", "calm", "--no-preemption", "--json")
    assert json.loads(out)["preemption"]["enabled"] is False
    code, out, _ = await cli(base, "queues", "list")
    assert "grace 5s" in out
    status, _ = await aws(
        base,
        "CreateJobQueue",
        {
            "jobQueueName": "aws-urgent",
            "priority": 60,
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "local"}],
            "tags": {"sluice:preemption": "12s"},
        },
    )
    assert status == 200 and engine.batch.queues["aws-urgent"].preemption.grace_s == 12.0
    status, found = await aws(base, "DescribeJobQueues", {"jobQueues": ["aws-urgent"]})
    assert found["jobQueues"][0]["tags"]["sluice:preemption"] == "12s"
    status, _ = await aws(
        base,
        "RegisterJobDefinition",
        {
            "jobDefinitionName": "keep",
            "type": "container",
            "containerProperties": {"image": "busybox:1.36", "command": ["true"]},
            "tags": {"sluice:preemptible": "false"},
        },
    )
    assert status == 200
    assert engine.batch.book.definitions["keep"][1][1]["preemptible"] is False
    status, html = await call(base, "GET", "/batch")
    assert status == 200 and "preempts lower queues (grace 5.0s)" in html and "No preemptions." in html


async def test_the_priorities_example_runs_as_documented(server: tuple[str, Any]) -> None:
    """examples/priorities/demo.sh: low array on Spot-like capacity, a preempting high job, a reclaim."""
    base, engine = server
    env = {
        **os.environ,
        "SLUICE_SERVER": base,
        "SLUICE": f"{sys.executable} -m engine.cli",
        "SECONDS_LOW": "12",
    }
    proc = await asyncio.create_subprocess_exec(
        "sh", str(ROOT / "examples" / "priorities" / "demo.sh"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT, env=env,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode()
    assert proc.returncode == 0, text
    lines = text.splitlines()
    ended = [ln.split()[1] for ln in lines if ln.startswith("j-") and ln.count(" ") == 1]
    assert ended == ["SUCCEEDED", "SUCCEEDED"], text  # the high job, then the whole low array
    assert "reclaimed (DISABLED); 2 job(s) interrupted" in text, text
    preempted = await engine.batch.recent_preemptions("low")
    assert len(preempted) == 1 and preempted[0]["preemptor_queue"] == "high"
    status, html = await call(base, "GET", "/batch?queue=low")  # the queue page shows who preempted whom
    assert status == 200 and preempted[0]["preempted_by"] in html and preempted[0]["job_id"] in html
    reclaimed = await engine.store.read(
        lambda c: c.execute("SELECT count(*) FROM job_attempts WHERE reason LIKE 'Host EC2%'").fetchone()[0]
    )
    assert reclaimed == 2
    assert "on-demand" in text and "interruptible" in text  # the environments list at the end


async def test_spot_environments_through_the_aws_api_and_reclaim_over_http(server: tuple[str, Any]) -> None:
    base, engine = server
    status, _ = await aws(
        base,
        "CreateComputeEnvironment",
        {
            "computeEnvironmentName": "cheap",
            "type": "MANAGED",
            "computeResources": {"type": "SPOT", "minvCpus": 1, "maxvCpus": 2, "subnets": []},
        },
    )
    assert status == 200 and engine.batch.envs["cheap"].interruptible
    status, err = await call(base, "POST", "/api/v1/environments/local/reclaim", {})
    assert status == 409 and "not interruptible" in err["error"]["message"]
    assert engine.batch.envs["local"].state == "ENABLED"
    status, out = await call(base, "POST", "/api/v1/environments/cheap/reclaim", {})
    assert status == 200 and out["state"] == "DISABLED" and out["interrupted_jobs"] == []
    status, found = await aws(base, "DescribeComputeEnvironments", {"computeEnvironments": ["cheap"]})
    shown = found["computeEnvironments"][0]
    assert shown["computeResources"]["type"] == "SPOT" and shown["state"] == "DISABLED"
    resources = shown["computeResources"]
    assert (resources["minvCpus"], resources["desiredvCpus"], resources["maxvCpus"]) == (1, 1, 2)
    assert shown["statusReason"].startswith("Reclaimed at ")
    status, _ = await call(base, "POST", "/api/v1/environments/nowhere/reclaim", {})
    assert status == 404
    status, html = await call(base, "GET", "/batch")
    assert "interruptible" in html and "reclaimed" in html


async def test_fair_share_policies_through_aws_http_cli_and_dashboard(server: tuple[str, Any]) -> None:
    base, engine = server
    fair = {
        "shareDecaySeconds": 600,
        "computeReservation": 10,
        "shareDistribution": [
            {"shareIdentifier": "alpha", "weightFactor": 1},
            {"shareIdentifier": "b*", "weightFactor": 3},
        ],
    }
    status, out = await aws(base, "CreateSchedulingPolicy", {"name": "teams", "fairsharePolicy": fair})
    assert status == 200 and out["arn"].endswith(":scheduling-policy/teams")
    status, found = await aws(base, "DescribeSchedulingPolicies", {"arns": [out["arn"]]})
    assert found["schedulingPolicies"][0]["fairsharePolicy"] == fair
    status, listed = await aws(base, "ListSchedulingPolicies", {})
    assert listed["schedulingPolicies"] == [{"arn": out["arn"]}]
    status, err = await aws(
        base, "UpdateSchedulingPolicy", {"arn": out["arn"], "fairsharePolicy": {"computeReservation": 100}}
    )
    assert status == 400 and "compute_reservation" in json.dumps(err)
    status, _ = await aws(
        base,
        "CreateJobQueue",
        {
            "jobQueueName": "shared",
            "priority": 5,
            "schedulingPolicyArn": out["arn"],
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "local"}],
        },
    )
    assert status == 200 and engine.batch.queues["shared"].policy == "teams"
    status, q = await aws(base, "DescribeJobQueues", {"jobQueues": ["shared"]})
    assert q["jobQueues"][0]["schedulingPolicyArn"] == out["arn"]
    await aws(
        base,
        "RegisterJobDefinition",
        {
            "jobDefinitionName": "t",
            "type": "container",
            "containerProperties": {"image": "busybox:1.36", "command": ["true"]},
        },
    )
    status, err = await aws(base, "SubmitJob", {"jobName": "x", "jobQueue": "shared", "jobDefinition": "t"})
    assert status == 400 and "share_identifier" in json.dumps(err)
    status, job = await aws(
        base,
        "SubmitJob",
        {"jobName": "x", "jobQueue": "shared", "jobDefinition": "t", "shareIdentifier": "beta"},
    )
    assert status == 200, job
    await engine.batch.wait(job["jobId"], 30)
    status, desc = await aws(base, "DescribeJobs", {"jobs": [job["jobId"]]})
    assert desc["jobs"][0]["shareIdentifier"] == "beta"
    status, err = await aws(base, "DeleteSchedulingPolicy", {"arn": out["arn"]})
    assert status == 400 and "used by job queue(s) shared" in json.dumps(err)

    code, text, err = await cli(base, "policies", "create", "other", "--share", "x=2", "--decay", "60")
    assert code == 0 and text.startswith("policy other created\n") and "x=2" in text, (text, err)
    code, text, _ = await cli(base, "policies", "list")
    assert "alpha=1 b*=3" in text and "shared" in text and "x=2" in text
    code, text, err = await cli(base, "policies", "create", "bad", "--share", "x=heavy")
    assert code == 2 and "ID=WEIGHT" in err
    code, text, err = await cli(base, "queues", "shares", "shared")
    assert code == 0 and "beta" in text, (text, err)
    status, html = await call(base, "GET", "/batch?queue=shared")
    assert "fair share (teams)" in html and "Shares of shared" in html and "<td>beta</td>" in html
    code, text, err = await cli(base, "queues", "list")
    assert code == 0 and "teams" in text.splitlines()[0] + text, (text, err)
    code, text, err = await cli(base, "queues", "update", "shared", "--scheduling-policy", "none", "--json")
    assert code == 0 and json.loads(text)["scheduling_policy"] is None, err
    code, text, err = await cli(base, "policies", "delete", "teams")
    assert code == 0, err
    status, _ = await call(base, "GET", "/api/v1/queues/nowhere/shares")
    assert status == 404
    status, html = await call(base, "GET", "/batch")
    assert "FIFO" in html
