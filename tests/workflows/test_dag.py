"""The step graph: refused when broken, and the ready/skip decisions the orchestrator relies on."""

import pytest

from workflows.dag import Dag, find_problems


def test_chain_runs_one_step_at_a_time() -> None:
    dag = Dag({"a": (), "b": ("a",), "c": ("b",)})
    assert dag.order == ("a", "b", "c")
    assert dag.next_actions({}) == (["a"], {})
    assert dag.next_actions({"a": "RUNNING"}) == ([], {})
    assert dag.next_actions({"a": "SUCCEEDED"}) == (["b"], {})
    assert dag.next_actions({"a": "SUCCEEDED", "b": "SUCCEEDED"}) == (["c"], {})
    assert dag.next_actions({"a": "SUCCEEDED", "b": "SUCCEEDED", "c": "SUCCEEDED"}) == ([], {})


def test_diamond_waits_for_both_branches() -> None:
    dag = Dag({"top": (), "left": ("top",), "right": ("top",), "bottom": ("left", "right")})
    assert dag.next_actions({"top": "SUCCEEDED"}) == (["left", "right"], {})
    assert dag.next_actions({"top": "SUCCEEDED", "left": "SUCCEEDED", "right": "RUNNING"}) == ([], {})
    done = {"top": "SUCCEEDED", "left": "SUCCEEDED", "right": "SUCCEEDED"}
    assert dag.next_actions(done) == (["bottom"], {})
    assert dag.needs("bottom") == ("left", "right")
    assert dag.dependents("top") == ("left", "right")
    assert dag.upstream("bottom") == {"top", "left", "right"}


def test_fan_in_of_independent_roots() -> None:
    dag = Dag({"x": (), "y": (), "z": (), "join": ("x", "y", "z")})
    assert dag.next_actions({}) == (["x", "y", "z"], {})
    assert dag.next_actions({"x": "SUCCEEDED", "y": "SUCCEEDED"}) == (["z"], {})


def test_failed_upstream_skips_every_dependent_transitively_with_the_reason() -> None:
    dag = Dag({"a": (), "b": ("a",), "c": ("b",), "other": ()})
    ready, skips = dag.next_actions({"a": "FAILED"})
    assert ready == ["other"]
    assert skips == {"b": "upstream a failed", "c": "upstream b skipped"}


def test_when_false_skip_propagates_to_dependents() -> None:
    # The orchestrator records SKIPPED for a step whose `when` is false; its dependents follow.
    dag = Dag({"probe": (), "resize": ("probe",), "publish": ("resize",), "log": ("probe",)})
    ready, skips = dag.next_actions({"probe": "SUCCEEDED", "resize": "SKIPPED"})
    assert ready == ["log"]
    assert skips == {"publish": "upstream resize skipped"}


def test_skip_does_not_wait_for_other_running_needs() -> None:
    dag = Dag({"a": (), "b": (), "c": ("a", "b")})
    assert dag.next_actions({"a": "FAILED", "b": "RUNNING"}) == ([], {"c": "upstream a failed"})


def test_cancelled_upstream_skips() -> None:
    dag = Dag({"a": (), "b": ("a",)})
    assert dag.next_actions({"a": "CANCELLED"}) == ([], {"b": "upstream a cancelled"})


def test_on_failure_continue_lets_dependents_run() -> None:
    dag = Dag({"a": (), "b": ("a",), "c": ("b",)}, continue_on_failure={"a"})
    assert dag.next_actions({"a": "FAILED"}) == (["b"], {})
    # b is not marked continue: its failure still skips c.
    assert dag.next_actions({"a": "FAILED", "b": "FAILED"}) == ([], {"c": "upstream b failed"})


def test_steps_already_decided_are_not_reported_again() -> None:
    dag = Dag({"a": (), "b": ("a",)})
    assert dag.next_actions({"a": "FAILED", "b": "SKIPPED"}) == ([], {})


def test_problems_name_unknown_needs_self_and_the_cycle() -> None:
    # Arrows run in execution order: "a -> b" means b needs a.
    assert find_problems({"a": ("a",)}) == [("steps.a.needs", "a step cannot need itself", "remove a")]
    assert find_problems({"a": ("x",)}) == [("steps.a.needs", "no step named 'x'", "steps are: a")]
    problems = find_problems({"c": ("b",), "a": ("c",), "b": ("a",), "d": ("e",), "e": ("d",), "f": ()})
    assert [p[1] for p in problems] == [
        "needs form a cycle: a -> b -> c -> a",
        "needs form a cycle: d -> e -> d",
    ]


def test_dag_refuses_a_cycle() -> None:
    with pytest.raises(ValueError, match="a -> b -> a"):
        Dag({"a": ("b",), "b": ("a",)})


def test_next_actions_is_cheap_on_a_wide_graph() -> None:
    import time

    dag = Dag({f"s{i}": (f"s{i - 1}",) if i else () for i in range(300)})
    status = {f"s{i}": "SUCCEEDED" for i in range(150)}
    start = time.perf_counter()
    for _ in range(100):
        ready, _ = dag.next_actions(status)
    assert ready == ["s150"]
    assert (time.perf_counter() - start) / 100 < 0.005
