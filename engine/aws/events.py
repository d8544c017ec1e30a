"""The EventBridge JSON 1.1 API (``POST /`` with ``X-Amz-Target: AWSEvents.<Operation>``).

One event bus, ``default``, which is Sluice's bus: PutEvents commits the events through it (and
starts what they match: workflow ``event:`` triggers, notifications, rules made here), and
rules are the ones of engine/aws/rules.py. Operations: PutEvents, PutRule, DescribeRule,
ListRules, DeleteRule, EnableRule, DisableRule, PutTargets, RemoveTargets, ListTargetsByRule,
TestEventPattern. Departures from AWS are listed in docs/aws.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from engine.api.http import parse_time
from engine.aws.protocol import JSON_11, AwsError, Body, Operation, next_token, page, serve
from engine.aws.rules import (
    MAX_TARGETS,
    EventRules,
    TargetInput,
    check_schedule,
    compile_rule_pattern,
    rule_arn,
    target_kind,
)
from engine.batch.detail import names
from engine.events import RESERVED_SOURCES, envelope, iso

MAX_ENTRIES = 10
MAX_ENTRY_BYTES = 256 * 1024
_RULE_NAME = re.compile(r"[.\-_A-Za-z0-9]{1,64}")
_TEST_EVENT_FIELDS = ("id", "account", "source", "time", "region", "resources", "detail-type")


def _str(body: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise AwsError("ValidationException", f"1 validation error detected: {name} must not be null")
        return None
    if not isinstance(value, str):
        raise AwsError("ValidationException", f"{name} must be a string")
    return value


def _bus(body: Mapping[str, Any]) -> None:
    bus = _str(body, "EventBusName")
    if bus not in (None, "default", names().arn("events", "event-bus/default")):
        raise AwsError(
            "ResourceNotFoundException", f"Event bus {bus} does not exist; Sluice has one: default"
        )


class EventsApi:
    def __init__(self, rules: EventRules) -> None:
        self.rules = rules
        self.bus = rules.engine.bus

    def operation(self, target: str | None) -> Operation:
        prefix, _, name = (target or "").partition(".")
        op = _OPERATIONS.get(name) if prefix == "AWSEvents" else None
        if op is None:
            raise AwsError("UnknownOperationException", f"unknown or unsupported operation {target!r}")
        return getattr(self, op)

    def _rule(self, body: Body) -> tuple[str, dict[str, Any]]:
        _bus(body)
        name = _str(body, "Rule" if "Rule" in body else "Name", required=True) or ""
        rule = self.rules.rules.get(name)
        if rule is None:
            raise AwsError("ResourceNotFoundException", f"Rule {name} does not exist on EventBus default.")
        return name, rule

    # -- events -------------------------------------------------------------------------------

    async def put_events(self, body: Body) -> Body:
        entries = body.get("Entries")
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_ENTRIES:
            raise AwsError("ValidationException", f"Entries must hold 1 to {MAX_ENTRIES} entries")
        answers: list[dict[str, Any]] = []
        good: list[tuple[int, dict[str, Any]]] = []
        for i, entry in enumerate(entries):
            try:
                good.append((i, _event_of(entry)))
                answers.append({})
            except AwsError as exc:
                answers.append({"ErrorCode": exc.code, "ErrorMessage": exc.message})
        if good:
            results = await self.bus.put_many([(ev, None, None) for _, ev in good])
            for (i, _), result in zip(good, results, strict=True):
                answers[i] = {"EventId": result.event_id}
        return {"FailedEntryCount": sum("ErrorCode" in a for a in answers), "Entries": answers}

    async def test_event_pattern(self, body: Body) -> Body:
        pattern = compile_rule_pattern(_str(body, "EventPattern", required=True))
        try:
            event = json.loads(_str(body, "Event", required=True) or "")
        except ValueError:
            raise AwsError("InvalidEventPatternException", "Event is not valid JSON") from None
        missing = [f for f in _TEST_EVENT_FIELDS if not isinstance(event, dict) or f not in event]
        if missing:
            raise AwsError(
                "ValidationException", f"Parameter Event is not valid: it lacks {', '.join(missing)}"
            )
        return {"Result": pattern.matches(event)}

    # -- rules --------------------------------------------------------------------------------

    async def put_rule(self, body: Body) -> Body:
        _bus(body)
        name = _str(body, "Name", required=True) or ""
        if not _RULE_NAME.fullmatch(name):
            raise AwsError("ValidationException", "Name: 1 to 64 letters, digits, '.', '-' and '_'")
        pattern, schedule = _str(body, "EventPattern"), _str(body, "ScheduleExpression")
        if pattern is None and schedule is None:
            raise AwsError(
                "ValidationException", "Parameter(s) EventPattern or ScheduleExpression must be specified."
            )
        if pattern is not None and schedule is not None:
            raise AwsError("ValidationException", "give EventPattern or ScheduleExpression, not both")
        if schedule is not None:
            check_schedule(schedule)
        else:
            compile_rule_pattern(pattern)
        state = _str(body, "State") or "ENABLED"
        if state not in ("ENABLED", "DISABLED"):
            raise AwsError("ValidationException", f"State must be ENABLED or DISABLED, got {state!r}")
        old = self.rules.rules.get(name, {})
        rule = {
            "Name": name,
            "EventPattern": pattern,
            "ScheduleExpression": schedule,
            "State": state,
            "Description": _str(body, "Description") or old.get("Description"),
            "Targets": old.get("Targets", []),
        }
        await self.rules.save({**self.rules.rules, name: {k: v for k, v in rule.items() if v is not None}})
        return {"RuleArn": rule_arn(name)}

    @staticmethod
    def _shape(name: str, rule: Mapping[str, Any]) -> dict[str, Any]:
        out = {"Name": name, "Arn": rule_arn(name), "State": rule["State"], "EventBusName": "default"}
        for key in ("EventPattern", "ScheduleExpression", "Description"):
            if rule.get(key) is not None:
                out[key] = rule[key]
        return out

    async def describe_rule(self, body: Body) -> Body:
        name, rule = self._rule(body)
        return {**self._shape(name, rule), "CreatedBy": names().account}

    async def list_rules(self, body: Body) -> Body:
        _bus(body)
        prefix = _str(body, "NamePrefix") or ""
        chosen = [n for n in sorted(self.rules.rules) if n.startswith(prefix)]
        limit = body.get("Limit", 100)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
            raise AwsError(
                "ValidationException", f"Limit must be a whole number from 1 to 100, got {limit!r}"
            )
        start = page(body.get("NextToken"), "ValidationException") or 0
        out: Body = {"Rules": [self._shape(n, self.rules.rules[n]) for n in chosen[start : start + limit]]}
        if start + limit < len(chosen):
            out["NextToken"] = next_token(start + limit)
        return out

    async def delete_rule(self, body: Body) -> Body:
        name, rule = self._rule(body)
        if rule.get("Targets") and not body.get("Force"):
            raise AwsError("ValidationException", "Rule can't be deleted since it has targets.")
        await self.rules.save({n: r for n, r in self.rules.rules.items() if n != name})
        return {}

    async def _set_state(self, body: Body, state: str) -> Body:
        name, rule = self._rule(body)
        await self.rules.save({**self.rules.rules, name: {**rule, "State": state}})
        return {}

    async def enable_rule(self, body: Body) -> Body:
        return await self._set_state(body, "ENABLED")

    async def disable_rule(self, body: Body) -> Body:
        return await self._set_state(body, "DISABLED")

    # -- targets ------------------------------------------------------------------------------

    def _target_problem(self, rule: str, target: Any) -> str | None:
        if not isinstance(target, Mapping) or not isinstance(target.get("Id"), str) or not target.get("Arn"):
            return "a target needs an Id and an Arn"
        try:
            kind, what = target_kind(str(target["Arn"]))
        except ValueError as exc:
            return str(exc)
        if kind == "workflow" and what not in self.rules.engine.catalog:
            known = ", ".join(sorted(self.rules.engine.catalog)) or "none"
            return f"no workflow {what!r} is loaded (known: {known})"
        if kind == "queue":
            params = target.get("BatchParameters")
            if not isinstance(params, Mapping) or not params.get("JobDefinition"):
                return "a job queue target needs BatchParameters with a JobDefinition"
        try:
            TargetInput(target, rule)
        except AwsError as exc:
            return exc.message
        return None

    async def put_targets(self, body: Body) -> Body:
        name, rule = self._rule(body)
        targets = body.get("Targets")
        if not isinstance(targets, list) or not targets:
            raise AwsError("ValidationException", "Targets must hold at least one target")
        kept = {t["Id"]: t for t in rule.get("Targets", [])}
        failed = []
        for target in targets:
            problem = self._target_problem(name, target)
            if problem is not None:
                tid = target.get("Id") if isinstance(target, Mapping) else None
                failed.append(
                    {"TargetId": str(tid), "ErrorCode": "ValidationException", "ErrorMessage": problem}
                )
                continue
            kept[target["Id"]] = dict(target)
        if len(kept) > MAX_TARGETS:
            raise AwsError("LimitExceededException", f"a rule has at most {MAX_TARGETS} targets")
        await self.rules.save({**self.rules.rules, name: {**rule, "Targets": list(kept.values())}})
        return {"FailedEntryCount": len(failed), "FailedEntries": failed}

    async def remove_targets(self, body: Body) -> Body:
        name, rule = self._rule(body)
        ids = body.get("Ids")
        if not isinstance(ids, list) or not ids:
            raise AwsError("ValidationException", "Ids must hold at least one target id")
        have = {t["Id"] for t in rule.get("Targets", [])}
        failed = [
            {"TargetId": str(i), "ErrorCode": "ResourceNotFoundException", "ErrorMessage": f"no target {i}"}
            for i in ids
            if i not in have
        ]
        left = [t for t in rule.get("Targets", []) if t["Id"] not in ids]
        await self.rules.save({**self.rules.rules, name: {**rule, "Targets": left}})
        return {"FailedEntryCount": len(failed), "FailedEntries": failed}

    async def list_targets_by_rule(self, body: Body) -> Body:
        _, rule = self._rule(body)
        return {"Targets": rule.get("Targets", [])}


def _event_of(entry: Any) -> dict[str, Any]:
    """One PutEvents entry as an envelope; AwsError names what is wrong (that entry fails alone)."""
    if not isinstance(entry, Mapping):
        raise AwsError("InvalidArgument", "an entry is an object with Source, DetailType and Detail")
    _bus(entry)
    source, detail_type, text = entry.get("Source"), entry.get("DetailType"), entry.get("Detail")
    for name, value in (("Source", source), ("DetailType", detail_type), ("Detail", text)):
        if not isinstance(value, str) or not value:
            raise AwsError("InvalidArgument", f"Parameter {name} is not valid: it is required")
    assert isinstance(source, str) and isinstance(text, str) and isinstance(detail_type, str)
    if source.startswith(RESERVED_SOURCES):
        raise AwsError(
            "NotAuthorizedForSourceException",
            f"Not authorized for the source {source}: aws.* and sluice.* are reserved",
        )
    if len(text.encode()) + len(source) + len(detail_type) > MAX_ENTRY_BYTES:
        raise AwsError("InvalidArgument", f"the entry is larger than {MAX_ENTRY_BYTES} bytes")
    try:
        detail = json.loads(text)
    except ValueError:
        raise AwsError("MalformedDetail", "Detail is malformed: it is not valid JSON") from None
    if not isinstance(detail, dict):
        raise AwsError("MalformedDetail", "Detail is malformed: it must be a JSON object")
    resources = entry.get("Resources") or []
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        raise AwsError("InvalidArgument", "Resources must be a list of ARNs (strings)")
    event = envelope(source, detail_type, detail, resources=resources)
    event["account"], event["region"] = names().account, names().region
    if entry.get("Time") is not None:
        try:
            event["time"] = iso(parse_time(entry["Time"]))
        except (ValueError, OverflowError, OSError):
            raise AwsError("InvalidArgument", "Time must be epoch seconds or ISO 8601") from None
    return event


_OPERATIONS = {
    "PutEvents": "put_events",
    "TestEventPattern": "test_event_pattern",
    "PutRule": "put_rule",
    "DescribeRule": "describe_rule",
    "ListRules": "list_rules",
    "DeleteRule": "delete_rule",
    "EnableRule": "enable_rule",
    "DisableRule": "disable_rule",
    "PutTargets": "put_targets",
    "RemoveTargets": "remove_targets",
    "ListTargetsByRule": "list_targets_by_rule",
}


def add_routes(app: web.Application, rules: EventRules, token: str | None) -> None:
    api = EventsApi(rules)

    async def handle(request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target")
        return await serve(request, JSON_11, token, lambda: api.operation(target))

    app.router.add_post("/", handle)
