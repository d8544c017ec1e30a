"""Routing cost per event with 1,000 rules that name no ``source`` (issue 19): ``python -m bench.routing``.

1,000 workflows are loaded from real YAML files (the loader, the bus, the rules as ``sluice serve``
builds them); each pins its own ``detail-type`` and a nested ``detail.sku``, plus a numeric
range. The figure is ``Bus.matching_rules`` per event, the bus's whole share of routing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from engine.bus.bus import Bus
from engine.store.store import Store
from workflows.loader import load_dir

RULE = """
name: wf{i}
triggers:
  - event:
      pattern:
        detail-type: ["Order {i}"]
        detail: {{sku: ["S-{i}"], amount: [{{numeric: [">", 0]}}]}}
steps:
  s: {{function: "h:f"}}
"""


async def measure(rules: int = 1000, events: int = 20_000) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        flows = Path(tmp) / "flows"
        flows.mkdir()
        (flows / "h.py").write_text("def f(event, context):\n    return event\n")
        for i in range(rules):
            (flows / f"wf{i}.yaml").write_text(RULE.format(i=i))
        store = Store(Path(tmp) / "sluice.db")
        await store.open()
        try:
            bus = Bus(store, load_dir(flows))
            sample = [
                {
                    "source": "app",
                    "detail-type": f"Order {n % rules}",
                    "detail": {"sku": f"S-{n % rules}", "amount": 5},
                }
                for n in range(events)
            ]
            t0 = time.perf_counter()
            hits = sum(len(bus.matching_rules(e)) for e in sample)
            per_event_us = (time.perf_counter() - t0) / events * 1e6
            return {
                "rules": rules,
                "per_event_us": round(per_event_us, 2),
                "matches_per_event": hits / events,
            }
        finally:
            await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.rules, args.events))))
