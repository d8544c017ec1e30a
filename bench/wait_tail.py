"""What the slow one-client ``?wait`` requests overlap: ``python -m bench.wait_tail [--requests N]``.

The engine (``build_server``, the chain of ``bench.webhook_wait``) runs in this process with its
store's checkpoint passes, its writer's WAL restarts and the cyclic GC timed; a client process
sends the requests back to back and times each. Both sides use ``time.monotonic``, which is one
clock for every process on Linux, so each slow request (over 2 x p50) can be matched with what
the engine was doing meanwhile. The store is instrumented by wrapping its methods here, never in
the engine's code.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time
from typing import Any

from .core import REPO_DIR
from .webhook_wait import _client_process, hook_engine

CLIENT = """
import asyncio, json, sys, time
import aiohttp

async def main(url, n):
    spans = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            t0 = time.monotonic()
            async with session.post(url, data=b"{}", headers={"Content-Type": "application/json"}) as r:
                await r.read()
            spans.append((t0, time.monotonic()))
    print(json.dumps(spans))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""

Span = tuple[float, float]


def instrument() -> dict[str, list[Span]]:
    """Time the store's checkpoint passes and restarts, and GC pauses, from now on."""
    from engine.store import store as store_module

    spans: dict[str, list[Span]] = {"checkpoint pass": [], "writer restart": [], "gc": []}
    beside, restart = store_module.Store._checkpoint_beside, store_module.Store._checkpoint

    def timed_beside(self: Any) -> int:
        t0 = time.monotonic()
        try:
            return beside(self)
        finally:
            spans["checkpoint pass"].append((t0, time.monotonic()))

    def timed_restart(self: Any, batch: Any) -> Any:
        t0 = time.monotonic()
        try:
            return restart(self, batch)
        finally:
            spans["writer restart"].append((t0, time.monotonic()))

    store_module.Store._checkpoint_beside = timed_beside  # type: ignore[method-assign]
    store_module.Store._checkpoint = timed_restart  # type: ignore[method-assign]
    started: list[float] = []

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(time.monotonic())
        elif started:
            spans["gc"].append((started.pop(), time.monotonic()))

    gc.callbacks.append(on_gc)
    return spans


async def measure(requests: int) -> dict[str, Any]:
    spans = instrument()
    async with hook_engine() as (_engine, url):
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _client_process, url, 200, 1)  # warm workers and HTTP
        for kind in spans.values():
            kind.clear()
        cmd = [sys.executable, "-c", CLIENT, url, str(requests)]
        done = await loop.run_in_executor(
            None, lambda: subprocess.run(cmd, cwd=REPO_DIR, capture_output=True, text=True, check=True)
        )
    reqs: list[Span] = [tuple(x) for x in json.loads(done.stdout)]  # type: ignore[misc]
    lat = sorted(end - start for start, end in reqs)
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
    slow = [(s, e) for s, e in reqs if e - s > 2 * p50]

    def overlapping(group: list[Span], kind: list[Span]) -> int:
        return sum(any(a < e and b > s for a, b in kind) for s, e in group)

    out: dict[str, Any] = {
        "requests": len(reqs),
        "p50_ms": round(p50 * 1e3, 3),
        "p99_ms": round(p99 * 1e3, 3),
        "p99_over_p50": round(p99 / p50, 3),
        "slow_over_2x_p50": len(slow),
    }
    for name, kind in spans.items():
        took = [b - a for a, b in kind]
        out[name] = {
            "count": len(kind),
            "mean_ms": round(1e3 * sum(took) / max(1, len(took)), 3),
            "slow_overlapping": overlapping(slow, kind),
            "all_overlapping": overlapping(reqs, kind),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.requests))))


if __name__ == "__main__":
    sys.exit(main())
