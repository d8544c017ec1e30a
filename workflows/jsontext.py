"""JSON that comes from outside (webhook bodies, API requests, ``--input``): strict, as RFC 8259.

Python's ``json.loads`` accepts documents the store cannot write or a consumer cannot read:
``NaN`` and ``Infinity`` (no other JSON parser does; the store encodes with ``allow_nan=False``),
``1e400`` (which becomes infinity), integers of thousands of digits, lone UTF-16 surrogates such
as ``"\\ud800"`` (not encodable as UTF-8), and nesting deep enough to exhaust the recursion limit
of whoever walks the document next. Accepting them at the door would fail later, as a server
error after the caller was told nothing useful; refusing them here gives the caller a 4xx that
names the fix. Each check costs nothing on ordinary documents: the nesting and surrogate checks
run only when a cheap scan of the text says they could matter.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: deepest nesting of arrays and objects accepted (event patterns and templates walk documents)
MAX_DEPTH = 64
#: longest integer accepted, in digits (Python itself stops at 4,300)
MAX_INT_DIGITS = 1_000

_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


class _NotJSON(Exception):
    def __init__(self, message: str, needle: str = "") -> None:
        super().__init__(message)
        self.message, self.needle = message, needle


def _refuse(name: str) -> Any:
    raise _NotJSON(f"{name} is not JSON (use null, a number or a string)", name)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJSON(f"the number {text} is not finite (JSON numbers must fit a double)", text)
    return value


def _int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise _NotJSON(
            f"an integer of {len(text)} digits (at most {MAX_INT_DIGITS} digits; send it as a string)"
        )
    return int(text)


#: built once: ``json.loads`` with a keyword builds a new decoder on every call
_decode = json.JSONDecoder(parse_constant=_refuse, parse_float=_float, parse_int=_int).decode


def loads(text: str | bytes) -> Any:
    """``json.loads`` that raises ``json.JSONDecodeError`` for what the module docstring lists."""
    doc = text.decode("utf-8") if isinstance(text, bytes) else text
    try:
        value = _decode(doc)
        if doc.count("[") + doc.count("{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
            raise _NotJSON(f"the document is nested more than {MAX_DEPTH} levels deep; flatten it")
        if "\\u" in doc and _SURROGATE.search(doc):
            _check_text(value)
    except RecursionError:
        raise json.JSONDecodeError(
            f"the document is nested more than {MAX_DEPTH} levels deep; flatten it", doc, 0
        ) from None
    except _NotJSON as exc:
        pos = max(doc.find(exc.needle), 0) if exc.needle else 0
        raise json.JSONDecodeError(exc.message, doc, pos) from None
    return value


def _depth(value: Any) -> int:
    """Nesting depth, iteratively (no recursion limit of its own)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        todo.extend((child, level + 1) for child in item)
    return deepest


def _check_text(value: Any) -> None:
    """Every string (keys too) must encode as UTF-8: a lone surrogate cannot be stored or sent."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise _NotJSON(
                    "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff); send valid Unicode"
                ) from None
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
