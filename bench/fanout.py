"""Peak RSS growth of one ``for_each`` run over N items (issue 19): ``python -m bench.fanout N``."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.engine import Engine, Settings
from workflows.loader import load_dir

FLOW = """
name: fan
params: {n: {type: integer}}
steps:
  each: {function: h:one, for_each: "{{ range(params.n) | list }}", input: "{{ item }}"}
"""
HANDLER = "def one(event, context):\n    return event\n"


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


async def measure(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        flows = Path(tmp) / "flows"
        flows.mkdir()
        (flows / "fan.yaml").write_text(FLOW)
        (flows / "h.py").write_text(HANDLER)
        async with Engine(Settings(data_dir=Path(tmp) / "data"), load_dir(flows)) as engine:
            base = peak = rss_mb()

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, rss_mb())
                    await asyncio.sleep(0.05)

            watcher = asyncio.ensure_future(watch())
            t0 = time.perf_counter()
            summary = await engine.run_to_end("fan", {"n": n}, timeout_s=3600)
            elapsed = time.perf_counter() - t0
            watcher.cancel()
            return {
                "items": n,
                "status": summary["status"],
                "items_per_s": round(n / elapsed),
                "peak_rss_growth_mb": round(peak - base, 1),
            }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))))
