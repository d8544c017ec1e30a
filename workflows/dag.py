"""The step graph of a workflow: built and checked with networkx at load, walked with tuples per run.

networkx answers the graph questions once, when the workflow loads: a cycle with its path
(``find_cycle``), the order (``lexicographical_topological_sort``, ties by name, so a file gives
one order), the levels the dashboard lays steps out by (``topological_generations``), and each
step's descendants (what a failure skips, and what a retry from a failed step runs again). The
orchestrator calls :meth:`Dag.next_actions` after every step completion, so the answers are kept
as tuples and frozensets, and that call never touches networkx. Its import is paid by the engine
process only: function workers and the fork server never import it
(tests/executors/test_worker_imports.py); bench/RESULTS.md records what it costs (W0, W7).

>>> dag = Dag({"a": (), "b": ("a",), "c": ("a",)})
>>> dag.next_actions({"a": "SUCCEEDED"})
(['b', 'c'], {})
>>> dag.levels
(('a',), ('b', 'c'))
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import networkx as nx

_DONE_OK = "SUCCEEDED"
_WAITING = frozenset({"PENDING", "RUNNING"})


def digraph(successors: Mapping[str, Iterable[str]]) -> nx.DiGraph[str]:
    """A DiGraph of ``node -> successors``, nodes and edges added in name order (stable answers)."""
    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_nodes_from(sorted(successors))
    graph.add_edges_from((node, nxt) for node in sorted(successors) for nxt in sorted(set(successors[node])))
    return graph


def cycles(graph: nx.DiGraph[str]) -> list[list[str]]:
    """Every self-loop, plus one cycle (``find_cycle``) from the smallest name of each larger component.

    One per component, not every cycle: ``simple_cycles`` on ten workflows that each start on
    any run state change lists over a million, and one cycle is what a user needs to fix the file.
    """
    found = [[node] for node in sorted(graph) if graph.has_edge(node, node)]
    for component in nx.strongly_connected_components(graph):
        if len(component) < 2:
            continue
        sub = graph.subgraph(component).copy()
        sub.remove_edges_from(nx.selfloop_edges(sub))
        edges = nx.find_cycle(sub, source=min(component))
        found.append([u for u, _ in edges])
    return sorted(found)


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
    for cycle in cycles(_graph(needs)):
        path = " -> ".join([*cycle, cycle[0]])
        problems.append(("steps", f"needs form a cycle: {path}", "remove one of the needs on this cycle"))
    return problems


def _graph(needs: Mapping[str, Sequence[str]]) -> nx.DiGraph[str]:
    """Edges in execution order: each need to the step that needs it."""
    dependents: dict[str, list[str]] = {step: [] for step in needs}
    for step, ups in needs.items():
        for up in ups:
            dependents[up].append(step)
    return digraph(dependents)


class Dag:
    """An acyclic step graph; ``needs`` maps each step to the steps it waits for.

    ``continue_on_failure`` names steps with ``on_failure: continue``: their dependents run even
    when they fail. Raises ValueError if the graph is invalid (call :func:`find_problems` first).
    """

    __slots__ = (
        "_ancestors",
        "_continue",
        "_dependents",
        "_descendants",
        "_graph",
        "_needs",
        "levels",
        "order",
    )

    def __init__(self, needs: Mapping[str, Sequence[str]], continue_on_failure: Collection[str] = ()) -> None:
        problems = find_problems(needs)
        if problems:
            raise ValueError("; ".join(problem for _, problem, _ in problems))
        graph = _graph(needs)
        #: Steps in a topological order, stable for a given file (ties broken by name).
        self.order: tuple[str, ...] = tuple(nx.lexicographical_topological_sort(graph))
        #: Steps by level: the first holds the steps that need nothing, each next one the steps
        #: whose needs are all in earlier levels (the dashboard's columns), each sorted by name.
        self.levels: tuple[tuple[str, ...], ...] = tuple(
            tuple(sorted(level)) for level in nx.topological_generations(graph)
        )
        self._needs = {step: tuple(needs[step]) for step in self.order}
        self._dependents = {step: tuple(graph.successors(step)) for step in self.order}
        ancestors: dict[str, frozenset[str]] = {}
        for step in self.order:  # every need comes earlier in the order, its ancestors known
            ancestors[step] = frozenset().union(*(ancestors[up] | {up} for up in self._needs[step]))
        self._ancestors = ancestors
        self._graph = graph  # kept for the descendants, asked rarely (a failure, a retry)
        self._descendants: dict[str, frozenset[str]] = {}
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

    def downstream(self, step: str) -> frozenset[str]:
        """Every step that waits for ``step``, transitively: what its failure skips."""
        found = self._descendants.get(step)
        if found is None:
            found = self._descendants[step] = frozenset(nx.descendants(self._graph, step))
        return found

    def rerun_from(self, steps: Iterable[str]) -> tuple[str, ...]:
        """What a retry from ``steps`` (e.g. the failed ones) runs again: them and their downstream.

        In topological order; every other step keeps its result, as a Step Functions redrive
        keeps the states that succeeded.
        """
        chosen = set(steps)
        for step in list(chosen):
            chosen |= self.downstream(step)
        return tuple(step for step in self.order if step in chosen)

    def next_actions(self, status: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        """What to do now, given each step's status (absent means PENDING).

        Returns ``(ready, skips)``: PENDING steps whose needs are all satisfied, in topological
        order, and PENDING steps to mark SKIPPED with the reason. A need is satisfied when it
        SUCCEEDED, or FAILED with ``on_failure: continue``. Skips propagate to every descendant
        in one call (walking the order, each skip names the need it came through). The
        orchestrator evaluates ``when`` on a ready step and records SKIPPED if false; the next
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
