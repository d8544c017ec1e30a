"""W7's subject: a fresh engine process that reports its own RSS and its workers' at three moments.

``python -m bench.footprint_child DIR [--jobs 10000] [--runs 1000]`` starts ``build_server`` on port 0
over the workflows in DIR (written by ``bench.sluice_workloads``), then prints one JSON line with:
idle RSS, RSS after ``--jobs`` container jobs queued on a DISABLED environment (they stay RUNNABLE), and
RSS with ``--runs`` runs in flight (each waiting on a ``wait: 60s`` step). A separate process, because
the harness's own imports (aiohttp clients, peers' helpers) would otherwise be counted as the engine's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .core import _tree_rss_kb


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)


def sample() -> dict[str, float]:
    """Engine process alone and its descendants (function workers) separately, in MB."""
    gc.collect()
    me = _rss_kb(os.getpid())
    tree = _tree_rss_kb(os.getpid())
    return {"engine_mb": me / 1024.0, "workers_mb": (tree - me) / 1024.0}


async def main(folder: Path, data: Path, jobs: int, runs: int) -> dict[str, Any]:
    from engine.engine import Settings, tune_gc
    from engine.server import build_server
    from workflows.loader import load_dir

    tune_gc()  # as `sluice serve` does
    engine = build_server(Settings(data_dir=data, port=0), load_dir(folder), folder)
    out: dict[str, Any] = {}
    async with engine:
        await asyncio.sleep(1.0)
        out["idle"] = sample()
        svc = engine.batch
        if svc is not None and jobs:
            env = {"name": "parked", "max_vcpus": 1, "max_memory": 1 << 30, "state": "DISABLED"}
            await svc.put_environment(env, create=True)  # no capacity: jobs stay RUNNABLE
            await svc.put_queue({"name": "parked", "environments": ["parked"]}, create=True)
            box = {"image": "busybox:1.36", "command": ["true"], "vcpus": 1, "memory": 32 << 20}
            t0 = time.perf_counter()
            for _ in range(jobs):
                await svc.submit({"queue": "parked", "container": box})
            out["submit_s"] = time.perf_counter() - t0
            await asyncio.sleep(0.5)
            out["queued"] = sample()
        else:
            out["queued_skip"] = "no Docker engine: BatchService not attached"
        t0 = time.perf_counter()
        ids = [await engine.start_run("w7_wait") for _ in range(runs)]
        out["start_runs_s"] = time.perf_counter() - t0
        await asyncio.sleep(1.0)
        out["in_flight"] = sample()
        summary = await engine.describe_run(ids[-1])
        out["last_run_status"] = summary["status"] if summary else None
        await engine.orchestrator.aclose()  # cancel the waiting runs instead of draining 60 s
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1_000)
    args = parser.parse_args()
    result = asyncio.run(main(args.folder, args.data, args.jobs, args.runs))
    print(json.dumps(result))
    sys.stdout.flush()
