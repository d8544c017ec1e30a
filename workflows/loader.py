"""Load workflow files into frozen specs, reporting every problem of every file at once.

Each problem is one SpecError rendered as ``file: field.path: what is wrong (what to write)``;
``load_dir`` raises them together as SpecErrors so a user fixes everything in one pass.

>>> catalog = load_dir("examples")            # doctest: +SKIP
>>> catalog["thumbnails"].steps["probe"].timeout_s   # doctest: +SKIP
30.0
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from workflows.dag import Dag, find_problems
from workflows.errors import InputError, PatternError, ScheduleError, SpecError, SpecErrors
from workflows.sections import (
    NAME,
    FileCtx,
    check_templates,
    check_variables,
    parse_params,
    parse_steps,
    read_bool,
    read_choice,
    read_duration,
    read_int,
    read_size,
    read_str,
    read_str_list,
    read_str_map,
    type_ok,
)
from workflows.spec import (
    EventTrigger,
    FileTrigger,
    NotifySpec,
    ScheduleTrigger,
    TriggerSpec,
    WebhookTrigger,
    Workflow,
)
from workflows.templating import Renderable

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _YamlLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """yaml's safe loader with YAML 1.2 booleans: only true/false, so ``on:`` stays the key "on"."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_TOP_FIELDS = ("name", "description", "triggers", "params", "steps", "outputs", "notify")


class Catalog(Mapping[str, Workflow]):
    """A read-only mapping of workflow name to Workflow, as loaded from one directory."""

    def __init__(self, workflows: Mapping[str, Workflow]) -> None:
        self._workflows = dict(workflows)

    def __getitem__(self, name: str) -> Workflow:
        return self._workflows[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._workflows)

    def __len__(self) -> int:
        return len(self._workflows)

    def __repr__(self) -> str:
        return f"<Catalog {sorted(self._workflows)}>"


def load_file(path: str | os.PathLike[str]) -> Workflow:
    """Load one workflow file; raises SpecErrors listing every problem in it."""
    workflow, errors, _ = _load(Path(path), str(path))
    if errors or workflow is None:
        raise SpecErrors(errors)
    return workflow


def load_dir(path: str | os.PathLike[str]) -> Catalog:
    """Load every ``*.yaml``/``*.yml`` under ``path`` (hidden folders skipped) into a Catalog.

    Raises SpecErrors with every problem of every file, including duplicate workflow names.
    YAML files used as webhook schemas by a workflow are not loaded as workflows.
    """
    workflows, errors = _load_all(Path(path))
    if errors:
        raise SpecErrors(errors)
    return Catalog({w.name: w for w in workflows})


def validate(path: str | os.PathLike[str]) -> list[SpecError]:
    """Every problem in a directory or file, empty when everything loads (``sluice validate``)."""
    target = Path(path)
    if target.is_file():
        return _load(target, str(path))[1]
    return _load_all(target)[1]


def _load_all(root: Path) -> tuple[list[Workflow], list[SpecError]]:
    files = sorted(
        p
        for p in root.rglob("*")
        if p.suffix in (".yaml", ".yml") and p.is_file() and not _hidden(p.relative_to(root))
    )
    results = {p.resolve(): _load(p, str(p)) for p in files}
    schemas = {schema for _, _, used in results.values() for schema in used}
    workflows: list[Workflow] = []
    errors: list[SpecError] = []
    seen: dict[str, Path] = {}
    for resolved, (workflow, file_errors, _) in results.items():
        if resolved in schemas:
            continue
        errors.extend(file_errors)
        if workflow is None:
            continue
        if workflow.name in seen:
            first = seen[workflow.name]
            errors.append(
                SpecError(
                    _shown(root, workflow.file),
                    "name",
                    f"workflow name {workflow.name!r} is already used by {_shown(root, first)}",
                    "give each workflow a unique name",
                )
            )
            continue
        seen[workflow.name] = workflow.file
        workflows.append(workflow)
    return workflows, errors


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _shown(root: Path, file: Path) -> str:
    try:
        return str(root / file.relative_to(root.resolve()))
    except ValueError:
        return str(file)


def _load(path: Path, shown: str) -> tuple[Workflow | None, list[SpecError], list[Path]]:
    """One file: ``(workflow or None, its problems, schema files it uses)``."""
    ctx = FileCtx(file=shown, dir=path.resolve().parent)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader)
    except OSError as exc:
        return None, [SpecError(shown, "", f"cannot read the file: {exc.strerror}")], []
    except yaml.YAMLError as exc:
        return None, [_yaml_error(shown, exc)], []
    if not isinstance(raw, dict):
        ctx.err("", "must be a YAML mapping", "write name:, triggers:, params: and steps: at the top level")
        return None, ctx.errors, []
    raw = _substitute_env(ctx, raw, "")
    workflow = _build(ctx, path, raw)
    return (workflow if not ctx.errors else None), ctx.errors, ctx.schema_files


def _yaml_error(shown: str, exc: yaml.YAMLError) -> SpecError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    what = f"{context}, {problem}" if context else problem
    if mark is None:
        return SpecError(shown, "", f"invalid YAML: {what}", "fix the YAML syntax")
    return SpecError(shown, f"line {mark.line + 1}", f"invalid YAML: {what}", "fix the YAML syntax")


def _build(ctx: FileCtx, path: Path, raw: dict[str, Any]) -> Workflow | None:
    ctx.fields("", raw, _TOP_FIELDS, required=("steps",))
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not NAME.fullmatch(name):
        ctx.err(
            "name",
            f"must use only letters, digits, - and _, got {ctx.show(name)}",
            "write e.g. name: thumbnails",
        )
        name = path.stem
    description = raw.get("description") or ""
    if not isinstance(description, str):
        ctx.err("description", f"must be a string, got {ctx.show(description)}")
    params = parse_params(ctx, raw.get("params"))
    triggers = parse_triggers(ctx, raw.get("triggers"))
    steps = parse_steps(ctx, raw.get("steps"))
    notify = parse_notify(ctx, raw.get("notify"))
    outputs = ctx.template("outputs", raw.get("outputs"))
    dag = _dag(ctx, steps)
    if dag is None:
        return None
    check_templates(ctx, steps, dag, params, outputs)
    return Workflow(
        name=name,
        description=str(description),
        file=path.resolve(),
        dir=path.resolve().parent,
        triggers=triggers,
        params=params,
        steps=steps,
        outputs=outputs,
        notify=notify,
        dag=dag,
    )


def _dag(ctx: FileCtx, steps: Mapping[str, Any]) -> Dag | None:
    needs = {name: step.needs for name, step in steps.items()}
    problems = find_problems(needs)
    for where, problem, hint in problems:
        ctx.err(where, problem, hint)
    if problems:
        return None
    return Dag(needs, [name for name, step in steps.items() if step.on_failure == "continue"])


class _EnvStr(str):
    """A string read from the environment: masked in reprs so a secret never reaches a message."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<from environment>'"


def _substitute_env(ctx: FileCtx, value: Any, where: str) -> Any:
    """Replace ``${env:NAME}`` in every string value; a missing variable is a SpecError naming it."""
    if isinstance(value, dict):
        return {k: _substitute_env(ctx, v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(ctx, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${env:" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            ctx.err(where, f"environment variable {name} is not set", f"export {name} before loading")
            return ""
        return os.environ[name]

    return _EnvStr(_ENV_REF.sub(replace, value))


def resolve_input(workflow: Workflow, data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run's params: ``data`` checked against the workflow's params, defaults applied.

    Refuses unknown keys, missing required params and wrong types (a bool is not an integer; an
    integer is a number), raising InputError that names every offending param.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InputError(
            f"{workflow.name}: run input must be a JSON object of params, got {type(data).__name__}"
        )
    problems = []
    for key in sorted(set(data) - set(workflow.params)):
        close = difflib.get_close_matches(str(key), list(workflow.params), n=1)
        known = (
            f"did you mean {close[0]}?" if close else f"params are: {', '.join(workflow.params) or 'none'}"
        )
        problems.append(f"unknown param {key!r} ({known})")
    resolved: dict[str, Any] = {}
    for name, param in workflow.params.items():
        if name in data:
            if not type_ok(param.type, data[name]):
                problems.append(f"param {name} must be {param.type}, got {type(data[name]).__name__}")
            resolved[name] = data[name]
        elif param.default is not None:
            resolved[name] = copy.deepcopy(param.default)
        elif param.required:
            problems.append(f"param {name} is required ({param.type})")
    if problems:
        raise InputError(f"{workflow.name}: " + "; ".join(problems))
    return resolved


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
        extra = _SCHEDULE_SIBLINGS if kind == "schedule" else ()
        ctx.fields(where, item, (kind, "name", "input", *extra))
        name = read_str(ctx, f"{where}.name", item.get("name"), "nightly") or f"{kind}-{counts[kind]}"
        trigger = _TRIGGER_PARSERS[kind](
            ctx, where, item, name, _trigger_input(ctx, where, item.get("input"))
        )
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
                "triggers", f"trigger name {name!r} is used {count} times", "give each trigger a unique name:"
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
        path=(ctx.dir / (read_str(ctx, f"{w}.path", body.get("path"), "inbox") or ".")).resolve(),
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
    try:
        from workflows.schedules import parse_schedule
    except ImportError:  # pragma: no cover - schedules.py not yet present
        parse_schedule = None
    if parse_schedule is not None:
        try:
            parse_schedule(expression, timezone)
        except ScheduleError as exc:
            ctx.err(
                f"{where}.schedule", str(exc), 'write e.g. schedule: "cron(0 2 * * ? *)" or "rate(5 minutes)"'
            )
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
        file = (ctx.dir / value).resolve()
        try:
            value = yaml.load(file.read_text(encoding="utf-8"), Loader=_YamlLoader)
        except (OSError, yaml.YAMLError) as exc:
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
