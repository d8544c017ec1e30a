"""Dotted keys: ``{"a.b": ..}`` and ``{"a": {"b": ..}}`` are one field, in patterns and in events.

EventBridge's matcher joins nested keys with ``.`` when it flattens a pattern or an event, so
both spellings name the same field there (event-ruler's README, "JSON keys with dots"). Sluice
matches nested objects, so it spells every dotted key as objects instead: patterns once, when
they compile; events once per event, before they are matched against every rule.
"""

from __future__ import annotations

from typing import Any

from workflows.errors import PatternError

__all__ = ["expand_dotted", "merge_into", "prepare_event"]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def expand_dotted(pattern: dict[str, Any], where: str = "") -> dict[str, Any]:
    """``pattern`` with every dotted key spelled as nested objects (a new dict; JSON in, JSON out).

    Raises PatternError when two spellings give the same field, or a field is both a list of
    values and a nested object. Values that are not objects are left for the compiler to judge.
    """
    out: dict[str, Any] = {}
    for key, value in pattern.items():
        if not isinstance(key, str):
            raise PatternError(f"{_join(where, str(key))}: keys must be strings")
        parts = key.split(".") if key != "$or" else [key]
        if "$or" in parts and len(parts) > 1:
            raise PatternError(
                f"{_join(where, key)}: $or cannot be part of a dotted key "
                f'(nest it: {{"{key.rsplit(".$or", 1)[0]}": {{"$or": [..]}}}})'
            )
        if key == "$or":
            node: Any = (
                [_expand_value(b, f"{_join(where, key)}[{i}]") for i, b in enumerate(value)]
                if isinstance(value, list)
                else value
            )
        else:
            node = _expand_value(value, _join(where, key))
            for part in reversed(parts[1:]):
                node = {part: node}
        merge_into(out, parts[0], node, _join(where, parts[0]), key)
    return out


def _expand_value(value: Any, where: str) -> Any:
    return expand_dotted(value, where) if isinstance(value, dict) else value


def merge_into(out: dict[str, Any], key: str, node: Any, where: str, spelled: str) -> None:
    if key not in out:
        out[key] = node
        return
    old = out[key]
    if isinstance(old, dict) and isinstance(node, dict) and key != "$or":
        for sub, value in node.items():
            merge_into(old, sub, value, _join(where, sub), spelled)
        return
    if key == "$or":
        problem = "$or is given twice for the same object (put every branch in one $or)"
    elif isinstance(old, dict) != isinstance(node, dict):
        problem = "is both a list of values and a nested object (a field is one or the other)"
    else:
        problem = "is given twice, once dotted and once nested (write its values in one list)"
    raise PatternError(f"{where}: {problem}; see {spelled!r}")


def prepare_event(event: Any) -> Any:
    """``event`` with dotted keys spelled as nested objects; the event itself when it has none.

    Two spellings of one field both count: their values are kept side by side, as the values
    of an array are.
    """
    return _expand_event(event) if _has_dotted(event) else event


def _has_dotted(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            for key, sub in item.items():
                if "." in key:
                    return True
                if type(sub) is dict or type(sub) is list:
                    stack.append(sub)
        elif type(item) is list:
            stack.extend(v for v in item if type(v) is dict or type(v) is list)
    return False


def _expand_event(value: Any) -> Any:
    if type(value) is list:
        return [_expand_event(v) for v in value]
    if type(value) is not dict:
        return value
    out: dict[str, Any] = {}
    for key, sub in value.items():
        node = _expand_event(sub)
        parts = key.split(".")
        for part in reversed(parts[1:]):
            node = {part: node}
        out[parts[0]] = _merge_event(out[parts[0]], node) if parts[0] in out else node
    return out


def _merge_event(old: Any, new: Any) -> Any:
    if type(old) is dict and type(new) is dict:
        merged = dict(old)
        for key, value in new.items():
            merged[key] = _merge_event(merged[key], value) if key in merged else value
        return merged
    return [*(old if type(old) is list else [old]), *(new if type(new) is list else [new])]
