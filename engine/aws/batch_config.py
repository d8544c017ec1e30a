"""AWS Batch's job definitions, compute environments and job queues over Sluice's own.

Each operation translates AWS's members to the body the :class:`BatchService` takes (the same
one ``/api/v1`` and ``sluice definitions|queues|environments`` use), so a definition registered
through boto3 is the one ``sluice jobs submit --definition`` finds, and the other way round.
Tags of queues and environments (which have no column of their own) are kept in the store's
key/value table under their ARN; a definition's tags live in its body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from engine.aws.protocol import AwsError, Body, max_results, member, next_token, page, resource_name
from engine.batch.detail import MIB, container_shape, names, retry_shape
from engine.batch.jobs import JobError, parse_spec
from engine.batch.service import BatchService
from engine.events import iso_ms
from engine.store.kv import StoreKV

#: AWS's smallest attempt timeout
MIN_TIMEOUT_S = 60
#: tags that configure what AWS has no member for (docs/aws.md)
ENDPOINT_TAG, MEMORY_TAG = "sluice:endpoint", "sluice:memory-mib"
#: an environment with several Docker hosts: each host's state (``a=IN_SERVICE,b=OUT``)
HOSTS_TAG = "sluice:hosts"
#: ``"false"`` on a job or definition: never preempted; a grace (``"10s"``) or ``"on"`` on a queue
PREEMPTIBLE_TAG, PREEMPTION_TAG = "sluice:preemptible", "sluice:preemption"


def preemptible_of(tags: Mapping[str, Any] | None) -> bool | None:
    """The ``sluice:preemptible`` tag as a flag (None when absent)."""
    value = (tags or {}).get(PREEMPTIBLE_TAG)
    if value is None:
        return None
    text = str(value).lower()
    if text not in ("true", "false"):
        raise AwsError("ClientException", f"tags.{PREEMPTIBLE_TAG}: true or false, got {value!r}")
    return text == "true"


def preemption_of(tags: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``sluice:preemption`` tag of a queue: ``on``, ``off`` or a grace period (``10s``)."""
    value = (tags or {}).get(PREEMPTION_TAG)
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("on", "true", "enabled", "off", "false", "disabled"):
        return {"enabled": text in ("on", "true", "enabled")}
    return {"enabled": True, "grace": text}


def environment_map(items: Any, where: str) -> dict[str, str]:
    """``[{"name", "value"}]`` -> ``{name: value}``."""
    if items is None:
        return {}
    if not isinstance(items, list):
        raise AwsError("ClientException", f"{where} must be a list of {{name, value}}")
    out = {}
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise AwsError("ClientException", f"{where}[{i}] needs a name (and a value)")
        out[item["name"]] = str(item.get("value", ""))
    return out


def resources_of(body: Mapping[str, Any], where: str) -> dict[str, Any]:
    """vCPUs and memory from ``resourceRequirements`` (or the older ``vcpus``/``memory``, MiB)."""
    out: dict[str, Any] = {}
    if body.get("vcpus") is not None:
        out["vcpus"] = member(body, "vcpus", int)
    if body.get("memory") is not None:
        out["memory"] = int(member(body, "memory", int)) * MIB
    reqs = member(body, "resourceRequirements", list) or []
    for i, req in enumerate(reqs):
        kind = str(req.get("type", "")) if isinstance(req, Mapping) else ""
        try:
            value = float(req["value"])
        except (KeyError, TypeError, ValueError):
            raise AwsError(
                "ClientException", f"{where}.resourceRequirements[{i}].value must be a number"
            ) from None
        if kind == "VCPU":
            out["vcpus"] = value
        elif kind == "MEMORY":
            out["memory"] = int(value * MIB)
        else:
            raise AwsError(
                "ClientException",
                f"{where}.resourceRequirements[{i}]: type {kind!r} is not supported (VCPU and MEMORY are)",
            )
    return out


def retry_body(strategy: Any) -> dict[str, Any] | None:
    """AWS's ``retryStrategy`` -> Sluice's ``retry_strategy`` (checked by parse_spec)."""
    if strategy is None:
        return None
    if not isinstance(strategy, Mapping):
        raise AwsError("ClientException", "retryStrategy must be an object")
    rules = []
    for rule in strategy.get("evaluateOnExit") or []:
        if not isinstance(rule, Mapping):
            raise AwsError("ClientException", "retryStrategy.evaluateOnExit: each rule is an object")
        rules.append(
            {
                "action": rule.get("action"),
                "on_exit_code": rule.get("onExitCode"),
                "on_reason": rule.get("onReason"),
                "on_status_reason": rule.get("onStatusReason"),
            }
        )
    return {"attempts": strategy.get("attempts", 1), "evaluate_on_exit": rules}


def timeout_of(body: Mapping[str, Any]) -> int | None:
    timeout = member(body, "timeout", dict)
    if timeout is None:
        return None
    seconds = member(timeout, "attemptDurationSeconds", int)
    if seconds is not None and seconds < MIN_TIMEOUT_S:
        raise AwsError("ClientException", f"timeout.attemptDurationSeconds must be at least {MIN_TIMEOUT_S}")
    return seconds


def volumes_of(props: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``volumes`` (host paths) joined with ``mountPoints`` -> Sluice's ``{host, container, read_only}``."""
    hosts = {}
    for v in member(props, "volumes", list) or []:
        path = (v.get("host") or {}).get("sourcePath") if isinstance(v, Mapping) else None
        if not isinstance(path, str):
            raise AwsError(
                "ClientException",
                "containerProperties.volumes: only host volumes (host.sourcePath) are supported",
            )
        hosts[v.get("name")] = path
    out = []
    for m in member(props, "mountPoints", list) or []:
        source = m.get("sourceVolume") if isinstance(m, Mapping) else None
        if source not in hosts:
            raise AwsError("ClientException", f"containerProperties.mountPoints: no volume named {source!r}")
        out.append(
            {"host": hosts[source], "container": m.get("containerPath"), "read_only": bool(m.get("readOnly"))}
        )
    return out


def definition_body(body: Body) -> dict[str, Any]:
    """RegisterJobDefinition's members -> the Sluice definition body."""
    name = member(body, "jobDefinitionName", str, required=True)
    kind = member(body, "type", str, required=True)
    if kind != "container":
        raise AwsError("ClientException", f"type {kind!r} is not supported; Sluice runs type container")
    props = member(body, "containerProperties", dict)
    if props is None:
        raise AwsError("ClientException", "containerProperties is required for a container job definition")
    if props.get("privileged"):
        raise AwsError(
            "ClientException", "containerProperties.privileged: Sluice never runs privileged containers"
        )
    out: dict[str, Any] = {
        "name": name,
        "image": member(props, "image", str, required=True),
        "command": member(props, "command", list),
        "environment": environment_map(props.get("environment"), "containerProperties.environment"),
        **resources_of(props, "containerProperties"),
        "volumes": volumes_of(props),
        "parameters": member(body, "parameters", dict) or {},
        "retry_strategy": retry_body(body.get("retryStrategy")),
        "timeout": timeout_of(body),
        "user": member(props, "user", str),
        "tags": member(body, "tags", dict) or {},
        "scheduling_priority": member(body, "schedulingPriority", int),
        "preemptible": preemptible_of(member(body, "tags", dict)),
    }
    return {k: v for k, v in out.items() if v is not None}


def definition_shape(name: str, revision: int, status: str, body: Mapping[str, Any]) -> dict[str, Any]:
    # stored bodies were checked when registered; the volume allow-list may have changed since
    stored = {k: v for k, v in body.items() if k != "volumes"}
    vols = tuple((v["host"], v["container"], bool(v.get("read_only"))) for v in body.get("volumes") or ())
    spec = replace(parse_spec(stored, ()), volumes=vols)
    out: dict[str, Any] = {
        "jobDefinitionName": name,
        "jobDefinitionArn": names().definition(f"{name}:{revision}"),
        "revision": revision,
        "status": status,
        "type": "container",
        "parameters": dict(spec.parameters),
        "retryStrategy": retry_shape(spec),
        "containerProperties": container_shape(spec, substituted=False),
        "tags": dict(spec.tags),
        "propagateTags": False,
        "platformCapabilities": ["EC2"],
        "containerOrchestrationType": "ECS",
    }
    if spec.timeout_s is not None:
        out["timeout"] = {"attemptDurationSeconds": int(spec.timeout_s)}
    if spec.scheduling_priority is not None:
        out["schedulingPriority"] = spec.scheduling_priority
    return out


class BatchConfig:
    """RegisterJobDefinition ... DeleteJobQueue on one BatchService."""

    def __init__(self, batch: BatchService) -> None:
        self.batch = batch
        self.kv = StoreKV(batch.store)

    # -- job definitions ----------------------------------------------------------------------

    async def register_job_definition(self, body: Body) -> Body:
        out = await self.batch.register_definition(definition_body(body))
        arn = names().definition(f"{out['name']}:{out['revision']}")
        return {"jobDefinitionName": out["name"], "jobDefinitionArn": arn, "revision": out["revision"]}

    async def describe_job_definitions(self, body: Body) -> Body:
        wanted = member(body, "jobDefinitions", list)
        only = member(body, "jobDefinitionName", str)
        status = member(body, "status", str)
        defs = self.batch.book.definitions
        found: list[tuple[str, int]] = []
        if wanted:
            for ref in wanted:
                name, _, rev = resource_name(str(ref), "job-definition").partition(":")
                revs = defs.get(name, {})
                found.extend((name, r) for r in sorted(revs) if not rev or str(r) == rev)
        else:
            found = [(n, r) for n in sorted(defs) if only in (None, n) for r in sorted(defs[n])]
        if status is not None:
            found = [(n, r) for n, r in found if defs[n][r][0] == status.upper()]
        start, limit = page(body.get("nextToken")) or 0, max_results(body)
        chosen = found[start : start + limit]
        out: Body = {"jobDefinitions": [definition_shape(n, r, *defs[n][r]) for n, r in chosen]}
        if start + limit < len(found):
            out["nextToken"] = next_token(start + limit)
        return out

    async def deregister_job_definition(self, body: Body) -> Body:
        ref = resource_name(member(body, "jobDefinition", str, required=True), "job-definition")
        await self.batch.deregister_definition(ref)
        return {}

    # -- compute environments -----------------------------------------------------------------

    async def _tags(self, arn: str) -> dict[str, str]:
        return dict(await self.kv.get(f"aws.tags.{arn}") or {})

    async def set_tags(self, arn: str, tags: Mapping[str, str], drop: Sequence[str] = ()) -> None:
        merged = {**await self._tags(arn), **{str(k): str(v) for k, v in tags.items()}}
        for key in drop:
            merged.pop(key, None)
        await self.kv.set(f"aws.tags.{arn}", merged)

    async def create_compute_environment(self, body: Body) -> Body:
        name = member(body, "computeEnvironmentName", str, required=True)
        kind = member(body, "type", str, required=True)
        if kind not in ("MANAGED", "UNMANAGED"):
            raise AwsError("ClientException", f"type must be MANAGED or UNMANAGED, got {kind!r}")
        tags = member(body, "tags", dict) or {}
        local = self.batch.envs.get("local")
        vcpus = self._vcpus(body) or (local.max_vcpus if local else 1)
        memory = int(tags.get(MEMORY_TAG, 0)) * MIB or (local.max_memory if local else 1 << 30)
        sluice = {
            "name": name,
            "max_vcpus": vcpus,
            "max_memory": memory,
            "state": member(body, "state", str) or "ENABLED",
            "endpoint": tags.get(ENDPOINT_TAG, "local"),
            **self._capacity(body),
        }
        await self.batch.put_environment(sluice, create=True)
        arn = names().environment(name)
        await self.set_tags(arn, tags)
        return {"computeEnvironmentName": name, "computeEnvironmentArn": arn}

    @staticmethod
    def _capacity(body: Body) -> dict[str, Any]:
        """``computeResources.type`` SPOT (or FARGATE_SPOT): interruptible; ``minvCpus``."""
        resources = member(body, "computeResources", dict) or {}
        out: dict[str, Any] = {}
        kind = member(resources, "type", str)
        if kind is not None:
            out["interruptible"] = kind.upper() in ("SPOT", "FARGATE_SPOT")
        low = member(resources, "minvCpus", int)
        if low is not None:
            out["min_vcpus"] = low
        return out

    def _vcpus(self, body: Body) -> int | None:
        resources = member(body, "computeResources", dict)
        if resources is not None:
            return member(resources, "maxvCpus", int)
        return member(body, "unmanagedvCpus", int)

    async def update_compute_environment(self, body: Body) -> Body:
        name = resource_name(member(body, "computeEnvironment", str, required=True), "compute-environment")
        change: dict[str, Any] = {"name": name}
        if body.get("state") is not None:
            change["state"] = member(body, "state", str)
        vcpus = self._vcpus(body)
        if vcpus is not None:
            change["max_vcpus"] = vcpus
        change.update(self._capacity(body))
        await self.batch.put_environment(change, create=False)
        return {"computeEnvironmentName": name, "computeEnvironmentArn": names().environment(name)}

    async def delete_compute_environment(self, body: Body) -> Body:
        name = resource_name(member(body, "computeEnvironment", str, required=True), "compute-environment")
        await self.batch.submitter.delete_environment(name)
        return {}

    async def describe_compute_environments(self, body: Body) -> Body:
        wanted = [
            resource_name(str(e), "compute-environment")
            for e in member(body, "computeEnvironments", list) or []
        ]
        envs = [e for n, e in sorted(self.batch.envs.items()) if not wanted or n in wanted]
        start, limit = page(body.get("nextToken")) or 0, max_results(body)
        shown = []
        for env in envs[start : start + limit]:
            arn = names().environment(env.name)
            shown.append(
                {
                    "computeEnvironmentName": env.name,
                    "computeEnvironmentArn": arn,
                    "type": "MANAGED",
                    "state": env.state,
                    "status": "VALID",
                    "statusReason": (
                        f"Reclaimed at {iso_ms(env.reclaimed_at)}; enable it to use it again"
                        if env.reclaimed_at is not None
                        else "ComputeEnvironment Healthy"
                    ),
                    "computeResources": {
                        "type": "SPOT" if env.interruptible else "EC2",
                        "minvCpus": round(env.min_vcpus),
                        "maxvCpus": round(env.max_vcpus),
                        "desiredvCpus": round(env.desired_vcpus),
                        "instanceTypes": ["optimal"],
                        "subnets": [],
                    },
                    "tags": {
                        **await self._tags(arn),
                        MEMORY_TAG: str(env.max_memory // MIB),
                        ENDPOINT_TAG: env.endpoint,
                        **(
                            {HOSTS_TAG: ",".join(f"{h.name}={h.state}" for h in env.hosts)}
                            if env.hosts
                            else {}
                        ),
                    },
                    "containerOrchestrationType": "ECS",
                }
            )
        out: Body = {"computeEnvironments": shown}
        if start + limit < len(envs):
            out["nextToken"] = next_token(start + limit)
        return out

    # -- job queues ---------------------------------------------------------------------------

    def _order(self, body: Body) -> list[str] | None:
        order = member(body, "computeEnvironmentOrder", list)
        if order is None:
            return None
        try:
            ranked = sorted(order, key=lambda o: int(o["order"]))
            return [resource_name(str(o["computeEnvironment"]), "compute-environment") for o in ranked]
        except (KeyError, TypeError, ValueError):
            raise AwsError(
                "ClientException", "computeEnvironmentOrder: each item is {order, computeEnvironment}"
            ) from None

    async def create_job_queue(self, body: Body) -> Body:
        name = member(body, "jobQueueName", str, required=True)
        sluice = {
            "name": name,
            "priority": member(body, "priority", int, required=True),
            "environments": self._order(body),
            "state": member(body, "state", str) or "ENABLED",
            "preemption": preemption_of(member(body, "tags", dict)),
        }
        policy = member(body, "schedulingPolicyArn", str)
        if policy:
            sluice["scheduling_policy"] = resource_name(policy, "scheduling-policy")
        await self.batch.put_queue(sluice, create=True)
        arn = names().queue(name)
        await self.set_tags(arn, member(body, "tags", dict) or {})
        return {"jobQueueName": name, "jobQueueArn": arn}

    async def update_job_queue(self, body: Body) -> Body:
        name = resource_name(member(body, "jobQueue", str, required=True), "job-queue")
        change: dict[str, Any] = {"name": name}
        for key in ("state", "priority"):
            if body.get(key) is not None:
                change[key] = body[key]
        envs = self._order(body)
        if envs is not None:
            change["environments"] = envs
        policy = member(body, "schedulingPolicyArn", str)
        if policy:
            change["scheduling_policy"] = resource_name(policy, "scheduling-policy")
        try:
            await self.batch.put_queue(change, create=False)
        except JobError as exc:
            raise AwsError("ClientException", str(exc)) from None
        return {"jobQueueName": name, "jobQueueArn": names().queue(name)}

    async def delete_job_queue(self, body: Body) -> Body:
        name = resource_name(member(body, "jobQueue", str, required=True), "job-queue")
        await self.batch.submitter.delete_queue(name)
        return {}

    async def describe_job_queues(self, body: Body) -> Body:
        wanted = [resource_name(str(q), "job-queue") for q in member(body, "jobQueues", list) or []]
        queues = [q for n, q in sorted(self.batch.queues.items()) if not wanted or n in wanted]
        start, limit = page(body.get("nextToken")) or 0, max_results(body)
        shown = []
        for q in queues[start : start + limit]:
            arn = names().queue(q.name)
            order = [
                {"order": i + 1, "computeEnvironment": names().environment(e)}
                for i, e in enumerate(q.environments)
            ]
            shown.append(
                {
                    "jobQueueName": q.name,
                    "jobQueueArn": arn,
                    "state": q.state,
                    "status": "VALID",
                    "statusReason": "JobQueue Healthy",
                    "priority": q.priority,
                    "computeEnvironmentOrder": order,
                    "tags": {
                        **await self._tags(arn),
                        **({PREEMPTION_TAG: f"{q.preemption.grace_s:g}s"} if q.preemption.enabled else {}),
                    },
                    "jobStateTimeLimitActions": [],
                    **({"schedulingPolicyArn": names().policy(q.policy)} if q.policy else {}),
                }
            )
        out: Body = {"jobQueues": shown}
        if start + limit < len(queues):
            out["nextToken"] = next_token(start + limit)
        return out
