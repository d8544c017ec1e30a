"""The static chain guard: refuse workflows that start each other in a cycle.

A workflow whose event trigger matches ``sluice.run`` state changes of workflow U is started by
U: an edge U → W. A cycle of such edges (a self-loop included) would run forever, so the loader
refuses it and names the cycle. What can be resolved statically is ``detail.workflow`` as exact
names, ``anything-but`` names, or absent (every workflow). Anything else (prefix, wildcard,
``$or``, ...) cannot be resolved here; the bus caps such chains at run time (``bus.MAX_DEPTH``,
audited as ``chain-depth``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflows.errors import PatternError, SpecError
from workflows.patterns import expand_dotted
from workflows.spec import EventTrigger

from .dag import cycles, digraph

RUN_SOURCE, RUN_DETAIL_TYPE = "sluice.run", "Run State Change"


def _may_be(values: Any, wanted: str) -> bool:
    """Whether a pattern field can match the string ``wanted`` (unknown matchers count as yes)."""
    if values is None:
        return True
    if not isinstance(values, list):
        return True
    return any(not isinstance(v, str) or v == wanted for v in values)


def upstream_names(pattern: Mapping[str, Any], names: set[str]) -> set[str] | None:
    """The workflows whose run state changes ``pattern`` matches; None when not resolvable."""
    try:
        pattern = expand_dotted(dict(pattern))  # "detail.workflow" is detail: {workflow: ..}
    except PatternError:
        return None
    if "$or" in pattern:
        return None
    if not _may_be(pattern.get("source"), RUN_SOURCE) or not _may_be(
        pattern.get("detail-type"), RUN_DETAIL_TYPE
    ):
        return set()
    detail = pattern.get("detail")
    if detail is None:
        return set(names)
    if not isinstance(detail, Mapping) or "$or" in detail:
        return None
    values = detail.get("workflow")
    if values is None:
        return set(names)
    if not isinstance(values, list):
        return None
    found: set[str] = set()
    for value in values:
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, Mapping) and set(value) == {"anything-but"}:
            excluded = value["anything-but"]
            excluded = [excluded] if isinstance(excluded, str) else excluded
            if not isinstance(excluded, list) or not all(isinstance(x, str) for x in excluded):
                return None
            found |= names - set(excluded)
        else:
            return None
    return found & names


def find_chain_cycles(catalog: Mapping[str, Any]) -> list[SpecError]:
    """One SpecError per workflow that starts itself and per group that start each other in a cycle.

    Each is pinned to the trigger that closes the cycle; a group names one cycle (networkx's
    ``find_cycle``) from its first workflow by name (listing every cycle of a dense group would
    never end).
    """
    graph: dict[str, set[str]] = {name: set() for name in catalog}
    where: dict[tuple[str, str], tuple[str, str]] = {}
    names = set(catalog)
    for wf in catalog.values():
        for i, trig in enumerate(wf.triggers):
            if not isinstance(trig, EventTrigger) or not isinstance(trig.pattern, Mapping):
                continue
            for upstream in sorted(upstream_names(trig.pattern, names) or ()):
                graph[upstream].add(wf.name)
                where.setdefault((upstream, wf.name), (str(wf.file), f"triggers[{i}].event.pattern"))
    errors = _destination_edges(catalog, graph, where)
    found = cycles(digraph(graph))
    for cycle in sorted(found, key=lambda c: (len(c), c)):  # self-starts first
        closing = (cycle[-1], cycle[0])
        file, path = where[closing]
        loop = " -> ".join([*cycle, cycle[0]])
        hint = (
            "narrow detail.workflow so no workflow starts itself, e.g. detail: {workflow: [other]}"
            if len(cycle) == 1
            else "remove one of these event triggers, or narrow its detail.workflow / detail.status"
        )
        problem = (
            f"workflow {cycle[0]} starts itself (its pattern matches its own Run State Change): {loop}"
            if len(cycle) == 1
            else f"workflows start each other in a cycle: {loop}"
        )
        errors.append(SpecError(file, path, problem, hint))
    return errors


def _destination_edges(
    catalog: Mapping[str, Any], graph: dict[str, set[str]], where: dict[tuple[str, str], tuple[str, str]]
) -> list[SpecError]:
    """``on_success``/``on_failure: {workflow: W}`` start W too: edges, and W must exist."""
    errors = []
    for wf in catalog.values():
        for key in ("on_success", "on_failure"):
            dest = getattr(wf, key, None)
            if dest is None or dest.workflow is None:
                continue
            if dest.workflow not in catalog:
                known = ", ".join(sorted(catalog))
                errors.append(
                    SpecError(
                        str(wf.file),
                        f"{key}.workflow",
                        f"no workflow named {dest.workflow!r}",
                        f"workflows are: {known}",
                    )
                )
                continue
            graph[wf.name].add(dest.workflow)
            where.setdefault((wf.name, dest.workflow), (str(wf.file), f"{key}.workflow"))
    return errors
