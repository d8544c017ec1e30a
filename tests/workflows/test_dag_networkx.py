"""The load-time graph answers networkx gives (workflows/dag.py): cycles with their path, the
levels the dashboard shows, descendants for skips and for a retry from a failed step."""

from __future__ import annotations

import time

from workflows.dag import Dag, cycles, digraph


def test_one_cycle_per_component_and_every_self_loop() -> None:
    graph = digraph({"a": ["b", "a"], "b": ["c"], "c": ["a", "b"], "x": ["x"], "y": []})
    found = cycles(graph)
    assert ["a"] in found and ["x"] in found and len(found) == 3
    (loop,) = [c for c in found if len(c) > 1]
    assert loop[0] == "a" and set(loop) <= {"a", "b", "c"}
    assert all(graph.has_edge(u, v) for u, v in zip(loop, [*loop[1:], loop[0]], strict=True))


def test_a_dense_graph_reports_a_handful_of_cycles_not_all_of_them() -> None:
    """12 workflows that each start on any run: ~10^9 simple cycles; the loader names 13."""
    names = [f"w{i:02}" for i in range(12)]
    found = cycles(digraph({n: names for n in names}))
    assert len(found) == 13 and ["w00", "w01"] in found


def test_deep_graphs_need_no_recursion() -> None:
    chain = {f"s{i}": [f"s{i + 1}"] for i in range(20_000)} | {"s20000": ["s0"]}
    (cycle,) = cycles(digraph(chain))
    assert len(cycle) == 20_001 and cycle[0] == "s0"
    dag = Dag({f"s{i}": (f"s{i - 1}",) if i else () for i in range(1_000)})
    assert dag.order[-1] == "s999" and len(dag.levels) == 1_000 and len(dag.downstream("s0")) == 999


def test_levels_are_topological_generations_sorted_by_name() -> None:
    dag = Dag({"top": (), "z": (), "right": ("top",), "left": ("top",), "bottom": ("left", "right", "z")})
    assert dag.levels == (("top", "z"), ("left", "right"), ("bottom",))
    assert dag.order == ("top", "left", "right", "z", "bottom")


def test_downstream_and_a_retry_from_a_failed_step() -> None:
    dag = Dag({"a": (), "b": ("a",), "c": ("b",), "d": ("a",), "e": ()})
    assert dag.downstream("b") == {"c"} and dag.downstream("a") == {"b", "c", "d"}
    assert dag.rerun_from(["b"]) == ("b", "c")
    assert dag.rerun_from(["c", "d"]) == ("c", "d")
    assert dag.rerun_from([]) == ()


def test_building_a_dag_of_a_few_hundred_steps_is_quick() -> None:
    needs = {f"s{i}": tuple(f"s{j}" for j in range(max(0, i - 3), i)) for i in range(300)}
    start = time.perf_counter()
    Dag(needs)
    assert time.perf_counter() - start < 1.0
