"""AWS Batch semantics of the job layer (issue 13, "Batch"), on a real dockerd.

``onReason`` and ``onStatusReason`` match different texts; retry rules in AWS's syntax only;
deregistered revisions; job state-change events as AWS Batch sends them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from engine.batch.jobs import JobError, RetryStrategy, split_reasons
from engine.batch.service import BatchService
from engine.executors.docker import EXITED, OUT_OF_MEMORY
from tests.support.batch import MakeBatch, box, run_job
from workflows.patterns import compile_pattern

pytestmark = pytest.mark.docker


async def batch_events(svc: BatchService, job_id: str) -> list[dict[str, Any]]:
    def read(conn: Any) -> list[dict[str, Any]]:
        rows = conn.execute("SELECT body FROM events WHERE source='aws.batch' ORDER BY seq").fetchall()
        return [e for e in (json.loads(r[0]) for r in rows) if e["detail"]["jobId"] == job_id]

    return await svc.store.read(read)


def test_reason_and_status_reason_are_different_texts() -> None:
    assert split_reasons(EXITED) == ("Essential container in task exited", None)
    assert split_reasons(OUT_OF_MEMORY) == ("Essential container in task exited", OUT_OF_MEMORY)
    pull = "CannotPullContainerError: pull access denied for nope"
    assert split_reasons(pull) == ("Task failed to start", pull)
    rules = RetryStrategy.from_json(
        {"attempts": 3, "evaluate_on_exit": [{"on_reason": "OutOfMemoryError*", "action": "EXIT"}]}
    )
    assert not rules.should_retry(1, 137, *split_reasons(OUT_OF_MEMORY))
    assert rules.should_retry(1, 1, *split_reasons(EXITED))  # the job's reason is not the container's


async def test_on_reason_does_not_match_the_status_reason(batch: MakeBatch) -> None:
    svc = await batch()
    job = box(
        ["sh", "-c", "exit 3"],
        retry_strategy={
            "attempts": 2,
            "evaluate_on_exit": [
                {"on_reason": "Essential*", "action": "EXIT"},  # the container's reason: none here
                {"on_status_reason": "Essential container in task exited", "action": "RETRY"},
            ],
        },
    )
    desc = await run_job(svc, container=job)
    assert desc["status"] == "FAILED" and [a["exit_code"] for a in desc["attempts"]] == [3, 3]


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"on_exit_code": "1x", "action": "RETRY"}, "on_exit_code '1x' may hold only digits"),
        ({"on_exit_code": "*", "action": "RETRY", "on_reason": "a-b"}, "on_reason 'a-b' may hold only"),
        ({"on_status_reason": "a*b", "action": "EXIT"}, "on_status_reason 'a*b' may hold only"),
        ({"on_exit_code": "", "action": "EXIT"}, "on_exit_code must be 1 to 512 characters"),
    ],
)
async def test_bad_exit_rules_are_refused_at_register_and_submit(
    batch: MakeBatch, rule: dict[str, str], problem: str
) -> None:
    svc = await batch()
    body = box(["true"], retry_strategy={"attempts": 2, "evaluate_on_exit": [rule]})
    with pytest.raises(JobError, match=re.escape(problem)):
        await svc.register_definition({"name": "bad", **body})
    with pytest.raises(JobError, match=re.escape(problem)):
        await svc.submit({"container": body})
    assert svc.list_definitions() == [] and await svc.list_jobs() == []


async def test_deregistered_revision_is_inactive_and_a_bare_name_means_latest_active(
    batch: MakeBatch,
) -> None:
    svc = await batch()
    await svc.register_definition({"name": "hello", **box(["echo", "one"])})
    await svc.register_definition({"name": "hello", **box(["echo", "two"])})
    assert await svc.deregister_definition("hello:2") == {
        "name": "hello",
        "revision": 2,
        "status": "INACTIVE",
    }
    assert [(d["revision"], d["status"]) for d in svc.list_definitions()] == [(1, "ACTIVE"), (2, "INACTIVE")]
    desc = await run_job(svc, definition="hello")
    assert desc["spec"]["command"] == ["echo", "one"] and desc["spec"]["definition"] == "hello:1"
    with pytest.raises(JobError, match="hello:2 is INACTIVE"):
        await svc.submit({"definition": "hello:2"})
    await svc.deregister_definition("hello")  # the latest ACTIVE one: 1
    with pytest.raises(JobError, match="every revision of hello is INACTIVE"):
        await svc.submit({"definition": "hello"})
    stored = await svc.store.read(
        lambda c: c.execute("SELECT revision, status FROM job_definitions ORDER BY revision").fetchall()
    )
    assert [tuple(r) for r in stored] == [(1, "INACTIVE"), (2, "INACTIVE")]


async def test_job_events_are_aws_batch_job_state_changes(batch: MakeBatch) -> None:
    svc = await batch()
    await svc.register_definition({"name": "fails", **box(["sh", "-c", "exit 3"])})
    desc = await run_job(svc, definition="fails", name="nightly", tags={"team": "data"})
    events = await batch_events(svc, desc["job_id"])
    assert [e["detail"]["status"] for e in events] == [
        "SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "FAILED",
    ]  # fmt: skip
    last = events[-1]
    assert last["source"] == "aws.batch" and last["detail-type"] == "Batch Job State Change"
    arn = f"arn:aws:batch:us-east-1:000000000000:job/{desc['job_id']}"
    assert last["resources"] == [arn]
    detail = last["detail"]
    assert detail["jobArn"] == arn and detail["jobName"] == "nightly" and detail["tags"] == {"team": "data"}
    assert detail["jobDefinition"] == "arn:aws:batch:us-east-1:000000000000:job-definition/fails:1"
    assert detail["container"]["exitCode"] == 3 and detail["container"]["image"] == "busybox:1.36"
    assert [a["container"]["exitCode"] for a in detail["attempts"]] == [3]
    assert detail["attempts"][0]["statusReason"] == "Essential container in task exited"
    assert detail["stoppedAt"] >= detail["startedAt"] >= detail["createdAt"] > 1_600_000_000_000
    # an EventBridge rule written for AWS Batch's job events, unchanged
    rule = compile_pattern(
        {
            "source": ["aws.batch"],
            "detail-type": ["Batch Job State Change"],
            "detail": {
                "status": ["FAILED"],
                "jobQueue": ["arn:aws:batch:us-east-1:000000000000:job-queue/default"],
            },
        }
    )
    assert [e["detail"]["status"] for e in events if rule.matches(e)] == ["FAILED"]
