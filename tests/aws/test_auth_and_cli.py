"""SigV4 against the API token, the AWS CLI as a subprocess, tags, and job events that are the job
DescribeJobs returns."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from engine.aws import sigv4
from tests.support.aws import AwsServer, MakeAwsServer, aws
from tests.support.docker import TEST_IMAGE
from tests.support.waiting import wait_until

pytestmark = pytest.mark.docker

TOKEN = "tok-aws-never-shown-42"
SMALL = [{"type": "VCPU", "value": "0.25"}, {"type": "MEMORY", "value": "32"}]


async def register(batch: Any, name: str, command: list[str]) -> dict[str, Any]:
    return await aws(  # type: ignore[no-any-return]
        batch.register_job_definition, jobDefinitionName=name, type="container",
        containerProperties={"image": TEST_IMAGE, "command": command, "resourceRequirements": SMALL},
    )  # fmt: skip


async def ended(batch: Any, job_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        (job,) = (await aws(batch.describe_jobs, jobs=[job_id]))["jobs"]
        return job if job["status"] in ("SUCCEEDED", "FAILED") else None

    return await wait_until(check, 60, what=f"{job_id} ended", step_s=0.2)  # type: ignore[no-any-return]


async def test_with_a_token_the_signature_is_checked(aws_server: MakeAwsServer) -> None:
    server = await aws_server(token=TOKEN)
    batch = server.client("batch")
    ok = await aws(batch.describe_job_queues)
    assert [q["jobQueueName"] for q in ok["jobQueues"]] == ["default"]
    # a path holding an encoded ARN, a query string and a DELETE sign and verify the same way
    queue = ok["jobQueues"][0]["jobQueueArn"]
    await aws(batch.tag_resource, resourceArn=queue, tags={"a": "1", "b": "2"})
    await aws(batch.untag_resource, resourceArn=queue, tagKeys=["b", "c"])
    assert (await aws(batch.list_tags_for_resource, resourceArn=queue))["tags"] == {"a": "1"}
    rule = await aws(server.client("events").put_rule, Name="r", EventPattern='{"source": ["x"]}')
    assert rule["RuleArn"].endswith(":rule/r")
    for client, code in [
        (server.client("batch", secret="wrong-secret"), "InvalidSignatureException"),
        (server.client("batch", key="AKIDEXAMPLE"), "UnrecognizedClientException"),
        (server.client("events", secret="wrong-secret"), "InvalidSignatureException"),
    ]:
        call = (
            client.describe_job_queues
            if client.meta.service_model.service_name == "batch"
            else client.list_rules
        )
        with pytest.raises(ClientError) as err:
            await aws(call)
        assert err.value.response["Error"]["Code"] == code
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert TOKEN not in json.dumps(err.value.response, default=str)


def test_signatures_match_botocores_signer() -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = b'{"jobQueues": []}'
    req = AWSRequest("POST", "http://127.0.0.1:9/v1/describejobqueues?b=2&a=1", data=body,
                     headers={"Content-Type": "application/json"})  # fmt: skip
    SigV4Auth(Credentials("sluice", TOKEN), "batch", "eu-west-1").add_auth(req)
    headers = dict(req.headers.items())
    headers["Host"] = "127.0.0.1:9"
    now = __import__("time").time()
    sigv4.verify(TOKEN, "POST", "/v1/describejobqueues", "b=2&a=1", headers, body, now)
    with pytest.raises(sigv4.SignatureError, match="does not match"):
        sigv4.verify(TOKEN, "POST", "/v1/describejobqueues", "b=2&a=1", headers, body + b" ", now)
    with pytest.raises(sigv4.SignatureError, match="expired"):
        sigv4.verify(TOKEN, "POST", "/v1/describejobqueues", "b=2&a=1", headers, body, now + 600)


async def test_aws_cli_submit_job_round_trip(aws_server: MakeAwsServer, tmp_path: Path) -> None:
    server = await aws_server(token=TOKEN)
    batch = server.client("batch")
    await register(batch, "hello", ["echo", "Ref::who"])
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "sluice",
        "AWS_SECRET_ACCESS_KEY": TOKEN,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "aws"), "batch", "submit-job", "--endpoint-url", server.url,
        "--job-name", "from-cli", "--job-queue", "default", "--job-definition", "hello",
        "--parameters", "who=cli", "--output", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    job = json.loads(out)
    assert job["jobName"] == "from-cli" and job["jobArn"].endswith(f":job/{job['jobId']}")
    done = await ended(batch, job["jobId"])
    assert done["status"] == "SUCCEEDED" and done["container"]["command"] == ["echo", "cli"]
    # an error through the CLI: its exit code and AWS's message
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "aws"), "batch", "submit-job", "--endpoint-url", server.url,
        "--job-name", "x", "--job-queue", "missing", "--job-definition", "hello",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0 and "(ClientException)" in err.decode() and "missing" in err.decode()


async def test_tags_and_job_events_are_the_described_job(aws_server: MakeAwsServer) -> None:
    server: AwsServer = await aws_server()
    batch = server.client("batch")
    await register(batch, "tagged", ["sh", "-c", "exit 0"])
    job = await aws(
        batch.submit_job, jobName="t", jobQueue="default", jobDefinition="tagged", tags={"a": "1"}
    )
    done = await ended(batch, job["jobId"])
    await aws(batch.tag_resource, resourceArn=job["jobArn"], tags={"b": "2"})
    assert (await aws(batch.list_tags_for_resource, resourceArn=job["jobArn"]))["tags"] == {
        "a": "1",
        "b": "2",
    }
    await aws(batch.untag_resource, resourceArn=job["jobArn"], tagKeys=["b"])
    assert (await aws(batch.list_tags_for_resource, resourceArn=job["jobArn"]))["tags"] == {"a": "1"}
    queue = "arn:aws:batch:us-east-1:000000000000:job-queue/default"
    await aws(batch.tag_resource, resourceArn=queue, tags={"team": "x"})
    assert (await aws(batch.describe_job_queues, jobQueues=[queue]))["jobQueues"][0]["tags"] == {"team": "x"}

    def last_event(conn: Any) -> dict[str, Any]:
        rows = conn.execute("SELECT body FROM events WHERE source='aws.batch' ORDER BY seq").fetchall()
        return [e for e in (json.loads(r[0]) for r in rows) if e["detail"]["jobId"] == job["jobId"]][-1]

    event = await server.engine.store.read(last_event)
    assert event["detail-type"] == "Batch Job State Change"
    assert event["detail"] == done
