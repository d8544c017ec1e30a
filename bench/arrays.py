"""Submitting a big array job (issue 19): ``python -m bench.arrays [--size N]``.

A standalone ``BatchService`` on a real store (its scheduler loop is not started, so no container
runs: the submission is what is measured). The bench wraps the store's ``_apply`` to time every
transaction the writer holds the connection for, and meanwhile queues a one-row write every
millisecond, as a webhook would, timing how long each waits for its commit. While the children
are being written it also reads the parent's ``array_status_summary``, which must add up to the
array's size every time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.batch.jobs import STATES

BOX = {"image": "busybox:1.36", "command": ["true"], "vcpus": 1, "memory": 32 << 20, "network": "none"}


async def measure(size: int) -> dict[str, Any]:
    from engine.batch.service import BatchService
    from engine.bus.bus import Bus
    from engine.engine import tune_gc
    from engine.executors.docker_api import DockerClient
    from engine.store.store import Store

    tune_gc()  # as ``sluice serve`` does
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "arrays.db")
        await store.open()
        holds: list[float] = []
        cpu: list[float] = []
        apply = store._apply

        def timed_apply(batch: Any, **kw: Any) -> Any:  # kw: an older store's ``inline``
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return apply(batch, **kw)
            finally:
                holds.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.thread_time() - c0) * 1000)

        store._apply = timed_apply  # type: ignore[method-assign]
        svc = BatchService(store, Bus(store, {}), Path(tmp), DockerClient())
        await svc.start()
        await store.write(lambda c: c.execute("CREATE TABLE probe (at REAL)"))
        holds.clear()
        cpu.clear()
        waits: list[float] = []
        summaries: list[dict[str, int]] = []
        done = asyncio.Event()

        async def probe() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                await store.write(lambda c, at=t0: c.execute("INSERT INTO probe VALUES (?)", (at,)))
                waits.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(0.001)

        async def summary_reader(job_id: str) -> None:
            while not done.is_set():
                desc = await svc.describe(job_id)
                if desc is not None:
                    summaries.append(desc["array_status_summary"])
                await asyncio.sleep(0.01)

        prober = asyncio.ensure_future(probe())
        t0 = time.perf_counter()
        sub = asyncio.ensure_future(svc.submit({"queue": "default", "container": BOX, "array_size": size}))
        first_seen = None
        reader = None
        while not sub.done() and reader is None:
            parent = next((j for j in svc.book.jobs.values() if j.is_parent), None)
            if parent is not None:
                first_seen = time.perf_counter() - t0
                reader = asyncio.ensure_future(summary_reader(parent.id))
            await asyncio.sleep(0.001)
        out = await sub
        submit_s = time.perf_counter() - t0
        await store.write(lambda c: None)  # every chunk committed
        done.set()
        await prober
        if reader is not None:
            await reader
        final = await svc.describe(out["job_id"])
        assert final is not None
        summaries.append(final["array_status_summary"])
        wrong = [s for s in summaries if sum(s.values()) != size or set(s) != set(STATES)]
        await svc.aclose()
        await store.close()
        waits.sort()
        return {
            "size": size,
            "submit_s": round(submit_s, 3),
            "parent_visible_s": None if first_seen is None else round(first_seen, 4),
            "children_per_s": round(size / submit_s),
            "transactions": len(holds),
            "max_hold_ms": round(max(holds), 2),
            "p99_hold_ms": round(sorted(holds)[int(len(holds) * 0.99)], 2),
            "p50_hold_ms": round(statistics.median(holds), 2),
            "top_holds_ms": [round(h, 1) for h in sorted(holds)[-8:]],
            "max_hold_cpu_ms": round(max(cpu), 2),
            "p50_hold_cpu_ms": round(statistics.median(cpu), 2),
            "probe_writes": len(waits),
            "probe_p50_ms": round(statistics.median(waits), 2),
            "probe_max_ms": round(waits[-1], 2),
            "summaries_read": len(summaries),
            "summaries_not_exact": len(wrong),
            "final_summary": {k: v for k, v in summaries[-1].items() if v},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=10_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.size))))


if __name__ == "__main__":
    main()
