"""Preemption: the victim rule as a pure decision, then real containers, then a restart mid-preemption.

A queue with ``preemption.enabled`` whose head job fits nowhere takes capacity from RUNNING,
preemptible jobs of lower-priority queues in its environments: the lowest priority first, then
the most recently started. The victims go back RUNNABLE (their attempt does not count), the
preemptor starts once they are gone, and the marker on the attempt row carries the preemption
across a restart without preempting anything twice.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest

from engine.batch import rows
from engine.batch.queues import (
    Environment,
    Preemption,
    Queue,
    QueueView,
    RunnableIndex,
    Running,
    Slot,
    decide,
)
from engine.batch.service import BatchService
from engine.executors.docker_api import DockerClient, DockerError
from tests.support.batch import MakeBatch, box
from tests.support.docker import TEST_LABEL
from tests.support.waiting import wait_until as until

MIB = 1 << 20
ON = Preemption(True, 2.0)


def view(queue: Queue, slots: list[Slot]) -> QueueView:
    index = RunnableIndex()
    for s in slots:
        index.add(queue.name, s)
    return index.view(queue)


def running(job_id: str, priority: int, started: float, vcpus: float = 1, env: str = "local") -> Running:
    return Running(job_id, env, priority, started, vcpus, 64 * MIB)


def full_env(vcpus: float = 4) -> dict[str, Environment]:
    return {"local": Environment("local", vcpus, 4096 * MIB, used_vcpus=vcpus, used_memory=0)}


def test_victims_lowest_priority_first_then_most_recently_started() -> None:
    high = Queue("high", 10, ("local",), preemption=ON)
    head = Slot("h", 1, 2, 64 * MIB, 0)
    jobs = [
        running("mid-old", 5, 1),
        running("low-old", 1, 2),
        running("low-new", 1, 3),
        running("mid-new", 5, 4),
    ]
    d = decide([view(high, [head])], full_env(), now=10, running=jobs)
    assert d.placements == []
    assert d.preemptions == [("low-new", "h"), ("low-old", "h")]
    assert d.reservations == {"local": "h"}  # the freed room is kept for the preemptor


def test_equal_or_higher_priority_jobs_are_never_victims_and_queues_opt_in() -> None:
    head = Slot("h", 1, 1, 64 * MIB, 0)
    jobs = [running("same", 10, 1), running("higher", 20, 2)]
    high = Queue("high", 10, ("local",), preemption=ON)
    assert decide([view(high, [head])], full_env(2), now=10, running=jobs).preemptions == []
    plain = Queue("plain", 10, ("local",))
    low = [running("low", 1, 1)]
    assert decide([view(plain, [head])], full_env(2), now=10, running=low).preemptions == []


def test_a_victim_made_unnecessary_by_a_bigger_one_is_spared() -> None:
    high = Queue("high", 10, ("local",), preemption=ON)
    head = Slot("h", 1, 2, 64 * MIB, 0)
    jobs = [running("small-new", 1, 9, vcpus=0.5), running("big-old", 1, 1, vcpus=2)]
    d = decide([view(high, [head])], full_env(), now=10, running=jobs)
    assert d.preemptions == [("big-old", "h")]


def test_victims_already_leaving_are_counted_so_nothing_is_preempted_twice() -> None:
    high = Queue("high", 10, ("local",), preemption=ON)
    head = Slot("h", 1, 2, 64 * MIB, 0)
    jobs = [running("a", 1, 1), running("b", 1, 2), running("c", 1, 3)]
    first = decide([view(high, [head])], full_env(), now=10, running=jobs)
    assert first.preemptions == [("c", "h"), ("b", "h")]
    again = decide([view(high, [head])], full_env(), now=11, running=jobs, preempting=dict(first.preemptions))
    assert again.preemptions == [] and again.reservations == {"local": "h"}


def test_too_little_to_take_takes_nothing() -> None:
    high = Queue("high", 10, ("local",), preemption=ON)
    head = Slot("h", 1, 4, 64 * MIB, 0)
    jobs = [running("a", 1, 1), running("b", 1, 2)]  # the other 2 vCPUs are the same priority's
    assert decide([view(high, [head])], full_env(), now=10, running=jobs).preemptions == []


# -- real containers -------------------------------------------------------------------------

#: the first attempt runs long and leaves at once on SIGTERM; a later one ends quickly
FIRST_LONG = [
    "sh",
    "-c",
    'trap "exit 143" TERM; if [ "$AWS_BATCH_JOB_ATTEMPT" = 1 ]; then sleep "$1" & wait; fi; echo ok',
    "sh",
]


async def attempt_rows(svc: BatchService, job_id: str) -> list[tuple[Any, ...]]:
    return await svc.store.read(
        lambda c: [
            tuple(r)
            for r in c.execute(
                "SELECT attempt, preempted_by, exit_code FROM job_attempts WHERE job_id=? ORDER BY attempt",
                (job_id,),
            )
        ]
    )


async def transitions(svc: BatchService, job_id: str) -> list[tuple[str, str | None]]:
    def read(conn: Any) -> list[tuple[str, str | None]]:
        rows = conn.execute("SELECT body FROM events WHERE source='aws.batch' ORDER BY seq").fetchall()
        details = [json.loads(r[0])["detail"] for r in rows]
        return [(d["status"], d.get("statusReason")) for d in details if d["jobId"] == job_id]

    return await svc.store.read(read)


async def queues(svc: BatchService, grace: str = "2s") -> None:
    await svc.put_queue({"name": "low", "priority": 1, "environments": ["local"]}, create=True)
    body = {
        "name": "high",
        "priority": 10,
        "environments": ["local"],
        "preemption": {"enabled": True, "grace": grace},
    }
    out = await svc.put_queue(body, create=True)
    assert out["preemption"] == {"enabled": True, "grace_s": float(grace.rstrip("s"))}


@pytest.mark.docker
async def test_high_priority_job_preempts_low_array_children_which_run_again(batch: MakeBatch) -> None:
    svc = await batch(vcpus=2)
    await queues(svc)
    array = await svc.submit(
        {"queue": "low", "array_size": 3, "container": box([*FIRST_LONG, "8"]), "parameters": {}}
    )
    kept = await svc.submit({"queue": "low", "container": box([*FIRST_LONG, "8"], preemptible=False)})
    children = [f"{array['job_id']}:{i}" for i in range(3)]
    every = [*children, kept["job_id"]]
    await until(lambda: all(svc.jobs[j].status == "RUNNING" for j in every), 30, what="low jobs running")
    t0 = time.monotonic()
    high = await svc.submit({"queue": "high", "container": box(["sh", "-c", "sleep 1"], vcpus=1)})
    await until(lambda: svc.jobs[high["job_id"]].status == "RUNNING", 15, what="the high job running")
    assert time.monotonic() - t0 < 8
    assert await svc.wait(high["job_id"], 30) == "SUCCEEDED"
    assert await svc.wait(array["job_id"], 60) == "SUCCEEDED"
    assert await svc.wait(kept["job_id"], 30) == "SUCCEEDED"
    # the opted-out job, started last, would have been the first victim: untouched
    assert await attempt_rows(svc, kept["job_id"]) == [(1, None, 0)]
    preempted = [c for c in children if len(await attempt_rows(svc, c)) == 2]
    assert len(preempted) == 2, [await attempt_rows(svc, c) for c in children]
    for child in preempted:
        first, second = await attempt_rows(svc, child)
        assert first[1] == high["job_id"] and second == (2, None, 0)
        desc = await svc.describe(child)
        assert desc is not None and desc["preemptions"] == 1 and desc["attempts"][0]["preempted_by"]
        states = await transitions(svc, child)
        back = [r for s, r in states if s == "RUNNABLE" and r and r.startswith("Preempted")]
        assert back and back[0].startswith(f"Preempted by job {high['job_id']} (queue high, priority 10)")
        assert [s for s, _ in states][-3:] == ["STARTING", "RUNNING", "SUCCEEDED"]


@pytest.mark.docker
async def test_a_restart_during_a_preemption_loses_nothing_and_preempts_nothing_twice(
    batch: MakeBatch,
) -> None:
    svc = await batch(vcpus=1)
    await queues(svc, grace="8s")
    slow_exit = [
        "sh",
        "-c",
        # the handler ignores the SIGTERM sent again after the restart (it would start over)
        'trap "trap \\"\\" TERM; sleep 5; exit 143" TERM; '
        '[ "$AWS_BATCH_JOB_ATTEMPT" = 1 ] && { sleep 30 & wait; }; echo ok',
    ]
    array = await svc.submit({"queue": "low", "array_size": 2, "container": box(slow_exit)})
    children = [f"{array['job_id']}:{i}" for i in range(2)]
    await until(lambda: all(svc.jobs[c].status == "RUNNING" for c in children), 30, what="children running")
    high = await svc.submit({"queue": "high", "container": box(["true"], vcpus=1)})

    async def marked() -> bool:
        firsts = [(await attempt_rows(svc, c))[:1] for c in children]
        return all(f == [(1, high["job_id"], None)] for f in firsts)

    await until(marked, 10, what="both victims marked")
    await svc.aclose()  # like a crash: containers keep running (in their grace period)
    await svc.store.close()
    again = await batch(vcpus=1)
    assert set(again.book.preempting) == set(children)
    reason = again.waiting_reason(high["job_id"]) or ""
    assert reason.startswith(
        f"preempting {children[0]}, {children[1]} (lower priority)"
    ) or reason.startswith(f"preempting {children[1]}, {children[0]} (lower priority)"), reason
    assert await again.wait(high["job_id"], 30) == "SUCCEEDED"
    assert await again.wait(array["job_id"], 30) == "SUCCEEDED"
    for child in children:
        rows = await attempt_rows(again, child)
        assert [r[:2] for r in rows] == [(1, high["job_id"]), (2, None)], rows
        assert rows[0][2] == 143  # left in its grace period (the queue's 8 s), not killed
    assert [r[:2] for r in await attempt_rows(again, high["job_id"])] == [(1, None)]
    assert await attempt_rows(again, array["job_id"]) == []  # the array parent is never run itself


@pytest.mark.docker
async def test_a_marker_for_an_attempt_that_already_ended_changes_nothing(batch: MakeBatch) -> None:
    """The victim may end on its own between the decision and the marker's write: it stays as it ended."""
    svc = await batch()
    out = await svc.submit({"queue": "default", "container": box(["true"])})
    assert await svc.wait(out["job_id"], 30) == "SUCCEEDED"
    job_id = out["job_id"]
    await svc.store.write(lambda c: rows.mark_preempted(c, job_id, 1, "j-other", "being preempted"))
    desc = await svc.describe(job_id)
    assert desc is not None and desc["status_reason"] == "Essential container in task exited"
    assert await attempt_rows(svc, job_id) == [(1, None, 0)]


@pytest.mark.docker
async def test_victims_that_ended_while_the_engine_was_down_are_requeued_not_failed(
    batch: MakeBatch, docker_client: DockerClient, docker_test_label: str
) -> None:
    svc = await batch(vcpus=1)
    await queues(svc, grace="8s")
    array = await svc.submit({"queue": "low", "array_size": 2, "container": box([*FIRST_LONG, "30"])})
    children = [f"{array['job_id']}:{i}" for i in range(2)]
    await until(lambda: all(svc.jobs[c].status == "RUNNING" for c in children), 30, what="children running")
    high = await svc.submit({"queue": "high", "container": box(["true"], vcpus=1)})

    async def marked() -> bool:
        firsts = [(await attempt_rows(svc, c))[:1] for c in children]
        return all(f == [(1, high["job_id"], None)] for f in firsts)

    await until(marked, 10, what="both victims marked")
    await svc.aclose()
    await svc.store.close()

    async def all_exited() -> bool:
        found = await docker_client.list({TEST_LABEL: docker_test_label}, all=True)
        return bool(found) and all(c["State"] == "exited" for c in found)

    # the marker is written before the SIGTERM: if the crash came in between, send it ourselves
    for c in await docker_client.list({TEST_LABEL: docker_test_label}, all=True):
        if c["State"] == "running":
            with contextlib.suppress(DockerError):  # 409: it has exited since the list
                await docker_client.kill(c["Id"], "SIGTERM")
    await until(all_exited, 20, what="the victims' containers exited while no engine ran")
    again = await batch(vcpus=1)
    assert await again.wait(array["job_id"], 60) == "SUCCEEDED"
    assert await again.wait(high["job_id"], 30) == "SUCCEEDED"
    for child in children:
        rows_ = await attempt_rows(again, child)
        assert [r[:2] for r in rows_] == [(1, high["job_id"]), (2, None)], rows_
        desc = await again.describe(child)
        assert desc is not None and desc["preemptions"] == 1
