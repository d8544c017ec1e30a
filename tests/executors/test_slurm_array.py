"""Array children placed together are one ``sbatch --array``: Slurm's task names, and finding them again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.executors.docker import EXITED, ContainerRequest
from engine.executors.docker_api import DockerClient
from engine.executors.slurm import SlurmConfig, SlurmRunner
from engine.executors.slurm_array import compress, expand, task_indices
from tests.support.slurm import cancel_and_wait, sluice_slurm_jobs
from tests.support.waiting import wait_until as until


def test_indices_are_written_and_read_as_slurm_does() -> None:
    assert compress([5, 0, 1, 2, 7, 8, 2]) == "0-2,5,7-8"
    assert compress([3]) == "3"
    assert expand("0-2,5,7-8") == [0, 1, 2, 5, 7, 8]
    assert expand("1,3-4%2") == [1, 3, 4]  # a throttle after % is not an index
    # squeue --json: a task of its own, tasks still waiting together, and a plain job
    assert task_indices({"array_job_id": 121, "array_task_id": 3, "array_task_string": ""}) == [3]
    assert task_indices({"array_job_id": 121, "array_task_id": None, "array_task_string": "1,3-4"}) == [
        1,
        3,
        4,
    ]
    assert task_indices({"array_job_id": 0, "array_task_id": None, "array_task_string": ""}) == []


@pytest.mark.docker
@pytest.mark.slurm
async def test_children_placed_together_are_one_array_found_again_by_a_fresh_runner(
    slurm_ready: None,
    make_container_request: Callable[..., ContainerRequest],
    tmp_path: Path,
    docker_client: DockerClient,
    docker_test_label: str,
) -> None:
    config = SlurmConfig.from_json({"shared_dir": str(tmp_path / "shared"), "poll_s": 0.3})
    runner = SlurmRunner(config, pull_timeout_s=10.0)
    parent = f"{docker_test_label}-fan"
    reqs = [
        make_container_request(
            job_id=f"{parent}:{i}",
            command=["sh", "-c", "sleep 2; exit $SLUICE_ARRAY_INDEX"],
            env={"SLUICE_ARRAY_INDEX": str(i)},
            vcpus=0.1,
        )
        for i in (0, 2, 3)
    ]
    for req in reqs:  # as Attempts.launch does, inside one scheduling decision
        runner.expect(req.job_id, req.attempt)
    tasks = [asyncio.create_task(runner.run(req)) for req in reqs]
    try:
        await until(lambda: len(runner.running) == 3, timeout_s=60, what="three handles", step_s=0.05)
        handles = {key[0]: h for key, h in runner.running.items()}
        array = {h.split("_")[0] for h in handles.values()}
        assert len(array) == 1 and runner.arrays.submissions == 1
        assert handles == {req.job_id: f"{next(iter(array))}_{req.job_id[-1]}" for req in reqs}
        # a runner that knows nothing (an engine after kill -9, before the ids were stored)
        fresh = SlurmRunner(config)
        found = {c["labels"]["sluice.job-id"]: c["id"] for c in await fresh.find_managed()}
        assert {k: v for k, v in found.items() if k.startswith(parent)} == handles
        results = await asyncio.gather(*tasks)
        assert [(r.exit_code, r.status_reason) for r in results] == [(0, EXITED), (2, EXITED), (3, EXITED)]
        assert len({j["array_job_id"] for j in sluice_slurm_jobs(parent)}) == 1
        assert not list((tmp_path / "shared" / "attempts").iterdir())  # folders and links removed
    finally:
        for task in tasks:
            task.cancel()
        await cancel_and_wait(
            lambda j: str(j.get("comment")).startswith(f"sluice.job-id={parent}"),
            docker_client,
            docker_test_label,
        )
        await runner.aclose()


@pytest.mark.docker
@pytest.mark.slurm
async def test_terminating_a_task_that_waits_with_its_siblings_ends_it_alone(
    slurm_ready: None,
    make_container_request: Callable[..., ContainerRequest],
    tmp_path: Path,
    docker_client: DockerClient,
    docker_test_label: str,
) -> None:
    """Two CPUs each: one task runs, the others wait in one squeue record; scancel A_2 takes task 2
    out of it without a trace in squeue (Slurm 22.05), so the reason must come from Sluice."""
    config = SlurmConfig.from_json({"shared_dir": str(tmp_path / "shared"), "poll_s": 0.3})
    runner = SlurmRunner(config, pull_timeout_s=10.0)
    parent = f"{docker_test_label}-wait"
    reqs = [
        make_container_request(
            job_id=f"{parent}:{i}", command=["sleep", "2"], env={"SLUICE_ARRAY_INDEX": str(i)}, vcpus=2.0
        )
        for i in range(3)
    ]
    for req in reqs:
        runner.expect(req.job_id, req.attempt)
    tasks = [asyncio.create_task(runner.run(req)) for req in reqs]
    try:
        await until(lambda: len(runner.running) == 3, timeout_s=60, what="three handles", step_s=0.05)
        await runner.terminate(runner.running[(reqs[2].job_id, 1)], grace_s=1.0, reason="Terminated by user")
        results = await asyncio.wait_for(asyncio.gather(*tasks), 120)
        assert [r.status_reason for r in results] == [EXITED, EXITED, "Terminated by user"]
        assert results[2].exit_code is None  # it never ran
    finally:
        for task in tasks:
            task.cancel()
        await cancel_and_wait(
            lambda j: str(j.get("comment")).startswith(f"sluice.job-id={parent}"),
            docker_client,
            docker_test_label,
        )
        await runner.aclose()


@pytest.mark.docker
@pytest.mark.slurm
async def test_an_array_slurm_refuses_as_a_whole_is_submitted_child_by_child(
    slurm_ready: None,
    make_container_request: Callable[..., ContainerRequest],
    tmp_path: Path,
    docker_client: DockerClient,
    docker_test_label: str,
) -> None:
    """Slurm's MaxArraySize (1001 by default, and here) refuses ``--array=1000-1001`` whole; as
    one sbatch per child did, index 1000 runs and 1001 alone is refused."""
    config = SlurmConfig.from_json({"shared_dir": str(tmp_path / "shared"), "poll_s": 0.3})
    runner = SlurmRunner(config, pull_timeout_s=10.0)
    parent = f"{docker_test_label}-big"
    reqs = [
        make_container_request(job_id=f"{parent}:{i}", command=["true"], env={"SLUICE_ARRAY_INDEX": str(i)})
        for i in (1000, 1001)
    ]
    for req in reqs:
        runner.expect(req.job_id, req.attempt)
    try:
        done, refused = await asyncio.wait_for(asyncio.gather(*(runner.run(r) for r in reqs)), 120)
        assert (done.exit_code, done.status_reason) == (0, EXITED)
        assert refused.exit_code is None and "Invalid job array specification" in refused.status_reason
        assert not list((tmp_path / "shared" / "attempts").iterdir())  # folders and links removed
    finally:
        await cancel_and_wait(
            lambda j: str(j.get("comment")).startswith(f"sluice.job-id={parent}"),
            docker_client,
            docker_test_label,
        )
        await runner.aclose()
