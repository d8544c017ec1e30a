"""Event patterns where EventBridge's matcher (event-ruler) has a precise answer: dotted keys,
array-consistent matching, and the validation it applies (empty anything-but affixes, $or with
one branch, wildcards over the complexity limit)."""

from __future__ import annotations

from typing import Any

import pytest

from workflows.errors import PatternError
from workflows.patterns import compile_pattern, expand_dotted, match_all, prepare_event
from workflows.wildcards import MAX_COMPLEXITY, complexity

# --- dotted keys --------------------------------------------------------------------------------

STATE = {"detail": {"state": {"status": "running"}}}
DOTTED_STATE = {"detail": {"state.status": "running"}}


@pytest.mark.parametrize(
    "pattern",
    [
        {"detail": {"state": {"status": ["running"]}}},
        {"detail": {"state.status": ["running"]}},
        {"detail.state.status": ["running"]},
        {"detail.state": {"status": ["running"]}},
    ],
    ids=["nested", "dotted-inner", "dotted-all", "dotted-outer"],
)
@pytest.mark.parametrize("event", [STATE, DOTTED_STATE, {"detail.state.status": "running"}])
def test_dotted_keys_and_nested_objects_are_the_same_field(pattern: dict, event: dict) -> None:
    """event-ruler's README: these rules compile to one, and match both events."""
    assert compile_pattern(pattern).matches(event)
    assert not compile_pattern(pattern).matches({"detail": {"state.status": "stopped"}})


def test_dotted_pattern_keys_merge_with_their_nested_siblings() -> None:
    p = compile_pattern({"detail.a": ["1"], "detail": {"b": ["2"]}})
    assert p.matches({"detail": {"a": "1", "b": "2"}})
    assert not p.matches({"detail": {"a": "1", "b": "3"}})
    assert p.fields == {"detail"}


def test_both_spellings_in_one_event_are_both_values_of_the_field() -> None:
    event = {"detail": {"x": {"y": "a"}, "x.y": "b"}}
    assert compile_pattern({"detail": {"x": {"y": ["b"]}}}).matches(event)
    assert compile_pattern({"detail.x.y": ["a"]}).matches(event)
    assert not compile_pattern({"detail.x.y": [{"exists": False}]}).matches(event)


def test_dotted_event_keys_inside_arrays() -> None:
    event = {"items": [{"meta.kind": "a", "n": 1}, {"meta": {"kind": "b"}, "n": 2}]}
    assert compile_pattern({"items": {"meta": {"kind": ["a"]}, "n": [1]}}).matches(event)
    assert compile_pattern({"items": {"meta.kind": ["b"], "n": [2]}}).matches(event)
    assert not compile_pattern({"items": {"meta": {"kind": ["a"]}, "n": [2]}}).matches(event)


def test_prepare_event_leaves_a_plain_event_alone_and_never_changes_its_argument() -> None:
    plain = {"detail": {"a": [1, {"b": 2}]}}
    assert prepare_event(plain) is plain
    dotted = {"detail": {"a.b": 1}}
    assert prepare_event(dotted) == {"detail": {"a": {"b": 1}}}
    assert dotted == {"detail": {"a.b": 1}}
    p = compile_pattern({"detail": {"a": {"b": [1]}}})
    assert p.matches_prepared(prepare_event(dotted)) and match_all([p], dotted) == [p]


def test_expand_dotted_spells_every_key_as_objects() -> None:
    assert expand_dotted({"a.b": [1], "a": {"c": [2]}, "$or": [{"x.y": [3]}, {"z": [4]}]}) == {
        "a": {"b": [1], "c": [2]},
        "$or": [{"x": {"y": [3]}}, {"z": [4]}],
    }


# --- array consistency --------------------------------------------------------------------------

EMPLOYEES = {
    "employees": [
        [{"firstName": "John", "lastName": "Doe"}, {"firstName": "Anna", "lastName": "Smith"}],
        [{"firstName": "Peter", "lastName": "Jones"}],
    ]
}


def test_arrays_nested_in_arrays_are_searched() -> None:
    """event-ruler's README example: the array structure is crushed out of the rule."""
    assert compile_pattern({"employees": {"firstName": ["Anna"]}}).matches(EMPLOYEES)
    assert compile_pattern({"employees": {"firstName": ["Peter"], "lastName": ["Jones"]}}).matches(EMPLOYEES)
    assert not compile_pattern({"employees": {"firstName": ["Maria"]}}).matches(EMPLOYEES)


def test_fields_from_different_elements_of_one_array_do_not_combine() -> None:
    """README: rulesForJSONEvent() does *not* match the "Anna"/"Jones" rule."""
    assert not compile_pattern({"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}}).matches(
        EMPLOYEES
    )


def test_consistency_holds_across_dotted_and_nested_spellings() -> None:
    event = {"detail": {"items": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]}}
    assert compile_pattern({"detail.items.a": [1], "detail": {"items": {"b": [2]}}}).matches(event)
    assert not compile_pattern({"detail.items.a": [1], "detail": {"items": {"b": [4]}}}).matches(event)


def test_consistency_holds_between_a_dollar_or_and_its_siblings() -> None:
    event = {"items": [{"a": 1, "b": 2}, {"a": 3, "c": 4}]}
    shared = {"items": {"a": [1]}, "$or": [{"items": {"c": [4]}}, {"items": {"d": [5]}}]}
    assert not compile_pattern(shared).matches(event)
    assert compile_pattern({**shared, "$or": [{"items": {"b": [2]}}, {"items": {"d": [5]}}]}).matches(event)


def test_consistency_through_two_levels_of_arrays() -> None:
    event = {"a": [{"b": [{"c": 1}, {"d": 2}]}, {"b": [{"c": 1, "d": 2}]}]}
    assert compile_pattern({"a": {"b": {"c": [1], "d": [2]}}}).matches(event)
    assert not compile_pattern({"a": {"b": {"c": [1], "d": [2]}}}).matches(
        {"a": [{"b": [{"c": 1}, {"d": 2}]}]}
    )


def test_absence_inside_an_array_with_nothing_else_to_pin_an_element_means_absent_from_all() -> None:
    p = compile_pattern({"items": {"b": [{"exists": False}]}})
    assert not p.matches({"items": [{"b": 1}, {"c": 2}]})
    assert p.matches({"items": [{"c": 1}, {"c": 2}]})
    pinned = compile_pattern({"items": {"c": [2], "z": [{"exists": False}]}})
    assert pinned.matches({"items": [{"z": 1}, {"c": 2}]})


# --- validation ---------------------------------------------------------------------------------

REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"k": [{"anything-but": {"prefix": ""}}]}, "k: anything-but prefix must not be empty"),
    ({"k": [{"anything-but": {"suffix": ""}}]}, "k: anything-but suffix must not be empty"),
    ({"k": [{"anything-but": {"prefix": ["a", ""]}}]}, "k: anything-but prefix must not be empty"),
    ({"$or": [{"a": ["1"]}]}, "$or: $or needs at least two branches"),
    ({"a.b": ["1"], "a": {"b": ["2"]}}, "a.b: is given twice, once dotted and once nested"),
    ({"a": ["1"], "a.b": ["2"]}, "a: is both a list of values and a nested object"),
    ({"a.$or": [{"x": ["1"]}, {"y": ["2"]}]}, "a.$or: $or cannot be part of a dotted key"),
    ({"a": ["1"], "$or": [{"a": ["2"]}, {"b": ["3"]}]}, "$or[0].a: is given twice"),
]


@pytest.mark.parametrize(("pattern", "message"), REFUSED, ids=[m[:40] for _, m in REFUSED])
def test_refused_as_eventbridge_refuses(pattern: dict[str, Any], message: str) -> None:
    with pytest.raises(PatternError) as info:
        compile_pattern(pattern)
    assert str(info.value).startswith(message), str(info.value)


def test_empty_prefix_outside_anything_but_is_allowed() -> None:
    assert compile_pattern({"k": [{"prefix": ""}]}).matches({"k": "anything"})


@pytest.mark.parametrize(
    ("wildcards", "score"),
    [
        (["*"], 1),
        (["a*b"], 2),
        (["*aa"], 3),
        (["a*bbb"], 4),
        (["*ab*ad"], 4),
        (["a*b*bb"], 5),
        (["*a*a*a*a*a*a*a*a*"], 17),
        (["a*aaa", "aa*aa"], 7),
        (["ab*cd", "ab*wx", "ab*yz"], 6),
        (["ab*c", "ab*c"], 2),
    ],
)
def test_complexity_is_event_ruler_s(wildcards: list[str], score: int) -> None:
    """Figures from event-ruler's MachineComplexityEvaluatorTest."""
    assert complexity(wildcards, cap=100) == score


def test_wildcards_over_the_limit_are_refused_as_too_complex() -> None:
    arns = [f"*:stack/{name}/*" for name in ("Shared", "Data", "Api", "Monitoring")]
    compile_pattern({"resources": [{"wildcard": w} for w in arns[:3]]})
    with pytest.raises(PatternError) as info:
        compile_pattern({"resources": [{"wildcard": w} for w in arns]})
    message = str(info.value)
    assert message.startswith("resources: Rule is too complex")
    assert f"over {MAX_COMPLEXITY} partial matches" in message and "prefix/suffix instead" in message


def test_complexity_counts_every_branch_and_anything_but_wildcards_on_the_same_field() -> None:
    branches = [{"detail": {"k": [{"wildcard": f"*:{n}/*"}]}} for n in ("a", "b")]
    with pytest.raises(PatternError, match=r"^detail\.k: Rule is too complex"):
        compile_pattern(
            {"$or": [*branches, {"detail": {"k": [{"anything-but": {"wildcard": ["*:c/*", "*:d/*"]}}]}}]}
        )
    compile_pattern({"$or": branches})


def test_a_pathological_wildcard_is_refused_quickly() -> None:
    with pytest.raises(PatternError, match="too complex"):
        compile_pattern({"k": [{"wildcard": "*a" * 60 + "*"}]})
