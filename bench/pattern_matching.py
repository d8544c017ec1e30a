"""Pattern matching cost per event with 1,000 rules (issue 3): ``python -m bench.pattern_matching``.

Two mixes: 1,000 rules that each name an exact ``source`` (the bus indexes those by source, so an
event is matched only against its own source's rules), and 1,000 richer rules (prefix, numeric
ranges, anything-but, wildcard, ``$or``) that every event is matched against. Each event is
prepared once (dotted keys expanded; a no-op walk here) and then matched against every rule, as
the bus does.
"""

from __future__ import annotations

import json
import time

from workflows.patterns import compile_pattern, prepare_event

EVENT = {
    "source": "app.orders",
    "detail-type": "Order Placed",
    "detail": {"amount": 120, "region": "eu-west-1", "sku": "ABC-123", "tags": ["new", "vip"]},
}


def exact_rules(n: int) -> list[dict]:
    return [{"source": [f"app.src{i}"], "detail": {"sku": [f"S-{i}"]}} for i in range(n)]


def rich_rules(n: int) -> list[dict]:
    shapes = [
        lambda i: {"detail": {"sku": [{"prefix": f"A{i}"}]}},
        lambda i: {"detail": {"amount": [{"numeric": [">", i, "<=", i + 50]}]}},
        lambda i: {"detail": {"region": [{"anything-but": [f"r{i}"]}], "tags": [f"t{i}"]}},
        lambda i: {"detail-type": [{"wildcard": f"Order *{i}"}]},
        lambda i: {"$or": [{"detail": {"sku": [f"X{i}"]}}, {"detail": {"amount": [i]}}]},
    ]
    return [shapes[i % len(shapes)](i) for i in range(n)]


def per_event_us(patterns: list, repeat: int = 200) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        event = prepare_event(EVENT)
        for p in patterns:
            p.matches_prepared(event)
    return (time.perf_counter() - t0) / repeat * 1e6


def main() -> None:
    exact = [compile_pattern(r) for r in exact_rules(1000)]
    rich = [compile_pattern(r) for r in rich_rules(1000)]
    own_source = [p for p in exact if "app.orders" in p.exact_strings.get("source", ())]
    print(
        json.dumps(
            {
                "rules": 1000,
                "rich_all_rules_us_per_event": round(per_event_us(rich), 1),
                "exact_all_rules_us_per_event": round(per_event_us(exact), 1),
                "exact_indexed_by_source_us_per_event": round(per_event_us(own_source, 2000), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
