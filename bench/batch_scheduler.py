"""Batch jobs: scheduler decision time, the cost of a ``true`` job, and jobs/s through capacity 8.

``python -m bench.batch_scheduler [--runnable 10000] [--overhead 10] [--jobs 2000]`` prints:

* decision: :func:`engine.batch.queues.decide` over ``--runnable`` RUNNABLE jobs kept in the
  BatchService's in-memory index, median and max of 200 decisions, in two shapes: the steady
  state (capacity full, mixed sizes) and the worst case (no job fits, yet the free room is above
  the smallest request, so the scan runs to its ``max_scan`` bound); and two shapes of issue 17:
  a fair-share queue (10 shares) with the capacity full, and a preempting queue's head job
  choosing its victims among 200 RUNNING jobs; and an environment of 64 Docker hosts whose free
  vCPUs add up to room for many jobs while no one host has room for any;
* overhead (needs dockerd): a ``true`` job from submit to SUCCEEDED, median of ``--overhead``
  sequential jobs, against bare create+start+wait+remove on the same client; the ratio;
* throughput (needs dockerd): ``--jobs`` short jobs through an environment of 8 vCPUs (1 each).

``--no-docker`` runs the decision part only.

Measured on a 2-core CI machine (dockerd 20.10, busybox:1.36), ``--overhead 10 --jobs 500``::

    decision (steady state, 10000 RUNNABLE): median 0.005 ms, max 0.050 ms
    decision (worst case, 10000 RUNNABLE): median 0.211 ms, max 0.352 ms
    overhead: bare 252 ms, true job submit->SUCCEEDED 247 ms, ratio 0.98   (200-job run: 1.11)
    throughput: 500 jobs through 8 vCPUs in 72.3s = 6.9 jobs/s (500 SUCCEEDED; submitting took 0.33s)

Throughput is the daemon's create/start/remove rate on 2 cores (DESIGN.md: ~5 containers/s one
after another), not the scheduler's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from engine.batch.queues import Environment, Queue, RunnableIndex, Slot, decide

IMAGE = "busybox:1.36"
LABEL = {"sluice.bench": "batch"}


def decision_times(runnable: int, worst: bool, rounds: int = 200) -> list[float]:
    env = Environment("local", 8, 32 << 30, used_vcpus=6.5 if worst else 7.5)
    queues = [Queue("default", 1, ("local",)), Queue("high", 5, ("local",))]
    index = RunnableIndex()
    now = time.time()
    for i in range(runnable):
        q = queues[i % 2].name
        vcpus = 2.0 if worst else 1.0 + (i % 4)
        index.add(q, Slot(f"j{i}", i, vcpus, 256 << 20, now))
    if worst:
        index.add("default", Slot("tiny", runnable + 1, 0.25, 64 << 20, now))
    envs = {"local": env}
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        views = [index.view(q) for q in queues]
        decide(views, envs, time.time())
        times.append(time.perf_counter() - t0)
    return times


def fair_times(runnable: int, rounds: int = 200) -> list[float]:
    from engine.batch.fairshare import FairView, SchedulingPolicy

    policy = SchedulingPolicy("p", 3600, 0, tuple((f"s{i}", 1.0 + i) for i in range(10)))
    queue = Queue("fair", 1, ("local",), policy="p")
    env = Environment("local", 8, 32 << 30, used_vcpus=7.5)
    index = RunnableIndex()
    now = time.time()
    for i in range(runnable):
        index.add("fair", Slot(f"j{i}", i, 1.0 + (i % 4), 256 << 20, now, f"s{i % 10}"))
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        view = index.view(queue)
        shares = index.shares("fair")
        view.fair = FairView(policy, shares, {"s0": 4.0, "s1": 3.5}, {s: 100.0 for s in shares}, 8)
        decide([view], {"local": env}, time.time())
        times.append(time.perf_counter() - t0)
    return times


def preempt_times(runnable: int, rounds: int = 200) -> list[float]:
    from engine.batch.queues import Preemption, Running

    low = Queue("low", 1, ("local",))
    high = Queue("high", 10, ("local",), preemption=Preemption(True, 10))
    env = Environment("local", 200, 1 << 40, used_vcpus=200)
    index = RunnableIndex()
    now = time.time()
    for i in range(runnable):
        index.add("low", Slot(f"l{i}", i, 1.0, 256 << 20, now))
    index.add("high", Slot("h", runnable + 1, 4.0, 256 << 20, now))
    running = [Running(f"r{i}", "local", 1, now - i, 1.0, 256 << 20) for i in range(200)]
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        decide([index.view(low), index.view(high)], {"local": env}, time.time(), running=running)
        times.append(time.perf_counter() - t0)
    return times


def hosts_times(runnable: int, n_hosts: int = 64, rounds: int = 200) -> list[float]:
    """An environment of ``n_hosts`` Docker hosts, 0.5 vCPU free on each (32 in all), 1-vCPU jobs:
    the sum has room, no host does (the worst case of per-host placement)."""
    from engine.batch.hosts import IN_SERVICE, Host

    hosts = [
        Host(f"h{i}", f"unix:///h{i}", 2, 4 << 30, state=IN_SERVICE, used_vcpus=1.5) for i in range(n_hosts)
    ]
    env = Environment("fleet", 2 * n_hosts, (4 << 30) * n_hosts, used_vcpus=1.5 * n_hosts, hosts=hosts)
    queue = Queue("default", 1, ("fleet",))
    index = RunnableIndex()
    now = time.time()
    for i in range(runnable):
        index.add("default", Slot(f"j{i}", i, 1.0, 256 << 20, now))
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        decide([index.view(queue)], {"fleet": env}, time.time())
        times.append(time.perf_counter() - t0)
    return times


async def docker_part(n_overhead: int, n_jobs: int) -> None:
    from engine.batch.service import BatchService
    from engine.bus.bus import Bus
    from engine.executors.docker_api import DockerClient
    from engine.store.store import Store

    from .docker_overhead import bare_once

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "sluice.db")
        await store.open()
        client = DockerClient()
        svc = BatchService(store, Bus(store, {}), Path(tmp), DockerClient(), tick_s=0.5)
        svc.labels.update(LABEL)
        await svc.start()
        await svc.put_environment({"name": "local", "max_vcpus": 8, "max_memory": 8 << 30}, create=False)
        loop = asyncio.create_task(svc.run())
        box = {"image": IMAGE, "command": ["true"], "vcpus": 1, "memory": 32 << 20, "network": "none"}
        try:
            bare, jobs = [], []
            for _ in range(n_overhead):
                bare.append(await bare_once(client, LABEL))
                t0 = time.perf_counter()
                out = await svc.submit({"queue": "default", "container": box})
                await svc.wait(out["job_id"])
                jobs.append(time.perf_counter() - t0)
            b, j = statistics.median(bare), statistics.median(jobs)
            print(f"overhead: bare {b * 1e3:.0f} ms, true job submit->SUCCEEDED {j * 1e3:.0f} ms", end="")
            print(f", ratio {j / b:.2f}")
            t0 = time.perf_counter()
            ids = [
                (await svc.submit({"queue": "default", "container": box}))["job_id"] for _ in range(n_jobs)
            ]
            submitted = time.perf_counter() - t0
            statuses = await asyncio.gather(*(svc.wait(i) for i in ids))
            took = time.perf_counter() - t0
            ok = sum(s == "SUCCEEDED" for s in statuses)
            print(
                f"throughput: {n_jobs} jobs through 8 vCPUs in {took:.1f}s = {n_jobs / took:.1f} jobs/s "
                f"({ok} SUCCEEDED; submitting took {submitted:.2f}s)"
            )
        finally:
            loop.cancel()
            await svc.aclose()
            await client.aclose()
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runnable", type=int, default=10_000)
    parser.add_argument("--overhead", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2_000)
    parser.add_argument("--no-docker", action="store_true")
    args = parser.parse_args()
    for worst in (False, True):
        times = decision_times(args.runnable, worst)
        label = "worst case" if worst else "steady state"
        print(
            f"decision ({label}, {args.runnable} RUNNABLE): median {statistics.median(times) * 1e3:.3f} ms, "
            f"max {max(times) * 1e3:.3f} ms"
        )
    for label, times in (
        ("fair share, 10 shares", fair_times(args.runnable)),
        ("preempting, 200 RUNNING", preempt_times(args.runnable)),
        ("64 hosts, room in the sum only", hosts_times(args.runnable)),
    ):
        print(
            f"decision ({label}, {args.runnable} RUNNABLE): median {statistics.median(times) * 1e3:.3f} ms, "
            f"max {max(times) * 1e3:.3f} ms"
        )
    if not args.no_docker:
        asyncio.run(docker_part(args.overhead, args.jobs))


if __name__ == "__main__":
    main()
