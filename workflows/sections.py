"""Parsing ``params:``, ``triggers:`` and ``notify:`` of a workflow file."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import yaml

from workflows.batching import parse_batch
from workflows.errors import PatternError, ScheduleError
from workflows.fields import (
    NAME,
    FileCtx,
    check_variables,
    read_bool,
    read_choice,
    read_duration,
    read_int,
    read_path,
    read_size,
    read_str,
    read_str_list,
    read_str_map,
    type_ok,
)
from workflows.spec import (
    PARAM_TYPES,
    DestinationSpec,
    EventTrigger,
    FileTrigger,
    NotifySpec,
    ParamSpec,
    ParamType,
    ScheduleTrigger,
    TriggerSpec,
    WebhookTrigger,
)
from workflows.templating import Renderable

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlLoader(_BaseLoader):
    """yaml's safe loader with YAML 1.2 booleans: only true/false, so ``on:`` stays the key "on"."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class DuplicateKey(yaml.constructor.ConstructorError):
    """A key written twice in one mapping: YAML keeps the last without a word (a step pasted
    twice under one name would vanish), so the loader refuses it instead."""


def _construct_mapping(loader: Any, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: its keys may be overridden
            continue
        try:
            key = loader.construct_object(key_node, deep=True)
            first = seen.setdefault(key, key_node.start_mark)
        except TypeError:  # an unhashable key: the constructor says so itself
            continue
        if first is not key_node.start_mark:
            raise DuplicateKey(
                "while reading a mapping", node.start_mark,
                f"{key!r} is written twice (first on line {first.line + 1})", key_node.start_mark,
            )  # fmt: skip
    return dict(yaml.SafeLoader.construct_mapping(loader, node, deep))


YamlLoader.construct_mapping = _construct_mapping

# --- params ----------------------------------------------------------------------------------------


def parse_params(ctx: FileCtx, raw: Any) -> dict[str, ParamSpec]:
    """``params: {size: {type: integer, default: 128}}`` or the shorthand ``size: integer``."""
    if raw is None or not ctx.fields("params", raw, list(raw) if isinstance(raw, dict) else ()):
        return {}
    params = {}
    for name, body in raw.items():
        where = f"params.{name}"
        if not NAME.fullmatch(str(name)):
            ctx.err(where, "a param name uses only letters, digits, - and _", "rename it, e.g. size")
        if isinstance(body, str):
            body = {"type": body}
        if not ctx.fields(where, body, ("type", "default", "required", "description")):
            continue
        kind = read_choice(ctx, f"{where}.type", body.get("type", "string"), PARAM_TYPES) or "string"
        default = body.get("default")
        if default is not None and not type_ok(kind, default):
            ctx.err(
                f"{where}.default",
                f"must be of type {kind}, got {ctx.show(default)}",
                f"write {'an' if kind[0] in 'aeiou' else 'a'} {kind} default, or change type",
            )
        required = read_bool(ctx, f"{where}.required", body.get("required"))
        description = read_str(ctx, f"{where}.description", body.get("description"), "the image width") or ""
        params[str(name)] = ParamSpec(
            str(name),
            cast(ParamType, kind),  # read_choice returned one of PARAM_TYPES
            default,
            default is None if required is None else required,
            description,
        )
    return params


# --- triggers and notify -----------------------------------------------------------------------------

_TRIGGER_KINDS = ("files", "schedule", "webhook", "event")
_SCHEDULE_SIBLINGS = ("timezone", "catchup", "catchup_window", "max_catchup")
_FILE_FIELDS = ("path", "recursive", "prefix", "suffix", "glob", "events", "after", "stable")
_WEBHOOK_FIELDS = (
    "name",
    "secret",
    "token",
    "signature_header",
    "timestamp_header",
    "tolerance",
    "auth",
    "schema",
    "max_body",
)
_NOTIFY_FIELDS = ("url", "on", "secret", "headers", "pattern")
_DESTINATION_FIELDS = ("url", "workflow", "secret", "headers")
_RUN_STATES = ("RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
_AFTER = re.compile(r"keep|delete|move:.+")


def parse_triggers(ctx: FileCtx, raw: Any) -> tuple[TriggerSpec, ...]:
    """``triggers:`` is a list; each item has exactly one of files/schedule/webhook/event."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        ctx.err(
            "triggers",
            f"must be a list, got {ctx.show(raw)}",
            'write e.g. triggers: [{schedule: "rate(5 minutes)"}]',
        )
        return ()
    counts: Counter[str] = Counter()
    triggers: list[TriggerSpec] = []
    for i, item in enumerate(raw):
        where = f"triggers[{i}]"
        kinds = [k for k in _TRIGGER_KINDS if k in item] if isinstance(item, dict) else []
        if len(kinds) != 1:
            got = " and ".join(kinds) if kinds else ctx.show(item)
            ctx.err(
                where,
                f"must have exactly one of files, schedule, webhook or event, got {got}",
                "write e.g. - schedule: rate(5 minutes)",
            )
            continue
        kind = kinds[0]
        counts[kind] += 1
        extra = _SCHEDULE_SIBLINGS if kind == "schedule" else ("batch",)
        ctx.fields(where, item, (kind, "name", "input", *extra))
        name = read_str(ctx, f"{where}.name", item.get("name"), "nightly") or f"{kind}-{counts[kind]}"
        trigger = _TRIGGER_PARSERS[kind](
            ctx, where, item, name, _trigger_input(ctx, where, item.get("input"))
        )
        batch = parse_batch(ctx, f"{where}.batch", item.get("batch")) if kind != "schedule" else None
        if batch is not None and isinstance(trigger, FileTrigger | WebhookTrigger | EventTrigger):
            trigger = dataclasses.replace(trigger, batch=batch)
        if trigger is not None:
            triggers.append(trigger)
    _unique_trigger_names(ctx, triggers)
    return tuple(triggers)


def _trigger_input(ctx: FileCtx, where: str, value: Any) -> Renderable | None:
    renderable = ctx.template(f"{where}.input", value)
    if renderable is not None:
        check_variables(ctx, f"{where}.input", renderable, ("event",), {}, (), (), "")
    return renderable


def _unique_trigger_names(ctx: FileCtx, triggers: list[TriggerSpec]) -> None:
    for name, count in Counter(t.name for t in triggers).items():
        if count > 1:
            ctx.err(
                "triggers", f"trigger name {name!r} is used {count} times", "give each trigger a unique name"
            )


def _file_trigger(
    ctx: FileCtx, where: str, item: dict[str, Any], name: str, input_: Renderable | None
) -> TriggerSpec | None:
    w, body = f"{where}.files", item["files"]
    if not ctx.fields(w, body, _FILE_FIELDS, required=("path",)):
        return None
    events = read_str_list(ctx, f"{w}.events", body.get("events"), "[created]") or ("created",)
    for event in events:
        if event not in ("created", "removed"):
            ctx.err(f"{w}.events", f"unknown event {event!r}", "write created and/or removed")
    after = read_str(ctx, f"{w}.after", body.get("after"), "move:done") or "keep"
    if not _AFTER.fullmatch(after):
        ctx.err(
            f"{w}.after",
            f"must be keep, delete or move:<dir>, got {ctx.show(after)}",
            "write e.g. after: move:done",
        )
    return FileTrigger(
        name=name,
        input=input_,
        path=(ctx.dir / (read_path(ctx, f"{w}.path", body.get("path"), "inbox") or ".")).resolve(),
        recursive=bool(read_bool(ctx, f"{w}.recursive", body.get("recursive"))),
        prefix=read_str(ctx, f"{w}.prefix", body.get("prefix"), "images/") or "",
        suffix=read_str(ctx, f"{w}.suffix", body.get("suffix"), ".jpg") or "",
        glob=read_str(ctx, f"{w}.glob", body.get("glob"), '"*.jpg"'),
        events=events,
        after=after,
        stable_s=read_duration(ctx, f"{w}.stable", body.get("stable"), "2s") or 0.0,
    )


def _schedule_trigger(
    ctx: FileCtx, where: str, item: dict[str, Any], name: str, input_: Renderable | None
) -> TriggerSpec | None:
    expression = read_str(ctx, f"{where}.schedule", item["schedule"], '"rate(5 minutes)"')
    timezone = read_str(ctx, f"{where}.timezone", item.get("timezone"), "Europe/Berlin") or "UTC"
    if expression is None:
        return None
    from workflows.schedules import parse_schedule  # here: only workflows with a schedule pay for it

    try:
        parse_schedule(expression, timezone)
    except ScheduleError as exc:
        hint = f"write {_as_yaml(exc.hint)}" if exc.hint else 'write e.g. schedule: "cron(0 2 * * ? *)"'
        ctx.err(f"{where}.{exc.field}", exc.problem, hint)
    return ScheduleTrigger(
        name=name,
        input=input_,
        expression=expression,
        timezone=timezone,
        catchup=read_choice(ctx, f"{where}.catchup", item.get("catchup"), ("none", "latest", "all"))
        or "none",  # type: ignore[arg-type]
        catchup_window_s=read_duration(ctx, f"{where}.catchup_window", item.get("catchup_window"), "1d"),
        max_catchup=read_int(ctx, f"{where}.max_catchup", item.get("max_catchup"), 1, 10000, 10) or 10,
    )


def _as_yaml(text: str) -> str:
    """``text`` as it can be pasted after ``schedule:``: quoted when YAML would read it otherwise."""
    try:
        plain = yaml.load(text, Loader=YamlLoader) == text
    except yaml.YAMLError:
        plain = False
    return text if plain else f'"{text}"'


def _webhook_trigger(
    ctx: FileCtx, where: str, item: dict[str, Any], name: str, input_: Renderable | None
) -> TriggerSpec | None:
    w, body = f"{where}.webhook", item["webhook"]
    if isinstance(body, str):
        body = {"name": body}
    if not ctx.fields(w, body, _WEBHOOK_FIELDS):
        return None
    name = read_str(ctx, f"{w}.name", body.get("name"), "upload") or name
    if not NAME.fullmatch(name):
        ctx.err(
            f"{w}.name",
            f"must use only letters, digits, - and _, got {ctx.show(name)}",
            "write e.g. name: upload",
        )
    secret = read_str(ctx, f"{w}.secret", body.get("secret"), '"${env:HOOK_SECRET}"')
    token = read_str(ctx, f"{w}.token", body.get("token"), '"${env:HOOK_TOKEN}"')
    auth = read_choice(ctx, f"{w}.auth", body.get("auth"), ("hmac", "token", "none"))
    auth = _webhook_auth(ctx, w, auth, secret, token)
    return WebhookTrigger(
        name=name,
        input=input_,
        secret=secret,
        token=token,
        signature_header=read_str(ctx, f"{w}.signature_header", body.get("signature_header"), "X-Signature")
        or "X-Hub-Signature-256",
        timestamp_header=read_str(ctx, f"{w}.timestamp_header", body.get("timestamp_header"), "X-Timestamp"),
        tolerance_s=_default(read_duration(ctx, f"{w}.tolerance", body.get("tolerance"), "5m"), 300.0),
        auth=auth,  # type: ignore[arg-type]
        schema=_webhook_schema(ctx, f"{w}.schema", body.get("schema")),
        max_body_bytes=_default(read_size(ctx, f"{w}.max_body", body.get("max_body"), "1MiB"), 1024**2),
    )


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


def _webhook_auth(ctx: FileCtx, where: str, auth: str | None, secret: str | None, token: str | None) -> str:
    """Explicit auth, or hmac with a secret, or token with a token; no credentials needs ``auth: none``."""
    if auth is None:
        if secret is None and token is None:
            ctx.err(
                where,
                "has no secret and no token, so anyone could start this workflow",
                'add secret: "${env:HOOK_SECRET}", or write auth: none',
            )
            return "none"
        return "hmac" if secret is not None else "token"
    if auth == "hmac" and not secret:
        ctx.err(f"{where}.secret", "auth: hmac needs a secret", 'add secret: "${env:HOOK_SECRET}"')
    if auth == "token" and not token:
        ctx.err(f"{where}.token", "auth: token needs a token", 'add token: "${env:HOOK_TOKEN}"')
    return auth


def _webhook_schema(ctx: FileCtx, where: str, value: Any) -> dict[str, Any] | None:
    """An inline JSON Schema, or a JSON/YAML file beside the workflow; checked to be a valid schema."""
    if value is None:
        return None
    if isinstance(value, str):
        if read_path(ctx, where, value, "schema.json") is None:
            return None
        file = (ctx.dir / value).resolve()
        try:
            value = yaml.load(file.read_text(encoding="utf-8"), Loader=YamlLoader)
        except (OSError, yaml.YAMLError, ValueError) as exc:  # ValueError: not UTF-8, 2026-13-45
            ctx.err(
                where,
                f"cannot read schema file {file.name}: {exc}",
                "give a JSON or YAML file relative to the workflow",
            )
            return None
        ctx.schema_files.append(file)
    if not isinstance(value, dict):
        ctx.err(
            where,
            f"must be a JSON Schema mapping or a file name, got {ctx.show(value)}",
            "write e.g. schema: {type: object}",
        )
        return None
    import jsonschema

    try:
        jsonschema.validators.validator_for(value).check_schema(value)
    except jsonschema.SchemaError as exc:
        ctx.err(where, f"not a valid JSON Schema: {exc.message}", "see https://json-schema.org")
    return value


def _event_trigger(
    ctx: FileCtx, where: str, item: dict[str, Any], name: str, input_: Renderable | None
) -> TriggerSpec | None:
    w, body = f"{where}.event", item["event"]
    if not ctx.fields(w, body, ("pattern",), required=("pattern",)):
        return None
    compiled = _pattern(ctx, f"{w}.pattern", body.get("pattern"))
    if compiled is None:
        return None
    return EventTrigger(name=name, input=input_, pattern=body["pattern"], compiled=compiled)


def _pattern(ctx: FileCtx, where: str, pattern: Any) -> Any:
    if pattern is None:
        return None
    from workflows.patterns import compile_pattern

    try:
        return compile_pattern(pattern)
    except PatternError as exc:
        message = str(exc)
        ctx.err(where, message, "" if "(" in message else "write e.g. pattern: {source: [sluice.run]}")
        return None


_TRIGGER_PARSERS: dict[str, Callable[..., TriggerSpec | None]] = {
    "files": _file_trigger,
    "schedule": _schedule_trigger,
    "webhook": _webhook_trigger,
    "event": _event_trigger,
}


def parse_notify(ctx: FileCtx, raw: Any) -> tuple[NotifySpec, ...]:
    """``notify:`` subscribers: a URL told about run states in ``on`` (signed when ``secret`` is set)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        ctx.err(
            "notify",
            f"must be a list, got {ctx.show(raw)}",
            'write e.g. notify: [{url: "http://127.0.0.1:9000/hook"}]',
        )
        return ()
    subscribers = []
    for i, body in enumerate(raw):
        w = f"notify[{i}]"
        if not ctx.fields(w, body, _NOTIFY_FIELDS, required=("url",)):
            continue
        url = read_str(ctx, f"{w}.url", body.get("url"), '"http://127.0.0.1:9000/hook"') or ""
        if url and not url.startswith(("http://", "https://")):
            ctx.err(
                f"{w}.url",
                f"must be an http:// or https:// URL, got {ctx.show(url)}",
                'write e.g. url: "http://127.0.0.1:9000/hook"',
            )
        on = read_str_list(ctx, f"{w}.on", body.get("on"), "[SUCCEEDED, FAILED]") or ("SUCCEEDED", "FAILED")
        for state in on:
            if state not in _RUN_STATES:
                ctx.err(f"{w}.on", f"unknown run state {state!r}", f"use {', '.join(_RUN_STATES)}")
        if body.get("pattern") is not None:
            _pattern(ctx, f"{w}.pattern", body["pattern"])
        subscribers.append(
            NotifySpec(
                url=url,
                on=on,
                secret=read_str(ctx, f"{w}.secret", body.get("secret"), '"${env:NOTIFY_SECRET}"'),
                headers=read_str_map(ctx, f"{w}.headers", body.get("headers")) or {},
                pattern=body.get("pattern"),
            )
        )
    return tuple(subscribers)


def parse_destination(ctx: FileCtx, key: str, raw: Any) -> DestinationSpec | None:
    """``on_success:`` / ``on_failure:``: a URL or a workflow that gets the run's invocation record."""
    if raw is None:
        return None
    if not ctx.fields(key, raw, _DESTINATION_FIELDS):
        return None
    url = read_str(ctx, f"{key}.url", raw.get("url"), '"http://127.0.0.1:9000/done"')
    workflow = read_str(ctx, f"{key}.workflow", raw.get("workflow"), "report-failure")
    if (url is None) == (workflow is None):
        ctx.err(
            key,
            "needs exactly one of url or workflow",
            f'write e.g. {key}: {{url: "http://127.0.0.1:9000/done"}} or {key}: {{workflow: cleanup}}',
        )
        return None
    if url is not None and not url.startswith(("http://", "https://")):
        ctx.err(f"{key}.url", f"must be an http:// or https:// URL, got {ctx.show(url)}")
    if workflow is not None and raw.get("secret") is not None:
        ctx.err(f"{key}.secret", "only a url destination is signed", "remove secret, or use a url")
    return DestinationSpec(
        url=url,
        workflow=workflow,
        secret=read_str(ctx, f"{key}.secret", raw.get("secret"), '"${env:DEST_SECRET}"'),
        headers=read_str_map(ctx, f"{key}.headers", raw.get("headers")) or {},
    )
