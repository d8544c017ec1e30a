"""Reading fields of a workflow file: the problem collector and the typed readers every section uses.

Every reader records a problem on the FileCtx and returns None when a value is absent or wrong,
so a parser can carry on and one load reports every problem of a file.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workflows.errors import SpecError, TemplateError, UnitError
from workflows.secrets import Secret
from workflows.templating import Renderable, compile_value
from workflows.units import DURATION_FORMS, SIZE_FORMS, parse_duration, parse_size

NAME = re.compile(r"[A-Za-z0-9_-]+")
MAX_PATH = 4096  #: Linux's PATH_MAX
_IDENT_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def type_ok(type_name: str, value: Any) -> bool:
    """Whether ``value`` has param type ``type_name``; a bool is neither an integer nor a number."""
    if isinstance(value, bool) and type_name != "boolean":
        return False
    return isinstance(value, _PY_TYPES[type_name])


@dataclass
class FileCtx:
    """Where problems of one file are collected, and what paths resolve against."""

    file: str
    dir: Path
    errors: list[SpecError] = field(default_factory=list)
    schema_files: list[Path] = field(default_factory=list)
    #: fields already refused for their value (see workflows.document): readers add no second line
    refused: set[str] = field(default_factory=set)
    #: folders container volumes may mount (workflows.hostpaths); None: not checked
    volume_roots: Sequence[Path] | None = None

    def err(self, where: str, problem: str, hint: str = "") -> None:
        if where in self.refused:
            return
        self.errors.append(SpecError(self.file, where, problem, hint))

    @staticmethod
    def show(value: Any) -> str:
        """A short rendering of an offending value; strings from the environment stay masked."""
        if isinstance(value, Secret):
            return "a value from the environment"
        if isinstance(value, dict):
            return "a mapping"
        if isinstance(value, list):
            return "a list"
        text = json.dumps(value, ensure_ascii=False, default=str)
        return text if len(text) <= 60 else text[:57] + "..."

    def fields(
        self, where: str, value: Any, allowed: Collection[str], required: Collection[str] = ()
    ) -> bool:
        """Check that ``value`` is a mapping with known keys and the required ones; False if not a mapping."""
        if not isinstance(value, dict):
            self.err(
                where, f"must be a mapping, got {self.show(value)}", f"write fields such as {_first(allowed)}"
            )
            return False
        prefix = f"{where}." if where else ""
        for key in value:
            if key in allowed:
                continue
            close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
            if key in _OTHER_NAMES and _OTHER_NAMES[key] in allowed:  # what other tools call it
                close = [_OTHER_NAMES[key]]
            hint = f"did you mean {close[0]}?" if close else f"valid fields: {', '.join(allowed)}"
            self.err(f"{prefix}{key}", "unknown field", hint)
        for key in required:
            if value.get(key) is None:
                self.err(f"{prefix}{key}", "is required", f"add {key}:")
        return True

    def template(self, where: str, value: Any) -> Renderable | None:
        if value is None:
            return None
        try:
            return compile_value(value, where)
        except TemplateError as exc:
            self.err(
                getattr(exc, "where", where), getattr(exc, "problem", str(exc)), "fix the {{ }} expression"
            )
            return None


#: fields as GitHub Actions and others name them, and Sluice's name for the same
_OTHER_NAMES = {"on": "triggers", "jobs": "steps", "depends_on": "needs", "if": "when", "inputs": "params"}


def _first(allowed: Collection[str]) -> str:
    return ", ".join(list(allowed)[:3])


def _leaf(where: str) -> str:
    return re.sub(r"\[\d+\]$", "", where).rsplit(".", 1)[-1]


# --- scalar readers: None means "absent" (or wrong, with the problem recorded) -------------------


def read_str(ctx: FileCtx, where: str, value: Any, example: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    ctx.err(where, f"must be a string, got {ctx.show(value)}", f"write e.g. {_leaf(where)}: {example}")
    return None


def read_path(ctx: FileCtx, where: str, value: Any, example: str) -> str | None:
    """A file or folder name: a string no system call refuses outright (NUL, or longer than PATH_MAX)."""
    text = read_str(ctx, where, value, example)
    if text is None:
        return None
    if "\0" in text or len(text) > MAX_PATH:
        what = "a NUL character" if "\0" in text else f"more than {MAX_PATH} characters"
        ctx.err(where, f"is not a usable path: it has {what}", f"write e.g. {_leaf(where)}: {example}")
        return None
    return text


def read_int(ctx: FileCtx, where: str, value: Any, lo: int, hi: int, example: int) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi):
        return value
    ctx.err(
        where,
        f"must be an integer from {lo} to {hi}, got {ctx.show(value)}",
        f"write e.g. {_leaf(where)}: {example}",
    )
    return None


def read_number(ctx: FileCtx, where: str, value: Any, lo: float, example: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and finite(value) and value >= lo:
        return float(value)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    what = "a finite number" if number and not finite(value) else f"a number >= {lo:g}"
    ctx.err(where, f"must be {what}, got {ctx.show(value)}", f"write e.g. {_leaf(where)}: {example}")
    return None


def finite(value: int | float) -> bool:
    """Whether a YAML number is one a float can hold: not NaN, not infinite, not a 400-digit integer."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def read_bool(ctx: FileCtx, where: str, value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    ctx.err(where, f"must be true or false, got {ctx.show(value)}", f"write e.g. {_leaf(where)}: true")
    return None


def read_choice(ctx: FileCtx, where: str, value: Any, choices: Collection[str]) -> str | None:
    if value is None or value in choices:
        return value
    ctx.err(
        where,
        f"must be one of {', '.join(choices)}, got {ctx.show(value)}",
        f"write e.g. {_leaf(where)}: {_first_choice(choices)}",
    )
    return None


def _first_choice(choices: Collection[str]) -> str:
    return next(iter(choices))


def read_duration(ctx: FileCtx, where: str, value: Any, example: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except UnitError as exc:
        problem = str(exc) if exc.form_ok else f"must be a duration ({DURATION_FORMS})"
        ctx.err(where, f"{problem}, got {ctx.show(value)}", f"write e.g. {_leaf(where)}: {example}")
        return None


def read_size(ctx: FileCtx, where: str, value: Any, example: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except UnitError as exc:
        problem = str(exc) if exc.form_ok else f"must be a size ({SIZE_FORMS})"
        ctx.err(where, f"{problem}, got {ctx.show(value)}", f"write e.g. {_leaf(where)}: {example}")
        return None


def read_str_list(ctx: FileCtx, where: str, value: Any, example: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    got = f"got {ctx.show(value)}"
    if isinstance(value, list):  # "got a list" would not say what is wrong with it
        i, bad = next((i, v) for i, v in enumerate(value) if not isinstance(v, str))
        got = f"but item {i} is {ctx.show(bad)}"
    ctx.err(where, f"must be a list of strings, {got}", f"write e.g. {_leaf(where)}: {example}")
    return None


def read_str_map(ctx: FileCtx, where: str, value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if isinstance(value, dict) and all(isinstance(v, str | int | float) for v in value.values()):
        return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items()}
    got = f"got {ctx.show(value)}"
    if isinstance(value, dict):  # "got a mapping" would not say what is wrong with it
        name, bad = next((k, v) for k, v in value.items() if not isinstance(v, str | int | float))
        got = f"but {name} is {ctx.show(bad)}"
    ctx.err(
        where, f"must be a mapping of names to strings, {got}", f"write e.g. {_leaf(where)}: {{NAME: value}}"
    )
    return None


# --- template variables ------------------------------------------------------------------------------


def check_variables(
    ctx: FileCtx,
    where: str,
    renderable: Renderable,
    allowed: Collection[str],
    params: Mapping[str, Any],
    steps: Collection[str],
    upstream: Collection[str],
    this_step: str,
) -> None:
    """Record one problem per bad name ``renderable`` reads (see :func:`check_templates`)."""
    bad_tops = {v for v in renderable.variables if "." not in v and v not in allowed}
    for var in sorted(renderable.variables):
        top, _, rest = var.partition(".")
        if var in bad_tops:
            ctx.err(where, f"template uses unknown name {top!r}", _name_hint(top, allowed))
        elif top in bad_tops:
            continue
        elif top == "params" and rest and params and rest not in params:  # no params: free-form input
            ctx.err(
                where,
                f"template uses params.{rest}, which is not declared",
                f"declare it under params: {rest}: {{type: string}}",
            )
        elif top == "steps" and rest:
            _check_step_ref(ctx, where, rest, steps, upstream, this_step)


def _name_hint(name: str, allowed: Collection[str]) -> str:
    if name == "item":
        return "item exists only in steps with for_each; an array: N child has index"
    if name == "index":
        return "index exists only in steps with for_each or array"
    close = difflib.get_close_matches(name, list(allowed), n=1)
    return f"did you mean {close[0]}?" if close else f"use one of {', '.join(sorted(allowed))}"


def _check_step_ref(
    ctx: FileCtx, where: str, ref: str, steps: Collection[str], upstream: Collection[str], this: str
) -> None:
    if ref == this:
        ctx.err(where, f"template reads steps.{ref}, the step's own output", "read an upstream step instead")
    elif ref not in steps:
        ctx.err(
            where,
            f"template reads steps.{ref}, but there is no step named {ref}",
            f"steps are: {', '.join(steps)}",
        )
    elif ref not in upstream:
        ctx.err(where, f"template reads steps.{ref}, which is not upstream of {this}", f"add {ref} to needs")
