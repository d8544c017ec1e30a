"""EventBridge rules made at run time (PutRule, PutTargets): kept in the store, routed by the bus.

A rule is its name, an event pattern, a state and up to five targets, kept as one JSON document
in the store's key/value table (``aws.events.rules``), so rules outlive restarts like workflow
triggers do. Every change is written first, then the bus gets the new, complete set of rules
(``Bus.extra_rules``, a tuple replaced whole). Targets:

- a workflow, ``arn:aws:states:REGION:ACCOUNT:stateMachine:WORKFLOW`` (Step Functions' ARN form):
  the bus starts the run in the event's own transaction, as for a workflow's ``event:`` trigger;
- a webhook, its ``http(s)://`` URL as the ``Arn`` (``HttpParameters.HeaderParameters`` its
  headers): a notification subscriber of the outbox (engine/notify/), so the POST is written in
  the event's transaction and retried with backoff, then dead-lettered, like any notification;
- a job queue, ``arn:aws:batch:REGION:ACCOUNT:job-queue/QUEUE`` with ``BatchParameters``: the
  job is submitted right after the event commits; the input's ``Parameters`` and
  ``ContainerOverrides`` become the job's, as EventBridge does. Exactly once: the event's
  transaction writes an "owed" key per matched target (``aws.events.owed/...``) and the job's
  transaction deletes it, so a crash in between leaves the key, and the next start submits it; a
  submission that finds its key gone (done already, or the event's transaction rolled back) writes
  nothing. A submission Batch refuses (its job definition deleted since) is logged and dropped,
  where EventBridge would count a failed invocation.

A rule with a ``ScheduleExpression`` (``rate(...)``/``cron(...)``, UTC) puts an ``aws.events`` /
``Scheduled Event`` with the rule's ARN as its resource on the bus at each fire (the schedule
trigger's runner keeps its cursor, so a restart neither repeats nor bursts), and its targets
match exactly those events.

The input is EventBridge's: the whole event, or ``Input`` (constant JSON), ``InputPath`` or an
``InputTransformer`` (engine/notify/subscribers.py's, the one notifications use).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from engine.aws.protocol import AwsError
from engine.batch.detail import names
from engine.bus.bus import Rule
from engine.engine import Engine
from engine.events import envelope
from engine.notify.sender import NotifyService
from engine.notify.subscribers import Subscriber, Transform, TransformError, safe_url
from engine.store.kv import StoreKV, put_in, take_in
from engine.store.records import dumps
from engine.store.store import StoreClosed, StoreFull, StoreUnavailable
from triggers.base import Emit
from triggers.schedule import ScheduleTriggerRunner
from workflows.errors import PatternError, ScheduleError, SluiceError
from workflows.patterns import Pattern, compile_pattern
from workflows.schedules import parse_schedule

log = logging.getLogger(__name__)

KEY = "aws.events.rules"
#: one key per (event, queue target) whose job is owed; see the module docstring
OWED = "aws.events.owed/"


class _AlreadySubmitted(Exception):
    """Rolls a job submission back: its owed key is gone, so the job exists or is not owed."""


#: EventBridge's predefined InputTransformer variables, as paths into what ``value`` renders
PREDEFINED = {
    "aws.events.rule-name": "$._rule.name",
    "aws.events.rule-arn": "$._rule.arn",
    "aws.events.event": "$._event",
    "aws.events.event.json": "$._event",
    "aws.events.event.ingestion-time": "$.time",
}
SCHEDULED_SOURCE = "aws.events"
#: the outbox keys of webhook targets: ``aws-rule:RULE/TARGET``
SUBSCRIBER_PREFIX = "aws-rule:"
MAX_TARGETS = 5
WORKFLOW_ARN = "stateMachine:"
QUEUE_ARN = "job-queue/"


class TargetInput:
    """What a target gets of an event: the event, or EventBridge's Input/InputPath/InputTransformer."""

    is_static = False
    variables: frozenset[str] = frozenset()

    def __init__(self, target: Mapping[str, Any], rule: str = "") -> None:
        self.rule = {"name": rule, "arn": rule_arn(rule)}
        self.constant: Any = None
        self.transform: Transform | None = None
        kinds = [k for k in ("Input", "InputPath", "InputTransformer") if target.get(k) is not None]
        if len(kinds) > 1:
            raise AwsError(
                "ValidationException", f"target {target.get('Id')}: give only one of {', '.join(kinds)}"
            )
        try:
            if "Input" in kinds:
                self.constant = json.loads(target["Input"])
            elif "InputPath" in kinds:
                self.transform = Transform.parse({"paths": {"v": target["InputPath"]}, "template": "<v>"})
            elif "InputTransformer" in kinds:
                spec = target["InputTransformer"]
                paths = {**PREDEFINED, **(spec.get("InputPathsMap") or {})}
                self.transform = Transform.parse({"paths": paths, "template": spec.get("InputTemplate")})
        except (ValueError, TransformError, TypeError, AttributeError) as exc:
            raise AwsError("ValidationException", f"target {target.get('Id')}: {exc}") from None
        self.kind = kinds[0] if kinds else None

    def value(self, event: Mapping[str, Any]) -> Any:
        clean = {k: v for k, v in event.items() if not k.startswith("_")}
        if self.kind is None:
            return clean
        if self.transform is None:
            return self.constant
        return json.loads(self.transform.render({**clean, "_rule": self.rule, "_event": clean}))

    def render(self, ctx: Mapping[str, Any]) -> Any:
        """The bus's Renderable: a run's input from ``ctx["event"]``."""
        try:
            return self.value(ctx["event"])
        except ValueError as exc:  # a transformer whose text is not JSON once filled in
            raise SluiceError(f"the target's input is not JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class QueueTarget:
    rule: str
    target_id: str
    pattern: Pattern
    queue: str
    params: Mapping[str, Any]
    input: TargetInput


def rule_arn(name: str) -> str:
    return names().arn("events", f"rule/{name}")


def scheduled_pattern(rule: str) -> dict[str, Any]:
    """What a schedule rule's targets match: its own fires, nothing else."""
    return {"source": [SCHEDULED_SOURCE], "detail-type": ["Scheduled Event"], "resources": [rule_arn(rule)]}


def check_schedule(expression: str) -> None:
    """EventBridge's two forms (``rate(...)``, ``cron(...)``, in UTC); AwsError says what to write."""
    if not expression.startswith(("rate(", "cron(")):
        raise AwsError(
            "ValidationException", "Parameter ScheduleExpression is not valid: write rate(...) or cron(...)"
        )
    try:
        parse_schedule(expression)
    except ScheduleError as exc:
        raise AwsError("ValidationException", f"Parameter ScheduleExpression is not valid: {exc}") from None


def compile_rule_pattern(text: Any) -> Pattern:
    try:
        pattern = json.loads(text) if isinstance(text, str) else text
        return compile_pattern(pattern)
    except (ValueError, PatternError) as exc:
        raise AwsError("InvalidEventPatternException", f"Event pattern is not valid. Reason: {exc}") from None


def target_kind(arn: str) -> tuple[str, str]:
    """``("workflow", name)`` or ``("queue", name)`` from a target's ARN."""
    resource = arn.split(":", 5)[5] if arn.startswith("arn:") and arn.count(":") >= 5 else ""
    if arn.startswith("arn:aws:states:") and resource.startswith(WORKFLOW_ARN):
        return "workflow", resource.removeprefix(WORKFLOW_ARN)
    if arn.startswith("arn:aws:batch:") and resource.startswith(QUEUE_ARN):
        return "queue", resource.removeprefix(QUEUE_ARN)
    if arn.startswith(("http://", "https://")) and urlsplit(arn).hostname:
        return "webhook", arn
    where = f"{names().region}:{names().account}"
    raise ValueError(
        f"target {safe_url(arn)!r}: write arn:aws:states:{where}:stateMachine:WORKFLOW, "
        f"arn:aws:batch:{where}:job-queue/QUEUE or a webhook's https:// URL"
    )


def webhook_subscriber(
    rule: str, target: Mapping[str, Any], pattern: Pattern, given: TargetInput
) -> Subscriber:
    headers = ((target.get("HttpParameters") or {}).get("HeaderParameters")) or {}
    return Subscriber(
        key=f"{SUBSCRIBER_PREFIX}{rule}/{target['Id']}",
        url=str(target["Arn"]),
        pattern=pattern,
        headers={str(k): str(v) for k, v in headers.items()},
        render=lambda env: dumps(given.value(env)),
    )


class EventRules:
    """The rules of the default event bus; an Engine service (``start`` loads and installs them)."""

    name = "aws-rules"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: the notification sender that delivers webhook targets (set by the composition root)
        self.notify: NotifyService | None = None
        self.kv = StoreKV(engine.store)
        self.rules: dict[str, dict[str, Any]] = {}
        self.queue_targets: tuple[QueueTarget, ...] = ()
        self._pending: list[tuple[QueueTarget, dict[str, Any], str]] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._schedules: dict[str, tuple[str, asyncio.Task[None]]] = {}  #: rule -> (expression, runner)
        engine.bus.add_tx_hook(self._hook)
        engine.bus.on_commit(self._committed)

    async def start(self) -> None:
        self.rules = dict(await self.kv.get(KEY) or {})
        self._install()
        await self._owed_at_start()

    async def _owed_at_start(self) -> None:
        """The jobs a crash left owed: offered again (a duplicate offer writes nothing)."""
        targets = {(t.rule, t.target_id): t for t in self.queue_targets}
        for key, owed in await self.kv.prefixed(OWED):
            target = targets.get((owed.get("rule"), owed.get("target")))
            if target is None:  # the rule or its target is gone, or disabled, since
                log.warning("%s: no such enabled queue target now; the job is not submitted", key)
                await self.kv.delete(key)
                continue
            self._pending.append((target, owed["event"], key))
        if self._pending:
            log.info("%d job(s) owed by rules before the restart are submitted now", len(self._pending))
            self._wake.set()

    async def aclose(self) -> None:
        for _, task in self._schedules.values():
            task.cancel(msg="engine stopping")
        await asyncio.gather(*(t for _, t in self._schedules.values()), return_exceptions=True)
        self._schedules.clear()

    async def run(self) -> None:
        """Submit the jobs of queue targets whose events have committed."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                pending, self._pending = self._pending, []
                for target, event, key in pending:
                    await self._submit(target, event, key)
        finally:
            await self.aclose()  # the schedule runners end with the service

    async def save(self, rules: dict[str, dict[str, Any]]) -> None:
        """Write the new set of rules, then route by it."""
        async with self._lock:
            await self.kv.set(KEY, rules)
            self.rules = rules
            self._install()

    def _install(self) -> None:
        bus_rules: list[Rule] = []
        queues: list[QueueTarget] = []
        hooks: list[Subscriber] = []
        schedules: dict[str, str] = {}
        for name, rule in sorted(self.rules.items()):
            if rule.get("State") != "ENABLED":
                continue
            if rule.get("ScheduleExpression") is not None:
                schedules[name] = rule["ScheduleExpression"]
            try:
                pattern = compile_rule_pattern(rule.get("EventPattern") or scheduled_pattern(name))
            except AwsError as exc:  # checked when put; a stored rule that no longer compiles is skipped
                log.error("rule %s is skipped: %s", name, exc.message)
                continue
            for target in rule.get("Targets", []):
                try:
                    kind, what = target_kind(target["Arn"])
                    given = TargetInput(target, name)
                except (ValueError, AwsError) as exc:
                    log.error("rule %s target %s is skipped: %s", name, target.get("Id"), exc)
                    continue
                if kind == "workflow":
                    if what in self.engine.catalog:
                        bus_rules.append(Rule(what, f"rule/{name}/{target['Id']}", pattern, given))
                    else:  # the workflow was removed since PutTargets; the target waits for it
                        log.warning(
                            "rule %s target %s: no workflow %r is loaded; idle", name, target["Id"], what
                        )
                elif kind == "webhook":
                    hooks.append(webhook_subscriber(name, target, pattern, given))
                else:
                    queues.append(
                        QueueTarget(name, target["Id"], pattern, what, target["BatchParameters"], given)
                    )
        self.engine.bus.extra_rules = tuple(bus_rules)
        self.queue_targets = tuple(queues)
        self._run_schedules(schedules)
        if self.notify is not None:
            self.notify.replace_subscribers(SUBSCRIBER_PREFIX, hooks)
        elif hooks:
            log.error("webhook targets need the notification sender; %d target(s) idle", len(hooks))

    def _run_schedules(self, wanted: dict[str, str]) -> None:
        """One schedule runner per enabled schedule rule; a changed or removed one is stopped."""
        for name, (expression, task) in list(self._schedules.items()):
            if wanted.get(name) != expression:
                task.cancel(msg="rule changed")
                del self._schedules[name]
        for name, expression in wanted.items():
            if name not in self._schedules:
                runner = ScheduleTriggerRunner(
                    name=name, workflow="aws-rules", schedule=parse_schedule(expression), kv=self.kv
                )
                task = asyncio.create_task(runner.run(self._scheduled(name)), name=f"rule schedule {name}")
                self._schedules[name] = (expression, task)

    def _scheduled(self, rule: str) -> Emit:
        async def emit(
            event: dict[str, Any], *, dedupe_key: str | None = None, workflow: str | None = None
        ) -> Any:
            out = envelope(SCHEDULED_SOURCE, "Scheduled Event", {}, resources=[rule_arn(rule)])
            out["time"], out["account"], out["region"] = event["time"], names().account, names().region
            return await self.engine.bus.put(out, dedupe_key=dedupe_key)

        return emit

    def _hook(self, conn: sqlite3.Connection, env: dict[str, Any], depth: int) -> None:
        """In the event's transaction (the writer thread): note the queue targets it matches."""
        for target in self.queue_targets:
            if target.pattern.matches(env):
                event = {k: v for k, v in env.items() if not k.startswith("_")}
                key = f"{OWED}{env.get('id')}/{target.rule}/{target.target_id}"
                put_in(conn, key, {"rule": target.rule, "target": target.target_id, "event": event})
                self._pending.append((target, event, key))

    def _committed(self) -> None:
        if self._pending:
            self._wake.set()

    async def _submit(self, target: QueueTarget, event: dict[str, Any], key: str) -> None:
        batch = self.engine.batch
        if batch is None:
            log.error("rule %s: no Docker engine, so no job for event %s", target.rule, event.get("id"))
            await self.kv.delete(key)
            return

        def settle(conn: sqlite3.Connection, job: Any) -> None:
            if not take_in(conn, key):
                raise _AlreadySubmitted(key)

        try:
            given = target.input.value(event)
            given = given if isinstance(given, Mapping) else {}
            params, array = target.params, target.params.get("ArrayProperties") or {}
            over = given.get("ContainerOverrides") or {}
            req = {
                "queue": target.queue,
                "definition": str(params["JobDefinition"]).split("job-definition/")[-1],
                "name": params.get("JobName") or target.rule,
                "array_size": array.get("Size"),
                "parameters": dict(given.get("Parameters") or {}),
                "attempts": (params.get("RetryStrategy") or {}).get("Attempts"),
                "container_overrides": {k: over[k] for k in ("command",) if k in over},
            }
            out = await batch.submit(req, before_commit=settle)
            log.info("rule %s: event %s submitted job %s", target.rule, event.get("id"), out["job_id"])
        except _AlreadySubmitted:
            log.debug("rule %s: event %s has its job already", target.rule, event.get("id"))
        except (StoreClosed, StoreFull, StoreUnavailable) as exc:  # the key stays owed: next start
            log.warning("rule %s: event %s's job waits for the next start: %s", target.rule,
                        event.get("id"), exc)  # fmt: skip
        except Exception as exc:
            log.error("rule %s target %s: no job for event %s: %s", target.rule, target.target_id,
                      event.get("id"), exc)  # fmt: skip
            await self.kv.delete(key)
