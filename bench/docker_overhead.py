"""What ContainerRunner adds on top of the bare Docker API, per container attempt.

``python -m bench.docker_overhead [--n 10] [--concurrent 8]`` prints, for ``busybox true``:

* bare: create + start + wait + remove over :class:`DockerClient` (the floor),
* runner: :meth:`ContainerRunner.run` (image check, labels, log streaming, inspect, remove),
* overlapped: ``--concurrent`` runner attempts at once, as containers per second,

as medians of ``--n`` sequential runs. Needs dockerd and ``busybox:1.36`` (``.ci/docker-setup.sh``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from engine.executors.docker import ContainerRequest, ContainerRunner
from engine.executors.docker_api import DockerClient

IMAGE = "busybox:1.36"
LABELS = {"sluice.bench": "docker-overhead"}


async def bare_once(client: DockerClient, labels: dict[str, str] = LABELS) -> float:
    """One bare API cycle of busybox ``true`` (create, start, wait, remove): the figure jobs are held to."""
    config = {"Image": IMAGE, "Cmd": ["true"], "Labels": labels, "HostConfig": {"NetworkMode": "none"}}
    started = time.perf_counter()
    cid = await client.create(None, config)
    await client.start(cid)
    await client.wait(cid)
    await client.remove(cid, force=True)
    return time.perf_counter() - started


def request(n: int, log_dir: Path) -> ContainerRequest:
    return ContainerRequest(
        job_id=f"bench-{n}",
        attempt=1,
        image=IMAGE,
        command=["true"],
        network="none",
        labels=LABELS,
        log_path=str(log_dir / f"{n}.log"),
    )


async def runner_once(runner: ContainerRunner, n: int, log_dir: Path) -> float:
    started = time.perf_counter()
    result = await runner.run(request(n, log_dir))
    assert result.exit_code == 0, result
    return time.perf_counter() - started


async def main(n: int, concurrent: int) -> None:
    async with DockerClient() as client:
        runner = ContainerRunner(client)
        with tempfile.TemporaryDirectory() as tmp:
            log_dir = Path(tmp)
            await bare_once(client)  # warm: page cache, API version negotiation, image lookup
            bare = [await bare_once(client) for _ in range(n)]
            run = [await runner_once(runner, i, log_dir) for i in range(n)]
            started = time.perf_counter()
            await asyncio.gather(*(runner_once(runner, 1000 + i, log_dir) for i in range(concurrent)))
            wall = time.perf_counter() - started
    bare_ms, run_ms = statistics.median(bare) * 1e3, statistics.median(run) * 1e3
    print(f"bare API create+start+wait+remove  median {bare_ms:7.1f} ms  (n={n})")
    print(f"ContainerRunner.run                median {run_ms:7.1f} ms  (n={n})")
    print(f"runner overhead                           {run_ms - bare_ms:+7.1f} ms")
    rate = concurrent / wall
    print(f"{concurrent} runner attempts at once         {wall:7.2f} s wall, {rate:.1f} containers/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--concurrent", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.concurrent))
