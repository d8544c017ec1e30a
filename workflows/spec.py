"""The workflow spec: frozen values the loader builds once and the engine only reads.

Units are in the names (``timeout_s``, ``memory_bytes``): durations and sizes were parsed at load.
Secret fields use ``repr=False`` so a logged spec never shows a webhook secret or a signing key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from workflows.dag import Dag
from workflows.templating import Renderable

ParamType = Literal["string", "integer", "number", "boolean", "object", "array"]
PARAM_TYPES: tuple[str, ...] = ("string", "integer", "number", "boolean", "object", "array")
MIB = 1024**2


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One input parameter of a workflow; the run input is checked against it."""

    name: str
    type: ParamType = "string"
    default: Any = None
    required: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class ExitRule:
    """Batch's ``evaluateOnExit``: the first rule whose patterns match decides retry or exit."""

    action: Literal["retry", "exit"]
    on_exit_code: str | None = None
    on_reason: str | None = None
    on_status_reason: str | None = None


#: AWS Batch's ``EvaluateOnExit`` syntax: an exit code is digits, a reason letters, digits,
#: periods, colons and white space; either may end with one ``*`` (a prefix match), 512 at most
_EXIT_CODE_GLOB = re.compile(r"[0-9]*\*?")
_REASON_GLOB = re.compile(r"[A-Za-z0-9.: \t]*\*?")
EXIT_RULE_MAX = 512


def exit_rule_problem(name: str, value: str) -> str | None:
    """Why ``value`` is not a valid ``on_exit_code``/``on_reason``/``on_status_reason``, else None."""
    glob = _EXIT_CODE_GLOB if name == "on_exit_code" else _REASON_GLOB
    if not value or len(value) > EXIT_RULE_MAX:
        return f"{name} must be 1 to {EXIT_RULE_MAX} characters, got {len(value)}"
    if glob.fullmatch(value) is None:
        what = "digits" if name == "on_exit_code" else "letters, digits, periods, colons and spaces"
        return f"{name} {value!r} may hold only {what}, optionally ending with one * (AWS Batch's syntax)"
    return None


#: a Batch job's retry waits at most a day (longer is a schedule's job, not a retry's): container
#: steps are checked against it when loaded, the jobs API when a job is submitted
MAX_JOB_RETRY_DELAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class RetrySpec:
    """Step Functions' Retry: ``attempts`` counts every attempt, the first included."""

    attempts: int = 1
    interval_s: float = 1.0
    backoff_rate: float = 2.0
    max_delay_s: float | None = None
    jitter: Literal["full", "none"] = "none"  #: Step Functions' JitterStrategy defaults to NONE
    errors: tuple[str, ...] = ("*",)
    evaluate_on_exit: tuple[ExitRule, ...] = ()


@dataclass(frozen=True, slots=True)
class VolumeSpec:
    """A bind mount ``host:container[:ro]``."""

    host: str
    container: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """A Batch job definition; ``command`` is an argv list, never a shell string."""

    image: str
    command: tuple[Renderable, ...] | None = None
    env: dict[str, Renderable] = field(default_factory=dict)
    vcpus: float = 1.0
    memory_bytes: int = 512 * MIB
    queue: str = "default"
    volumes: tuple[VolumeSpec, ...] = ()
    working_dir: str | None = None
    user: str | None = None
    network: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    preemptible: bool = True  #: False: a preempting queue never takes its capacity
    share_identifier: str | None = None  #: its share on a fair-share queue


@dataclass(frozen=True, slots=True)
class WaitSpec:
    """Step Functions' Wait: a fixed number of seconds or until a (templated) ISO timestamp."""

    seconds: float | None = None
    until: Renderable | None = None


@dataclass(frozen=True, slots=True)
class FailSpec:
    """Step Functions' Fail: ends the step FAILED with this error name and cause."""

    error: str
    cause: Renderable | None = None


@dataclass(frozen=True, slots=True)
class ConcurrencySpec:
    """A workflow's ``concurrency``: at most ``limit`` runs at once per value of ``key`` (one
    bucket for the whole workflow when there is no key); the rest wait PENDING, in order. A
    function step's keyed ``concurrency``: at most ``limit`` attempts per key value, the rest WAITING."""

    limit: int
    key: Renderable | None = None  #: a workflow's renders from ``event`` and ``params``


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step; ``kind`` says which of function/container/wait/fail is set."""

    name: str
    kind: Literal["function", "container", "wait", "fail"]
    needs: tuple[str, ...] = ()
    when: Renderable | None = None
    input: Renderable | None = None
    function: str | None = None
    container: ContainerSpec | None = None
    wait: WaitSpec | None = None
    fail: FailSpec | None = None
    timeout_s: float | None = None
    memory_bytes: int | None = None
    concurrency: int | None = None  #: attempts of its function at once (the pool's, per handler)
    keyed: ConcurrencySpec | None = None  #: ``concurrency: {key, limit}``: attempts per key value
    retry: RetrySpec = field(default_factory=RetrySpec)
    on_failure: Literal["fail", "continue"] = "fail"
    for_each: Renderable | None = None
    max_concurrency: int | None = None  #: items of the for_each in flight at once (Map's MaxConcurrency)
    array: int | None = None
    #: a function step's env: literal values (secrets from ${env:NAME}), added for its calls only
    env: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class BatchSpec:
    """A trigger's ``batch``: its events go to one run per ``max_events`` or per ``window_s``
    (from the first event waiting), whichever comes first, as SQS batches reach a Lambda."""

    max_events: int
    window_s: float


@dataclass(frozen=True, slots=True)
class FileTrigger:
    """S3-style notifications for a folder (``path`` is absolute, resolved against the workflow)."""

    name: str
    path: Path
    input: Renderable | None = None
    recursive: bool = False
    prefix: str = ""
    suffix: str = ""
    glob: str | None = None
    events: tuple[str, ...] = ("created",)
    after: str = "keep"
    stable_s: float = 0.0
    batch: BatchSpec | None = None


@dataclass(frozen=True, slots=True)
class ScheduleTrigger:
    """A cron/rate schedule with its time zone and missed-run policy."""

    name: str
    expression: str
    input: Renderable | None = None
    timezone: str = "UTC"
    catchup: Literal["none", "latest", "all"] = "none"
    catchup_window_s: float | None = None
    max_catchup: int = 10


@dataclass(frozen=True, slots=True)
class WebhookTrigger:
    """``POST /hooks/<workflow>/<name>``; ``auth`` is explicit or derived from secret/token."""

    name: str
    input: Renderable | None = None
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    signature_header: str = "X-Hub-Signature-256"
    timestamp_header: str | None = None
    tolerance_s: float = 300.0
    auth: Literal["hmac", "token", "none"] = "hmac"
    schema: dict[str, Any] | None = None
    max_body_bytes: int = MIB
    batch: BatchSpec | None = None


@dataclass(frozen=True, slots=True)
class EventTrigger:
    """Starts a run for every bus event matching an EventBridge pattern."""

    name: str
    pattern: dict[str, Any]
    compiled: Any
    input: Renderable | None = None
    batch: BatchSpec | None = None


TriggerSpec = FileTrigger | ScheduleTrigger | WebhookTrigger | EventTrigger


@dataclass(frozen=True, slots=True)
class NotifySpec:
    """A subscriber told about run state changes (HMAC-signed with ``secret`` when given)."""

    url: str
    on: tuple[str, ...] = ("SUCCEEDED", "FAILED")
    secret: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    pattern: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class DestinationSpec:
    """Lambda-style destination: where a run's invocation record goes when it succeeds or fails.

    Exactly one of ``url`` (an HTTP subscriber, signed with ``secret``) or ``workflow`` (a run of
    that workflow, started with the record as its event's detail).
    """

    url: str | None = None
    workflow: str | None = None
    secret: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class Workflow:
    """A loaded workflow file: everything validated, durations/sizes parsed, templates compiled."""

    name: str
    description: str
    file: Path
    dir: Path
    triggers: tuple[TriggerSpec, ...]
    params: dict[str, ParamSpec]
    steps: dict[str, StepSpec]
    outputs: Renderable | None
    notify: tuple[NotifySpec, ...]
    dag: Dag
    on_success: DestinationSpec | None = None
    on_failure: DestinationSpec | None = None
    #: the variables its ``${env:NAME}`` values came from: secrets wherever they go (secrets.py)
    secrets: frozenset[str] = frozenset()
    concurrency: ConcurrencySpec | None = None
    #: a hash of the file's text: which version of the workflow a run was made with
    version: str = ""
