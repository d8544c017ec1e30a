"""Secrets: every value that came from ``${env:NAME}`` in a workflow file, wherever it goes.

The loader resolves ``${env:NAME}`` (a variable that is not set is a SpecError) into a
:class:`Secret`, a ``str`` whose ``repr`` is masked, and lists the names on the Workflow. The
engine registers those names (:func:`register`); from then on the rule is one, by value, so it
holds however the value travelled (a param default rendered into a template, a step's output):

- :func:`hide` (:func:`hide_json`): each registered value becomes its reference ``${env:NAME}``
  where data leaves the process or reaches the disk: JSON written to the store, API answers and
  the dashboard, notification bodies, log lines (:class:`LogFilter`).
- :func:`seal` / :func:`reveal`: a container's env value that holds a secret is stored sealed
  (``$`` written ``$$``, the secret as ``${env:NAME}``) and resolved only when the container is
  created, so neither ``sluice.db`` nor ``GET /api/v1/jobs/{id}`` ever holds it in clear.
- Function workers start with a clean environment (engine/executors/workers.py), so a handler
  sees a secret only when its step names it (in ``input:`` or ``env:``).

Values shorter than :data:`MIN_CHARS` are not hidden: masking ``"1"`` would rewrite every number.

>>> register({"API_TOKEN": "tok-123456"})
>>> hide("Bearer tok-123456")
'Bearer ${env:API_TOKEN}'
>>> reveal(seal("Bearer tok-123456, $5") or "")
'Bearer tok-123456, $5'
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

MIN_CHARS = 4
REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SEALED = re.compile(r"\$\$|\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


class Secret(str):
    """A string read from the environment: masked in reprs so a secret never reaches a message."""

    def __repr__(self) -> str:
        return "'<from environment>'"


def substitute(text: str, environ: Mapping[str, str], missing: Callable[[str], None]) -> str:
    """``text`` with each ``${env:NAME}`` replaced by its value: a Secret when there was one.

    ``missing(name)`` is called for each variable that is not set (it is replaced by "").
    """
    if "${env:" not in text:
        return text

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            missing(name)
            return ""
        return environ[name]

    return Secret(REF.sub(value, text))


def names_in(text: str) -> set[str]:
    """The variables ``text`` refers to with ``${env:NAME}``."""
    return set(REF.findall(text))


# -- the registry: which values are secret in this process ----------------------------------------

_names: dict[str, str] = {}  #: name -> the value it had when registered
_pairs: list[tuple[str, str]] = []  #: (value, reference), longest value first
_json_pairs: list[tuple[str, str]] = []  #: the same, each value as it appears inside JSON text
_values_re: list[re.Pattern[str]] = [re.compile("(?!)")]  #: any registered value, longest first


def register(names: Iterable[str] | Mapping[str, str], environ: Mapping[str, str] | None = None) -> None:
    """Treat the values of ``names`` (read from ``environ``, default the process's) as secrets.

    A mapping gives the values itself. Adds to what is registered: secrets are process-wide, as
    the environment they come from is.
    """
    if isinstance(names, Mapping):
        values = {str(k): str(v) for k, v in names.items()}
    else:
        env = os.environ if environ is None else environ
        values = {n: env[n] for n in names if n in env}
    _names.update(values)
    _rebuild()


def unregister(names: Iterable[str]) -> None:
    """Stop treating ``names`` as secrets (tests that registered their own)."""
    for name in names:
        _names.pop(name, None)
    _rebuild()


def _rebuild() -> None:
    found: dict[str, str] = {}
    for name, value in _names.items():
        if len(value) >= MIN_CHARS:
            found.setdefault(value, f"${{env:{name}}}")
    _pairs[:] = sorted(found.items(), key=lambda p: -len(p[0]))
    _json_pairs[:] = [(json.dumps(v, ensure_ascii=False)[1:-1], ref) for v, ref in _pairs]
    _values_re[0] = re.compile("|".join(re.escape(v) for v, _ in _pairs) or "(?!)")


def registered() -> frozenset[str]:
    """The names of the variables whose values are secret."""
    return frozenset(_names)


def hide(text: str) -> str:
    """``text`` with every registered value replaced by its ``${env:NAME}`` reference."""
    for value, ref in _pairs:
        if value in text:
            text = text.replace(value, ref)
    return text


def hide_json(text: str) -> str:
    """:func:`hide` for JSON text: inside its strings only (a secret ``1234`` must not rewrite the
    number ``12345``), where a value appears with its escapes (quotes, newlines)."""
    if not any(value in text for value, _ in _json_pairs):
        return text

    def inside(match: re.Match[str]) -> str:
        literal = match.group(0)
        for value, ref in _json_pairs:
            if value in literal:
                literal = literal.replace(value, ref)
        return literal

    return _JSON_STRING.sub(inside, text)


def hide_html(text: str) -> str:
    """:func:`hide` for an HTML page, where a value may appear escaped, or inside embedded JSON."""
    text = hide(hide_json(text))
    for value, ref in _pairs:
        escaped = html.escape(value)
        if escaped != value and escaped in text:
            text = text.replace(escaped, ref)
    return text


def hide_data(value: Any) -> Any:
    """A copy of JSON-like ``value`` (dicts, lists, strings) with every string hidden."""
    if not _pairs:
        return value
    if isinstance(value, str):
        return hide(value)
    if isinstance(value, dict):
        return {hide(k) if isinstance(k, str) else k: hide_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [hide_data(v) for v in value]
    return value


def holds_secret(text: str) -> bool:
    return any(value in text for value, _ in _pairs)


def seal(text: str) -> str | None:
    """``text`` as a reference :func:`reveal` turns back into it, or None if it holds no secret.

    Data around the secret (a rendered payload value, say) has its ``$`` doubled, so a payload
    that contains ``${env:OTHER}`` stays that literal text and never reads a variable.
    """
    if not holds_secret(text):
        return None
    refs = dict(_pairs)
    out, pos = [], 0
    for match in _values_re[0].finditer(text):  # a secret's own "$" must stay as it is
        out += [text[pos : match.start()].replace("$", "$$"), refs[match.group(0)]]
        pos = match.end()
    out.append(text[pos:].replace("$", "$$"))
    return "".join(out)


def reveal(sealed: str, environ: Mapping[str, str] | None = None) -> str:
    """A sealed reference resolved against ``environ`` (default: the process's, at this moment).

    Only registered names resolve; any other ``${env:...}`` was not sealed by us and stays text.
    """
    env = os.environ if environ is None else environ

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        if name not in _names:
            return match.group(0)
        return env.get(name, _names[name])

    return _SEALED.sub(value, sealed)


def restore_defaults(params: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Params read back from the store, with each one stored as its default's references (a
    default that holds a secret) given that default again.

    A caller who passes the reference text as the param gets no more than leaving it out gives.
    """
    restored = dict(params)
    for name, default in defaults.items():
        stored = restored.get(name)
        if default is not None and stored is not None and stored != default and stored == hide_data(default):
            restored[name] = default
    return restored


class LogFilter(logging.Filter):
    """Hides registered values in a log record (its message, arguments and traceback).

    Install it on a handler: handler filters see the records of every logger that reaches it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not _pairs:
            return True
        message = record.getMessage()
        hidden = hide(message)
        if hidden != message:
            record.msg, record.args = hidden, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = hide(record.exc_text)
        if record.stack_info:
            record.stack_info = hide(record.stack_info)
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Put a :class:`LogFilter` on each handler of ``logger`` (default: the root logger), once."""
    target = logging.getLogger() if logger is None else logger
    for handler in target.handlers:
        if not any(isinstance(f, LogFilter) for f in handler.filters):
            handler.addFilter(LogFilter())
