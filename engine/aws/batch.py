"""The AWS Batch REST-JSON API (``POST /v1/<operation>``, botocore's service model) over Sluice's Batch.

Served at the endpoint root, so ``boto3.client("batch", endpoint_url="http://127.0.0.1:8765")``
and ``aws batch ... --endpoint-url`` work unchanged. Jobs are Sluice's own: one submitted here
is in ``sluice jobs list``, the dashboard and the ``aws.batch`` events, and DescribeJobs
answers for jobs submitted any other way (engine/batch/detail.py builds the one shape).

Operations: SubmitJob, DescribeJobs, ListJobs, CancelJob, TerminateJob, TagResource,
UntagResource, ListTagsForResource here; definitions, queues and environments in
engine/aws/batch_config.py. Departures from AWS are listed in docs/aws.md.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from engine.aws.batch_config import (
    BatchConfig,
    environment_map,
    preemptible_of,
    resources_of,
    retry_body,
    timeout_of,
)
from engine.aws.batch_policies import POLICY_OPERATIONS, PolicyApi
from engine.aws.protocol import (
    REST_JSON,
    AwsError,
    Body,
    Operation,
    max_results,
    member,
    next_token,
    page,
    resource_name,
    serve,
)
from engine.batch import rows
from engine.batch.detail import job_detail, ms, names
from engine.batch.jobs import RUNNABLE, RUNNING, STATES, SUBMITTED, JobError
from engine.batch.service import BatchService
from engine.engine import Engine

_FILTERS = ("JOB_NAME", "JOB_DEFINITION", "BEFORE_CREATED_AT", "AFTER_CREATED_AT")
MAX_DESCRIBE = 100


def job_id_of(value: str) -> str:
    return resource_name(value, "job")


def overrides_of(body: Body) -> dict[str, Any]:
    over = member(body, "containerOverrides", dict)
    if over is None:
        return {}
    out: dict[str, Any] = {**resources_of(over, "containerOverrides")}
    if over.get("command") is not None:
        out["command"] = member(over, "command", list)
    if over.get("environment") is not None:
        out["environment"] = environment_map(over["environment"], "containerOverrides.environment")
    return out


def submit_request(body: Body) -> dict[str, Any]:
    """SubmitJob's members -> the Sluice submission (engine/batch/submit.py checks the rest)."""
    for unsupported in ("nodeOverrides", "eksPropertiesOverride", "ecsPropertiesOverride"):
        if body.get(unsupported):
            raise AwsError("ClientException", f"{unsupported}: only single-container jobs are supported")
    array = member(body, "arrayProperties", dict) or {}
    deps = []
    for i, dep in enumerate(member(body, "dependsOn", list) or []):
        if not isinstance(dep, Mapping):
            raise AwsError("ClientException", f"dependsOn[{i}] must be {{jobId, type}}")
        kind = dep.get("type")
        if kind == "SEQUENTIAL":
            deps.append({"type": "SEQUENTIAL"})
            continue
        dep_id = dep.get("jobId")
        if not isinstance(dep_id, str):
            raise AwsError("ClientException", f"dependsOn[{i}].jobId is required")
        deps.append({"job_id": job_id_of(dep_id), "type": kind or "STANDARD"})
    return {
        "name": member(body, "jobName", str, required=True),
        "queue": resource_name(member(body, "jobQueue", str, required=True), "job-queue"),
        "definition": resource_name(member(body, "jobDefinition", str, required=True), "job-definition"),
        "array_size": member(array, "size", int),
        "depends_on": deps,
        "parameters": member(body, "parameters", dict) or {},
        "container_overrides": overrides_of(body),
        "retry_strategy": retry_body(body.get("retryStrategy")),
        "timeout": timeout_of(body),
        "tags": member(body, "tags", dict),
        "scheduling_priority": member(body, "schedulingPriorityOverride", int),
        "preemptible": preemptible_of(member(body, "tags", dict)),
        "share_identifier": member(body, "shareIdentifier", str),
    }


def _summary(row: sqlite3.Row) -> dict[str, Any]:
    spec = json.loads(row["spec"])
    out: dict[str, Any] = {
        "jobArn": names().job(row["id"]),
        "jobId": row["id"],
        "jobName": row["name"],
        "createdAt": ms(row["created_at"]),
        "status": row["status"],
        "jobDefinition": names().definition(spec.get("definition") or "sluice-inline:1"),
    }
    for key, col in (
        ("statusReason", "status_reason"),
        ("startedAt", "started_at"),
        ("stoppedAt", "stopped_at"),
    ):
        if row[col] is not None:
            out[key] = ms(row[col]) if col.endswith("_at") else row[col]
    if row["array_size"] is not None and row["array_index"] is None:
        out["arrayProperties"] = {"size": row["array_size"]}
    elif row["array_index"] is not None:
        out["arrayProperties"] = {"index": row["array_index"]}
    else:
        container: dict[str, Any] = {}
        if row["exit_code"] is not None:
            container["exitCode"] = row["exit_code"]
        out["container"] = container
    return out


class BatchApi:
    """The Batch operations of one engine (503-free: without Docker every call is a ServerException)."""

    def __init__(self, engine: Engine, token: str | None) -> None:
        self.engine, self.token = engine, token
        self._config: BatchConfig | None = None

    @property
    def batch(self) -> BatchService:
        if self.engine.batch is None:
            raise AwsError(
                "ServerException", "batch jobs need a Docker engine; start dockerd and restart", 500
            )
        return self.engine.batch

    @property
    def config(self) -> BatchConfig:
        if self._config is None:
            self._config = BatchConfig(self.batch)
        return self._config

    def operation(self, name: str) -> Operation:
        """The handler of ``/v1/<name>`` (botocore lowercases the operation name into the path)."""
        fn: Callable[[Body], Any] | None = getattr(self, _OPERATIONS.get(name, ""), None)
        if fn is None and name in POLICY_OPERATIONS:
            return getattr(PolicyApi(self.batch), POLICY_OPERATIONS[name])
        if fn is None:
            config_op = _CONFIG_OPERATIONS.get(name)
            if config_op is None:
                raise AwsError("ClientException", f"unknown or unsupported Batch operation /v1/{name}", 404)
            return getattr(self.config, config_op)
        return fn

    # -- jobs ---------------------------------------------------------------------------------

    async def submit_job(self, body: Body) -> Body:
        out = await self.batch.submit(submit_request(body))
        return {"jobArn": names().job(out["job_id"]), "jobName": out["name"], "jobId": out["job_id"]}

    async def describe_jobs(self, body: Body) -> Body:
        ids = [job_id_of(str(j)) for j in member(body, "jobs", list, required=True)]
        if len(ids) > MAX_DESCRIBE:
            raise AwsError("ClientException", f"jobs: at most {MAX_DESCRIBE} job ids per call")
        batch = self.batch
        roots = batch.allowed_roots

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            out = []
            for row in rows.jobs_by_id(conn, ids):
                job = rows.job_from_row(row, roots)
                out.append(job_detail(job, *rows.aws_context(conn, job.id, job.attempts, job.is_parent)))
            return out

        found = await batch.store.read(read)
        stored = {d["jobId"] for d in found}
        for job_id in ids:  # an array child whose chunk is still queued: SUBMITTED, as AWS has it
            job = batch.jobs.get(job_id)
            if job_id not in stored and job is not None and job.parent_id is not None:
                found.append(job_detail(replace(job, status=SUBMITTED, status_reason=None)))
        for detail in found:
            if detail["status"] == RUNNABLE:
                detail["statusReason"] = batch.waiting_reason(detail["jobId"]) or detail.get(
                    "statusReason", ""
                )
        return {"jobs": found}

    async def list_jobs(self, body: Body) -> Body:
        queue, parent = member(body, "jobQueue", str), member(body, "arrayJobId", str)
        multi = member(body, "multiNodeJobId", str)
        if sum(x is not None for x in (queue, parent, multi)) != 1:
            raise AwsError("ClientException", "give exactly one of jobQueue, arrayJobId or multiNodeJobId")
        if multi is not None:  # no multi-node jobs here: nothing is one
            return {"jobSummaryList": []}
        query = self._filters(member(body, "filters", list) or [])
        status = member(body, "jobStatus", str)
        if status is not None and status not in STATES:
            raise AwsError("ClientException", f"jobStatus must be one of {', '.join(STATES)}, got {status!r}")
        if not query:  # as AWS: with filters every status is listed; without, RUNNING by default
            query["statuses"] = [status or RUNNING]
        limit = max_results(body)
        read = functools.partial(
            rows.list_filtered,
            queue=None if queue is None else resource_name(queue, "job-queue"),
            statuses=query.get("statuses"),
            parent=None if parent is None else job_id_of(parent),
            name_glob=query.get("name"),
            definition=query.get("definition"),
            created_before=query.get("before"),
            created_after=query.get("after"),
            before_seq=page(body.get("nextToken")),
            limit=limit + 1,
        )
        found = await self.batch.store.read(read)
        out: Body = {"jobSummaryList": [_summary(r) for r in found[:limit]]}
        if len(found) > limit:
            out["nextToken"] = next_token(found[limit - 1]["seq"])
        return out

    @staticmethod
    def _filters(filters: list[Any]) -> dict[str, Any]:
        query: dict[str, Any] = {}
        for i, f in enumerate(filters):
            name = f.get("name") if isinstance(f, Mapping) else None
            values = f.get("values") if isinstance(f, Mapping) else None
            if name not in _FILTERS or not isinstance(values, list) or len(values) != 1:
                raise AwsError(
                    "ClientException",
                    f"filters[{i}]: name one of {', '.join(_FILTERS)} with exactly one value",
                )
            value = str(values[0])
            if name == "JOB_NAME":
                query["name"] = value
            elif name == "JOB_DEFINITION":
                query["definition"] = resource_name(value, "job-definition")
            else:
                try:
                    at = int(value) / 1000
                except ValueError:
                    raise AwsError(
                        "ClientException", f"{name} takes epoch milliseconds, got {value!r}"
                    ) from None
                query["before" if name == "BEFORE_CREATED_AT" else "after"] = at
        return query

    async def cancel_job(self, body: Body) -> Body:
        job_id = job_id_of(member(body, "jobId", str, required=True))
        reason = member(body, "reason", str, required=True)
        try:
            await self.batch.cancel(job_id, reason)
        except JobError as exc:
            if exc.code != "not_cancellable":  # as AWS: a job already STARTING/RUNNING is left as it is
                raise
        return {}

    async def terminate_job(self, body: Body) -> Body:
        job_id = job_id_of(member(body, "jobId", str, required=True))
        await self.batch.terminate(job_id, member(body, "reason", str, required=True))
        return {}

    # -- tags ---------------------------------------------------------------------------------

    async def tags_of(self, arn: str) -> dict[str, str]:
        own: dict[str, str] = {}
        resource = arn.split(":", 5)[-1]
        if resource.startswith("job/"):
            job_id = resource.removeprefix("job/")
            found = await self.batch.store.read(lambda c: rows.jobs_by_id(c, [job_id]))
            if not found:
                raise AwsError("ClientException", f"no job {job_id!r}")
            own = dict(json.loads(found[0]["spec"]).get("tags") or {})
        elif resource.startswith("job-definition/"):
            name, _, rev = resource.removeprefix("job-definition/").partition(":")
            revs = self.batch.book.definitions.get(name, {})
            if not rev.isdigit() or int(rev) not in revs:
                raise AwsError("ClientException", f"no job definition {name}:{rev}")
            own = dict(revs[int(rev)][1].get("tags") or {})
        elif resource.startswith("job-queue/"):
            if resource.removeprefix("job-queue/") not in self.batch.queues:
                raise AwsError("ClientException", f"no job queue {resource.removeprefix('job-queue/')!r}")
        elif resource.startswith("compute-environment/"):
            if resource.removeprefix("compute-environment/") not in self.batch.envs:
                raise AwsError("ClientException", f"no compute environment {resource.split('/', 1)[1]!r}")
        else:
            raise AwsError("ClientException", f"{arn!r} is not a taggable Batch resource ARN")
        return {**own, **await self.config._tags(arn)}

    async def tag_request(self, request: web.Request) -> web.Response:
        arn = unquote(request.match_info["arn"])
        if request.method == "GET":
            return await serve(request, REST_JSON, self.token, lambda: self._list_tags(arn))
        if request.method == "DELETE":
            keys = request.query.getall("tagKeys", [])
            return await serve(request, REST_JSON, self.token, lambda: self._untag(arn, keys))
        return await serve(request, REST_JSON, self.token, lambda: self._tag(arn))

    def _list_tags(self, arn: str) -> Operation:
        async def op(body: Body) -> Body:
            return {"tags": await self.tags_of(arn)}

        return op

    def _tag(self, arn: str) -> Operation:
        async def op(body: Body) -> Body:
            await self.tags_of(arn)  # the resource exists
            await self.config.set_tags(arn, member(body, "tags", dict, required=True))
            return {}

        return op

    def _untag(self, arn: str, keys: list[str]) -> Operation:
        async def op(body: Body) -> Body:
            await self.tags_of(arn)
            await self.config.set_tags(arn, {}, drop=keys)
            return {}

        return op


_OPERATIONS = {
    "submitjob": "submit_job",
    "describejobs": "describe_jobs",
    "listjobs": "list_jobs",
    "canceljob": "cancel_job",
    "terminatejob": "terminate_job",
}
_CONFIG_OPERATIONS = {
    "registerjobdefinition": "register_job_definition",
    "describejobdefinitions": "describe_job_definitions",
    "deregisterjobdefinition": "deregister_job_definition",
    "createcomputeenvironment": "create_compute_environment",
    "describecomputeenvironments": "describe_compute_environments",
    "updatecomputeenvironment": "update_compute_environment",
    "deletecomputeenvironment": "delete_compute_environment",
    "createjobqueue": "create_job_queue",
    "describejobqueues": "describe_job_queues",
    "updatejobqueue": "update_job_queue",
    "deletejobqueue": "delete_job_queue",
}


def add_routes(app: web.Application, engine: Engine, token: str | None) -> None:
    api = BatchApi(engine, token)

    async def handle(request: web.Request) -> web.Response:
        name = request.match_info["operation"]
        return await serve(request, REST_JSON, token, lambda: api.operation(name))

    app.router.add_post("/v1/{operation}", handle)
    app.router.add_route("*", "/v1/tags/{arn:.+}", api.tag_request)
