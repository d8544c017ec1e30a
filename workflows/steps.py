"""Parsing ``steps:``: kinds, containers, retries, waits, fails, and the names their templates read.

``function: module:callable`` is checked without importing user code: the module file is found
beside the workflow (or installed) and parsed with ``ast``.
"""

from __future__ import annotations

import ast
import datetime as dt
import importlib.util
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from workflows.concurrency import parse_step_concurrency
from workflows.dag import Dag
from workflows.fan_out import fan_out, read_for_each
from workflows.fields import (
    NAME,
    FileCtx,
    check_variables,
    read_bool,
    read_choice,
    read_duration,
    read_int,
    read_number,
    read_path,
    read_size,
    read_str,
    read_str_list,
    read_str_map,
)
from workflows.hostpaths import ALLOW_ENV, mountable
from workflows.secrets import Secret
from workflows.shell import HINT as SHELL_HINT
from workflows.shell import data_in_script
from workflows.spec import (
    MAX_JOB_RETRY_DELAY_S,
    ContainerSpec,
    ExitRule,
    FailSpec,
    ParamSpec,
    RetrySpec,
    StepSpec,
    VolumeSpec,
    WaitSpec,
    exit_rule_problem,
)
from workflows.templating import CONTEXT_NAMES, Renderable, Static
from workflows.units import parse_duration

_IDENT_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_MAX_REF = 255  #: a module:callable longer than a file name can be is not one

# --- steps -----------------------------------------------------------------------------------------

_KINDS = ("function", "container", "wait", "fail")
_STEP_FIELDS = (
    *_KINDS,
    "needs",
    "when",
    "input",
    "timeout",
    "memory",
    "concurrency",
    "retry",
    "on_failure",
    "for_each",
    "max_concurrency",
    "array",
    "env",
    "description",
)
_CONTAINER_FIELDS = (
    "image",
    "command",
    "env",
    "vcpus",
    "memory",
    "queue",
    "volumes",
    "working_dir",
    "user",
    "network",
    "parameters",
    "preemptible",
    "share_identifier",
)
_SHARE = re.compile(r"[A-Za-z0-9_]{1,255}")
_RETRY_FIELDS = ("attempts", "interval", "backoff_rate", "max_delay", "jitter", "errors", "evaluate_on_exit")
_EXIT_FIELDS = ("on_exit_code", "on_reason", "on_status_reason", "action")


def parse_steps(ctx: FileCtx, raw: Any) -> dict[str, StepSpec]:
    """``steps: {name: {...}}``; every step is returned (best effort) so needs checks stay accurate."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        ctx.err(
            "steps",
            f"must be a mapping of step names to steps, got {ctx.show(raw)}",
            "write e.g. steps: {probe: {function: images:probe}}",
        )
        return {}
    steps = {}
    for name, body in raw.items():
        if not NAME.fullmatch(str(name)):
            ctx.err(
                f"steps.{name}",
                "a step name uses only letters, digits, - and _",
                "rename it, e.g. resize-image",
            )
        steps[str(name)] = _step(ctx, str(name), body)
    return steps


def _step(ctx: FileCtx, name: str, body: Any) -> StepSpec:
    where = f"steps.{name}"
    if not ctx.fields(where, body, _STEP_FIELDS):
        return StepSpec(name, "fail", fail=FailSpec("Invalid"))
    kinds = [k for k in _KINDS if k in body]
    if len(kinds) != 1:
        got = " and ".join(kinds) if kinds else "none"
        ctx.err(
            where,
            f"must have exactly one of function, container, wait or fail, got {got}",
            "write e.g. function: images:probe",
        )
    kind = kinds[0] if kinds else "function"
    array, lanes = fan_out(ctx, where, kind, body)
    if body.get("env") is not None and kind != "function":
        hint = "write it under container: (container.env)" if kind == "container" else "remove it"
        ctx.err(f"{where}.env", "env is for function steps (a container's goes in container.env)", hint)
    return StepSpec(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        needs=read_str_list(ctx, f"{where}.needs", body.get("needs"), "[probe]") or (),
        when=ctx.template(f"{where}.when", body.get("when")),
        input=ctx.template(f"{where}.input", body.get("input")),
        function=_function(ctx, f"{where}.function", body.get("function")) if kind == "function" else None,
        container=_container(ctx, f"{where}.container", body.get("container"))
        if kind == "container"
        else None,
        wait=_wait(ctx, f"{where}.wait", body.get("wait")) if kind == "wait" else None,
        fail=_fail(ctx, f"{where}.fail", body.get("fail")) if kind == "fail" else None,
        timeout_s=read_duration(ctx, f"{where}.timeout", body.get("timeout"), "30s"),
        memory_bytes=read_size(ctx, f"{where}.memory", body.get("memory"), "256MiB"),
        **parse_step_concurrency(ctx, where, kind, body.get("concurrency")),
        retry=_retry(ctx, f"{where}.retry", body.get("retry"), kind == "container"),
        on_failure=read_choice(ctx, f"{where}.on_failure", body.get("on_failure"), ("fail", "continue"))
        or "fail",  # type: ignore[arg-type]
        for_each=read_for_each(ctx, f"{where}.for_each", body.get("for_each")),
        max_concurrency=lanes,
        array=array,
        env=_function_env(ctx, f"{where}.env", body.get("env")) if kind == "function" else {},
    )


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: set by the worker for each call (Lambda reserves its own the same way); a step may not set them
_RESERVED_ENV = ("_HANDLER", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR")
_RESERVED_PREFIXES = ("AWS_LAMBDA_", "SLUICE_")


def _function_env(ctx: FileCtx, where: str, value: Any) -> dict[str, str]:
    """A function step's ``env:``: literal values, a secret as ``${env:NAME}``; never a template.

    The worker starts with a clean environment and adds these for the step's calls only; data of
    the run goes in through ``input:``, where it stays data."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        ctx.err(
            where,
            f"must be a mapping of names to values, got {ctx.show(value)}",
            "write e.g. env: {MODE: fast}",
        )
        return {}
    env: dict[str, str] = {}
    for name, raw in value.items():
        w = f"{where}.{name}"
        if not _ENV_NAME.fullmatch(str(name)):
            ctx.err(w, "an environment variable name uses letters, digits and _", "rename it, e.g. API_URL")
        elif name in _RESERVED_ENV or str(name).startswith(_RESERVED_PREFIXES):
            ctx.err(w, f"{name} is set by Sluice for each call", "pick another name")
        elif not isinstance(raw, str | int | float):  # a bool is an int: true and false, as in JSON
            ctx.err(w, f"must be a string or a number, got {ctx.show(raw)}", f'write e.g. {name}: "value"')
        elif isinstance(raw, str) and "\0" in raw:
            ctx.err(w, "an environment variable cannot hold a NUL character", "remove it")
        elif isinstance(raw, str) and ("{{" in raw or "{%" in raw):
            ctx.err(
                w,
                "a function's env is literal text (a secret as ${env:NAME}), never a template",
                "pass run data in through input: and read it from the event",
            )
        else:
            env[str(name)] = raw if isinstance(raw, str) else json.dumps(raw)
    return env


def _function(ctx: FileCtx, where: str, ref: Any) -> str | None:
    """Check ``module:callable`` without importing user code: find the file, parse it with ast."""
    if read_str(ctx, where, ref, "images:probe") is None:
        return None
    module, _, attr = ref.partition(":")
    if len(ref) > _MAX_REF or not _IDENT_PATH.fullmatch(module) or not attr.isidentifier():
        ctx.err(where, f"must be module:callable, got {ctx.show(ref)}", "write e.g. function: images:probe")
        return None
    relative = Path(*module.split("."))
    for candidate in (ctx.dir / relative.with_suffix(".py"), ctx.dir / relative / "__init__.py"):
        if _is_file(candidate):
            _check_defined(ctx, where, candidate, attr)
            return ref
    origin = _installed_origin(module)
    if origin is None:
        ctx.err(
            where,
            f"module {module} not found: no {relative}.py beside the workflow and no installed module",
            f"create {relative}.py next to the workflow file",
        )
    elif origin.endswith(".py"):
        _check_defined(ctx, where, Path(origin), attr)
    return ref


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name longer than the system allows
        return False


def _installed_origin(module: str) -> str | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return None if spec is None else (spec.origin or "")


def _check_defined(ctx: FileCtx, where: str, source: Path, attr: str) -> None:
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except (OSError, SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        ctx.err(
            where,
            f"cannot parse {source.name}" + (f" (line {line})" if line else "") + f": {exc}",
            "fix the Python file",
        )
        return
    names = set(_top_level_names(tree))
    if attr not in names and "*" not in names:
        ctx.err(
            where,
            f"{_shown(source)} defines no top-level {attr}",
            f"add def {attr}(event, context): ... to {_shown(source)}",
        )


def _shown(source: Path) -> str:
    return f"{source.parent.name}/{source.name}" if source.name == "__init__.py" else source.name


def _top_level_names(tree: ast.Module) -> Iterator[str]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node.name
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            yield from (n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            yield from ((a.asname or a.name).split(".")[0] for a in node.names)


def _container(ctx: FileCtx, where: str, body: Any) -> ContainerSpec | None:
    if not ctx.fields(where, body, _CONTAINER_FIELDS, required=("image",)):
        return None
    image = read_str(ctx, f"{where}.image", body.get("image"), "busybox:1.36") or ""
    env = body.get("env") or {}
    if not isinstance(env, dict):
        ctx.err(
            f"{where}.env",
            f"must be a mapping of names to values, got {ctx.show(env)}",
            'write e.g. env: {KEY: "{{ params.key }}"}',
        )
        env = {}
    return ContainerSpec(
        image=image,
        command=_command(ctx, f"{where}.command", body.get("command")),
        env={
            str(k): ctx.template(f"{where}.env.{k}", v if isinstance(v, str) else json.dumps(v)) or Static("")
            for k, v in env.items()
        },
        vcpus=read_number(ctx, f"{where}.vcpus", body.get("vcpus"), 0.01, "1") or 1.0,
        memory_bytes=read_size(ctx, f"{where}.memory", body.get("memory"), "512MiB") or 512 * 1024**2,
        queue=read_str(ctx, f"{where}.queue", body.get("queue"), "default") or "default",
        volumes=_volumes(ctx, f"{where}.volumes", body.get("volumes")),
        working_dir=read_str(ctx, f"{where}.working_dir", body.get("working_dir"), "/work"),
        user=read_str(
            ctx,
            f"{where}.user",
            str(body["user"]) if isinstance(body.get("user"), int) else body.get("user"),
            '"1000:1000"',
        ),
        network=read_str(ctx, f"{where}.network", body.get("network"), "none"),
        parameters=read_str_map(ctx, f"{where}.parameters", body.get("parameters")) or {},
        preemptible=read_bool(ctx, f"{where}.preemptible", body.get("preemptible")) is not False,
        share_identifier=_share(ctx, f"{where}.share_identifier", body.get("share_identifier")),
    )


def _share(ctx: FileCtx, where: str, value: Any) -> str | None:
    """A fair-share queue's ``shareIdentifier``, as AWS allows it: letters, digits and _."""
    if value is None or (isinstance(value, str) and _SHARE.fullmatch(value)):
        return value
    ctx.err(where, f"must be up to 255 letters, digits and _, got {ctx.show(value)}", "write e.g. team_a")
    return None


def _command(ctx: FileCtx, where: str, value: Any) -> tuple[Renderable, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        ctx.err(
            where,
            "must be a list of arguments (argv), not a string",
            'write a list, e.g. command: [sh, -c, "echo hello"]',
        )
        return None
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        ctx.err(
            where, f"must be a list of strings, got {ctx.show(value)}", "write e.g. command: [python, run.py]"
        )
        return None
    for i, v in enumerate(value):
        if isinstance(v, Secret):  # the command shows in the job's description, as in Batch
            ctx.err(
                f"{where}[{i}]",
                "a value from ${env:...} cannot go in the command (it would show in the job)",
                'pass it through env: (e.g. env: {TOKEN: "${env:TOKEN}"}) and read $TOKEN in the container',
            )
    argv = [v if isinstance(v, str) else str(v) for v in value]
    script = data_in_script(argv)
    if script is not None:
        ctx.err(
            f"{where}[{script}]",
            "a shell script cannot hold {{ }} or Ref:: (the value would run as shell code)",
            SHELL_HINT,
        )
        return None
    parts = [ctx.template(f"{where}[{i}]", v) for i, v in enumerate(argv)]
    return tuple(p for p in parts if p is not None)


def _volumes(ctx: FileCtx, where: str, value: Any) -> tuple[VolumeSpec, ...]:
    volumes = []
    for i, spec in enumerate(read_str_list(ctx, where, value, '["./data:/data:ro"]') or ()):
        w = f"{where}[{i}]"
        parts = spec.split(":")
        if (
            len(parts) not in (2, 3)
            or not all(parts[:2])
            or (len(parts) == 3 and parts[2] not in ("ro", "rw"))
        ):
            ctx.err(
                w,
                f"must be host:container or host:container:ro, got {ctx.show(spec)}",
                'write e.g. "./data:/data:ro"',
            )
            continue
        if read_path(ctx, w, spec, '"./data:/data:ro"') is None:
            continue
        host = str((ctx.dir / parts[0]).resolve()) if parts[0].startswith(".") else parts[0]
        if ctx.volume_roots is not None and mountable(ctx.dir / host, ctx.volume_roots) is None:
            ctx.err(
                w,
                f"host path {parts[0]} is outside the folders containers may mount"
                f" ({', '.join(str(r) for r in ctx.volume_roots)})",
                f"mount a folder inside one of them, or add it to {ALLOW_ENV} (a :-separated list)",
            )
            continue
        volumes.append(VolumeSpec(host, parts[1], len(parts) == 3 and parts[2] == "ro"))
    return tuple(volumes)


def _retry(ctx: FileCtx, where: str, body: Any, is_container: bool) -> RetrySpec:
    if body is None:
        return RetrySpec()
    if isinstance(body, int) and not isinstance(body, bool):
        body = {"attempts": body}
    if not ctx.fields(where, body, _RETRY_FIELDS):
        return RetrySpec()
    rules = _exit_rules(ctx, f"{where}.evaluate_on_exit", body.get("evaluate_on_exit"))
    if rules and not is_container:
        ctx.err(
            f"{where}.evaluate_on_exit",
            "evaluate_on_exit is for container steps only",
            "use retry.errors for other steps",
        )
    if is_container and "errors" in body:  # the job's own retry strategy: exits, not error names
        ctx.err(
            f"{where}.errors",
            "a container step picks which failures retry by their exit, not by error names",
            "drop it; write e.g. evaluate_on_exit: [{on_exit_code: '137', action: retry}]",
        )
    default = RetrySpec()
    # a container step without an interval retries at once, as a Batch job does
    no_interval = 0.0 if is_container else default.interval_s
    spec = RetrySpec(
        attempts=read_int(ctx, f"{where}.attempts", body.get("attempts"), 1, 10, 3) or default.attempts,
        interval_s=_or(read_duration(ctx, f"{where}.interval", body.get("interval"), "5s"), no_interval),
        backoff_rate=_or(
            read_number(ctx, f"{where}.backoff_rate", body.get("backoff_rate"), 1.0, "2.0"),
            default.backoff_rate,
        ),
        max_delay_s=read_duration(ctx, f"{where}.max_delay", body.get("max_delay"), "10m"),
        jitter=read_choice(ctx, f"{where}.jitter", body.get("jitter"), ("full", "none")) or default.jitter,  # type: ignore[arg-type]
        errors=read_str_list(ctx, f"{where}.errors", body.get("errors"), "[States.Timeout]")
        or default.errors,
        evaluate_on_exit=rules,
    )
    for name, seconds in (("interval", spec.interval_s), ("max_delay", spec.max_delay_s)):
        if is_container and seconds is not None and seconds > MAX_JOB_RETRY_DELAY_S:
            ctx.err(
                f"{where}.{name}", "a container step's retry waits at most 1d", "use a schedule for longer"
            )
    return spec


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _exit_rules(ctx: FileCtx, where: str, value: Any) -> tuple[ExitRule, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 5:
        ctx.err(
            where,
            f"must be a list of at most 5 rules, got {ctx.show(value)}",
            "write e.g. evaluate_on_exit: [{on_exit_code: '137', action: retry}]",
        )
        return ()
    rules = []
    for i, body in enumerate(value):
        w = f"{where}[{i}]"
        if not ctx.fields(w, body, _EXIT_FIELDS, required=("action",)):
            continue
        matchers = {k: str(body[k]) for k in _EXIT_FIELDS[:3] if body.get(k) is not None}
        for key, text in matchers.items():
            problem = exit_rule_problem(key, text)
            if problem is not None:
                example = {"on_exit_code": "'137' or '13*'", "on_reason": "'OutOfMemoryError*'"}.get(
                    key, "'Essential container*'"
                )
                ctx.err(f"{w}.{key}", problem, f"write e.g. {key}: {example}")
        if not matchers:
            ctx.err(
                w,
                "a rule needs on_exit_code, on_reason or on_status_reason",
                "write e.g. on_exit_code: '137'",
            )
        action = body.get("action")
        action = action.lower() if isinstance(action, str) else action
        action = read_choice(ctx, f"{w}.action", action, ("retry", "exit")) or "exit"
        rules.append(ExitRule(action, **matchers))  # type: ignore[arg-type]
    return tuple(rules)


def _wait(ctx: FileCtx, where: str, value: Any) -> WaitSpec | None:
    """``wait: 30s``, ``wait: "{{ event.detail.at }}"``, an ISO timestamp, or ``{seconds|until: ...}``."""
    if isinstance(value, dict):
        if not ctx.fields(where, value, ("seconds", "until")) or len(value) != 1:
            ctx.err(where, "must have exactly one of seconds or until", "write e.g. wait: {seconds: 30s}")
            return None
        value = value.get("seconds", value.get("until"))
    if isinstance(value, dt.datetime | dt.date):
        return WaitSpec(until=Static(value.isoformat()))
    if isinstance(value, str) and "{{" in value:
        return WaitSpec(until=ctx.template(where, value))
    try:
        return WaitSpec(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        return WaitSpec(until=Static(dt.datetime.fromisoformat(str(value)).isoformat()))
    except ValueError:
        ctx.err(
            where,
            f"must be a duration or an ISO timestamp, got {ctx.show(value)}",
            'write e.g. wait: 30s or wait: "{{ event.detail.at }}"',
        )
        return None


def _fail(ctx: FileCtx, where: str, value: Any) -> FailSpec | None:
    if isinstance(value, str):
        return FailSpec(value)
    if not ctx.fields(where, value, ("error", "cause"), required=("error",)):
        return None
    error = read_str(ctx, f"{where}.error", value.get("error"), "BadInput") or ""
    return FailSpec(error, ctx.template(f"{where}.cause", value.get("cause")))


# --- template variables ------------------------------------------------------------------------------


def check_templates(
    ctx: FileCtx,
    steps: Mapping[str, StepSpec],
    dag: Dag,
    params: Mapping[str, ParamSpec],
    outputs: Renderable | None,
) -> None:
    """Check every name a template reads: context names, declared params, upstream steps."""
    for step in steps.values():
        allowed = CONTEXT_NAMES  # an array: N child has an index; only a for_each gives items
        if step.for_each is None:
            allowed = allowed - {"item"} if step.array is not None else allowed - {"item", "index"}
        for where, renderable in _step_templates(step):
            check_variables(
                ctx, where, renderable, allowed, params, steps, dag.upstream(step.name), step.name
            )
    if outputs is not None:
        check_variables(
            ctx, "outputs", outputs, CONTEXT_NAMES - {"item", "index"}, params, steps, frozenset(steps), ""
        )


def _step_templates(step: StepSpec) -> Iterator[tuple[str, Renderable]]:
    where = f"steps.{step.name}"
    yield from ((f"{where}.{k}", r) for k, r in (("when", step.when), ("input", step.input)) if r is not None)
    if step.for_each is not None:
        yield f"{where}.for_each", step.for_each
    if step.container is not None:
        yield from ((f"{where}.container.command", r) for r in step.container.command or ())
        yield from ((f"{where}.container.env.{k}", r) for k, r in step.container.env.items())
    if step.wait is not None and step.wait.until is not None:
        yield f"{where}.wait", step.wait.until
    if step.fail is not None and step.fail.cause is not None:
        yield f"{where}.fail.cause", step.fail.cause
