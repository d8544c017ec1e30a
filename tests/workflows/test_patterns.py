"""Event patterns: a table of pattern/event/expected cases, mostly the examples from AWS's
"Content filtering in Amazon EventBridge event patterns" page, plus refused patterns."""

from __future__ import annotations

import timeit
from typing import Any

import pytest

from workflows.errors import PatternError
from workflows.patterns import compile_pattern, match_all

EC2 = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "111122223333",
    "time": "2017-12-22T18:43:48Z",
    "region": "us-west-1",
    "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
    "detail": {"instance-id": "i-1234567890abcdef0", "state": "terminated", "c-count": 5},
}


def ev(**detail: Any) -> dict[str, Any]:
    return {"source": "aws.ec2", "detail": detail}


# Each group: one pattern, then (event, expected) pairs.
GROUPS: list[tuple[str, dict[str, Any], list[tuple[dict[str, Any], bool]]]] = [
    (
        "exact source",
        {"source": ["aws.ec2"]},
        [(EC2, True), ({"source": "aws.s3"}, False), ({}, False), ({"source": "AWS.EC2"}, False)],
    ),
    (
        "exact source OR list",
        {"source": ["aws.ec2", "aws.fargate"]},
        [({"source": "aws.fargate"}, True), ({"source": "aws.ec2"}, True), ({"source": "aws.ecs"}, False)],
    ),
    (
        "nested AND",
        {"source": ["aws.ec2"], "detail": {"state": ["terminated", "stopped"]}},
        [
            (EC2, True),
            (ev(state="running"), False),
            (ev(state="stopped"), True),
            ({"source": "aws.s3", "detail": {"state": "stopped"}}, False),
            ({"source": "aws.ec2"}, False),
        ],
    ),
    (
        "numeric exact compares numerically",
        {"detail": {"n": [300]}},
        [
            (ev(n=300), True),
            (ev(n=300.0), True),
            (ev(n=3.0e2), True),
            (ev(n="300"), False),
            (ev(n=301), False),
        ],
    ),
    (
        "string does not equal number",
        {"detail": {"n": ["300"]}},
        [(ev(n="300"), True), (ev(n=300), False)],
    ),
    (
        "booleans are not numbers",
        {"detail": {"flag": [True]}},
        [(ev(flag=True), True), (ev(flag=False), False), (ev(flag=1), False), (ev(flag="true"), False)],
    ),
    (
        "number 1 is not true",
        {"detail": {"flag": [1]}},
        [(ev(flag=1), True), (ev(flag=True), False)],
    ),
    (
        "null matching",
        {"detail": {"responseElements": [None]}},
        [(ev(responseElements=None), True), (ev(responseElements="null"), False), (ev(), False)],
    ),
    (
        "empty string matching",
        {"detail": {"eventVersion": [""]}},
        [
            (ev(eventVersion=""), True),
            (ev(eventVersion=None), False),
            (ev(), False),
            (ev(eventVersion="1"), False),
        ],
    ),
    (
        "null or empty string",
        {"detail": {"v": [None, ""]}},
        [(ev(v=None), True), (ev(v=""), True), (ev(v="x"), False)],
    ),
    (
        "event arrays match any element",
        {"resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f"]},
        [
            ({"resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f", "other"]}, True),
            ({"resources": ["other", "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f"]}, True),
            ({"resources": ["other"]}, False),
            ({"resources": []}, False),
        ],
    ),
    (
        "pattern list vs event list intersect",
        {"detail": {"tags": ["a", "b"]}},
        [(ev(tags=["x", "b"]), True), (ev(tags=["x", "y"]), False), (ev(tags=[["a"]]), True)],
    ),
    (
        "prefix",
        {"time": [{"prefix": "2017-10-02"}]},
        [
            ({"time": "2017-10-02T18:43:48Z"}, True),
            ({"time": "2017-10-03T18:43:48Z"}, False),
            ({"time": 20171002}, False),
            ({}, False),
        ],
    ),
    (
        "prefix equals-ignore-case",
        {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}},
        [
            (ev(service="EventBridge"), True),
            (ev(service="eventbus"), True),
            (ev(service="EVENTB"), True),
            (ev(service="Event"), False),
            (ev(service="xEventB"), False),
        ],
    ),
    (
        "suffix",
        {"FileName": [{"suffix": ".png"}]},
        [({"FileName": "image.png"}, True), ({"FileName": "image.PNG"}, False), ({"FileName": "png"}, False)],
    ),
    (
        "suffix equals-ignore-case",
        {"detail": {"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}},
        [(ev(FileName="a.PNG"), True), (ev(FileName="a.png"), True), (ev(FileName="a.jpg"), False)],
    ),
    (
        "equals-ignore-case",
        {"detail-type": [{"equals-ignore-case": "ec2 instance state-change notification"}]},
        [
            (EC2, True),
            ({"detail-type": "EC2 Instance State-Change NOTIFICATION"}, True),
            ({"detail-type": "EC2 Instance"}, False),
            ({"detail-type": 5}, False),
        ],
    ),
    (
        "anything-but string",
        {"detail": {"state": [{"anything-but": "initializing"}]}},
        [
            (ev(state="running"), True),
            (ev(state="initializing"), False),
            (ev(), False),
            (ev(state=None), True),
            (ev(state=5), True),
            (ev(state=["initializing", "x"]), True),
        ],
    ),
    (
        "anything-but number",
        {"detail": {"x-limit": [{"anything-but": 123}]}},
        [
            (ev(**{"x-limit": 456}), True),
            (ev(**{"x-limit": 123}), False),
            (ev(**{"x-limit": 123.0}), False),
            (ev(**{"x-limit": "123"}), True),
        ],
    ),
    (
        "anything-but string list",
        {"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}},
        [(ev(state="running"), True), (ev(state="stopped"), False), (ev(state="overloaded"), False)],
    ),
    (
        "anything-but number list",
        {"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}},
        [(ev(**{"x-limit": 150}), True), (ev(**{"x-limit": 200}), False), (ev(**{"x-limit": 300.0}), False)],
    ),
    (
        "anything-but prefix",
        {"detail": {"state": [{"anything-but": {"prefix": "init"}}]}},
        [
            (ev(state="running"), True),
            (ev(state="initializing"), False),
            (ev(), False),
            (ev(state=None), True),
        ],
    ),
    (
        "anything-but prefix list",
        {"Region": [{"anything-but": {"prefix": ["us-", "eu-"]}}]},
        [
            ({"Region": "ap-south-1"}, True),
            ({"Region": "us-east-1"}, False),
            ({"Region": "eu-west-1"}, False),
        ],
    ),
    (
        "anything-but suffix",
        {"detail": {"FileName": [{"anything-but": {"suffix": ".png"}}]}},
        [(ev(FileName="a.txt"), True), (ev(FileName="a.png"), False), (ev(FileName="a.PNG"), True)],
    ),
    (
        "anything-but equals-ignore-case",
        {"detail": {"state": [{"anything-but": {"equals-ignore-case": "initializing"}}]}},
        [(ev(state="INITIALIZING"), False), (ev(state="Initializing"), False), (ev(state="running"), True)],
    ),
    (
        "anything-but equals-ignore-case list",
        {"detail": {"state": [{"anything-but": {"equals-ignore-case": ["Stopped", "OverLoaded"]}}]}},
        [(ev(state="STOPPED"), False), (ev(state="overloaded"), False), (ev(state="running"), True)],
    ),
    (
        "anything-but wildcard",
        {"detail": {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}},
        [(ev(FilePath="/usr/lib/libc.so"), False), (ev(FilePath="/usr/bin/ls"), True)],
    ),
    (
        "numeric range",
        {"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}},
        [
            (EC2, True),
            (ev(**{"c-count": 0}), False),
            (ev(**{"c-count": 0.1}), True),
            (ev(**{"c-count": 5.0001}), False),
            (ev(**{"c-count": "3"}), False),
            (ev(**{"c-count": True}), False),
        ],
    ),
    (
        "numeric less than",
        {"detail": {"d-count": [{"numeric": ["<", 10]}]}},
        [(ev(**{"d-count": 9.99}), True), (ev(**{"d-count": 10}), False), (ev(**{"d-count": -1e9}), True)],
    ),
    (
        "numeric equal",
        {"detail": {"x-limit": [{"numeric": ["=", 3.018e2]}]}},
        [(ev(**{"x-limit": 301.8}), True), (ev(**{"x-limit": 301.81}), False)],
    ),
    (
        "numeric >= and < in reverse order",
        {"detail": {"n": [{"numeric": ["<", 10, ">=", 5]}]}},
        [(ev(n=5), True), (ev(n=10), False), (ev(n=4.9), False)],
    ),
    (
        "numeric alternatives",
        {"detail": {"n": [{"numeric": ["<", 0]}, {"numeric": [">", 100]}]}},
        [(ev(n=-1), True), (ev(n=101), True), (ev(n=50), False)],
    ),
    (
        "exists true",
        {"detail": {"state": [{"exists": True}]}},
        [
            (ev(state="x"), True),
            (ev(state=None), True),
            (ev(), False),
            (ev(state={"a": 1}), False),
            (ev(state=[]), False),
            (ev(state=["x"]), True),
        ],
    ),
    (
        "exists false",
        {"detail": {"c-count": [{"exists": False}]}},
        [(ev(), True), (EC2, False), ({"source": "aws.ec2"}, True), (ev(**{"c-count": {"nested": 1}}), True)],
    ),
    (
        "exists false or value",
        {"detail": {"state": [{"exists": False}, "stopped"]}},
        [(ev(), True), (ev(state="stopped"), True), (ev(state="running"), False)],
    ),
    (
        "exists inside nested",
        {"detail": {"a": {"b": [{"exists": True}]}}},
        [(ev(a={"b": 1}), True), (ev(a={"c": 1}), False), (ev(a="b"), False)],
    ),
    (
        "wildcard",
        {"EventBusArn": [{"wildcard": "arn:aws:events:us-east-1:*:event-bus/*"}]},
        [
            ({"EventBusArn": "arn:aws:events:us-east-1:123456789012:event-bus/default"}, True),
            ({"EventBusArn": "arn:aws:events:us-west-2:123456789012:event-bus/default"}, False),
            ({"EventBusArn": "arn:aws:events:us-east-1::event-bus/"}, True),
        ],
    ),
    (
        "wildcard file path",
        {"detail": {"FilePath": [{"wildcard": "dir/*.png"}]}},
        [
            (ev(FilePath="dir/a.png"), True),
            (ev(FilePath="dir/sub/a.png"), True),
            (ev(FilePath="dir/a.jpg"), False),
        ],
    ),
    (
        "wildcard escaped star",
        {"k": [{"wildcard": "a\\*b*"}]},
        [({"k": "a*bc"}, True), ({"k": "axbc"}, False), ({"k": "a*b"}, True)],
    ),
    (
        "wildcard is case-sensitive and anchored",
        {"k": [{"wildcard": "*.log"}]},
        [({"k": "x.log"}, True), ({"k": "x.LOG"}, False), ({"k": "x.log.gz"}, False), ({"k": ".log"}, True)],
    ),
    (
        "cidr IPv4",
        {"detail": {"sourceIPAddress": [{"cidr": "10.0.0.0/24"}]}},
        [
            (ev(sourceIPAddress="10.0.0.255"), True),
            (ev(sourceIPAddress="10.0.1.0"), False),
            (ev(sourceIPAddress="not an ip"), False),
            (ev(sourceIPAddress=167772161), False),
        ],
    ),
    (
        "cidr IPv6",
        {"sourceIPAddress": [{"cidr": "2001:db8::/32"}]},
        [
            ({"sourceIPAddress": "2001:db8::1"}, True),
            ({"sourceIPAddress": "2001:db9::1"}, False),
            ({"sourceIPAddress": "10.0.0.1"}, False),
        ],
    ),
    (
        "$or at top level",
        {"$or": [{"source": ["aws.ec2"]}, {"detail-type": ["Custom"]}]},
        [(EC2, True), ({"detail-type": "Custom"}, True), ({"source": "x", "detail-type": "y"}, False)],
    ),
    (
        "$or nested (AWS example)",
        {
            "source": ["aws.ec2"],
            "$or": [
                {"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}},
                {"detail": {"d-count": [{"numeric": ["<", 10]}]}},
                {"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}},
            ],
        },
        [
            (EC2, True),
            (ev(**{"d-count": 3}), True),
            (ev(**{"x-limit": 100}), False),
            (ev(**{"x-limit": 101}), True),
            ({"source": "aws.s3", "detail": {"d-count": 3}}, False),
        ],
    ),
    (
        "$or inside detail",
        {"detail": {"$or": [{"a": ["1"]}, {"b": [{"exists": True}]}]}},
        [(ev(a="1"), True), (ev(b=None), True), (ev(a="2"), False), (ev(), False)],
    ),
    (
        "array of objects: within one element",
        {"detail": {"items": {"name": ["x"], "size": [{"numeric": [">", 10]}]}}},
        [
            (ev(items=[{"name": "x", "size": 11}]), True),
            (ev(items=[{"name": "x", "size": 1}]), False),
            (ev(items=[{"name": "y", "size": 11}, {"name": "x", "size": 20}]), True),
        ],
    ),
    (
        "S3 record shape",
        {"Records": {"s3": {"object": {"key": [{"prefix": "inbox/"}]}}}},
        [
            ({"Records": [{"s3": {"object": {"key": "inbox/a.jpg"}}}]}, True),
            ({"Records": [{"s3": {"object": {"key": "done/a.jpg"}}}]}, False),
        ],
    ),
    (
        "nested pattern against scalar field",
        {"detail": {"a": ["1"]}},
        [({"detail": "a"}, False), ({"detail": None}, False)],
    ),
    (
        "mixed alternatives",
        {"detail": {"v": ["a", 1, None, {"prefix": "zz"}, {"numeric": [">", 100]}]}},
        [
            (ev(v="a"), True),
            (ev(v=1.0), True),
            (ev(v=None), True),
            (ev(v="zzz"), True),
            (ev(v=101), True),
            (ev(v=50), False),
            (ev(v="b"), False),
            (ev(v=False), False),
        ],
    ),
]

CASES = [
    pytest.param(pattern, event, expected, id=f"{name}-{i}")
    for name, pattern, pairs in GROUPS
    for i, (event, expected) in enumerate(pairs)
]


def test_table_is_large() -> None:
    assert len(CASES) >= 100


@pytest.mark.parametrize(("pattern", "event", "expected"), CASES)
def test_matches(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    assert compile_pattern(pattern).matches(event) is expected


INVALID: list[tuple[Any, str]] = [
    ({}, "pattern must be a non-empty JSON object"),
    (["aws.ec2"], "pattern must be a non-empty JSON object"),
    (
        {"source": "aws.ec2"},
        "source: a pattern value must be a list of alternatives or an object, got 'aws.ec2' "
        '(write ["aws.ec2"])',
    ),
    ({"detail": {"n": 5}}, "detail.n: a pattern value must be a list"),
    ({"source": []}, "source: the list of values to match must not be empty"),
    ({"detail": {}}, "detail: a nested pattern must not be empty"),
    ({"k": [{"contains": "x"}]}, "k: unknown operator 'contains' (use one of prefix, suffix"),
    ({"k": [{"prefix": "a", "suffix": "b"}]}, "k: an operator object has exactly one key"),
    ({"k": [{"prefix": 5}]}, "k: prefix expects a string, got 5"),
    (
        {"k": [{"prefix": {"ignore-case": "x"}}]},
        'k: prefix expects a string or {"equals-ignore-case": "..."}',
    ),
    ({"k": [{"suffix": None}]}, "k: suffix expects a string"),
    ({"k": [{"exists": "yes"}]}, "k: exists expects true or false"),
    (
        {"detail": {"size": [{"numeric": [">", 0, "<="]}]}},
        'detail.size: numeric expects pairs like [">", 0, "<=", 5]',
    ),
    ({"k": [{"numeric": [">", "0"]}]}, "k: numeric expects pairs like"),
    ({"k": [{"numeric": ["!=", 0]}]}, "k: numeric operator '!=' is not one of"),
    (
        {"k": [{"numeric": [">", 5, "<", 1]}]},
        "k: numeric range is empty: lower bound 5.0 is not below upper bound 1.0",
    ),
    ({"k": [{"numeric": [">", 1, ">=", 2]}]}, "k: numeric has two lower bounds"),
    ({"k": [{"numeric": ["=", 1, "<", 2]}]}, 'k: numeric "=" cannot be combined with a range'),
    ({"k": [{"anything-but": []}]}, "k: anything-but expects a non-empty list"),
    (
        {"k": [{"anything-but": ["a", 1]}]},
        "k: anything-but expects a string, a number, a list of only strings",
    ),
    ({"k": [{"anything-but": None}]}, "k: anything-but expects"),
    ({"k": [{"anything-but": {"numeric": [">", 1]}}]}, "k: anything-but takes an object with one of prefix"),
    ({"k": [{"anything-but": {"prefix": 1}}]}, "k: anything-but prefix expects a string"),
    ({"k": [{"wildcard": "a**b"}]}, "k: wildcard 'a**b' has consecutive *"),
    ({"k": [{"wildcard": "a\\b"}]}, "k: wildcard 'a\\\\b': only \\* and \\\\ may be escaped"),
    ({"k": [{"cidr": "10.0.0.0/33"}]}, "k: cidr '10.0.0.0/33' is not an IPv4 or IPv6 network"),
    ({"k": [{"cidr": "bogus"}]}, "k: cidr 'bogus' is not an IPv4 or IPv6 network"),
    ({"k": [{"cidr": "10.0.0.1"}]}, "k: cidr '10.0.0.1' needs a prefix length"),
    ({"$or": []}, "$or: $or expects a non-empty list of patterns"),
    ({"$or": [{"a": ["1"]}, "b"]}, "$or[1]: each $or branch must be a non-empty object"),
    ({"detail": {"$or": [{"a": [{"numeric": ["<"]}]}]}}, "detail.$or[0].a: numeric expects pairs"),
    ({"k": [["nested"]]}, "k: cannot match against ['nested']"),
    ({"k": [float("nan")]}, "k: numbers must be finite"),
]


@pytest.mark.parametrize(("pattern", "message"), INVALID, ids=[m[:40] for _, m in INVALID])
def test_invalid_patterns_are_refused_with_the_reason(pattern: Any, message: str) -> None:
    with pytest.raises(PatternError) as info:
        compile_pattern(pattern)
    assert str(info.value).startswith(message)


def test_fields_and_exact_strings_for_prefiltering() -> None:
    p = compile_pattern(
        {
            "source": ["sluice.run"],
            "detail": {"status": ["FAILED"]},
            "$or": [{"region": ["x"]}, {"time": [""]}],
        }
    )
    assert p.fields == {"source", "detail", "region", "time"}
    assert p.exact_strings == {"source": frozenset({"sluice.run"})}
    assert compile_pattern({"source": [{"prefix": "s"}]}).exact_strings == {}


def test_match_all_keeps_order() -> None:
    a = compile_pattern({"source": ["aws.ec2"]})
    b = compile_pattern({"source": ["aws.s3"]})
    c = compile_pattern({"detail": {"state": ["terminated"]}})
    assert match_all([a, b, c], EC2) == [a, c]


def test_non_object_events_never_match() -> None:
    assert not compile_pattern({"k": [{"exists": False}]}).matches([])  # type: ignore[arg-type]


def test_matching_cost_is_a_few_microseconds_per_rule() -> None:
    patterns = [
        compile_pattern(
            {
                "source": ["aws.ec2", f"s{i}"],
                "detail": {
                    "state": [{"anything-but": "initializing"}],
                    "c-count": [{"numeric": [">", 0, "<=", 9]}],
                },
            }
        )
        for i in range(1000)
    ]
    runs = 5
    seconds = timeit.timeit(lambda: match_all(patterns, EC2), number=runs)
    per_rule_us = seconds / (runs * len(patterns)) * 1e6
    assert per_rule_us < 20  # generous bound for a loaded 2-core machine; typically ~1 µs
