"""The step graph of a workflow: validated at load (workflows/graph.py), walked with tuples per run.

The orchestrator calls :meth:`Dag.next_actions` after every step completion, so adjacency is
precomputed into tuples at load and that call only reads them.

>>> dag = Dag({"a": (), "b": ("a",), "c": ("a",)})
>>> dag.next_actions({"a": "SUCCEEDED"})
(['b', 'c'], {})
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from . import graph as g

_DONE_OK = "SUCCEEDED"
_WAITING = frozenset({"PENDING", "RUNNING"})


def find_problems(needs: Mapping[str, Sequence[str]]) -> list[tuple[str, str, str]]:
    """Every problem of a needs graph as ``(field path, problem, hint)``: unknown names, self, cycles."""
    problems: list[tuple[str, str, str]] = []
    for step, ups in needs.items():
        for up in ups:
            if up == step:
                problems.append((f"steps.{step}.needs", "a step cannot need itself", f"remove {up}"))
            elif up not in needs:
                known = ", ".join(sorted(needs)) or "none"
                problems.append((f"steps.{step}.needs", f"no step named {up!r}", f"steps are: {known}"))
    if problems:
        return problems
    for cycle in g.cycles(_graph(needs)):
        path = " -> ".join([*cycle, cycle[0]])
        problems.append(("steps", f"needs form a cycle: {path}", "remove one of the needs on this cycle"))
    return problems


def _graph(needs: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Edges in execution order: each step to the steps that need it."""
    graph: dict[str, list[str]] = {step: [] for step in needs}
    for step, ups in needs.items():
        for up in ups:
            graph[up].append(step)
    return graph


class Dag:
    """An acyclic step graph; ``needs`` maps each step to the steps it waits for.

    ``continue_on_failure`` names steps with ``on_failure: continue``: their dependents run even
    when they fail. Raises ValueError if the graph is invalid (call :func:`find_problems` first).
    """

    __slots__ = ("_ancestors", "_continue", "_dependents", "_needs", "order")

    def __init__(self, needs: Mapping[str, Sequence[str]], continue_on_failure: Collection[str] = ()) -> None:
        problems = find_problems(needs)
        if problems:
            raise ValueError("; ".join(problem for _, problem, _ in problems))
        graph = _graph(needs)
        #: Steps in a topological order, stable for a given file (ties broken by name).
        self.order: tuple[str, ...] = tuple(g.topological_order(graph))
        self._needs = {step: tuple(needs[step]) for step in self.order}
        self._dependents = {step: tuple(sorted(set(graph[step]))) for step in self.order}
        ancestors: dict[str, frozenset[str]] = {}
        for step in self.order:  # every need comes earlier in the order, its ancestors known
            ancestors[step] = frozenset().union(*(ancestors[up] | {up} for up in self._needs[step]))
        self._ancestors = ancestors
        self._continue = frozenset(continue_on_failure)

    def needs(self, step: str) -> tuple[str, ...]:
        """The steps ``step`` waits for directly."""
        return self._needs[step]

    def dependents(self, step: str) -> tuple[str, ...]:
        """The steps that wait directly for ``step``."""
        return self._dependents[step]

    def upstream(self, step: str) -> frozenset[str]:
        """Every step ``step`` waits for, transitively: the ``steps.X`` a template may read."""
        return self._ancestors[step]

    def next_actions(self, status: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        """What to do now, given each step's status (absent means PENDING).

        Returns ``(ready, skips)``: PENDING steps whose needs are all satisfied, in topological
        order, and PENDING steps to mark SKIPPED with the reason. A need is satisfied when it
        SUCCEEDED, or FAILED with ``on_failure: continue``. Skips propagate transitively in one call.
        The orchestrator evaluates ``when`` on a ready step and records SKIPPED if false; the next
        call then skips its dependents.
        """
        ready: list[str] = []
        skips: dict[str, str] = {}
        for step in self.order:
            if status.get(step, "PENDING") != "PENDING":
                continue
            reason, waiting = self._blocked(step, status, skips)
            if reason:
                skips[step] = reason
            elif not waiting:
                ready.append(step)
        return ready, skips

    def _blocked(self, step: str, status: Mapping[str, str], skips: Mapping[str, str]) -> tuple[str, bool]:
        """``(skip reason or "", still waiting)`` for one pending step."""
        waiting = False
        for up in self._needs[step]:
            state = "SKIPPED" if up in skips else status.get(up, "PENDING")
            if state == _DONE_OK or (state == "FAILED" and up in self._continue):
                continue
            if state in _WAITING:
                waiting = True
            else:
                return f"upstream {up} {state.lower()}", waiting
        return "", waiting

    def __repr__(self) -> str:
        return f"<Dag steps={len(self.order)} order={' '.join(self.order)}>"
