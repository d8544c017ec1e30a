"""The synchronous webhook (issue 19): ``python -m bench.webhook_wait [--requests N]``.

A ``build_server`` engine in this process serves a webhook whose workflow is W1's 3-step chain;
``POST /hooks/ww/in?wait=30`` answers once the run has ended, with its outputs. The clients run in
another process (this module with ``--client``), so each side has a core: first one client, then
4, each sending its requests back to back. In-process W1 (``run_to_end``, no HTTP) runs in the
same engine before and after, so the figures sit beside each other from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .core import REPO_DIR, latency_metrics
from .sluice_workloads import _catalog, write_bench_workflows

HOOK_FLOW = """\
name: ww
description: the synchronous webhook - W1's chain behind ?wait.
triggers:
  - webhook: {name: in, auth: none}
steps:
  a: {function: "benchfns:inc", input: {x: 0}}
  b: {function: "benchfns:inc", needs: [a], input: {x: "{{ steps.a.output }}"}}
  c: {function: "benchfns:inc", needs: [b], input: {x: "{{ steps.b.output }}"}}
outputs: {result: "{{ steps.c.output }}"}
"""


async def clients(url: str, requests: int, concurrency: int) -> dict[str, float]:
    """``concurrency`` keep-alive clients, ``requests`` each, back to back; latency of each."""
    import aiohttp

    latencies: list[float] = []
    bad: list[str] = []

    async def one(session: aiohttp.ClientSession) -> None:
        for _ in range(requests):
            t0 = time.perf_counter()
            async with session.post(url, data=b"{}", headers={"Content-Type": "application/json"}) as resp:
                body = await resp.json()
            latencies.append(time.perf_counter() - t0)
            if resp.status != 200 or body.get("outputs") != {"result": 3}:
                bad.append(f"{resp.status} {body}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        start = time.perf_counter()
        await asyncio.gather(*(one(session) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    out = {"runs_per_s": len(latencies) / wall, "bad": float(len(bad))}
    out.update(latency_metrics("latency", latencies))
    out["p99_over_p50"] = out["latency_p99_ms"] / out["latency_p50_ms"]
    return out


def _client_process(url: str, requests: int, concurrency: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "bench.webhook_wait", "--client", url, "--requests", str(requests)]
    cmd += ["--concurrency", str(concurrency)]
    done = subprocess.run(cmd, cwd=REPO_DIR, capture_output=True, text=True, timeout=600, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def w1(engine: Any, runs: int) -> dict[str, float]:
    seconds = []
    start = time.perf_counter()
    for _ in range(runs):
        t0 = time.perf_counter()
        summary = await engine.run_to_end("w1_chain")
        seconds.append(time.perf_counter() - t0)
        assert summary["outputs"]["result"] == 3, summary
    out = {"runs_per_s": runs / (time.perf_counter() - start), **latency_metrics("latency", seconds)}
    out["p99_over_p50"] = out["latency_p99_ms"] / out["latency_p50_ms"]
    return out


@contextlib.asynccontextmanager
async def hook_engine() -> AsyncIterator[tuple[Any, str]]:
    """A served engine (as ``sluice serve`` runs, GC tuned alike) with the ``ww`` hook; its URL."""
    from engine.engine import Settings, tune_gc
    from engine.server import build_server

    tune_gc()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_bench_workflows(folder)
        (folder / "ww.yaml").write_text(HOOK_FLOW)
        engine = build_server(Settings(data_dir=folder / ".sluice", port=0), _catalog(folder), folder)
        async with engine:
            http = next(s for s in engine.services if getattr(s, "name", "") == "http")
            yield engine, f"http://127.0.0.1:{http.port}/hooks/ww/in?wait=30"


async def measure(requests: int) -> dict[str, Any]:
    async with hook_engine() as (engine, url):
        loop = asyncio.get_running_loop()
        await w1(engine, 20)  # warm the workers
        out: dict[str, Any] = {"loadavg_at_start": list(os.getloadavg())}
        out["w1_before"] = await w1(engine, requests)
        await loop.run_in_executor(None, _client_process, url, 20, 1)  # warm the HTTP path
        out["one_client"] = await loop.run_in_executor(None, _client_process, url, requests, 1)
        out["four_clients"] = await loop.run_in_executor(None, _client_process, url, requests // 4, 4)
        out["w1_after"] = await w1(engine, requests)
        store = engine.store
        wal = store.path.with_name(store.path.name + "-wal")
        out["store"] = {  # getattr: the same script measures commits before the checkpointer
            "commits": store.commits,
            "checkpoints": getattr(store, "checkpoints", None),
            "writer_checkpoints": getattr(store, "restarts", None),
            "wal_mb": round(wal.stat().st_size / 1e6, 1),
        }
        out["loadavg_at_end"] = list(os.getloadavg())
        return out


def _round(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return round(value, 3) if isinstance(value, float) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--client", metavar="URL", help="be the load client (run by the bench itself)")
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(asyncio.run(clients(args.client, args.requests, args.concurrency))))
        return
    print(json.dumps(_round(asyncio.run(measure(args.requests)))))


if __name__ == "__main__":
    sys.exit(main())
