"""The load-time graph questions (workflows/graph.py): components, cycles, a stable order."""

from __future__ import annotations

import pytest

from workflows.graph import components, cycles, shortest_cycle, topological_order


def test_components_are_found_and_named_in_order() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": ["e"], "e": ["d"], "f": []}
    assert components(graph) == [["a", "b", "c"], ["d", "e"], ["f"]]


def test_one_cycle_per_component_and_every_self_loop() -> None:
    graph = {"a": ["b", "a"], "b": ["c"], "c": ["a", "b"], "x": ["x"], "y": []}
    assert cycles(graph) == [["a"], ["a", "b", "c"], ["x"]]
    assert shortest_cycle(graph, "b", ["a", "b", "c"]) == ["b", "c"]


def test_a_dense_graph_reports_a_handful_of_cycles_not_all_of_them() -> None:
    """12 workflows that each start on any run: ~10^9 simple cycles; the loader names 13."""
    names = [f"w{i:02}" for i in range(12)]
    graph = {n: names for n in names}
    found = cycles(graph)
    assert len(found) == 13 and ["w00", "w01"] in found


def test_order_breaks_ties_by_name_and_refuses_a_cycle() -> None:
    assert topological_order({"c": [], "b": ["c"], "a": ["c"], "d": []}) == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="cycle"):
        topological_order({"a": ["b"], "b": ["a"]})


def test_deep_graphs_need_no_recursion() -> None:
    chain = {f"s{i}": [f"s{i + 1}"] for i in range(20_000)} | {"s20000": ["s0"]}
    (component,) = components(chain)
    assert len(component) == 20_001
    assert len(cycles(chain)[0]) == 20_001
