"""A job as AWS Batch's DescribeJobs returns it: the one shape of job state-change events and of
the AWS-compatible API (engine/aws/batch.py), so an EventBridge rule written for AWS Batch job
events matches Sluice's unchanged.

ARNs carry an account and a region: ``SLUICE_AWS_ACCOUNT`` (default ``000000000000``) and
``SLUICE_AWS_REGION`` (default ``us-east-1``), read once. Everything here is pure.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.batch.jobs import STATES, Job, JobSpec, split_reasons
from engine.events import JOB_DETAIL_TYPE, JOB_SOURCE, envelope

#: the job definition name of jobs submitted with an inline container (workflow steps, the API)
INLINE_DEFINITION = "sluice-inline"
MIB = 1 << 20

#: one attempt row: (attempt, container id, exit code, reason, started, stopped, log path)
AttemptRow = tuple[int, str | None, int | None, str | None, float | None, float | None, str | None]


@dataclass(frozen=True, slots=True)
class Names:
    """The account and region of every ARN Sluice answers with."""

    account: str = "000000000000"
    region: str = "us-east-1"

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account}:{resource}"

    def job(self, job_id: str) -> str:
        return self.arn("batch", f"job/{job_id}")

    def queue(self, name: str) -> str:
        return self.arn("batch", f"job-queue/{name}")

    def environment(self, name: str) -> str:
        return self.arn("batch", f"compute-environment/{name}")

    def policy(self, name: str) -> str:
        return self.arn("batch", f"scheduling-policy/{name}")

    def definition(self, ref: str) -> str:
        return self.arn("batch", f"job-definition/{ref}")


@functools.cache
def names() -> Names:
    """The configured names (``SLUICE_AWS_ACCOUNT``, ``SLUICE_AWS_REGION``), read once."""
    default = Names()
    return Names(
        os.environ.get("SLUICE_AWS_ACCOUNT") or default.account,
        os.environ.get("SLUICE_AWS_REGION") or default.region,
    )


def ms(ts: float | None) -> int | None:
    """Epoch seconds as AWS writes times in JSON: integer epoch milliseconds."""
    return None if ts is None else int(ts * 1000)


def resources(spec: JobSpec) -> list[dict[str, str]]:
    return [
        {"type": "VCPU", "value": f"{spec.vcpus:g}"},
        {"type": "MEMORY", "value": str(spec.memory // MIB)},
    ]


def container_shape(spec: JobSpec, *, substituted: bool) -> dict[str, Any]:
    """``containerProperties`` (a definition) or ``container`` (a job) without its outcome."""
    command = spec.substituted() if substituted else spec.command
    out: dict[str, Any] = {
        "image": spec.image,
        "command": [] if command is None else list(command),
        "environment": [{"name": k, "value": v} for k, v in sorted(spec.environment.items())],
        "resourceRequirements": resources(spec),
        "volumes": [{"name": f"v{i}", "host": {"sourcePath": h}} for i, (h, _, _) in enumerate(spec.volumes)],
        "mountPoints": [
            {"sourceVolume": f"v{i}", "containerPath": c, "readOnly": ro}
            for i, (_, c, ro) in enumerate(spec.volumes)
        ],
    }
    if float(spec.vcpus).is_integer():  # the deprecated integer fields, for scripts that still read them
        out["vcpus"] = int(spec.vcpus)
    out["memory"] = spec.memory // MIB
    if spec.user is not None:
        out["user"] = spec.user
    if spec.network == "none":
        out["networkConfiguration"] = {"assignPublicIp": "DISABLED"}
    return out


def retry_shape(spec: JobSpec) -> dict[str, Any]:
    rules = []
    for r in spec.retry.evaluate_on_exit:
        rule = {"action": r.action.upper()}
        for key, value in (
            ("onExitCode", r.on_exit_code),
            ("onReason", r.on_reason),
            ("onStatusReason", r.on_status_reason),
        ):
            if value is not None:
                rule[key] = value
        rules.append(rule)
    return {"attempts": spec.retry.attempts, "evaluateOnExit": rules}


def attempt_shape(row: AttemptRow) -> dict[str, Any]:
    _, container_id, code, reason, started, stopped, log_path = row
    status_reason, container_reason = split_reasons(reason)
    container: dict[str, Any] = {"logStreamName": log_path or ""}
    if container_id:
        container["taskArn"] = names().arn("ecs", f"task/sluice/{container_id[:32]}")
    if code is not None:
        container["exitCode"] = code
    if container_reason:
        container["reason"] = container_reason
    out: dict[str, Any] = {"container": container}
    if started is not None:
        out["startedAt"] = ms(started)
    if stopped is not None:
        out["stoppedAt"] = ms(stopped)
    if status_reason:
        out["statusReason"] = status_reason
    return out


def job_detail(
    job: Job,
    attempts: Sequence[AttemptRow] = (),
    depends_on: Sequence[tuple[str, str]] = (),
    summary: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The job's DescribeJobs ``JobDetail`` (also the detail of its ``Batch Job State Change``)."""
    n, spec = names(), job.spec
    out: dict[str, Any] = {
        "jobArn": n.job(job.id),
        "jobName": job.name,
        "jobId": job.id,
        "jobQueue": n.queue(job.queue),
        "status": job.status,
        "attempts": [attempt_shape(a) for a in attempts],
        "createdAt": ms(job.created_at),
        "retryStrategy": retry_shape(spec),
        "dependsOn": [{"jobId": d, "type": "N_TO_N" if m == "N_TO_N" else "STANDARD"} for d, m in depends_on],
        "jobDefinition": n.definition(spec.definition or f"{INLINE_DEFINITION}:1"),
        "parameters": dict(spec.parameters),
        "tags": dict(spec.tags),  # a workflow step's job also says which run and step it is
        "propagateTags": False,
        "platformCapabilities": ["EC2"],
    }
    if job.run_id is not None:
        out["tags"].update({"sluice:run-id": job.run_id, "sluice:step": job.step or ""})
    if job.status_reason:
        out["statusReason"] = job.status_reason
    if job.started_at is not None:
        out["startedAt"] = ms(job.started_at)
    if job.stopped_at is not None:
        out["stoppedAt"] = ms(job.stopped_at)
    if spec.scheduling_priority is not None:
        out["schedulingPriority"] = spec.scheduling_priority
    if spec.share is not None:
        out["shareIdentifier"] = spec.share
    if spec.timeout_s is not None:
        out["timeout"] = {"attemptDurationSeconds": int(spec.timeout_s)}
    if not job.is_parent:
        out["container"] = _container(job, attempts)
    if job.is_parent:
        counts = {s: int((summary or {}).get(s, 0)) for s in STATES}
        out["arrayProperties"] = {"statusSummary": counts, "size": job.array_size}
    elif job.array_index is not None:
        out["arrayProperties"] = {"index": job.array_index}
    return out


def _container(job: Job, attempts: Sequence[AttemptRow]) -> dict[str, Any]:
    container = container_shape(job.spec, substituted=True)
    if job.exit_code is not None:
        container["exitCode"] = job.exit_code
    if job.host is not None:  # the ECS container instance an attempt ran on, as AWS names it
        container["containerInstanceArn"] = names().arn(
            "ecs", f"container-instance/{job.environment}/{job.host}"
        )
    last = attempts[-1] if attempts else None
    if last is not None:
        container["logStreamName"] = last[6] or ""
        reason = split_reasons(last[3])[1]
        if reason:
            container["reason"] = reason
    return container


def job_event(
    job: Job,
    now: float,
    attempts: Sequence[AttemptRow] = (),
    depends_on: Sequence[tuple[str, str]] = (),
    summary: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The ``aws.batch`` / ``Batch Job State Change`` event of one transition, as AWS Batch sends it."""
    detail = job_detail(job, attempts, depends_on, summary)
    event = envelope(JOB_SOURCE, JOB_DETAIL_TYPE, detail, resources=[detail["jobArn"]], at=now)
    event["account"], event["region"] = names().account, names().region
    return event
