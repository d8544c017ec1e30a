"""Batch jobs: definitions, states and their transitions, submit validation, retry strategy.

Names and behaviour follow AWS Batch (DESIGN.md). A job moves SUBMITTED -> PENDING (waiting
on dependencies) -> RUNNABLE (waiting on capacity) -> STARTING -> RUNNING -> SUCCEEDED |
FAILED; a retried attempt goes back to RUNNABLE. An array job is a parent row plus one row
per child ``<parent>:<index>``; the parent is never scheduled itself, its state follows its
children's. Everything here is pure (the SQL of the job tables is in :mod:`engine.batch.rows`); the
:class:`~engine.batch.service.BatchService` owns the asyncio side.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine.batch.queues import Slot
from engine.ids import ordered_id
from workflows.errors import SluiceError
from workflows.hostpaths import mountable
from workflows.shell import data_in_script
from workflows.spec import MAX_JOB_RETRY_DELAY_S, ExitRule, exit_rule_problem

SUBMITTED, PENDING, RUNNABLE, STARTING, RUNNING = "SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"
SUCCEEDED, FAILED = "SUCCEEDED", "FAILED"
STATES = (SUBMITTED, PENDING, RUNNABLE, STARTING, RUNNING, SUCCEEDED, FAILED)
DONE = frozenset({SUCCEEDED, FAILED})
NOT_STARTED = frozenset({SUBMITTED, PENDING, RUNNABLE})

#: legal moves; RUNNABLE again after a failed attempt that will be retried, or a STARTING or
#: RUNNING attempt whose container vanished while the engine was down (started again)
NEXT: dict[str, frozenset[str]] = {
    SUBMITTED: frozenset({PENDING, FAILED}),
    PENDING: frozenset({RUNNABLE, RUNNING, FAILED}),  # RUNNING: an array parent, once a child runs
    RUNNABLE: frozenset({STARTING, FAILED}),
    STARTING: frozenset({RUNNING, RUNNABLE, FAILED, SUCCEEDED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, RUNNABLE}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
}

MAX_ATTEMPTS, MAX_EXIT_RULES, MAX_DEPENDENCIES = 10, 5, 20
MIN_ARRAY, MAX_ARRAY = 2, 10_000
DEP_MODES = ("STANDARD", "N_TO_N", "SEQUENTIAL", "ALL_DONE")
_REF = re.compile(r"Ref::([A-Za-z0-9_-]+)")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_SHARE = re.compile(r"[A-Za-z0-9_]{1,255}")

CANCELLED_REASON = "Cancelled by user"
TERMINATED_REASON = "Terminated by user"


class JobError(SluiceError):
    """Bad input at submit/register: ``code`` is the API's error code, nothing was written."""

    def __init__(self, message: str, code: str = "invalid_request", status: int = 400) -> None:
        super().__init__(message)
        self.code, self.status = code, status


class ChildError(JobError):
    """Array child *i*'s own spec cannot be made (a ``for_each`` item that does not fit the step's
    templates): that child alone is created FAILED, as a Batch array whose one child fails."""


def check_transition(job_id: str, old: str, new: str) -> None:
    if new not in NEXT[old]:
        raise JobError(f"job {job_id}: illegal transition {old} -> {new}", "illegal_transition", 409)


@dataclass(frozen=True, slots=True)
class RetryStrategy:
    """AWS Batch's retry strategy: ``attempts`` in total, ``evaluate_on_exit`` rules in order.

    Beyond Batch, which starts a retry at once: ``interval_s`` (with ``backoff_rate``,
    ``max_delay_s`` and ``jitter``, as a Step Functions ``Retry``) keeps a failed job RUNNABLE
    but out of the scheduler's sight until ``runnable_at``, so a job that failed on a flaky
    dependency waits for it to come back instead of burning its attempts in a second.
    """

    attempts: int = 1
    evaluate_on_exit: tuple[ExitRule, ...] = ()
    interval_s: float = 0.0
    backoff_rate: float = 2.0
    max_delay_s: float | None = None
    jitter: Literal["none", "full"] = "none"  #: "full": a uniform draw in [0, delay] (Step Functions: FULL)

    def should_retry(
        self, attempt: int, exit_code: int | None, status_reason: str | None, reason: str | None
    ) -> bool:
        """First matching rule wins; none matches -> retry while attempts remain.

        As in AWS Batch, ``on_status_reason`` is matched against the attempt's status reason
        (``Essential container in task exited``) and ``on_reason`` against the container's own
        reason (``OutOfMemoryError: ...``, ``CannotPullContainerError: ...``); an absent text
        is matched as the empty string, so only ``*`` matches it.
        """
        if attempt >= self.attempts:
            return False
        for rule in self.evaluate_on_exit:
            if _rule_matches(rule, exit_code, status_reason, reason):
                return rule.action == "retry"
        return True

    def to_json(self) -> dict[str, Any]:
        rules = [
            {k: v for k, v in zip(_RULE_KEYS, _rule_values(r), strict=True) if v is not None}
            for r in self.evaluate_on_exit
        ]
        out: dict[str, Any] = {"attempts": self.attempts, "evaluate_on_exit": rules}
        if self.interval_s:
            out.update(interval_s=self.interval_s, backoff_rate=self.backoff_rate, jitter=self.jitter)
            if self.max_delay_s is not None:
                out["max_delay_s"] = self.max_delay_s
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RetryStrategy:
        if not data:
            return cls()
        unknown = sorted(set(data) - _STRATEGY_KEYS)
        if unknown:
            raise JobError(
                f"retry_strategy: unknown field(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_STRATEGY_KEYS))}"
            )
        attempts = data.get("attempts", 1)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= MAX_ATTEMPTS:
            raise JobError(f"retry_strategy.attempts: must be an integer 1..{MAX_ATTEMPTS}, got {attempts!r}")
        raw = data.get("evaluate_on_exit") or []
        if not isinstance(raw, list) or len(raw) > MAX_EXIT_RULES:
            raise JobError(f"retry_strategy.evaluate_on_exit: a list of at most {MAX_EXIT_RULES} rules")
        rules = []
        for i, r in enumerate(raw):
            action = str(r.get("action", "")).lower() if isinstance(r, Mapping) else ""
            if action not in ("retry", "exit"):
                raise JobError(f"retry_strategy.evaluate_on_exit[{i}].action: write RETRY or EXIT")
            values = tuple(None if r.get(k) is None else str(r[k]) for k in _RULE_KEYS[1:])
            for key, value in zip(_RULE_KEYS[1:], values, strict=True):
                problem = None if value is None else exit_rule_problem(key, value)
                if problem is not None:
                    raise JobError(f"retry_strategy.evaluate_on_exit[{i}]: {problem}")
            rules.append(ExitRule(action, *values))  # type: ignore[arg-type]
        interval = _seconds(data.get("interval_s", 0.0), "interval_s", 0.0)
        rate = _seconds(data.get("backoff_rate", 2.0), "backoff_rate", 1.0, "a factor, 1.0 or more")
        cap = data.get("max_delay_s")
        jitter = data.get("jitter", "none")
        if jitter not in ("none", "full"):
            raise JobError(f"retry_strategy.jitter: write none or full, got {jitter!r}")
        return cls(
            attempts,
            tuple(rules),
            interval,
            rate,
            None if cap is None else _seconds(cap, "max_delay_s", 0.0),
            jitter,
        )


_STRATEGY_KEYS = frozenset(
    {"attempts", "evaluate_on_exit", "interval_s", "backoff_rate", "max_delay_s", "jitter"}
)
MAX_RETRY_DELAY_S = MAX_JOB_RETRY_DELAY_S


def _seconds(value: Any, name: str, low: float, what: str = "seconds") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= MAX_RETRY_DELAY_S:
        raise JobError(f"retry_strategy.{name}: {what} from {low:g} to {MAX_RETRY_DELAY_S:g}, got {value!r}")
    return float(value)


_RULE_KEYS = ("action", "on_exit_code", "on_reason", "on_status_reason")


def _rule_values(rule: ExitRule) -> tuple[str | None, ...]:
    return (rule.action.upper(), rule.on_exit_code, rule.on_reason, rule.on_status_reason)


def glob_match(pattern: str, value: str) -> bool:
    """Batch's patterns: exact, or a prefix when the pattern ends with ``*``."""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _rule_matches(
    rule: ExitRule, exit_code: int | None, status_reason: str | None, reason: str | None
) -> bool:
    if rule.on_exit_code is not None and (
        exit_code is None or not glob_match(rule.on_exit_code, str(exit_code))
    ):
        return False
    if rule.on_status_reason is not None and not glob_match(rule.on_status_reason, status_reason or ""):
        return False
    return rule.on_reason is None or glob_match(rule.on_reason, reason or "")


#: the status reason AWS gives an attempt whose container ran and exited (also after an OOM kill)
CONTAINER_EXITED = "Essential container in task exited"
#: ... and one whose container never started (a pull, create or start failure)
TASK_FAILED_TO_START = "Task failed to start"
_CONTAINER_ERRORS = ("CannotPullContainerError", "CannotCreateContainerError", "CannotStartContainerError",
                     "OutOfMemoryError")  # fmt: skip


def split_reasons(reason: str | None) -> tuple[str | None, str | None]:
    """An attempt's recorded reason as AWS reports it: (status reason, container reason).

    The runner records one text per attempt; AWS keeps two, and ``evaluateOnExit`` matches
    ``onStatusReason`` against the first and ``onReason`` against the second."""
    if reason is None:
        return None, None
    head = reason.split(":", 1)[0]
    if head == "OutOfMemoryError":
        return CONTAINER_EXITED, reason
    if head in _CONTAINER_ERRORS:
        return TASK_FAILED_TO_START, reason
    return reason, None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A resolved job definition: what each attempt's container is made of (final data)."""

    image: str
    command: tuple[str, ...] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    #: env values holding a secret from ``${env:...}``, sealed (workflows/secrets.py): resolved
    #: only when the container is created; only a workflow's container step sets them
    secrets: dict[str, str] = field(default_factory=dict)
    vcpus: float = 1.0
    memory: int = 512 << 20
    volumes: tuple[tuple[str, str, bool], ...] = ()
    parameters: dict[str, str] = field(default_factory=dict)
    retry: RetryStrategy = field(default_factory=RetryStrategy)
    timeout_s: float | None = None
    user: str | None = None
    working_dir: str | None = None
    network: str | None = None
    definition: str | None = None  #: ``name:revision`` of the registered definition it came from
    tags: dict[str, str] = field(default_factory=dict)
    scheduling_priority: int | None = None  #: higher first within its share on a fair-share queue
    #: False: never preempted for a higher-priority queue's job (engine/batch/queues.py)
    preemptible: bool = True
    share: str | None = None  #: ``shareIdentifier``, for a queue with a fair-share policy

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "command": None if self.command is None else list(self.command),
            "environment": self.environment,
            "secrets": self.secrets,
            "vcpus": self.vcpus,
            "memory": self.memory,
            "volumes": [{"host": h, "container": c, "read_only": ro} for h, c, ro in self.volumes],
            "parameters": self.parameters,
            "retry_strategy": self.retry.to_json(),
            "timeout": self.timeout_s,
            "user": self.user,
            "working_dir": self.working_dir,
            "network": self.network,
            "definition": self.definition,
            "tags": self.tags,
            "scheduling_priority": self.scheduling_priority,
            "preemptible": self.preemptible,
            "share_identifier": self.share,
        }

    def substituted(self) -> tuple[str, ...] | None:
        """The command with every argument that is exactly ``Ref::name`` replaced by its value.

        Whole arguments only, unlike AWS Batch, which replaces ``Ref::name`` inside any string: a
        value is always one argv element, never spliced into a string a program parses again (a
        shell's ``-c`` script). ``Ref::`` inside a longer argument, or an unknown name, stays as
        written; submit refuses it in a shell script (:func:`check_command`).
        """
        if self.command is None:
            return None
        params = self.parameters
        return tuple(params.get(arg[5:], arg) if _REF.fullmatch(arg) else arg for arg in self.command)


#: the spec of :meth:`Job.ended` stand-ins (never run)
ENDED_SPEC = JobSpec(image="")


def parse_spec(data: Mapping[str, Any], allowed_roots: Sequence[Path]) -> JobSpec:
    """A definition body (API/CLI JSON, or a stored row) -> JobSpec; JobError names the field."""
    if not isinstance(data, Mapping):
        raise JobError("a job definition must be a JSON object")
    if data.get("privileged"):
        raise JobError("privileged: Sluice never runs privileged containers (remove the field)")
    image = data.get("image")
    if not isinstance(image, str) or not image.strip():
        raise JobError("image: required, e.g. busybox:1.36")
    command = data.get("command")
    if command is not None and (
        not isinstance(command, list) or not all(isinstance(a, str) for a in command)
    ):
        raise JobError(
            f'command: must be a list of strings (argv), e.g. ["sh", "-c", "echo hi"], got {command!r}'
        )
    env = data.get("environment") or {}
    if not isinstance(env, Mapping):
        raise JobError("environment: must be an object of NAME: value")
    sealed = data.get("secrets") or {}
    if not isinstance(sealed, Mapping) or not all(isinstance(v, str) for v in sealed.values()):
        raise JobError("secrets: must be an object of NAME: sealed reference")
    vcpus = _number(data.get("vcpus", 1.0), "vcpus")
    memory = int(_number(data.get("memory", 512 << 20), "memory"))
    if memory < 4 << 20:
        raise JobError(f"memory: at least 4 MiB (in bytes), got {memory}")
    params = data.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise JobError("parameters: must be an object of name: value")
    timeout = data.get("timeout")
    if timeout is not None:
        timeout = _number(timeout, "timeout")
    network = data.get("network")
    tags = data.get("tags") or {}
    if not isinstance(tags, Mapping) or len(tags) > 50:
        raise JobError("tags: an object of at most 50 key: value strings")
    priority = data.get("scheduling_priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise JobError(f"scheduling_priority: an integer, got {priority!r}")
    definition = data.get("definition")
    preemptible = data.get("preemptible", True)
    if not isinstance(preemptible, bool):
        raise JobError(f"preemptible: true or false, got {preemptible!r}")
    share = data.get("share_identifier")
    if share is not None and (not isinstance(share, str) or not _SHARE.fullmatch(share)):
        raise JobError(f"share_identifier: up to 255 letters, digits and _ (no trailing *), got {share!r}")
    return JobSpec(
        image=image,
        command=None if command is None else tuple(command),
        environment={str(k): _env_text(v) for k, v in env.items()},
        secrets={str(k): v for k, v in sealed.items()},
        vcpus=vcpus,
        memory=memory,
        volumes=tuple(check_volume(v, allowed_roots) for v in data.get("volumes") or ()),
        parameters={str(k): str(v) for k, v in params.items()},
        retry=RetryStrategy.from_json(data.get("retry_strategy")),
        timeout_s=timeout,
        user=data.get("user"),
        working_dir=data.get("working_dir"),
        network=None if network in (None, "bridge", "default") else str(network),
        definition=None if definition is None else str(definition),
        tags={str(k): str(v) for k, v in tags.items()},
        scheduling_priority=priority,
        preemptible=preemptible,
        share=share,
    )


def check_command(spec: JobSpec) -> None:
    """Refuse ``Ref::`` in a shell's ``-c`` script: a parameter must never become shell code."""
    if spec.command is None:
        return
    i = data_in_script(spec.command, ("Ref::",))
    if i is not None:
        raise JobError(
            f"command[{i}]: a shell script cannot hold Ref:: (the value would run as shell code); "
            'pass it as an argument after the script instead, e.g. ["sh", "-c", "echo \\"$1\\"", '
            '"sh", "Ref::name"], or through environment'
        )


def _env_text(value: Any) -> str:
    import json

    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise JobError(f"{where}: must be a positive number, got {value!r}")
    return float(value)


def check_volume(vol: Any, allowed_roots: Sequence[Path]) -> tuple[str, str, bool]:
    if isinstance(vol, Mapping):
        host, cont, ro = vol.get("host"), vol.get("container"), bool(vol.get("read_only", False))
    elif isinstance(vol, list | tuple) and len(vol) == 3:
        host, cont, ro = vol[0], vol[1], bool(vol[2])
    else:
        raise JobError(f"volumes: each is {{host, container, read_only}}, got {vol!r}")
    if not isinstance(host, str) or not os.path.isabs(host) or not isinstance(cont, str):
        raise JobError(f"volumes: host and container must be absolute paths, got {vol!r}")
    real = mountable(host, allowed_roots)
    if real is None:
        allowed = ", ".join(str(r) for r in allowed_roots)
        raise JobError(
            f"volumes: {host} is outside the allowed host paths ({allowed}); "
            "add it to SLUICE_VOLUME_ALLOW to allow it",
            "volume_not_allowed",
        )
    return str(real), cont, ro


@dataclass(slots=True)
class Job:
    """One job row in memory (a non-terminal job, or one just finished)."""

    id: str
    name: str
    queue: str
    spec: JobSpec
    seq: int = 0
    status: str = SUBMITTED
    status_reason: str | None = None
    parent_id: str | None = None
    array_size: int | None = None
    array_index: int | None = None
    attempts: int = 0
    environment: str | None = None
    host: str | None = None  #: the host of its environment its current attempt runs on (``hosts:``)
    exit_code: int | None = None
    run_id: str | None = None
    step: str | None = None
    created_at: float = 0.0
    runnable_at: float | None = None
    started_at: float | None = None
    stopped_at: float | None = None
    container_id: str | None = None
    preemptions: int = 0  #: attempts a preemption ended: they do not count against the retry strategy

    @property
    def is_parent(self) -> bool:
        return self.array_size is not None and self.array_index is None

    @classmethod
    def ended(cls, job_id: str, status: str, reason: str | None) -> Job:
        """A stand-in for a job that ended in the store: enough to settle what waited on it."""
        return cls(id=job_id, name="", queue="", spec=ENDED_SPEC, status=status, status_reason=reason)


def new_job_id() -> str:
    return ordered_id("j-")


def slot_of(job: Job) -> Slot:
    """What the scheduler sees of a RUNNABLE job."""
    spec = job.spec
    since = job.runnable_at or job.created_at
    return Slot(job.id, job.seq, spec.vcpus, spec.memory, since, spec.share, spec.scheduling_priority or 0)
