"""The three graph questions Sluice asks at load, in plain Python: components, a cycle, an order.

Why not networkx: it was the chosen package, and answered these in a few lines, but importing it
costs ~80 ms and ~20 MB of every engine process (a third of a cold ``sluice run`` and of the
idle footprint), for graphs of a few dozen nodes checked once at load. Its ``simple_cycles``
also lists *every* cycle, which grows exponentially on a dense graph (ten workflows that each
start on any run state change have over a million); one cycle per component is what a user
needs to fix the file, so that is what :func:`cycles` reports.

A graph is a mapping from each node to its successors; every successor must be a key.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

Graph = Mapping[str, Sequence[str]]


def components(graph: Graph) -> list[list[str]]:
    """Strongly connected components (Tarjan's algorithm, iterative), each sorted, in name order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    found.append(sorted(component))
    return sorted(found)


def shortest_cycle(graph: Graph, start: str, within: Iterable[str]) -> list[str]:
    """The shortest cycle from ``start`` back to it inside ``within`` (breadth first): its nodes."""
    allowed = set(within)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node]):
            if nxt == start and node != start:  # (a self-loop is a cycle of its own: see cycles)
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return path[::-1]
            if nxt in allowed and nxt != start and nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    raise ValueError(f"no cycle through {start!r}")


def cycles(graph: Graph) -> list[list[str]]:
    """Every self-loop, plus one shortest cycle through the smallest name of each larger component."""
    found = [[node] for node in sorted(graph) if node in graph[node]]
    for component in components(graph):
        if len(component) > 1:
            found.append(shortest_cycle(graph, component[0], component))
    return sorted(found)


def topological_order(graph: Graph) -> list[str]:
    """Nodes with every edge pointing forward; ties broken by name, so a file gives one order."""
    indegree = dict.fromkeys(graph, 0)
    for successors in graph.values():
        for nxt in successors:
            indegree[nxt] += 1
    ready = [node for node, degree in indegree.items() if degree == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        node = heapq.heappop(ready)
        order.append(node)
        for nxt in graph[node]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                heapq.heappush(ready, nxt)
    if len(order) != len(indegree):
        raise ValueError("the graph has a cycle")
    return order
