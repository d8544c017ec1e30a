"""The rule index finds every rule an event matches, and asks only those that could."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.bus.routing import RuleIndex, values_at
from tests.support.hypothesis_profiles import examples
from workflows.dotted import prepare_event
from workflows.patterns import compile_pattern

PATTERNS: list[dict[str, Any]] = [
    {"source": ["shop"]},
    {"detail-type": ["Order Placed", "Order Paid"]},
    {"detail": {"sku": ["A-1"]}},
    {"detail.sku": ["B-2"]},
    {"detail": {"items": {"sku": ["C-3"]}}},
    {"detail": {"amount": [{"numeric": [">", 10]}]}},  # pins no string: asked for every event
    {"$or": [{"source": ["x"]}, {"detail-type": ["y"]}]},
    {"source": ["shop"], "detail": {"region": [{"prefix": "eu-"}]}},
]

EVENTS: list[dict[str, Any]] = [
    {"source": "shop", "detail-type": "Order Placed", "detail": {"sku": "A-1", "amount": 12}},
    {"source": "other", "detail-type": "y", "detail": {"sku": ["B-2", "Z"]}},
    {"source": "x", "detail-type": "Order Paid", "detail": {"items": [{"sku": "C-3"}, [{"sku": "D"}]]}},
    {"source": "shop", "detail": {"region": "eu-west-1"}},
    {"source": "none", "detail-type": "none", "detail.sku": "B-2"},
]


def index_of(patterns: list[dict[str, Any]]) -> RuleIndex[int]:
    index: RuleIndex[int] = RuleIndex()
    for i, pattern in enumerate(patterns):
        index.add(i, pattern)
    return index


def routed(patterns: list[dict[str, Any]], event: dict[str, Any]) -> list[int]:
    compiled = [compile_pattern(p) for p in patterns]
    prepared = prepare_event(event)
    return [i for i in index_of(patterns).candidates(prepared) if compiled[i].matches_prepared(prepared)]


@pytest.mark.parametrize("event", EVENTS)
def test_the_index_routes_exactly_as_matching_every_rule(event: dict[str, Any]) -> None:
    everyone = [i for i, p in enumerate(PATTERNS) if compile_pattern(p).matches(event)]
    assert routed(PATTERNS, event) == everyone


def test_a_thousand_rules_without_a_source_ask_only_their_own() -> None:
    patterns = [{"detail-type": [f"type {i}"], "detail": {"n": [{"numeric": [">", 0]}]}} for i in range(1000)]
    index = index_of(patterns)
    assert index.candidates({"detail-type": "type 7", "detail": {"n": 1}}) == [7]
    nested = index_of([{"detail": {"sku": [f"S-{i}"]}} for i in range(1000)])
    assert nested.candidates({"detail": {"sku": ["S-3", "S-999"]}}) == [3, 999]


def test_values_are_found_through_arrays_at_any_depth() -> None:
    event = {"a": [{"b": "x"}, [{"b": ["y", ["z"]]}], {"b": 5}]}
    assert values_at(event, ("a", "b")) == {"x", "y", "z"}


WORDS = st.sampled_from(["a", "b", "c", "source", "detail-type", "detail"])
SCALARS = st.one_of(st.sampled_from(["a", "b", "c", ""]), st.integers(-2, 2), st.none(), st.booleans())
LEAVES = st.lists(
    st.one_of(st.sampled_from(["a", "b", "c"]), st.just({"prefix": "a"}), st.just({"exists": True})),
    min_size=1,
    max_size=3,
)
PATTERN = st.recursive(
    st.dictionaries(WORDS, LEAVES, min_size=1, max_size=3),
    lambda inner: st.dictionaries(WORDS, st.one_of(LEAVES, inner), min_size=1, max_size=3),
    max_leaves=6,
)
EVENT = st.recursive(
    st.dictionaries(WORDS, SCALARS, max_size=4),
    lambda inner: st.dictionaries(
        WORDS, st.one_of(SCALARS, inner, st.lists(st.one_of(SCALARS, inner), max_size=3))
    ),
    max_leaves=10,
)


@examples(500)
@given(st.lists(PATTERN, min_size=1, max_size=6), EVENT)
def test_any_patterns_and_event_route_as_matching_every_rule(
    patterns: list[dict[str, Any]], event: dict[str, Any]
) -> None:
    compiled = [compile_pattern(p) for p in patterns]
    everyone = [i for i, c in enumerate(compiled) if c.matches(event)]
    assert routed(patterns, event) == everyone
