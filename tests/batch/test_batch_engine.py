"""Batch jobs inside the Engine: workflow container steps end to end, and crash recovery.

The crash test runs a real engine in a subprocess, kills it with SIGKILL while its containers
run, then starts a new engine on the same data dir: the running container is re-adopted (not
created again: Docker's own event log is the witness), the one that exited meanwhile has its
exit code collected, a job caught STARTING without a container starts again, and a managed
container of no known job is reported, not killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from engine.executors.docker_api import DockerClient
from tests.support.docker import TEST_IMAGE, TEST_LABEL
from tests.support.engines import MakeEngine, write_flow
from tests.support.paths import ROOT
from tests.support.waiting import wait_until as until

pytestmark = pytest.mark.docker


def read(path: str) -> str:
    return Path(path).read_text()


FLOW = """\
name: boxes
params:
  who: {type: string, default: ada}
steps:
  hello:
    container:
      image: busybox:1.36
      command: [sh, -c, 'echo "hi $WHO $N"']
      env: {WHO: "{{ params.who }}", N: 7}
      vcpus: 0.5
      memory: 32MiB
      network: none
  fan:
    needs: [hello]
    array: 3
    container:
      image: busybox:1.36
      command: [sh, -c, 'echo item $SLUICE_ARRAY_INDEX']
      vcpus: 0.5
      memory: 32MiB
      network: none
    retry:
      attempts: 2
      evaluate_on_exit:
        - {on_exit_code: "137", action: retry}
      interval: 2s
      backoff_rate: 3
      jitter: none
    timeout: 30s
"""


async def test_workflow_container_steps_run_as_batch_jobs(
    make_engine: MakeEngine, tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> None:
    engine = await make_engine(write_flow(tmp_path / "flows", FLOW).parent)
    assert engine.batch is not None and engine.orchestrator.containers is engine.batch
    engine.batch.labels[TEST_LABEL] = docker_test_label
    summary = await engine.run_to_end("boxes", {"who": "grace"}, timeout_s=60)
    assert summary["status"] == "SUCCEEDED", summary
    rows = await engine.store.read(
        lambda c: dict(
            c.execute("SELECT step, job_id FROM steps WHERE run_id=? AND idx=-1", (summary["run_id"],))
        )
    )
    hello = await engine.batch.describe(rows["hello"])
    assert hello is not None and hello["status"] == "SUCCEEDED" and hello["run_id"] == summary["run_id"]
    assert read(hello["attempts"][0]["log_path"]).strip() == "hi grace 7"
    fan = await engine.batch.describe(rows["fan"])
    assert fan is not None and fan["array_size"] == 3 and fan["array_status_summary"]["SUCCEEDED"] == 3
    assert fan["spec"]["timeout"] == 30
    assert fan["spec"]["retry_strategy"] == {  # the step's retry, a delay between attempts included
        "attempts": 2,
        "evaluate_on_exit": [{"action": "RETRY", "on_exit_code": "137"}],
        "interval_s": 2.0,
        "backoff_rate": 3.0,
        "jitter": "none",
    }
    logs = await engine.store.read(
        lambda c: c.execute(
            "SELECT step, idx, log_path FROM attempts WHERE run_id=? ORDER BY step, idx", (summary["run_id"],)
        ).fetchall()
    )
    assert [(r[0], r[1]) for r in logs] == [("fan", 0), ("fan", 1), ("fan", 2), ("hello", -1)]
    assert read(logs[3][2]).strip() == "hi grace 7"  # `sluice logs RUN` reads these
    for i in range(3):
        child = await engine.batch.describe(f"{rows['fan']}:{i}")
        assert child is not None and read(child["attempts"][0]["log_path"]).strip() == f"item {i}"


async def test_failing_container_step_fails_the_run_with_the_reason(
    make_engine: MakeEngine, tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> None:
    flow = """\
    name: oops
    steps:
      boom:
        container: {image: "busybox:1.36", command: [sh, -c, "exit 7"], vcpus: 0.5, memory: 32MiB}
    """
    engine = await make_engine(write_flow(tmp_path / "flows", flow).parent)
    engine.batch.labels[TEST_LABEL] = docker_test_label
    summary = await engine.run_to_end("oops", timeout_s=60)
    assert summary["status"] == "FAILED"
    assert "exit code 7" in (summary["reason"] or "")


CHILD = """
import asyncio, json, sys
from pathlib import Path
from engine.engine import Engine, Settings

def box(cmd):
    return {"image": "TEST_IMAGE", "command": cmd, "vcpus": 0.25, "memory": 32 << 20, "network": "none"}

async def main():
    engine = Engine(Settings(data_dir=Path(sys.argv[1]), workers=1), {})
    await engine.start()
    batch = engine.batch
    batch.labels["TEST_LABEL"] = sys.argv[2]
    off = {"name": "off", "max_vcpus": 1, "max_memory": 1 << 30, "state": "DISABLED"}
    await batch.put_environment(off, create=True)
    await batch.put_queue({"name": "held", "priority": 1, "environments": ["off"]}, create=True)
    commands = {"long": "sleep 3; echo done", "short": "sleep 0.3; exit 3", "held": "echo again"}
    ids = {}
    for key, cmd in commands.items():
        req = {"queue": "held" if key == "held" else "default", "container": box(["sh", "-c", cmd])}
        ids[key] = (await batch.submit(req))["job_id"]
    while any(batch.jobs[ids[k]].status != "RUNNING" for k in ("long", "short")):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    print(json.dumps(ids), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
""".replace("TEST_IMAGE", TEST_IMAGE).replace("TEST_LABEL", TEST_LABEL)


async def _creations(client: DockerClient, label: str, since: float) -> list[str]:
    filters = {"label": [f"{TEST_LABEL}={label}"], "type": ["container"], "event": ["create"]}
    params = {"since": f"{since:.3f}", "until": f"{time.time() + 0.5:.3f}", "filters": json.dumps(filters)}
    resp = await client._open("GET", "/events", params=params)
    async with resp:
        text = await resp.text()
    return [json.loads(line)["id"] for line in text.splitlines() if line.strip()]


async def test_crash_then_restart_readopts_without_starting_twice(
    make_engine: MakeEngine, tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> None:
    data = tmp_path / "data"
    t0 = time.time() - 1
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(data),
        docker_test_label,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)  # type: ignore[union-attr]
        ids = json.loads(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    # the "held" job is caught between its STARTING commit and its container's creation
    with sqlite3.connect(data / "sluice.db") as conn:
        conn.execute(
            "UPDATE jobs SET status='STARTING', attempts=1, environment='local' WHERE id=?", (ids["held"],)
        )
    stranger = await docker_client.create(
        None,
        {
            "Image": TEST_IMAGE,
            "Cmd": ["sleep", "30"],
            "Labels": {
                "sluice.managed": "true",
                "sluice.job-id": "j-stranger",
                TEST_LABEL: docker_test_label,
            },
            "HostConfig": {"NetworkMode": "none"},
        },
    )
    await docker_client.start(stranger)
    await asyncio.sleep(0.8)  # "short" exits while no engine watches
    flows = tmp_path / "flows"
    flows.mkdir()
    engine = await make_engine(flows, data_dir=data)
    batch = engine.batch
    batch.labels[TEST_LABEL] = docker_test_label
    assert batch.jobs[ids["held"]].status == "RUNNABLE"  # started again, once its environment opens
    await batch.put_environment({"name": "off", "state": "ENABLED"}, create=False)
    assert await batch.wait(ids["long"], 30) == "SUCCEEDED"
    assert await batch.wait(ids["short"], 30) == "FAILED"
    assert await batch.wait(ids["held"], 30) == "SUCCEEDED"
    long_d, short_d = await batch.describe(ids["long"]), await batch.describe(ids["short"])
    assert long_d and short_d
    assert read(long_d["attempts"][0]["log_path"]).count("done") == 1
    assert short_d["exit_code"] == 3 and len(short_d["attempts"]) == 1
    created = await _creations(docker_client, docker_test_label, t0)
    assert len(created) == 4, created  # long, short, the stranger, held once
    assert created.count(long_d["attempts"][0]["container_id"]) == 1
    audit = await engine.store.read(
        lambda c: [r[0] for r in c.execute("SELECT subject FROM audit WHERE kind='unknown-container'")]
    )
    assert stranger in audit
    assert (await docker_client.inspect(stranger))["State"]["Running"]  # reported, not killed
    await docker_client.remove(stranger, force=True)


async def test_graceful_stop_leaves_containers_for_the_next_start(
    make_engine: MakeEngine, tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    data = tmp_path / "data"
    engine = await make_engine(flows, data_dir=data)
    engine.batch.labels[TEST_LABEL] = docker_test_label
    box = {"image": TEST_IMAGE, "command": ["sh", "-c", "sleep 1.5; echo fine"], "memory": 32 << 20}
    job = (await engine.batch.submit({"queue": "default", "container": box}))["job_id"]
    await until(lambda: engine.batch.jobs[job].status == "RUNNING")
    await engine.stop(grace_s=0)
    assert [c["State"] for c in await docker_client.list({TEST_LABEL: docker_test_label})] == ["running"]
    again = await make_engine(flows, data_dir=data)
    assert await again.batch.wait(job, 30) == "SUCCEEDED"
    desc = await again.batch.describe(job)
    assert desc is not None and len(desc["attempts"]) == 1
    assert read(desc["attempts"][0]["log_path"]) == "fine\n"


async def test_cancelling_a_run_terminates_its_job(
    make_engine: MakeEngine, tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> None:
    flow = """\
    name: long
    steps:
      nap:
        container: {image: "busybox:1.36", command: [sleep, "30"], vcpus: 0.5, memory: 32MiB}
    """
    engine = await make_engine(write_flow(tmp_path / "flows", flow).parent)
    engine.batch.labels[TEST_LABEL] = docker_test_label
    engine.batch.stop_grace_s = 1.0
    run_id = await engine.start_run("long")
    await until(lambda: any(j.status == "RUNNING" for j in engine.batch.jobs.values()))
    (job_id,) = list(engine.batch.jobs)
    await engine.orchestrator.cancel(run_id, "changed my mind")
    assert await engine.batch.wait(job_id, 10) == "FAILED"
    desc = await engine.batch.describe(job_id)
    assert desc is not None and desc["status_reason"] == "run cancelled: changed my mind"
    assert await docker_client.list({TEST_LABEL: docker_test_label}) == []
