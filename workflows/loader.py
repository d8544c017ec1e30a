"""Load workflow files into frozen specs, reporting every problem of every file at once.

Each problem is one SpecError rendered as ``file: field.path: what is wrong (what to write)``;
``load_dir`` raises them together as SpecErrors so a user fixes everything in one pass.

>>> catalog = load_dir("examples")            # doctest: +SKIP
>>> catalog["thumbnails"].steps["probe"].timeout_s   # doctest: +SKIP
30.0
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from workflows import secrets
from workflows.concurrency import check_step_keys, parse_concurrency
from workflows.dag import Dag, find_problems
from workflows.document import screen_document
from workflows.errors import InputError, SpecError, SpecErrors
from workflows.fields import NAME, FileCtx, type_ok
from workflows.sections import (
    DuplicateKey,
    YamlLoader,
    parse_destination,
    parse_notify,
    parse_params,
    parse_triggers,
)
from workflows.spec import Workflow
from workflows.steps import check_templates, parse_steps

_TOP_FIELDS = (
    "name", "description", "triggers", "params", "steps", "outputs", "notify", "on_success", "on_failure",
    "concurrency",
)  # fmt: skip


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


def load_file(path: str | os.PathLike[str], *, volume_roots: Sequence[Path] | None = None) -> Workflow:
    """Load one workflow file; raises SpecErrors listing every problem in it.

    ``volume_roots`` (workflows.hostpaths) are the folders a container may mount; given, a volume
    outside them is a problem of the file. The engine passes its own, ``sluice validate`` too.
    """
    workflow, errors, _ = _load(Path(path), str(path), volume_roots)
    if errors or workflow is None:
        raise SpecErrors(errors)
    return workflow


def load_dir(path: str | os.PathLike[str], *, volume_roots: Sequence[Path] | None = None) -> Catalog:
    """Load every ``*.yaml``/``*.yml`` under ``path`` (hidden folders skipped) into a Catalog.

    Raises SpecErrors with every problem of every file, including duplicate workflow names.
    YAML files used as webhook schemas by a workflow are not loaded as workflows. ``volume_roots``
    as for :func:`load_file`.
    """
    workflows, errors = _load_all(Path(path), volume_roots)
    if not errors:
        from workflows.chains import find_chain_cycles

        errors = [_as_walked(e, Path(path)) for e in find_chain_cycles({w.name: w for w in workflows})]
    if errors:
        raise SpecErrors(errors)
    return Catalog({w.name: w for w in workflows})


def _as_walked(err: SpecError, root: Path) -> SpecError:
    """A problem across files names its file as the walk did (``flows/a.yaml``), as a file's own do."""
    with contextlib.suppress(ValueError):  # not under the folder (a symlink): its real path, then
        err.file = str(root / Path(err.file).relative_to(root.resolve()))
    return err


def validate(path: str | os.PathLike[str], *, volume_roots: Sequence[Path] | None = None) -> list[SpecError]:
    """Every problem in a directory or file, empty when everything loads (``sluice validate``)."""
    target = Path(path)
    if target.is_file():
        return _load(target, str(path), volume_roots)[1]
    return _load_all(target, volume_roots)[1]


def _load_all(root: Path, volume_roots: Sequence[Path] | None) -> tuple[list[Workflow], list[SpecError]]:
    if not root.is_dir():
        return [], [
            SpecError(str(root), "", "no such directory", "give the folder that holds the workflow files")
        ]
    files = sorted(
        p
        for p in root.rglob("*")
        if p.suffix in (".yaml", ".yml") and p.is_file() and not _hidden(p.relative_to(root))
    )
    results = {p.resolve(): _load(p, str(p), volume_roots) for p in files}
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


def _load(
    path: Path, shown: str, volume_roots: Sequence[Path] | None
) -> tuple[Workflow | None, list[SpecError], list[Path]]:
    """One file: ``(workflow or None, its problems, schema files it uses)``."""
    ctx = FileCtx(file=shown, dir=path.resolve().parent, volume_roots=volume_roots)
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.load(text, Loader=YamlLoader)
    except OSError as exc:
        return None, [SpecError(shown, "", f"cannot read the file: {exc.strerror}")], []
    except yaml.YAMLError as exc:
        return None, [_yaml_error(shown, exc)], []
    except ValueError as exc:  # a value YAML's constructors cannot build: 2026-13-45, 5,000 digits
        return None, [_value_error(shown, exc)], []
    if not isinstance(raw, dict):
        ctx.err("", "must be a YAML mapping", "write name:, triggers:, params: and steps: at the top level")
        return None, ctx.errors, []
    if not screen_document(ctx, raw):
        return None, ctx.errors, []
    names: set[str] = set()
    raw = _substitute_env(ctx, raw, "", names)
    workflow = _build(ctx, path, raw, frozenset(names))
    if workflow is not None:
        workflow = dataclasses.replace(workflow, version=file_version(text))
    return (workflow if not ctx.errors else None), ctx.errors, ctx.schema_files


def file_version(text: str) -> str:
    """A workflow's version: the first 12 hex digits of its file's SHA-256 (git-like, and stable
    across restarts, so the same file is the same version in every run's record)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _yaml_error(shown: str, exc: yaml.YAMLError) -> SpecError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    what = " ".join((f"{context}, {problem}" if context else problem).split())  # one line per problem
    hint = "keep one of them" if isinstance(exc, DuplicateKey) else "fix the YAML syntax"
    if mark is None:
        return SpecError(shown, "", f"invalid YAML: {what}", hint)
    return SpecError(shown, f"line {mark.line + 1}", f"invalid YAML: {what}", hint)


def _value_error(shown: str, exc: ValueError) -> SpecError:
    if isinstance(exc, UnicodeDecodeError):
        problem = f"the file is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        return SpecError(shown, "", problem, "save it as UTF-8")
    if "integer string conversion" in str(exc):
        problem = "invalid YAML: a number has more than 4300 digits"
        return SpecError(shown, "", problem, "quote it to make a string")
    return SpecError(shown, "", f"invalid YAML value: {exc}", "fix the value, or quote it to make a string")


def _build(ctx: FileCtx, path: Path, raw: dict[str, Any], secret_names: frozenset[str]) -> Workflow | None:
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
    on_success = parse_destination(ctx, "on_success", raw.get("on_success"))
    on_failure = parse_destination(ctx, "on_failure", raw.get("on_failure"))
    outputs = ctx.template("outputs", raw.get("outputs"))
    concurrency = parse_concurrency(ctx, raw.get("concurrency"))
    dag = _dag(ctx, steps)
    if dag is None:
        return None
    check_templates(ctx, steps, dag, params, outputs)
    check_step_keys(ctx, steps, dag, params)
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
        on_success=on_success,
        on_failure=on_failure,
        secrets=secret_names,
        concurrency=concurrency,
    )


def _dag(ctx: FileCtx, steps: Mapping[str, Any]) -> Dag | None:
    needs = {name: step.needs for name, step in steps.items()}
    problems = find_problems(needs)
    for where, problem, hint in problems:
        ctx.err(where, problem, hint)
    if problems:
        return None
    return Dag(needs, [name for name, step in steps.items() if step.on_failure == "continue"])


def _substitute_env(ctx: FileCtx, value: Any, where: str, names: set[str]) -> Any:
    """Replace ``${env:NAME}`` in every string value (see workflows/secrets.py); a missing
    variable is a SpecError naming it. ``names`` collects the variables used."""
    if isinstance(value, dict):
        return {
            k: _substitute_env(ctx, v, f"{where}.{k}" if where else str(k), names) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute_env(ctx, v, f"{where}[{i}]", names) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${env:" not in value:
        return value
    names |= secrets.names_in(value)

    def missing(name: str) -> None:
        ctx.err(where, f"environment variable {name} is not set", f"export {name} before loading")

    return secrets.substitute(value, os.environ, missing)


def resolve_input(workflow: Workflow, data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run's params: ``data`` checked against the workflow's params, defaults applied.

    Refuses unknown keys, missing required params and wrong types (a bool is not an integer; an
    integer is a number), raising InputError that names every offending param. A workflow that
    declares no params takes any JSON object as it is, as a Step Functions execution's input is.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InputError(
            f"{workflow.name}: run input must be a JSON object of params, got {type(data).__name__}"
        )
    if workflow.secrets:  # a retried run's stored params hold ${env:...} where its defaults had secrets
        data = secrets.restore_defaults(data, {n: p.default for n, p in workflow.params.items()})
    if not workflow.params:
        return copy.deepcopy(dict(data))
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
