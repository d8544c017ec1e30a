"""Batch jobs on a real one-node Slurm cluster: a compute environment of ``type: slurm``.

Every job here goes through ``sbatch`` to slurmctld and slurmd on this machine, and the batch
script runs the job's image with ``docker run`` on the node (the same dockerd as the Docker
tests), so exit codes, logs, limits and labels are real. ``.ci/slurm-setup.sh`` starts the
cluster; in CI a test that cannot reach it fails.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.batch.jobs import JobError
from engine.batch.service import BatchService
from engine.executors.docker import TIMED_OUT
from tests.support.batch import MakeBatch, box
from tests.support.paths import ROOT
from tests.support.slurm import MakeSlurmBatch, sluice_slurm_jobs
from tests.support.waiting import wait_until as until

pytestmark = [pytest.mark.docker, pytest.mark.slurm]


def log_of(desc: dict[str, Any], attempt: int = -1) -> str:
    return Path(desc["attempts"][attempt]["log_path"]).read_text()


async def run(svc: BatchService, timeout_s: float = 90, **req: Any) -> dict[str, Any]:
    out = await svc.submit({"queue": "hpc", **req})
    await svc.wait(out["job_id"], timeout_s)
    desc = await svc.describe(out["job_id"])
    assert desc is not None
    return desc


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)


def scontrol(slurm_id: str) -> dict[str, str]:
    text = subprocess.run(
        ["scontrol", "show", "job", "-o", slurm_id], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return dict(part.split("=", 1) for part in text.split() if "=" in part)


async def test_a_job_runs_its_container_through_slurm(slurm_batch: MakeSlurmBatch, tmp_path: Path) -> None:
    svc = await slurm_batch()
    cmd = ["sh", "-c", 'echo "hi $WHO from $AWS_BATCH_CE_NAME"; echo oops >&2; exit 0']
    desc = await run(svc, name="hello", container=box(cmd, environment={"WHO": "ada; $(rm -rf /)"}))
    assert desc["status"] == "SUCCEEDED", desc
    assert desc["environment"] == "slurm" and desc["exit_code"] == 0
    attempt = desc["attempts"][0]
    assert attempt["slurm_job_id"].isdigit() and attempt["container_id"]
    # env is data, never shell text; stdout and stderr both reach the log (in either order)
    assert sorted(log_of(desc).splitlines()) == ["hi ada; $(rm -rf /) from slurm", "oops"]
    # the result is recorded from the script's result file, while the script still removes its
    # container; Slurm calls the job COMPLETED a moment later
    await until(
        lambda: scontrol(attempt["slurm_job_id"])["JobState"] == "COMPLETED", timeout_s=30, step_s=0.3
    )
    shown = scontrol(attempt["slurm_job_id"])
    assert shown["Partition"] == "debug"
    assert shown["Comment"] == f"sluice.job-id={desc['job_id']}"  # the attempt label follows a space
    attempts = tmp_path / "shared" / "attempts"
    assert not attempts.exists() or not any(attempts.iterdir())  # removed once the result is recorded


@pytest.mark.timeout(300)  # 20 jobs two at a time on this 2-CPU node; ~4 s each under load
async def test_an_array_of_20_reads_its_index_from_slurm(slurm_batch: MakeSlurmBatch) -> None:
    svc = await slurm_batch()
    cmd = ["sh", "-c", 'echo "$SLUICE_ARRAY_INDEX $AWS_BATCH_JOB_ARRAY_INDEX"']
    desc = await run(svc, timeout_s=240, name="fan", array_size=20, container=box(cmd))
    assert desc["status"] == "SUCCEEDED", desc
    children = await svc.list_jobs(parent=desc["job_id"], limit=50)
    assert len(children) == 20
    tasks = set()
    for child in children:
        full = await svc.describe(child["job_id"])
        assert full is not None and full["status"] == "SUCCEEDED"
        i = full["array_index"]
        assert log_of(full) == f"{i} {i}\n"
        handle = full["attempts"][0]["slurm_job_id"]
        tasks.add(handle.split("_")[0])
        shown = scontrol(handle)
        assert shown["ArrayTaskId"] == str(i) and handle.endswith(f"_{i}")  # Slurm hands the index down
    # all 20 fit at once (0.5 vCPU of 16 each): one decision placed them, so one sbatch --array=0-19
    assert len(tasks) == 1
    shown = scontrol(tasks.pop())
    assert shown["Comment"] == f"sluice.job-id={desc['job_id']}:%a"  # the attempt label follows a space


async def test_a_dependency_chain_runs_in_order(slurm_batch: MakeSlurmBatch) -> None:
    svc = await slurm_batch()
    first = await svc.submit({"queue": "hpc", "name": "a", "container": box(["sh", "-c", "sleep 1; echo a"])})
    second = await svc.submit(
        {"queue": "hpc", "name": "b", "depends_on": [first["job_id"]], "container": box(["echo", "b"])}
    )
    third = await svc.submit(
        {"queue": "hpc", "name": "c", "depends_on": [second["job_id"]], "container": box(["echo", "c"])}
    )
    assert await svc.wait(third["job_id"], 120) == "SUCCEEDED"
    descs = [await svc.describe(j["job_id"]) for j in (first, second, third)]
    for before, after in itertools.pairwise(descs):
        assert before and after
        assert after["attempts"][0]["started_at"] >= before["attempts"][0]["stopped_at"]


async def test_a_timeout_stops_the_container_and_slurm_has_a_time_limit(slurm_batch: MakeSlurmBatch) -> None:
    svc = await slurm_batch()
    t0 = time.monotonic()
    desc = await run(svc, name="slow", container=box(["sleep", "60"]), timeout=2)
    assert desc["status"] == "FAILED" and desc["status_reason"] == TIMED_OUT, desc
    assert time.monotonic() - t0 < 30
    shown = scontrol(desc["attempts"][0]["slurm_job_id"])
    assert shown["TimeLimit"] == "00:02:00"  # 2 s + grace + a minute, rounded up to Slurm's minutes


async def test_terminate_while_running_stops_it(slurm_batch: MakeSlurmBatch) -> None:
    svc = await slurm_batch()
    out = await svc.submit({"queue": "hpc", "name": "long", "container": box(["sleep", "120"])})
    job_id = out["job_id"]
    await until(lambda: svc.jobs[job_id].status == "RUNNING", timeout_s=60)
    t0 = time.monotonic()
    await svc.terminate(job_id, "no longer needed")
    assert await svc.wait(job_id, 60) == "FAILED"
    assert time.monotonic() - t0 < 30
    desc = await svc.describe(job_id)
    assert desc is not None and desc["status_reason"] == "no longer needed"
    await until(
        lambda: scontrol(desc["attempts"][0]["slurm_job_id"])["JobState"] == "CANCELLED", timeout_s=30
    )


async def test_exit_code_rules_retry_and_then_exit(slurm_batch: MakeSlurmBatch) -> None:
    svc = await slurm_batch()
    retry = {
        "attempts": 3,
        "evaluate_on_exit": [
            {"on_exit_code": "3", "action": "retry"},
            {"on_exit_code": "*", "action": "exit"},
        ],
    }
    flaky = ["sh", "-c", '[ "$AWS_BATCH_JOB_ATTEMPT" = 2 ] || exit 3']
    desc = await run(svc, name="flaky", container=box(flaky, retry_strategy=retry))
    assert desc["status"] == "SUCCEEDED" and len(desc["attempts"]) == 2, desc
    ids = [a["slurm_job_id"] for a in desc["attempts"]]
    assert len(set(ids)) == 2 and desc["attempts"][0]["exit_code"] == 3
    broken = await run(svc, name="broken", container=box(["sh", "-c", "exit 4"], retry_strategy=retry))
    assert broken["status"] == "FAILED" and broken["exit_code"] == 4 and len(broken["attempts"]) == 1


async def test_a_job_waiting_for_resources_shows_slurms_reason(slurm_batch: MakeSlurmBatch) -> None:
    svc = await slurm_batch()
    cpus = os.cpu_count() or 2
    whole = box(["sleep", "120"], vcpus=cpus)
    hog = await svc.submit({"queue": "hpc", "name": "hog", "container": whole})
    await until(lambda: svc.jobs[hog["job_id"]].status == "RUNNING", timeout_s=60)
    late = await svc.submit({"queue": "hpc", "name": "late", "container": whole})

    async def reason() -> str:
        desc = await svc.describe(late["job_id"])
        return str(desc and desc["status_reason"])

    # what describe shows, from the store: Slurm's own reason, while Sluice's state is STARTING
    assert await until(
        lambda: _is(reason(), "PENDING (Resources) in Slurm (slurm)"), timeout_s=30, step_s=0.2
    )
    assert svc.jobs[late["job_id"]].status == "STARTING"
    await svc.terminate(late["job_id"])
    await svc.terminate(hog["job_id"])
    assert await svc.wait(late["job_id"], 60) == "FAILED"
    assert await svc.wait(hog["job_id"], 60) == "FAILED"


CHILD = """
import asyncio, json, sys
from engine.batch.jobs import JobError
from engine.batch.service import BatchService
from engine.bus.bus import Bus
from engine.executors.docker_api import DockerClient
from engine.store.store import Store

async def main(data, shared, label, mode):
    store = Store(data + "/sluice.db")
    await store.open()
    svc = BatchService(store, Bus(store, {}), data, DockerClient(), stop_grace_s=1.0, tick_s=0.2)
    svc.labels["sluice.test"] = label
    await svc.start()
    asyncio.ensure_future(svc.run())
    slurm = {"shared_dir": shared, "poll_s": 0.3}
    env = {"name": "slurm", "type": "slurm", "max_vcpus": 16, "max_memory": 16 << 30, "slurm": slurm}
    await svc.put_environment(env, create=True)
    await svc.put_queue({"name": "hpc", "priority": 5, "environments": ["slurm"]}, create=True)
    box = {"image": "busybox:1.36", "vcpus": 0.5, "memory": 32 << 20, "network": "none"}
    ids = {}
    if mode == "array":  # 4 children, 2 at a time on the 2-CPU node: 2 run, 2 wait in Slurm
        cmd = 'sleep 3; echo "task $SLUICE_ARRAY_INDEX"'
        ids["array"] = (await svc.submit({"queue": "hpc", "name": "fan", "array_size": 4,
                                          "container": {**box, "command": ["sh", "-c", cmd]}}))["job_id"]
        children = [f"{ids['array']}:{i}" for i in range(4)]
        while sum(svc.jobs[c].status == "RUNNING" for c in children if c in svc.jobs) < 2:
            await asyncio.sleep(0.1)
        print(json.dumps(ids), flush=True)
        await asyncio.sleep(3600)
    for name, cmd in (("long", "sleep 6; echo done"), ("short", "echo quick; exit 3")):
        ids[name] = (await svc.submit(
            {"queue": "hpc", "name": name, "container": {**box, "command": ["sh", "-c", cmd]}}))["job_id"]
    while any(svc.jobs[i].status != "RUNNING" for i in ids.values()):
        await asyncio.sleep(0.1)
    print(json.dumps(ids), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_kill_9_while_jobs_run_in_slurm_then_restart_submits_nothing_twice(
    batch: MakeBatch, slurm_batch: MakeSlurmBatch, tmp_path: Path, docker_test_label: str
) -> None:
    data, shared = tmp_path / "data", tmp_path / "shared"
    shared.mkdir(exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(data), str(shared), docker_test_label, "jobs",
        stdout=asyncio.subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 90)  # type: ignore[union-attr]
        ids = json.loads(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    await asyncio.sleep(2)  # "short" ends in Slurm while no engine watches
    svc = await slurm_batch()  # the same data dir: recovery follows the Slurm jobs
    assert await svc.wait(ids["long"], 60) == "SUCCEEDED"
    assert await svc.wait(ids["short"], 60) == "FAILED"
    long_d, short_d = await svc.describe(ids["long"]), await svc.describe(ids["short"])
    assert long_d and short_d
    assert log_of(long_d).count("done") == 1 and log_of(short_d) == "quick\n"
    assert short_d["exit_code"] == 3 and len(short_d["attempts"]) == 1
    for job_id in ids.values():
        mine = f"sluice.job-id={job_id} "
        submitted = [j for j in sluice_slurm_jobs(job_id) if j["comment"].startswith(mine)]
        assert len(submitted) == 1, submitted  # sbatch ran once for it, before and after the crash


async def test_kill_9_under_an_array_then_restart_finds_its_tasks_and_submits_nothing_twice(
    batch: MakeBatch, slurm_batch: MakeSlurmBatch, tmp_path: Path, docker_test_label: str
) -> None:
    data, shared = tmp_path / "data", tmp_path / "shared"
    shared.mkdir(exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(data), str(shared), docker_test_label, "array",
        stdout=asyncio.subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 90)  # type: ignore[union-attr]
        parent = json.loads(line)["array"]
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    svc = await slurm_batch()  # recovery follows the 4 tasks: 2 running, 2 waiting in Slurm
    assert await svc.wait(parent, 120) == "SUCCEEDED"
    handles = set()
    for i in range(4):
        child = await svc.describe(f"{parent}:{i}")
        assert child and child["status"] == "SUCCEEDED" and len(child["attempts"]) == 1
        assert log_of(child) == f"task {i}\n"
        handles.add(child["attempts"][0]["slurm_job_id"])
    arrays = {h.split("_")[0] for h in handles}
    assert len(handles) == 4 and len(arrays) == 1  # one task each, of one array job
    mine = f"sluice.job-id={parent}:%a "
    submitted = {j["array_job_id"] for j in sluice_slurm_jobs(parent) if j["comment"].startswith(mine)}
    assert submitted == {int(a) for a in arrays}, submitted  # one sbatch, before the crash; none after


async def test_podman_runs_the_containers_on_the_node(slurm_batch: MakeSlurmBatch) -> None:
    svc = await slurm_batch(runtime="podman")
    cmd = ["sh", "-c", 'echo "$SLUICE_ARRAY_INDEX on $(cat /run/.containerenv >/dev/null && echo podman)"']
    desc = await run(svc, timeout_s=120, name="pods", array_size=3, container=box(cmd))
    assert desc["status"] == "SUCCEEDED", desc
    for i in range(3):
        child = await svc.describe(f"{desc['job_id']}:{i}")
        assert child is not None and log_of(child) == f"{i} on podman\n"


async def test_through_slurmrestd_an_array_is_one_submission_and_terminate_works(
    slurm_batch: MakeSlurmBatch, slurmrestd_ready: str
) -> None:
    svc = await slurm_batch(rest_url=slurmrestd_ready)
    cmd = ["sh", "-c", 'echo "rest $SLUICE_ARRAY_INDEX"']
    desc = await run(svc, timeout_s=120, name="rest", array_size=3, container=box(cmd))
    assert desc["status"] == "SUCCEEDED", desc
    handles = set()
    for i in range(3):
        child = await svc.describe(f"{desc['job_id']}:{i}")
        assert child is not None and log_of(child) == f"rest {i}\n"
        handles.add(child["attempts"][0]["slurm_job_id"].split("_")[0])
    assert len(handles) == 1
    stuck = await svc.submit({"queue": "hpc", "name": "stuck", "container": box(["sleep", "300"])})
    await until(lambda: svc.jobs[stuck["job_id"]].status == "RUNNING", timeout_s=60, step_s=0.2)
    await svc.terminate(stuck["job_id"], "enough")
    assert await svc.wait(stuck["job_id"], 60) == "FAILED"
    assert (await svc.describe(stuck["job_id"]) or {})["status_reason"].startswith("enough")


async def test_environment_settings_are_checked(batch: MakeBatch, tmp_path: Path) -> None:
    svc = await batch()
    base = {"name": "s", "type": "slurm", "max_vcpus": 4, "max_memory": 1 << 30}
    cases = [
        ({}, "slurm: a Slurm environment needs its settings"),
        ({"slurm": {"shared_dir": "relative"}}, "slurm.shared_dir: an absolute path"),
        ({"slurm": {"shared_dir": "/x", "partition": "a b"}}, "slurm.partition: a Slurm name"),
        ({"slurm": {"shared_dir": "/x", "runtime": "lxc"}}, "slurm.runtime: one of docker, podman"),
        ({"slurm": {"shared_dir": "/x", "slurmrestd": "http://h"}}, "slurm.slurmrestd: write rest_url"),
        ({"slurm": {"shared_dir": "/x", "rest_url": "h:6820"}}, "slurm.rest_url: where slurmrestd listens"),
        ({"slurm": {"shared_dir": "/x", "nodes": 3}}, "slurm.nodes: unknown setting"),
        ({"type": "k8s"}, "type: one of docker, podman, slurm"),
    ]
    for extra, message in cases:
        with pytest.raises(JobError) as err:
            await svc.put_environment({**base, **extra}, create=True)
        assert message in str(err.value), (extra, str(err.value))
    assert "s" not in svc.envs
    made = await svc.put_environment({**base, "slurm": {"shared_dir": str(tmp_path)}}, create=True)
    assert made["type"] == "slurm" and made["slurm"]["shared_dir"] == str(tmp_path)
    assert made["max_memory"] == 1 << 30


async def test_a_queue_spills_over_from_docker_to_slurm(slurm_batch: MakeSlurmBatch) -> None:
    svc = await slurm_batch()
    await svc.put_environment({"name": "local", "max_vcpus": 0.5}, create=False)
    await svc.put_queue({"name": "mixed", "priority": 3, "environments": ["local", "slurm"]}, create=True)
    ids = [
        (
            await svc.submit(
                {"queue": "mixed", "name": f"m{i}", "container": box(["sh", "-c", "sleep 2; echo ok"])}
            )
        )["job_id"]
        for i in range(2)
    ]
    for job_id in ids:
        assert await svc.wait(job_id, 90) == "SUCCEEDED"
    descs = [await svc.describe(job_id) for job_id in ids]
    assert [d and d["environment"] for d in descs] == ["local", "slurm"]  # the first fits locally
    assert all(d and log_of(d) == "ok\n" for d in descs)
    assert "slurm_job_id" not in descs[0]["attempts"][0] and descs[1]["attempts"][0]["slurm_job_id"]  # type: ignore[index]


def _node(*change: str) -> str:
    """This host's Slurm node name; with ``change``, ``scontrol update`` it (best effort)."""
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
    if change:
        subprocess.run(["scontrol", "update", f"NodeName={node}", *change], timeout=30, check=False)
    return node


async def test_a_node_failure_is_a_retryable_failure_naming_the_node(slurm_batch: MakeSlurmBatch) -> None:
    svc = await slurm_batch()
    retry = {"attempts": 2, "evaluate_on_exit": [{"on_reason": "Host*", "action": "retry"}]}
    cmd = ["sh", "-c", '[ "$AWS_BATCH_JOB_ATTEMPT" = 2 ] && echo second || sleep 120']
    out = await svc.submit({"queue": "hpc", "name": "fragile", "container": box(cmd, retry_strategy=retry)})
    job_id = out["job_id"]
    await until(lambda: svc.jobs[job_id].status == "RUNNING", timeout_s=60)
    node = await asyncio.to_thread(_node, "State=DOWN", "Reason=sluice-test-node-failure")
    try:
        await until(lambda: svc.jobs[job_id].attempts == 2, timeout_s=60, what="the second attempt")
    finally:
        await asyncio.to_thread(_node, "State=RESUME")  # ReturnToService=2 may have done it already
    assert await svc.wait(job_id, 90) == "SUCCEEDED"
    desc = await svc.describe(job_id)
    assert desc is not None
    first = desc["attempts"][0]
    assert first["reason"] == f"Host {node} failed: Slurm job {first['slurm_job_id']} ended NODE_FAIL", first
    assert log_of(desc) == "second\n"
