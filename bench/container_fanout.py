"""A container step's ``for_each`` over many items: ``python -m bench.container_fanout [--size N]``.

A standalone ``BatchService`` on a real store (its scheduler loop is not started, so no container
runs), as ``bench.arrays`` does, but each child renders its own spec (``SLUICE_ITEM`` and an env
value reading ``{{ item.key }}``) the way ``ContainerSteps`` submits a ``for_each``. Then the
step's end is timed as it commits: every child's attempt linked into the step's history and the
list of child outputs written in the step's row. Every transaction the writer holds is timed,
with a one-row write queued every millisecond meanwhile, as a webhook would.
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

BOX = {"image": "busybox:1.36", "command": ["true"], "vcpus": 1, "memory": 32 << 20, "network": "none"}


async def measure(size: int, item_bytes: int = 0) -> dict[str, Any]:
    from engine.batch import fanout, rows
    from engine.batch.service import BatchService
    from engine.batch.steps import link_in_chunks
    from engine.bus.bus import Bus
    from engine.engine import tune_gc
    from engine.executors.docker_api import DockerClient
    from engine.store import records
    from engine.store.store import Store
    from workflows.spec import ContainerSpec, StepSpec
    from workflows.templating import compile_value

    tune_gc()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "fanout.db")
        await store.open()
        holds: list[float] = []
        apply = store._apply

        def timed_apply(batch: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return apply(batch, **kw)
            finally:
                holds.append((time.perf_counter() - t0) * 1000)

        store._apply = timed_apply  # type: ignore[method-assign]
        svc = BatchService(store, Bus(store, {}), Path(tmp), DockerClient())
        await svc.start()
        await store.write(lambda c: c.execute("CREATE TABLE probe (at REAL)"))
        waits: list[float] = []
        done = asyncio.Event()

        async def probe() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                await store.write(lambda c, at=t0: c.execute("INSERT INTO probe VALUES (?)", (at,)))
                waits.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(0.001)

        pad = "x" * item_bytes  # an item near the 32 KiB bound rides in its child's row and 3 events
        items = [{"key": f"tiles/{i:05d}.png", "size": [256, 256], "pad": pad} for i in range(size)]
        container = ContainerSpec(image="busybox:1.36", env={"KEY": compile_value("{{ item.key }}", "env")})
        spec = StepSpec("fan", "container", container=container, for_each=compile_value(items, "for_each"))
        texts = fanout.render_items("fan", spec, {})
        fan = fanout.per_child("fan", spec, {}, texts)
        holds.clear()
        prober = asyncio.ensure_future(probe())
        t0 = time.perf_counter()
        req = {"queue": "default", "container": BOX, "array_size": size}
        out = await svc.submitter.submit(req, run_step=("r-bench", "fan"), per_child=fan)
        await store.write(lambda c: None)  # every chunk committed
        submit_s = time.perf_counter() - t0
        submit_holds = list(holds)
        job_id = out["job_id"]

        def attempts(conn: Any) -> None:  # setup, not timed: one ended attempt per child
            for i in range(size):
                conn.execute(
                    "INSERT INTO job_attempts (job_id, attempt, log_path, exit_code, reason, started_at,"
                    " stopped_at) VALUES (?, 1, ?, 0, 'Exited', 1.0, 2.0)",
                    (f"{job_id}:{i}", f"/logs/{job_id}.{i}.1.log"),
                )

        await store.write(attempts)
        run = records.RunRecord("r-bench", "bench", {"id": "e-bench"}, {}, time.time())
        await store.write(lambda c: records.insert_run(c, run, "e-bench"))
        holds.clear()
        t1 = time.perf_counter()
        outputs = await store.read(lambda c: fanout.child_outputs(c, job_id))
        now = time.time()
        last = await link_in_chunks(store, "r-bench", "fan", job_id, now)  # as ContainerSteps ends it
        stored = records.Encoded(records.dumps(outputs))

        def end(conn: Any) -> None:
            records.link_job_attempts(conn, "r-bench", "fan", last)
            records.finish_step(conn, "r-bench", "fan", -1, "RUNNING", "SUCCEEDED", now, output=stored)

        await store.write(end)
        end_s = time.perf_counter() - t1
        end_holds = list(holds)
        done.set()
        await prober
        child = await store.read(lambda c: rows.describe_rows(c, f"{job_id}:{size - 1}"))
        await svc.aclose()
        await store.close()
        waits.sort()
        return {
            "size": size,
            "item_bytes": len(texts[0]),
            "submit_s": round(submit_s, 3),
            "submit_transactions": len(submit_holds),
            "submit_max_hold_ms": round(max(submit_holds), 2),
            "submit_p50_hold_ms": round(statistics.median(submit_holds), 2),
            "end_s": round(end_s, 3),
            "end_holds_ms": [round(h, 1) for h in end_holds],
            "output_bytes": len(json.dumps(outputs)),
            "probe_writes": len(waits),
            "probe_p50_ms": round(statistics.median(waits), 2),
            "probe_max_ms": round(waits[-1], 2),
            "last_child_item": None if child is None else child["spec"]["environment"].get("SLUICE_ITEM"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--item-bytes", type=int, default=0, help="padding in each item")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.size, args.item_bytes))))


if __name__ == "__main__":
    main()
