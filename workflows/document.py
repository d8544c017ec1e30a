"""Screening a parsed workflow document before any section reads it.

YAML can say things JSON cannot, and the engine is built on JSON values: ``.nan`` and ``.inf``
(a NaN tolerance never goes stale, a NaN wait never ends), integers no float can hold, ``!!binary``
and ``!!set`` values, and aliases. An alias inside its own anchor makes a cycle every reader would
follow forever, and aliases of aliases make a few lines expand to billions of values. One walk
here refuses all of them with the field's path, so no reader meets them and nothing later needs a
special case; a document that cannot be walked safely (a cycle, too big, too deep) is not parsed
further.
"""

from __future__ import annotations

from typing import Any

from workflows.fields import FileCtx, finite

#: values in one document, counting an alias each time it is used (a big workflow has a few thousand)
MAX_VALUES = 200_000
#: mappings and lists inside one another (a deep ``input:`` needs ten or so)
MAX_DEPTH = 64

_EXIT = object()


def screen_document(ctx: FileCtx, raw: dict[str, Any]) -> bool:
    """Record a problem for every value the engine cannot carry; False if parsing must stop here.

    A refused value is replaced by None (absent), which every reader handles, and its path goes
    into ``ctx.refused`` so the reader of that field adds no second line about it.
    """
    stack: list[Any] = [(raw, "", 0)]
    ancestors: set[int] = set()
    seen = 0
    while stack:
        item = stack.pop()
        if item is _EXIT:
            ancestors.discard(stack.pop())
            continue
        value, where, depth = item
        seen += 1
        if seen > MAX_VALUES:
            ctx.err(
                "",
                f"the document holds more than {MAX_VALUES} values (an alias counts each time it is used)",
                "write the values out, or split the workflow",
            )
            return False
        if isinstance(value, dict | list):
            if id(value) in ancestors:
                ctx.err(where, "refers to itself through a YAML alias", "write the value out in full")
                return False
            if depth >= MAX_DEPTH:
                ctx.err(where, f"is nested more than {MAX_DEPTH} levels deep", "flatten the value")
                return False
            ancestors.add(id(value))
            stack += [id(value), _EXIT]
            keys = list(value) if isinstance(value, dict) else range(len(value))
            for key in reversed(keys):
                child = value[key]
                path = f"{where}[{key}]" if isinstance(value, list) else f"{where}.{key}".lstrip(".")
                if isinstance(child, dict | list):
                    stack.append((child, path, depth + 1))
                elif _refuse_scalar(ctx, path, child):
                    value[key] = None
                else:
                    seen += 1
    return True


def _refuse_scalar(ctx: FileCtx, where: str, value: Any) -> bool:
    if isinstance(value, int | float) and not isinstance(value, bool) and not finite(value):
        shown = "a number too large for a float" if isinstance(value, int) else ctx.show(value)
        ctx.err(where, f"must be a finite number, got {shown}", "write a number such as 1.5, or a string")
    elif isinstance(value, bytes | bytearray | set | frozenset):
        kind = "a set" if isinstance(value, set | frozenset) else "binary data"
        ctx.err(where, f"must be a JSON value, got {kind}", "write a list or a string instead")
    else:
        return False
    ctx.refused.add(where)
    return True
