"""Batch jobs on a real dockerd: lifecycle, limits, arrays, dependencies, retries, OOM, timeouts,
cancel/terminate, priorities, backfill, bad input, and 100 jobs through a capacity of 2.

Every container carries the test's ``sluice.test`` label (the ``docker_client`` fixture fails a
test that leaves one behind). Sleeps are short and capacities small so the file stays fast.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest

from engine.batch.jobs import JobError
from engine.batch.service import BatchService
from engine.executors.docker import OUT_OF_MEMORY, TIMED_OUT
from engine.executors.docker_api import DockerClient
from tests.support.batch import MIB, MakeBatch, box, run_job
from tests.support.waiting import wait_until as until

pytestmark = pytest.mark.docker


def log_of(desc: dict[str, Any], attempt: int = -1) -> str:  # small files: reading inline is fine
    return Path(desc["attempts"][attempt]["log_path"]).read_text()


async def job_events(svc: BatchService, job_id: str) -> list[tuple[str, str | None]]:
    def read(conn: Any) -> list[tuple[str, str | None]]:
        rows = conn.execute("SELECT body FROM events WHERE source='aws.batch' ORDER BY seq").fetchall()
        details = [json.loads(r[0])["detail"] for r in rows]
        return [(d["status"], d.get("statusReason")) for d in details if d["jobId"] == job_id]

    return await svc.store.read(read)


def started(desc: dict[str, Any]) -> str:
    return str(desc["attempts"][-1]["started_at"])


def stopped(desc: dict[str, Any]) -> str:
    return str(desc["attempts"][-1]["stopped_at"])


async def test_lifecycle_limits_env_and_ref_substitution(
    batch: MakeBatch, docker_client: DockerClient
) -> None:
    svc = await batch()
    cmd = ["sh", "-c", 'echo "$1 $NAME $AWS_BATCH_JQ_NAME $AWS_BATCH_CE_NAME"; sleep 1', "sh"]
    cmd.append("Ref::greeting")
    spec = box(cmd, vcpus=0.5, memory=48 * MIB, environment={"NAME": "ada", "N": 3, "OBJ": {"a": 1}})
    out = await svc.submit({"queue": "default", "container": spec, "parameters": {"greeting": "hello"}})
    for _ in range(200):
        cid = svc.attempts.runner.running.get((out["job_id"], 1))
        if cid:
            break
        await asyncio.sleep(0.02)
    host = (await docker_client.inspect(cid))["HostConfig"]
    env = (await docker_client.inspect(cid))["Config"]["Env"]
    assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 48 * MIB and not host["Privileged"]
    assert "N=3" in env and 'OBJ={"a": 1}' in env and f"AWS_BATCH_JOB_ID={out['job_id']}" in env
    await svc.wait(out["job_id"], 30)
    desc = await svc.describe(out["job_id"])
    assert desc is not None and desc["status"] == "SUCCEEDED" and desc["exit_code"] == 0
    assert log_of(desc).strip() == "hello ada default local"
    states = [s for s, _ in await job_events(svc, out["job_id"])]
    assert states == ["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"]
    assert desc["attempts"][0]["container_id"] == cid


async def test_array_of_50_each_child_sees_its_index(batch: MakeBatch) -> None:
    svc = await batch(vcpus=2)
    cmd = ["sh", "-c", "echo $SLUICE_ARRAY_INDEX $AWS_BATCH_JOB_ARRAY_INDEX $AWS_BATCH_JOB_ATTEMPT"]
    out = await svc.submit({"queue": "default", "array_size": 50, "container": box(cmd, vcpus=0.25)})
    assert await svc.wait(out["job_id"], 120) == "SUCCEEDED"
    children = await svc.list_jobs(parent=out["job_id"], limit=100)
    assert len(children) == 50
    for child in children:
        desc = await svc.describe(child["job_id"])
        assert desc is not None and desc["status"] == "SUCCEEDED"
        i = child["array_index"]
        assert child["job_id"] == f"{out['job_id']}:{i}"
        assert log_of(desc).split() == [str(i), str(i), "1"]
    parent = await svc.describe(out["job_id"])
    assert parent is not None and parent["array_status_summary"]["SUCCEEDED"] == 50


async def test_n_to_n_and_sequential_order_from_timestamps(batch: MakeBatch) -> None:
    svc = await batch(vcpus=2)
    first = await svc.submit(
        {
            "queue": "default",
            "array_size": 3,
            "container": box(["sh", "-c", "sleep 0.$((3 - $SLUICE_ARRAY_INDEX))"]),
        }
    )
    second = await svc.submit(
        {
            "queue": "default",
            "array_size": 3,
            "container": box(["true"]),
            "depends_on": [{"job_id": first["job_id"], "type": "N_TO_N"}],
        }
    )
    seq = await svc.submit(
        {
            "queue": "default",
            "array_size": 3,
            "container": box(["true"]),
            "depends_on": [{"type": "SEQUENTIAL"}],
        }
    )
    for job in (second, seq):
        assert await svc.wait(job["job_id"], 60) == "SUCCEEDED"
    for i in range(3):
        a = await svc.describe(f"{first['job_id']}:{i}")
        b = await svc.describe(f"{second['job_id']}:{i}")
        assert a and b and started(b) >= stopped(a), (i, a["attempts"], b["attempts"])
        deps = [d["job_id"] for d in b["depends_on"]]
        assert deps == [f"{first['job_id']}:{i}"]
    for i in range(1, 3):
        prev = await svc.describe(f"{seq['job_id']}:{i - 1}")
        cur = await svc.describe(f"{seq['job_id']}:{i}")
        assert prev and cur and started(cur) >= stopped(prev)


async def test_failed_dependency_fails_dependents_with_its_name_and_all_done_runs(batch: MakeBatch) -> None:
    svc = await batch()
    bad = await svc.submit({"queue": "default", "container": box(["sh", "-c", "exit 2"])})
    strict = await svc.submit({"queue": "default", "container": box(["true"]), "depends_on": [bad["job_id"]]})
    loose = await svc.submit(
        {
            "queue": "default",
            "container": box(["true"]),
            "depends_on": [{"job_id": bad["job_id"], "type": "ALL_DONE"}],
        }
    )
    assert await svc.wait(strict["job_id"], 30) == "FAILED"
    assert await svc.wait(loose["job_id"], 30) == "SUCCEEDED"
    desc = await svc.describe(strict["job_id"])
    assert desc is not None and bad["job_id"] in desc["status_reason"]
    assert desc["attempts"] == []  # never started


@pytest.mark.parametrize("mode", ["STANDARD", "ALL_DONE"])
async def test_a_dependency_that_ends_while_the_submission_is_written_still_settles_it(
    batch: MakeBatch, mode: str
) -> None:
    """The submission reads its dependency's state, then is written; a dependency ending in
    between used to leave the new job PENDING for ever, waiting on a job that had already gone."""
    svc = await batch()
    await svc.put_environment({"name": "local", "state": "DISABLED"}, create=False)
    dep = (await svc.submit({"queue": "default", "container": box(["true"])}))["job_id"]
    real, ended = svc.store.write, []

    async def write(fn: Any, **kw: Any) -> Any:
        if not ended:  # the submission's own transaction: its dependency is cancelled first
            ended.append(asyncio.ensure_future(svc.cancel(dep, "gone")))
            await ended[0]
        return await real(fn, **kw)

    svc.store.write = write  # type: ignore[method-assign]
    try:
        req = {"queue": "default", "container": box(["true"]), "depends_on": [{"job_id": dep, "type": mode}]}
        job = (await svc.submit(req))["job_id"]
    finally:
        svc.store.write = real  # type: ignore[method-assign]
    assert ended and ended[0].result()["changed"] == 1
    if mode == "STANDARD":
        assert await svc.wait(job, 5) == "FAILED"
        desc = await svc.describe(job)
        assert desc is not None and desc["status_reason"] == f"Dependent job {dep} failed: gone"
    else:
        await until(lambda: svc.jobs[job].status == "RUNNABLE", 5)
    assert not svc.book.waiting_on and not svc.book.dependents


async def test_priority_order_with_capacity_one(batch: MakeBatch) -> None:
    svc = await batch(vcpus=1)
    await svc.put_queue({"name": "high", "priority": 10, "environments": ["local"]}, create=True)
    await svc.put_queue({"name": "low", "priority": 1, "environments": ["local"]}, create=True)
    blocker = await svc.submit({"queue": "low", "container": box(["sleep", "0.5"], vcpus=1)})
    ids = []
    for q in ("low", "low", "high", "high"):
        ids.append((q, (await svc.submit({"queue": q, "container": box(["true"], vcpus=1)}))["job_id"]))
    reason = svc.waiting_reason(ids[0][1])
    assert reason is not None and reason.startswith("waiting for 1 vCPU, 32 MiB; 0 free in local")
    for _, job_id in ids:
        await svc.wait(job_id, 60)
    await svc.wait(blocker["job_id"], 10)
    descs = [await svc.describe(j) for _, j in ids]
    order = [q for (q, _), _d in sorted(zip(ids, descs, strict=True), key=lambda p: started(p[1]))]
    assert order == ["high", "high", "low", "low"]
    assert [started(d) for d in descs[2:]] == sorted(started(d) for d in descs[2:])  # submission order


async def test_backfill_then_reservation_without_starvation(batch: MakeBatch) -> None:
    svc = await batch(vcpus=2, reserve_after_s=1.0)
    blocker = await svc.submit({"queue": "default", "container": box(["sleep", "4"], vcpus=1)})
    await asyncio.sleep(0.3)
    big = await svc.submit({"queue": "default", "container": box(["true"], vcpus=2)})
    early = await svc.submit({"queue": "default", "container": box(["true"], vcpus=1)})
    await svc.wait(early["job_id"], 10)  # backfilled beside the blocker while big waits
    assert svc.jobs[big["job_id"]].status == "RUNNABLE"
    await asyncio.sleep(1.2)  # big has now waited long enough to reserve local
    late = await svc.submit({"queue": "default", "container": box(["true"], vcpus=1)})
    await asyncio.sleep(0.5)
    assert svc.jobs[late["job_id"]].status == "RUNNABLE"
    assert "reserved for " + big["job_id"] in (svc.waiting_reason(late["job_id"]) or "")
    for j in (blocker, big, late):
        assert await svc.wait(j["job_id"], 30) == "SUCCEEDED"
    big_d, late_d = await svc.describe(big["job_id"]), await svc.describe(late["job_id"])
    assert big_d and late_d and started(late_d) >= started(big_d)


async def test_retry_rules_on_exit_codes(batch: MakeBatch) -> None:
    svc = await batch()
    flaky = box(
        ["sh", "-c", "echo try $AWS_BATCH_JOB_ATTEMPT; [ $AWS_BATCH_JOB_ATTEMPT -ge 3 ] || exit 3"],
        retry_strategy={"attempts": 3, "evaluate_on_exit": [{"on_exit_code": "3", "action": "RETRY"}]},
    )
    fatal = box(
        ["sh", "-c", "exit 4"],
        retry_strategy={
            "attempts": 3,
            "evaluate_on_exit": [
                {"on_exit_code": "3", "action": "RETRY"},
                {"on_reason": "*", "action": "EXIT"},
            ],
        },
    )
    unmatched = box(
        ["sh", "-c", "exit 5"],
        retry_strategy={"attempts": 2, "evaluate_on_exit": [{"on_exit_code": "9*", "action": "EXIT"}]},
    )
    a, b, c = await asyncio.gather(
        run_job(svc, container=flaky), run_job(svc, container=fatal), run_job(svc, container=unmatched)
    )
    assert a["status"] == "SUCCEEDED" and [x["exit_code"] for x in a["attempts"]] == [3, 3, 0]
    assert log_of(a, 0).strip() == "try 1" and log_of(a, 2).strip() == "try 3"
    assert b["status"] == "FAILED" and len(b["attempts"]) == 1 and b["exit_code"] == 4
    assert c["status"] == "FAILED" and len(c["attempts"]) == 2  # no rule matched: retried


def at(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


FAIL_ONCE = ["sh", "-c", "echo try $AWS_BATCH_JOB_ATTEMPT; [ $AWS_BATCH_JOB_ATTEMPT -ge 2 ] || exit 3"]


async def test_a_retry_waits_its_interval_with_backoff(batch: MakeBatch) -> None:
    """Beyond Batch: a delay between attempts (Step Functions' interval and backoff)."""
    svc = await batch()
    flaky = box(
        ["sh", "-c", "[ $AWS_BATCH_JOB_ATTEMPT -ge 3 ] || exit 3"],
        retry_strategy={"attempts": 3, "interval_s": 0.6, "backoff_rate": 2.0, "jitter": "none"},
    )
    out = await svc.submit({"queue": "default", "container": flaky})
    job = svc.jobs[out["job_id"]]
    await until(lambda: job.attempts == 1 and job.status == "RUNNABLE", 30)
    desc = await svc.describe(job.id)
    assert desc is not None and "retrying in 0.6s" in desc["status_reason"]
    assert await svc.wait(job.id, 60) == "SUCCEEDED"
    desc = await svc.describe(job.id)
    assert desc is not None
    tries = desc["attempts"]
    assert [t["exit_code"] for t in tries] == [3, 3, 0]
    first_wait = at(tries[1]["started_at"]) - at(tries[0]["stopped_at"])
    second_wait = at(tries[2]["started_at"]) - at(tries[1]["stopped_at"])
    assert 0.6 <= first_wait < 3.0 and 1.2 <= second_wait < 4.0, (first_wait, second_wait)
    reasons = [r for s, r in await job_events(svc, job.id) if s == "RUNNABLE" and r and "retrying" in r]
    assert len(reasons) == 2 and "retrying in 1.2s" in reasons[1]


async def test_a_job_cancelled_while_it_waits_to_retry_never_starts_again(batch: MakeBatch) -> None:
    svc = await batch()
    waits = box(FAIL_ONCE, retry_strategy={"attempts": 2, "interval_s": 1.0, "jitter": "none"})
    out = await svc.submit({"queue": "default", "container": waits})
    job = svc.jobs[out["job_id"]]
    await until(lambda: job.attempts == 1 and job.status == "RUNNABLE", 30)
    await svc.cancel(job.id, "not needed any more")
    await asyncio.sleep(1.5)  # past the retry time
    desc = await svc.describe(job.id)
    assert desc is not None and desc["status"] == "FAILED" and len(desc["attempts"]) == 1
    assert desc["status_reason"] == "not needed any more"


async def test_a_retry_wait_survives_a_restart(batch: MakeBatch) -> None:
    """The wait is in the store (RUNNABLE, ``runnable_at`` ahead): a new engine neither starts the
    job early nor forgets it."""
    svc = await batch()
    waits = box(FAIL_ONCE, retry_strategy={"attempts": 2, "interval_s": 2.0, "jitter": "none"})
    out = await svc.submit({"queue": "default", "container": waits})
    job_id = out["job_id"]
    await until(lambda: svc.jobs[job_id].attempts == 1 and svc.jobs[job_id].status == "RUNNABLE", 30)
    await svc.aclose()
    await svc.store.close()
    again = await batch()
    assert again.jobs[job_id].status == "RUNNABLE" and again.book.index.get("default", job_id) is None
    assert await again.wait(job_id, 60) == "SUCCEEDED"
    desc = await again.describe(job_id)
    assert desc is not None and len(desc["attempts"]) == 2
    assert at(desc["attempts"][1]["started_at"]) - at(desc["attempts"][0]["stopped_at"]) >= 2.0
    assert log_of(desc).strip() == "try 2"


async def test_out_of_memory_is_reported_as_batch_does(batch: MakeBatch) -> None:
    svc = await batch()
    # dd fills a 50 MB buffer, far past an 8 MiB limit with no swap; the shell outlives it briefly
    # so dockerd sees the OOM event (see test_docker.test_oom_kill_is_reported; 0.5 s lost it under load)
    hog = ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=50M count=1; sleep 2"]
    desc = await run_job(svc, container=box(hog, memory=8 * MIB))
    assert desc["status"] == "FAILED" and desc["exit_code"] == 137
    assert desc["attempts"][0]["reason"] == OUT_OF_MEMORY
    assert desc["status_reason"].startswith(OUT_OF_MEMORY)
    assert "records out" not in log_of(desc)


async def test_timeout_kills_and_is_not_retried(batch: MakeBatch) -> None:
    svc = await batch()
    t0 = time.monotonic()
    desc = await run_job(svc, container=box(["sleep", "30"], timeout=1, retry_strategy={"attempts": 3}))
    assert time.monotonic() - t0 < 10
    assert desc["status"] == "FAILED" and desc["status_reason"] == TIMED_OUT
    assert len(desc["attempts"]) == 1


async def test_cancel_and_terminate_in_each_state(batch: MakeBatch) -> None:
    svc = await batch(vcpus=1)
    running = await svc.submit({"queue": "default", "container": box(["sleep", "30"], vcpus=1)})
    runnable = await svc.submit({"queue": "default", "container": box(["true"], vcpus=1)})
    pending = await svc.submit(
        {"queue": "default", "container": box(["true"]), "depends_on": [running["job_id"]]}
    )
    array = await svc.submit({"queue": "default", "array_size": 3, "container": box(["true"], vcpus=1)})
    for _ in range(300):
        if svc.jobs[running["job_id"]].status == "RUNNING":
            break
        await asyncio.sleep(0.02)
    assert svc.jobs[runnable["job_id"]].status == "RUNNABLE"
    assert svc.jobs[pending["job_id"]].status == "PENDING"
    with pytest.raises(JobError, match="use terminate"):
        await svc.cancel(running["job_id"])
    await svc.cancel(runnable["job_id"], "not needed")
    await svc.cancel(array["job_id"], "whole array")
    t0 = time.monotonic()
    await svc.terminate(running["job_id"], "stop it")
    assert time.monotonic() - t0 < 8
    expect = {runnable["job_id"]: "not needed", running["job_id"]: "stop it", array["job_id"]: None}
    for job_id, reason in expect.items():
        assert await svc.wait(job_id, 10) == "FAILED"
        desc = await svc.describe(job_id)
        assert desc is not None
        if reason:
            assert desc["status_reason"] == reason
    assert await svc.wait(pending["job_id"], 10) == "FAILED"  # its dependency failed
    for i in range(3):
        child = await svc.describe(f"{array['job_id']}:{i}")
        assert child is not None and child["status"] == "FAILED" and child["status_reason"] == "whole array"
    # STARTING: terminate as soon as the attempt is placed, before the container runs
    starting = await svc.submit({"queue": "default", "container": box(["sleep", "30"], vcpus=1)})
    for _ in range(500):
        if svc.jobs[starting["job_id"]].status == "STARTING":
            break
        await asyncio.sleep(0.002)
    assert svc.jobs[starting["job_id"]].status == "STARTING"
    await svc.terminate(starting["job_id"], "too late")
    assert await svc.wait(starting["job_id"], 10) == "FAILED"
    desc = await svc.describe(starting["job_id"])
    assert desc is not None and desc["status_reason"] == "too late"


async def test_missing_image_fails_with_cannot_pull(batch: MakeBatch) -> None:
    svc = await batch()
    desc = await run_job(
        svc, container={"image": "sluice-test/nope:0", "command": ["true"], "memory": 32 * MIB}
    )
    assert desc["status"] == "FAILED" and desc["status_reason"].startswith("CannotPullContainerError")


async def test_bad_input_is_refused_and_nothing_is_written(batch: MakeBatch, tmp_path: Path) -> None:
    svc = await batch(vcpus=2, memory=1 << 30)
    await svc.put_queue(
        {"name": "off", "priority": 1, "environments": ["local"], "state": "DISABLED"}, create=True
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"container": box("echo hi")}, "command: must be a list"),  # type: ignore[arg-type]
        ({"container": box(["true"], vcpus=64)}, "the largest available is local with 2 vCPUs"),
        ({"container": box(["true"], memory=64 << 30)}, "1 GiB"),
        ({"container": box(["true"]), "array_size": 1}, "array_size"),
        ({"container": box(["true"]), "array_size": 10_001}, "array_size"),
        ({"container": box(["true"]), "depends_on": ["j-nope"]}, "no job 'j-nope'"),
        (
            {"container": box(["true"]), "depends_on": [{"type": "SEQUENTIAL"}]},
            "SEQUENTIAL is for array jobs",
        ),
        ({"container": box(["true"]), "queue": "nope"}, "no job queue named 'nope'"),
        ({"container": box(["true"]), "queue": "off"}, "DISABLED"),
        ({"container": box(["true"], volumes=[{"host": "/etc", "container": "/x"}])}, "outside the allowed"),
        ({"container": box(["true"], privileged=True)}, "never runs privileged"),
        ({"definition": "nope"}, "no job definition named 'nope'"),
        ({"container": box(["true"], retry_strategy={"interval": "10s"})}, "retry_strategy: unknown field"),
        ({"container": box(["true"], retry_strategy={"interval_s": -1})}, "interval_s: seconds from 0"),
        ({"container": box(["true"], retry_strategy={"backoff_rate": 0.5})}, "backoff_rate: a factor"),
        ({"container": box(["true"], retry_strategy={"jitter": "some"})}, "write none or full"),
    ]
    for req, message in cases:
        with pytest.raises(JobError, match=message.replace("(", r"\(")):
            await svc.submit({"queue": "default", **req})
    count = await svc.store.read(lambda c: c.execute("SELECT count(*) FROM jobs").fetchone()[0])
    assert count == 0
    inside = tmp_path / "data" / "share"
    inside.mkdir(parents=True)
    desc = await run_job(
        svc, container=box(["ls", "/share"], volumes=[{"host": str(inside), "container": "/share"}])
    )
    assert desc["status"] == "SUCCEEDED"


async def test_definitions_revisions_and_parameters(batch: MakeBatch) -> None:
    svc = await batch()
    one = await svc.register_definition(
        {"name": "greet", **box(["echo", "Ref::who"]), "parameters": {"who": "x"}}
    )
    two = await svc.register_definition(
        {"name": "greet", **box(["echo", "v2", "Ref::who"]), "parameters": {"who": "y"}}
    )
    assert (one["revision"], two["revision"]) == (1, 2)
    latest = await run_job(svc, definition="greet", parameters={"who": "ada"})
    first = await run_job(svc, definition="greet:1")
    assert log_of(latest).strip() == "v2 ada" and log_of(first).strip() == "x"


async def test_100_jobs_through_a_capacity_of_2_nothing_lost(batch: MakeBatch) -> None:
    svc = await batch(vcpus=2)
    peak = 0

    def watch() -> None:
        nonlocal peak
        peak = max(peak, sum(1 for j in svc.jobs.values() if j.status in ("STARTING", "RUNNING")))

    ids = [
        (await svc.submit({"queue": "default", "container": box(["true"], vcpus=1)}))["job_id"]
        for _ in range(100)
    ]
    done = asyncio.gather(*(svc.wait(j, 180) for j in ids))
    while not done.done():
        watch()
        await asyncio.sleep(0.01)
    assert (await done) == ["SUCCEEDED"] * 100
    assert peak <= 2
    rows = await svc.store.read(
        lambda c: c.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
    )
    assert [tuple(r) for r in rows] == [("SUCCEEDED", 100)]


async def test_cancel_a_sequential_array_while_nothing_can_run(batch: MakeBatch) -> None:
    svc = await batch()
    await svc.put_environment({"name": "local", "state": "DISABLED"}, create=False)
    out = await svc.submit(
        {
            "queue": "default",
            "array_size": 50,
            "container": box(["true"]),
            "depends_on": [{"type": "SEQUENTIAL"}],
        }
    )
    reason = svc.waiting_reason(f"{out['job_id']}:0")
    assert reason == "waiting for 0.5 vCPUs, 32 MiB; local is disabled"
    done = await svc.cancel(out["job_id"], "not today")
    assert done["status"] == "FAILED" and await svc.wait(out["job_id"], 5) == "FAILED"
    parent = await svc.describe(out["job_id"])
    assert parent is not None and parent["array_status_summary"]["FAILED"] == 50
    assert parent["status_reason"].startswith("50 of 50 child jobs failed")
    assert svc.jobs == {} and svc.book.array_left == {}
