"""Warm round trip of a trivial function step: FunctionExecutor vs in-process vs ProcessPoolExecutor.

Run: ``.venv/bin/python bench/function_dispatch.py [calls]``. Prints p50/p99 in milliseconds for
sequential calls (one at a time, so it measures latency, not throughput), after a warm-up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.executors.base import FunctionCall
from engine.executors.function import FunctionExecutor

HANDLER = "def handler(event, context):\n    return {'echo': event}\n"


def trivial(event: Any, context: Any) -> dict[str, Any]:
    return {"echo": event}


def summary(name: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"{name:<44} p50 {statistics.median(ms):8.4f} ms   p99 {p99:8.4f} ms   (n={len(ms)})"


async def timed(fn: Callable[[int], Awaitable[Any]], calls: int) -> list[float]:
    for i in range(min(200, calls)):  # warm up
        await fn(i)
    samples = []
    for i in range(calls):
        t0 = time.perf_counter()
        await fn(i)
        samples.append(time.perf_counter() - t0)
    return samples


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as base_dir:
        (Path(base_dir) / "bench_handlers.py").write_text(HANDLER)

        async def in_process(i: int) -> Any:
            return trivial({"n": i}, None)

        print(summary("in-process call (await)", await timed(in_process, calls)))

        loop = asyncio.get_running_loop()
        with concurrent.futures.ProcessPoolExecutor(2) as pool:

            async def process_pool(i: int) -> Any:
                return await loop.run_in_executor(pool, trivial, {"n": i}, None)

            print(summary("ProcessPoolExecutor round trip", await timed(process_pool, calls)))

        started = time.perf_counter()
        fx = FunctionExecutor(workers=2)
        await fx.start()
        print(f"{'FunctionExecutor.start() (2 workers)':<44} {1000 * (time.perf_counter() - started):.1f} ms")
        try:

            async def function_executor(i: int, **options: Any) -> Any:
                call = FunctionCall(
                    attempt_id=f"bench#{i}",
                    handler="bench_handlers:handler",
                    base_dir=base_dir,
                    event={"n": i},
                    run_id="bench",
                    step="trivial",
                    attempt=1,
                    **options,
                )
                outcome = await fx.execute(call)
                assert outcome.ok and outcome.output == {"echo": {"n": i}}, outcome
                return outcome

            print(summary("FunctionExecutor warm round trip", await timed(function_executor, calls)))
            logs = Path(base_dir) / "logs"

            async def full(i: int) -> Any:  # what the engine sends: a log file, limits, a timeout
                log_path = str(logs / f"{i}.log")
                return await function_executor(i, log_path=log_path, timeout_s=30, memory_bytes=256 << 20)

            print(summary("... + log file, memory limit, timeout", await timed(full, calls)))
        finally:
            await fx.aclose()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
