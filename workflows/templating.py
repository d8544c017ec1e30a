"""Templates in workflow files: jinja2 in a sandbox, compiled once at load.

Templates come only from workflow files; event and step data enter them only as values in the
context, so a payload containing ``{{ 7*7 }}`` comes out literally. A string that is exactly one
``{{ ... }}`` keeps its native type (a number stays a number). Strings without ``{{``/``{%`` stay
static and cost nothing to render.

>>> r = compile_value({"n": "{{ params.size * 2 }}", "k": "x-{{ params.size }}"}, "steps.a.input")
>>> r.render({"params": {"size": 4}})
{'n': 8, 'k': 'x-4'}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from workflows.errors import TemplateError

CONTEXT_NAMES = frozenset({"event", "params", "steps", "run", "item", "index"})


class _DataEnvironment(SandboxedEnvironment):
    """Dots read JSON keys first: ``steps.items.output`` and ``output.values`` mean the keys.

    Plain jinja2 tries attributes before items, so a step named ``items`` or an
    output key named ``values``/``count`` would resolve to a dict/list method.
    Workflow data is JSON, so a key always wins over a Python attribute.
    """

    #: bounded, and so never folded into a constant when the template compiles: a workflow's
    #: ``{{ "a" * 10**10 }}`` would otherwise take 10 GB in ``sluice validate``
    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        big = operator == "**" and _int(left) and _int(right) and abs(left) > 1
        if big and right * abs(left).bit_length() > MAX_INT_BITS:
            raise SecurityError(f"{left} ** {right} has more than {MAX_INT_BITS} bits")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and _int(times) and len(seq) * times > MAX_REPEAT:
                    raise SecurityError(f"repeating {len(seq)} items {times} times exceeds {MAX_REPEAT}")
        return super().call_binop(context, operator, left, right)


#: the largest integer ``**`` makes in a template, and the longest string or list ``*`` makes
MAX_INT_BITS, MAX_REPEAT = 64 * 1024, 10_000_000


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_ENV = _DataEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
_SINGLE_EXPR = re.compile(r"\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*", re.DOTALL)
# Attributes of these names are recorded as "name.attr" in `.variables` so the loader can check them.
_QUALIFIED = ("steps", "params")


class TemplateCompileError(TemplateError):
    """A template that does not compile; carries the field path apart from the problem."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class Renderable(Protocol):
    """A compiled value: call ``render(ctx)`` per run; ``variables`` lists what it reads."""

    is_static: bool
    variables: frozenset[str]

    def render(self, ctx: Mapping[str, Any]) -> Any: ...


class Static:
    """A value with no template in it: rendering returns it unchanged."""

    __slots__ = ("value",)
    is_static = True
    variables: frozenset[str] = frozenset()

    def __init__(self, value: Any) -> None:
        self.value = value

    def render(self, ctx: Mapping[str, Any]) -> Any:
        return self.value

    def __repr__(self) -> str:
        return f"Static({self.value!r})"


class _Compiled:
    """Shared by string templates and native expressions: source, field path, variables."""

    __slots__ = ("_fn", "source", "variables", "where")
    is_static = False

    def __init__(self, source: str, where: str, fn: Any, variables: frozenset[str]) -> None:
        self.source = source
        self.where = where
        self._fn = fn
        self.variables = variables

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r})"


class Expression(_Compiled):
    """Exactly one ``{{ ... }}``: renders to the expression's native value."""

    __slots__ = ()

    def render(self, ctx: Mapping[str, Any]) -> Any:
        try:
            value = self._fn(ctx)
            if isinstance(value, jinja2.Undefined):
                value._fail_with_undefined_error()
        except Exception as exc:
            raise TemplateError(f"{self.where}: cannot render {self.source!r}: {exc}") from exc
        return value


class Text(_Compiled):
    """A string mixing text and ``{{ }}``/``{% %}``: renders to a string."""

    __slots__ = ()

    def render(self, ctx: Mapping[str, Any]) -> Any:
        try:
            return self._fn(ctx)
        except Exception as exc:
            raise TemplateError(f"{self.where}: cannot render {self.source!r}: {exc}") from exc


class DictValue:
    """A mapping whose values are compiled; renders a fresh dict each time."""

    __slots__ = ("is_static", "items", "variables")

    def __init__(self, items: dict[Any, Renderable]) -> None:
        self.items = tuple(items.items())
        self.is_static = all(r.is_static for _, r in self.items)
        self.variables = frozenset().union(*(r.variables for _, r in self.items))

    def render(self, ctx: Mapping[str, Any]) -> Any:
        return {key: r.render(ctx) for key, r in self.items}

    def __repr__(self) -> str:
        return f"DictValue({dict(self.items)!r})"


class ListValue:
    """A list whose items are compiled; renders a fresh list each time."""

    __slots__ = ("is_static", "items", "variables")

    def __init__(self, items: list[Renderable]) -> None:
        self.items = tuple(items)
        self.is_static = all(r.is_static for r in self.items)
        self.variables = frozenset().union(*(r.variables for r in self.items))

    def render(self, ctx: Mapping[str, Any]) -> Any:
        return [r.render(ctx) for r in self.items]

    def __repr__(self) -> str:
        return f"ListValue({list(self.items)!r})"


def compile_value(value: Any, where: str) -> Renderable:
    """Compile a YAML value (dicts, lists, strings, scalars) into a Renderable tree.

    ``where`` is the field path used in error messages. Raises TemplateCompileError (a
    TemplateError) on a syntax error; rendering errors later raise TemplateError naming the field.
    """
    if isinstance(value, str):
        return compile_string(value, where)
    if isinstance(value, dict):
        return DictValue({k: compile_value(v, f"{where}.{k}") for k, v in value.items()})
    if isinstance(value, list | tuple):
        return ListValue([compile_value(v, f"{where}[{i}]") for i, v in enumerate(value)])
    return Static(value)


def compile_string(source: str, where: str) -> Renderable:
    """Compile one string: static, a native expression, or a text template."""
    if "{{" not in source and "{%" not in source:
        return Static(source)
    try:
        variables = _variables(_ENV.parse(source))
        single = _SINGLE_EXPR.fullmatch(source)
        if single:
            fn = _ENV.compile_expression(single.group("expr"), undefined_to_none=False)
            return Expression(source, where, fn, variables)
        return Text(source, where, _ENV.from_string(source).render, variables)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateCompileError(
            where, f"template syntax error: {exc.message} in {_short(source)}"
        ) from exc
    except (RecursionError, MemoryError, SyntaxError) as exc:  # SyntaxError: Python's own nesting limit
        raise TemplateCompileError(where, f"template nested too deeply to compile: {_short(source)}") from exc


def _short(source: str) -> str:
    return repr(source) if len(source) <= 80 else repr(source[:77] + "...")


def _variables(tree: nodes.Template) -> frozenset[str]:
    """Top-level names read by a template, plus ``steps.X``/``params.X`` for constant lookups."""
    from jinja2 import meta

    found = set(meta.find_undeclared_variables(tree))
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)  # what find_all was asked for
        base = node.node
        if not (isinstance(base, nodes.Name) and base.name in _QUALIFIED and base.name in found):
            continue
        if isinstance(node, nodes.Getattr):
            found.add(f"{base.name}.{node.attr}")
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            found.add(f"{base.name}.{node.arg.value}")
    return frozenset(found)
