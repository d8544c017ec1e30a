"""Managed scaling on two real Docker daemons: what bringing a host into service costs.

``python -m bench.batch_hosts [--rounds 10]`` (needs dockerd and the second daemon of
.ci/docker-b-setup.sh) runs an environment of two 1-vCPU hosts, ``local`` and
``unix:///run/docker-b.sock``, min 0, cooldown 0, and prints medians over ``--rounds``:

* cold: submit to RUNNING of a one-vCPU job when no host is in service (check, then placement);
* warm: the same with its host already in service (min 1 keeps host a in);
* scale out: with host a busy, submit to RUNNING of a second job, which brings b in first.

Figures go in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from engine.batch.hosts import IN_SERVICE, OUT, Host
from engine.batch.service import BatchService
from engine.bus.bus import Bus
from engine.executors.docker_api import DockerClient
from engine.store.store import Store

B = "unix:///run/docker-b.sock"
LABEL = {"sluice.bench": "batch-hosts"}
BOX = {"image": "busybox:1.36", "vcpus": 1, "memory": 32 << 20, "network": "none"}


async def until(check: Callable[[], bool], timeout_s: float = 30.0) -> float:
    deadline = time.perf_counter() + timeout_s
    while not check():
        if time.perf_counter() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.002)
    return time.perf_counter()


async def run(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "sluice.db")
        await store.open()
        svc = BatchService(store, Bus(store, {}), Path(tmp), DockerClient(), tick_s=0.2)
        svc.labels.update(LABEL)
        await svc.start()
        hosts = [
            {"name": "a", "endpoint": "local", "vcpus": 1, "memory": "512MiB"},
            {"name": "b", "endpoint": B, "vcpus": 1, "memory": "512MiB"},
        ]
        await svc.put_environment({"name": "pair", "hosts": hosts, "scale_in_cooldown": 0}, create=True)
        await svc.put_queue({"name": "p", "priority": 1, "environments": ["pair"]}, create=True)
        loop = asyncio.create_task(svc.run())

        def hosts() -> list[Host]:  # an update replaces the environment: read it anew each time
            return svc.envs["pair"].hosts

        cold: list[float] = []
        warm: list[float] = []
        out: list[float] = []

        async def running(command: list[str]) -> tuple[str, float]:
            t0 = time.perf_counter()
            job_id = (await svc.submit({"queue": "p", "container": {**BOX, "command": command}}))["job_id"]
            return job_id, await until(lambda: svc.jobs[job_id].status == "RUNNING") - t0

        try:
            for _ in range(rounds):
                await svc.put_environment({"name": "pair", "min_vcpus": 0}, create=False)
                await until(lambda: all(h.state == OUT for h in hosts()))
                first, took = await running(["true"])
                cold.append(took)
                await svc.wait(first, 30)
                # min 1: host a stays in service; b comes in only for a second job at once
                await svc.put_environment({"name": "pair", "min_vcpus": 1}, create=False)
                await until(lambda: [h.state for h in hosts()] == [IN_SERVICE, OUT])
                held, took = await running(["sleep", "1"])
                warm.append(took)
                extra, took = await running(["true"])
                out.append(took)
                await svc.wait(held, 30)
                await svc.wait(extra, 30)
            for label, values in (
                ("cold (no host in service)", cold),
                ("warm (host in service)", warm),
                ("scale out (second host checked first)", out),
            ):
                median = statistics.median(values) * 1e3
                print(f"{label}: submit to RUNNING, median {median:.0f} ms over {len(values)}")
        finally:
            loop.cancel()
            await svc.aclose()
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    asyncio.run(run(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
