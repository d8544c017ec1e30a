"""boto3's Batch client against a composed ``sluice serve`` with real containers (busybox:1.36).

Every answer is checked against botocore's output shapes (tests/support/aws.py); botocore checks
every request it sends.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.aws import AwsServer, MakeAwsServer, aws
from tests.support.docker import TEST_IMAGE
from tests.support.waiting import wait_until

pytestmark = pytest.mark.docker

ACCOUNT_REGION = "arn:aws:batch:us-east-1:000000000000"
SMALL = [{"type": "VCPU", "value": "0.25"}, {"type": "MEMORY", "value": "32"}]


def text(path: str) -> str:  # small log files: reading inline is fine
    return Path(path).read_text()


def props(command: list[str], **kw: Any) -> dict[str, Any]:
    return {"image": TEST_IMAGE, "command": command, "resourceRequirements": SMALL, **kw}


async def register(batch: Any, name: str, command: list[str], **kw: Any) -> dict[str, Any]:
    return await aws(  # type: ignore[no-any-return]
        batch.register_job_definition, jobDefinitionName=name, type="container",
        containerProperties=props(command), **kw,
    )  # fmt: skip


async def describe(batch: Any, job_id: str) -> dict[str, Any]:
    return (await aws(batch.describe_jobs, jobs=[job_id]))["jobs"][0]  # type: ignore[no-any-return]


async def until_status(batch: Any, job_id: str, *statuses: str, timeout_s: float = 60) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        job = await describe(batch, job_id)
        return job if job["status"] in statuses else None

    return await wait_until(check, timeout_s, what=f"{job_id} in {statuses}", step_s=0.2)  # type: ignore[no-any-return]


@pytest.fixture
async def server(aws_server: MakeAwsServer) -> AwsServer:
    return await aws_server()


async def test_definitions_two_revisions_by_name_revision_and_arn(server: AwsServer) -> None:
    batch = server.client("batch")
    one = await register(batch, "hello", ["echo", "one"])
    two = await register(batch, "hello", ["echo", "Ref::who"], parameters={"who": "world"}, tags={"t": "1"})
    assert (one["revision"], two["revision"]) == (1, 2)
    assert two["jobDefinitionArn"] == f"{ACCOUNT_REGION}:job-definition/hello:2"
    by_name = (await aws(batch.describe_job_definitions, jobDefinitionName="hello"))["jobDefinitions"]
    assert [(d["revision"], d["status"]) for d in by_name] == [(1, "ACTIVE"), (2, "ACTIVE")]
    (d2,) = (await aws(batch.describe_job_definitions, jobDefinitions=["hello:2"]))["jobDefinitions"]
    assert d2["containerProperties"]["command"] == ["echo", "Ref::who"] and d2["parameters"] == {
        "who": "world"
    }
    assert d2["containerProperties"]["resourceRequirements"] == SMALL and d2["tags"] == {"t": "1"}
    (d1,) = (await aws(batch.describe_job_definitions, jobDefinitions=[one["jobDefinitionArn"]]))[
        "jobDefinitions"
    ]
    assert d1["revision"] == 1 and d1["containerProperties"]["command"] == ["echo", "one"]
    await aws(batch.deregister_job_definition, jobDefinition=two["jobDefinitionArn"])
    active = await aws(batch.describe_job_definitions, jobDefinitionName="hello", status="ACTIVE")
    assert [d["revision"] for d in active["jobDefinitions"]] == [1]
    page = await aws(batch.describe_job_definitions, maxResults=1)
    assert len(page["jobDefinitions"]) == 1 and page["nextToken"]
    rest = await aws(batch.describe_job_definitions, maxResults=1, nextToken=page["nextToken"])
    assert rest["jobDefinitions"][0]["revision"] == 2 and "nextToken" not in rest


async def test_environment_and_queue_become_valid(server: AwsServer) -> None:
    batch = server.client("batch")
    env = await aws(
        batch.create_compute_environment, computeEnvironmentName="ce1", type="MANAGED",
        computeResources={"type": "EC2", "maxvCpus": 2, "subnets": [], "instanceRole": "r"},
    )  # fmt: skip
    assert env["computeEnvironmentArn"] == f"{ACCOUNT_REGION}:compute-environment/ce1"

    async def valid() -> bool:
        envs = (await aws(batch.describe_compute_environments, computeEnvironments=["ce1"]))[
            "computeEnvironments"
        ]
        return envs[0]["status"] == "VALID" and envs[0]["state"] == "ENABLED"

    await wait_until(valid, 10, what="ce1 VALID")
    queue = await aws(
        batch.create_job_queue, jobQueueName="q1", priority=10, tags={"team": "a"},
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env["computeEnvironmentArn"]}],
    )  # fmt: skip
    (q,) = (await aws(batch.describe_job_queues, jobQueues=[queue["jobQueueArn"]]))["jobQueues"]
    assert (q["status"], q["state"], q["priority"], q["tags"]) == ("VALID", "ENABLED", 10, {"team": "a"})
    assert q["computeEnvironmentOrder"] == [{"order": 1, "computeEnvironment": env["computeEnvironmentArn"]}]
    await aws(batch.update_job_queue, jobQueue="q1", priority=20)
    assert (await aws(batch.describe_job_queues, jobQueues=["q1"]))["jobQueues"][0]["priority"] == 20
    # the same queue as Sluice's own API and CLI see it
    assert server.engine.batch is not None and server.engine.batch.queues["q1"].priority == 20
    with pytest.raises(ClientError) as refused:
        await aws(batch.delete_job_queue, jobQueue="q1")
    assert refused.value.response["Error"]["Code"] == "ClientException"
    assert "disable it" in refused.value.response["Error"]["Message"]
    await aws(batch.update_job_queue, jobQueue="q1", state="DISABLED")
    await aws(batch.delete_job_queue, jobQueue="q1")
    await aws(batch.update_compute_environment, computeEnvironment="ce1", state="DISABLED")
    await aws(batch.delete_compute_environment, computeEnvironment="ce1")
    assert (await aws(batch.describe_job_queues, jobQueues=["q1"]))["jobQueues"] == []


async def test_single_job_with_overrides_every_field_a_script_reads(server: AwsServer) -> None:
    batch = server.client("batch")
    # Ref:: as its own argument after the script (a value inside a shell script is refused: docs/aws.md)
    command = ["sh", "-c", 'echo hello $WHO "$1"', "sh", "Ref::mood"]
    await register(batch, "greet", command, parameters={"mood": "calm"})
    job = await aws(
        batch.submit_job, jobName="greet-1", jobQueue="default", jobDefinition="greet",
        parameters={"mood": "glad"}, tags={"owner": "me"}, timeout={"attemptDurationSeconds": 120},
        containerOverrides={"environment": [{"name": "WHO", "value": "world"}],
                            "resourceRequirements": [{"type": "MEMORY", "value": "64"}]},
        retryStrategy={"attempts": 2, "evaluateOnExit": [{"onExitCode": "1", "action": "RETRY"}]},
    )  # fmt: skip
    assert job["jobArn"] == f"{ACCOUNT_REGION}:job/{job['jobId']}" and job["jobName"] == "greet-1"
    d = await until_status(server.client("batch"), job["jobId"], "SUCCEEDED", "FAILED")
    assert d["status"] == "SUCCEEDED", d["attempts"][0]["container"].get("reason")
    assert d["jobQueue"] == f"{ACCOUNT_REGION}:job-queue/default"
    assert d["jobDefinition"] == f"{ACCOUNT_REGION}:job-definition/greet:1"
    assert d["parameters"] == {"mood": "glad"} and d["tags"] == {"owner": "me"}
    assert d["timeout"] == {"attemptDurationSeconds": 120}
    assert d["retryStrategy"] == {"attempts": 2, "evaluateOnExit": [{"onExitCode": "1", "action": "RETRY"}]}
    assert d["createdAt"] <= d["startedAt"] <= d["stoppedAt"] <= time.time() * 1000
    c = d["container"]
    assert c["image"] == TEST_IMAGE and c["exitCode"] == 0 and c["memory"] == 64
    assert c["command"] == ["sh", "-c", 'echo hello $WHO "$1"', "sh", "glad"]
    assert {"name": "WHO", "value": "world"} in c["environment"]
    assert [a["container"]["exitCode"] for a in d["attempts"]] == [0]
    assert text(c["logStreamName"]) == "hello world glad\n"
    # the same job in Sluice's own view
    assert server.engine.batch is not None
    own = await server.engine.batch.describe(job["jobId"])
    assert own is not None and own["status"] == "SUCCEEDED" and own["name"] == "greet-1"


async def test_arrays_n_to_n_listing_paging_and_failures(server: AwsServer) -> None:
    batch = server.client("batch")
    await register(batch, "idx", ["sh", "-c", "echo $AWS_BATCH_JOB_ARRAY_INDEX; sleep 0.3"])
    await register(batch, "exit3", ["sh", "-c", "exit 3"])
    a = await aws(batch.submit_job, jobName="arr-a", jobQueue="default", jobDefinition="idx",
                  arrayProperties={"size": 5})  # fmt: skip
    n_to_n = [{"jobId": a["jobId"], "type": "N_TO_N"}]
    b = await aws(batch.submit_job, jobName="arr-b", jobQueue="default", jobDefinition="idx",
                  arrayProperties={"size": 5}, dependsOn=n_to_n)  # fmt: skip
    bad = await aws(batch.submit_job, jobName="bad", jobQueue="default", jobDefinition="exit3")
    for job_id in (a["jobId"], b["jobId"]):
        parent = await until_status(batch, job_id, "SUCCEEDED", timeout_s=90)
        assert parent["arrayProperties"]["size"] == 5
        assert parent["arrayProperties"]["statusSummary"]["SUCCEEDED"] == 5
    children = await aws(
        batch.describe_jobs, jobs=[f"{j}:{i}" for j in (a["jobId"], b["jobId"]) for i in range(5)]
    )
    by_id = {c["jobId"]: c for c in children["jobs"]}
    for i in range(5):
        child_a, child_b = by_id[f"{a['jobId']}:{i}"], by_id[f"{b['jobId']}:{i}"]
        assert child_a["arrayProperties"] == {"index": i}
        assert child_b["startedAt"] >= child_a["stoppedAt"]  # child i of B after child i of A
        assert text(child_a["container"]["logStreamName"]) == f"{i}\n"
    failed = await until_status(batch, bad["jobId"], "FAILED")
    assert failed["container"]["exitCode"] == 3 and failed["attempts"][0]["container"]["exitCode"] == 3
    # ListJobs: by status, by array, by JOB_NAME with paging
    done = await aws(batch.list_jobs, jobQueue="default", jobStatus="SUCCEEDED")
    assert {j["jobId"] for j in done["jobSummaryList"]} == {a["jobId"], b["jobId"]}
    kids = await aws(batch.list_jobs, arrayJobId=a["jobId"], jobStatus="SUCCEEDED")
    assert sorted(j["arrayProperties"]["index"] for j in kids["jobSummaryList"]) == list(range(5))
    named = {"name": "JOB_NAME", "values": ["ARR-*"]}
    first = await aws(batch.list_jobs, jobQueue="default", filters=[named], maxResults=1)
    assert len(first["jobSummaryList"]) == 1 and first["nextToken"]
    second = await aws(batch.list_jobs, jobQueue="default", filters=[named], maxResults=1,
                       nextToken=first["nextToken"])  # fmt: skip
    assert "nextToken" not in second
    assert [j["jobName"] for j in first["jobSummaryList"] + second["jobSummaryList"]] == ["arr-b", "arr-a"]
    assert (await aws(batch.list_jobs, jobQueue="default", jobStatus="FAILED"))["jobSummaryList"][0][
        "container"
    ] == {"exitCode": 3}
    by_def = {"name": "JOB_DEFINITION", "values": [f"{ACCOUNT_REGION}:job-definition/exit3:1"]}
    listed = (await aws(batch.list_jobs, jobQueue="default", filters=[by_def]))["jobSummaryList"]
    assert [j["jobId"] for j in listed] == [bad["jobId"]]
    later = {"name": "AFTER_CREATED_AT", "values": [str(int(time.time() * 1000) + 60_000)]}
    assert (await aws(batch.list_jobs, jobQueue="default", filters=[later]))["jobSummaryList"] == []


async def test_terminate_running_cancel_pending_and_errors(server: AwsServer) -> None:
    batch = server.client("batch")
    await register(batch, "sleepy", ["sleep", "60"])
    running = await aws(batch.submit_job, jobName="long", jobQueue="default", jobDefinition="sleepy")
    waiting = await aws(batch.submit_job, jobName="after", jobQueue="default", jobDefinition="sleepy",
                        dependsOn=[{"jobId": running["jobId"]}])  # fmt: skip
    await until_status(batch, running["jobId"], "RUNNING")
    assert (await describe(batch, waiting["jobId"]))["status"] == "PENDING"
    await aws(batch.cancel_job, jobId=running["jobId"], reason="no")  # running: answered, nothing changes
    assert (await describe(batch, running["jobId"]))["status"] == "RUNNING"
    await aws(batch.cancel_job, jobId=waiting["jobId"], reason="not needed")
    cancelled = await describe(batch, waiting["jobId"])
    assert cancelled["status"] == "FAILED" and cancelled["statusReason"] == "not needed"
    await aws(batch.terminate_job, jobId=running["jobId"], reason="stop it")
    ended = await until_status(batch, running["jobId"], "FAILED")
    assert ended["statusReason"] == "stop it"
    # errors: the code botocore raises, nothing written
    for call, kw, code in [
        (
            batch.submit_job,
            {"jobName": "x", "jobQueue": "nope", "jobDefinition": "sleepy"},
            "ClientException",
        ),
        (
            batch.submit_job,
            {"jobName": "x", "jobQueue": "default", "jobDefinition": "none"},
            "ClientException",
        ),
        (batch.describe_job_definitions, {"nextToken": "garbage!"}, "ClientException"),
        (batch.register_job_definition, {"jobDefinitionName": "m", "type": "multinode"}, "ClientException"),
        (batch.list_jobs, {}, "ClientException"),
    ]:
        with pytest.raises(ClientError) as err:
            await aws(call, **kw)
        assert err.value.response["Error"]["Code"] == code, kw
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert err.value.response["Error"]["Message"]
    assert server.engine.batch is not None
    assert len(await server.engine.batch.list_jobs()) == 2


async def test_describe_jobs_answers_for_a_child_whose_chunk_is_still_queued(server: AwsServer) -> None:
    """A listener that sees the parent's SUBMITTED event may describe ``parent:N`` before the
    submission has written that child: it is SUBMITTED, not missing from the answer."""
    svc = server.engine.batch
    assert svc is not None
    await svc.put_environment({"name": "local", "state": "DISABLED"}, create=False)  # nothing runs
    batch = server.client("batch")
    await register(batch, "idle", ["true"])
    size = 4_000
    sub = aws(batch.submit_job, jobName="big", jobQueue="default", jobDefinition="idle",
              arrayProperties={"size": size})  # fmt: skip
    task = asyncio.ensure_future(sub)
    await wait_until(lambda: any(j.is_parent for j in svc.jobs.values()), 30, step_s=0.001)
    parent = next(j.id for j in svc.jobs.values() if j.is_parent)
    last = f"{parent}:{size - 1}"
    seen = []
    while not task.done():
        jobs = (await aws(batch.describe_jobs, jobs=[last]))["jobs"]
        assert [j["jobId"] for j in jobs] == [last], "DescribeJobs left out a child being stored"
        seen.append(jobs[0]["status"])
        assert jobs[0]["arrayProperties"] == {"index": size - 1}
    assert (await task)["jobId"] == parent
    assert "SUBMITTED" in seen, "every read came after the last chunk"
