"""Sluice's W6 and W7 (issue 6): container jobs against bare Docker, and the engine's footprint.

W6 runs a standalone ``BatchService`` on the local Docker engine beside bare API cycles and times
the scheduler's decision at 10,000 RUNNABLE jobs; W7 measures a fresh ``build_server`` process
(bench/footprint_child.py) idle, with 10,000 queued jobs and with 1,000 runs in flight.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time

from .core import REPO_DIR, Context, run_measured, tail
from .limits import DOCKER_SOCK
from .sluice_workloads import _MS, Spec, _engine_available, register_group, write_bench_workflows

#: W6 alternates bare Docker and Sluice jobs in this many rounds, so both see the same daemon
CHUNKS = 4


def _share(total: int, chunk: int) -> int:
    """Chunk ``chunk``'s part of ``total`` split over CHUNKS (the parts add up to ``total``)."""
    return total * (chunk + 1) // CHUNKS - total * chunk // CHUNKS


async def _w6_docker(ctx: Context, n_overhead: int, n_jobs: int, n_bare: int) -> dict[str, float]:
    """Job overhead and throughput through a standalone BatchService, vs bare API cycles."""
    from engine.batch.service import BatchService
    from engine.bus.bus import Bus
    from engine.executors.docker_api import DockerClient
    from engine.store.store import Store

    from .batch_scheduler import IMAGE, LABEL
    from .docker_overhead import bare_once

    store = Store(ctx.tmp / f"w6-{ctx.rep}.db")
    await store.open()
    client = DockerClient()
    svc = BatchService(store, Bus(store, {}), ctx.tmp, DockerClient(), tick_s=0.5)
    svc.labels.update(LABEL)
    await svc.start()
    await svc.put_environment({"name": "local", "max_vcpus": 8, "max_memory": 8 << 30}, create=False)
    loop = asyncio.create_task(svc.run())
    box = {"image": IMAGE, "command": ["true"], "vcpus": 1, "memory": 32 << 20, "network": "none"}

    async def bare() -> float:
        return await bare_once(client, LABEL)

    try:
        await bare()
        bares, jobs = [], []
        for _ in range(n_overhead):
            bares.append(await bare())
            t0 = time.perf_counter()
            out = await svc.submit({"queue": "default", "container": box})
            await svc.wait(out["job_id"])
            jobs.append(time.perf_counter() - t0)
        sem = asyncio.Semaphore(8)

        async def bare8() -> None:
            async with sem:
                await bare()

        bare_s = jobs_s = 0.0
        statuses: list[str] = []
        for chunk in range(CHUNKS):  # interleaved: the daemon's rate drifts over minutes
            t0 = time.perf_counter()
            await asyncio.gather(*(bare8() for _ in range(_share(n_bare, chunk))))
            bare_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            box_jobs = [{"queue": "default", "container": box}] * _share(n_jobs, chunk)
            ids = [(await svc.submit(job))["job_id"] for job in box_jobs]
            statuses += await asyncio.gather(*(svc.wait(i) for i in ids))
            jobs_s += time.perf_counter() - t0
        bare_rate, rate = n_bare / bare_s, n_jobs / jobs_s
        ok = sum(s == "SUCCEEDED" for s in statuses)
        if ok != n_jobs:
            ctx.note(f"{n_jobs - ok} of {n_jobs} jobs did not succeed")
        return {
            "bare_p50_ms": statistics.median(bares) * 1e3,
            "job_total_p50_ms": statistics.median(jobs) * 1e3,
            "overhead_ratio": statistics.median(jobs) / statistics.median(bares),
            "bare_per_s_at_8": bare_rate,
            "jobs_per_s_at_8": rate,
            "throughput_ratio": rate / bare_rate,
        }
    finally:
        loop.cancel()
        await svc.aclose()
        await client.aclose()
        await store.close()


def w6_containers(ctx: Context) -> dict[str, float]:
    """W6: `true` job submit -> SUCCEEDED vs bare API; N jobs at capacity 8 vs bare at 8; decision time.

    The full run sends issue 6's 2,000 jobs (~3 min at the daemon's ~10 containers/s here); bare
    Docker at the same concurrency is timed over 300 containers (~30 s): closer to a sustained rate
    than a 64-container burst (10.1-11.6/s across runs), and the full run stays under 15 minutes.
    Both go in 4 alternating rounds (75 bare, 500 jobs, ...): run one after the other, the ratio
    swung from 0.88 to 0.99 between two runs of the same code as the daemon's rate drifted.
    """
    from .batch_scheduler import decision_times

    steady = decision_times(10_000, worst=False, rounds=100)
    worst = decision_times(10_000, worst=True, rounds=100)
    out = {
        "decision_ms_at_10000": statistics.median(steady) * 1e3,
        "decision_worst_ms_at_10000": statistics.median(worst) * 1e3,
        "decision_worst_max_ms": max(worst) * 1e3,
    }
    if not os.path.exists(DOCKER_SOCK):
        ctx.note(f"no Docker ({DOCKER_SOCK} missing): container figures skipped, decision time only")
        return out
    n_jobs = 24 if ctx.quick else 2_000
    n_bare = 16 if ctx.quick else 300
    ctx.note(f"{n_jobs} jobs through capacity 8, bare Docker over {n_bare}")
    return out | asyncio.run(_w6_docker(ctx, 3 if ctx.quick else 10, n_jobs, n_bare))


def w7_footprint(ctx: Context) -> dict[str, float]:
    """W7: engine RSS idle, with 10,000 queued jobs, with 1,000 runs in flight (workers separately).

    Measured in a fresh ``bench.footprint_child`` process running ``build_server``; the jobs sit on a
    queue whose only environment is DISABLED, so they stay RUNNABLE, the runs wait on a ``wait: 60s`` step.
    """
    _engine_available()
    folder = ctx.tmp / f"w7-{ctx.rep}"
    write_bench_workflows(folder)
    (folder / "w7_wait.yaml").write_text("name: w7_wait\nsteps:\n  nap: {wait: 60s}\n")
    jobs, runs = (2_000, 200) if ctx.quick else (10_000, 1_000)
    cmd = [sys.executable, "-m", "bench.footprint_child", str(folder), "--data", str(folder / ".sluice")]
    cmd += ["--jobs", str(jobs), "--runs", str(runs)]
    m = run_measured(cmd, cwd=REPO_DIR, timeout_s=240, sample_rss=False)
    if m.returncode != 0:
        raise RuntimeError(f"footprint child exit {m.returncode}: {tail(m.stderr)}")
    res = json.loads(m.stdout.strip().splitlines()[-1])
    out = {
        "idle_rss_mb": res["idle"]["engine_mb"],
        "idle_workers_rss_mb": res["idle"]["workers_mb"],
        "runs_in_flight_rss_mb": res["in_flight"]["engine_mb"],
        "runs_in_flight_extra_mb": res["in_flight"]["engine_mb"]
        - res.get("queued", res["idle"])["engine_mb"],
        "runs_in_flight_workers_mb": res["in_flight"]["workers_mb"],
    }
    if "queued" in res:
        extra = res["queued"]["engine_mb"] - res["idle"]["engine_mb"]
        out |= {f"queued_{jobs}_rss_mb": res["queued"]["engine_mb"], f"queued_{jobs}_extra_mb": extra}
        out["submit_per_s"] = jobs / res["submit_s"]
    else:
        ctx.note(res.get("queued_skip", "queued jobs not measured"))
    if ctx.quick:
        ctx.note(f"--quick: {jobs} queued jobs and {runs} runs instead of 10,000 and 1,000")
    return out


_SPECS: list[Spec] = [
    (
        "W6",
        w6_containers,
        "container jobs vs bare Docker; scheduler decision at 10,000 RUNNABLE",
        {
            "decision_ms_at_10000": _MS,
            "decision_worst_ms_at_10000": _MS,
            "decision_worst_max_ms": _MS,
            "bare_p50_ms": _MS,
            "job_total_p50_ms": _MS,
            "overhead_ratio": "x",
            "bare_per_s_at_8": "ctr/s",
            "jobs_per_s_at_8": "jobs/s",
            "throughput_ratio": "x",
        },
        {
            "overhead_ratio": "<= 1.15x bare Docker",
            "throughput_ratio": ">= 0.9x bare Docker",
            "decision_ms_at_10000": "< 5 ms",
        },
    ),
    (
        "W7",
        w7_footprint,
        "engine footprint (fresh `build_server` process; workers separately)",
        {
            "idle_rss_mb": "MB",
            "idle_workers_rss_mb": "MB",
            "queued_10000_rss_mb": "MB",
            "queued_10000_extra_mb": "MB",
            "runs_in_flight_rss_mb": "MB",
            "runs_in_flight_extra_mb": "MB",
            "runs_in_flight_workers_mb": "MB",
            "submit_per_s": "jobs/s",
        },
        {"idle_rss_mb": "<= 65 MB", "queued_10000_extra_mb": "<= 30 MB"},
    ),
]

# W6: minutes of containers per repetition; W7: one fresh process says it all
register_group(_SPECS, {"W6": 1, "W7": 1})
