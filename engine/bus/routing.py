"""Which rules an event can match, found without asking every rule.

A rule's pattern is an AND of its fields, so any field it pins to exact strings is a necessary
condition: the rule is filed under one such field (``source`` first, then ``detail-type``, then
the first other field in key order, dotted keys as nested paths, nothing under ``$or``) and an
event is matched only against the rules filed under the values it holds at those paths, plus the
few rules that pin nothing. EventBridge's own matcher indexes the same way, by the machine it
builds from every pattern; this is the part of that which pays for itself here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

R = TypeVar("R")
Path = tuple[str, ...]
_FIRST = (("source",), ("detail-type",))


def exact_fields(pattern: Mapping[str, Any], path: Path = ()) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """Every field the pattern pins to a list of plain strings, as (path, the strings)."""
    for key in sorted(pattern):
        if key.startswith("$"):
            continue  # $or: none of its fields is required on its own
        value, where = pattern[key], (*path, *key.split("."))
        if isinstance(value, list):
            if value and all(isinstance(v, str) for v in value):
                yield where, tuple(value)
        elif isinstance(value, Mapping):
            yield from exact_fields(value, where)


def values_at(event: Any, path: Path) -> set[str]:
    """The strings an event holds at ``path``, through arrays at any depth (as matching does)."""
    items = [event]
    for key in path:
        found: list[Any] = []
        for item in _flat(items):
            if isinstance(item, dict) and key in item:
                found.append(item[key])
        items = found
    return {v for v in _flat(items) if isinstance(v, str)}


def _flat(items: Iterable[Any]) -> Iterator[Any]:
    for item in items:
        if isinstance(item, list):
            yield from _flat(item)
        else:
            yield item


class RuleIndex(Generic[R]):
    """Rules filed by one exact field each; ``candidates(event)`` in the order they were added."""

    def __init__(self) -> None:
        self._by_path: dict[Path, dict[str, list[tuple[int, R]]]] = {}
        self._unfiled: list[tuple[int, R]] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, rule: R, pattern: Mapping[str, Any]) -> None:
        entry = (self._count, rule)
        self._count += 1
        fields = dict(exact_fields(pattern))
        chosen = next((p for p in _FIRST if p in fields), next(iter(fields), None))
        if chosen is None:
            self._unfiled.append(entry)
            return
        table = self._by_path.setdefault(chosen, {})
        for value in dict.fromkeys(fields[chosen]):
            table.setdefault(value, []).append(entry)

    def candidates(self, event: Any) -> list[R]:
        found: dict[int, R] = dict(self._unfiled)
        for path, table in self._by_path.items():
            for value in values_at(event, path):
                found.update(table.get(value, ()))
        return [found[n] for n in sorted(found)]
