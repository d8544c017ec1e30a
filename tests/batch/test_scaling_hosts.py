"""Managed scaling across several real Docker daemons: hosts come into service as RUNNABLE demand
grows, drain and leave as it falls, a job runs on one host, and a restart loses nothing.

The second daemon is the one .ci/docker-b-setup.sh starts (``unix:///run/docker-b.sock``); the
first host is the machine's own engine (``local``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from engine.batch import hosts as hosting
from engine.batch import scaling
from engine.batch.hosts import DRAINING, IN_SERVICE, JOINING, OUT, UNHEALTHY, Host, plan
from engine.batch.jobs import JobError
from engine.batch.queues import Environment, Preemption, Queue, QueueView, Running, Slot, decide
from engine.batch.scaling import SCALING_DETAIL_TYPE
from engine.batch.service import BatchService
from engine.executors.docker import TIMED_OUT
from engine.executors.docker_api import DockerClient
from tests.batch.test_interruptible import SocketProxy
from tests.support.batch import MIB, MakeBatch, box
from tests.support.docker import TEST_LABEL
from tests.support.docker_b import B
from tests.support.waiting import wait_until as until

GIB = 1 << 30


# -- the pure parts -------------------------------------------------------------------------------


def hosts(*states: str, vcpus: float = 1) -> list[Host]:
    return [Host(f"h{i}", f"unix:///h{i}", vcpus, GIB, state=s) for i, s in enumerate(states)]


def test_plan_takes_the_fewest_hosts_in_list_order_that_cover_desired() -> None:
    three = hosts(OUT, OUT, OUT)
    assert plan(three, 0.0, 100.0, 60).check == []
    assert plan(three, 1.0, 100.0, 60).check == ["h0"]
    assert plan(three, 1.5, 100.0, 60).check == ["h0", "h1"]
    assert plan(three, 9.0, 100.0, 60).check == ["h0", "h1", "h2"]  # desired is capped elsewhere
    joining = hosts(JOINING, OUT, OUT)
    assert not plan(joining, 1.0, 100.0, 60)  # one coming is enough: no second check


def test_plan_drains_then_leaves_after_the_cooldown_and_resumes_on_demand() -> None:
    two = hosts(IN_SERVICE, IN_SERVICE)
    assert plan(two, 1.0, 100.0, 60).drain == ["h1"]
    two[1].state, two[1].since, two[1].used_vcpus = DRAINING, 100.0, 1.0
    assert not plan(two, 1.0, 500.0, 60)  # still runs a job: it stays
    two[1].give(1.0, 0, 200.0)
    assert not plan(two, 1.0, 259.0, 60)
    assert plan(two, 1.0, 260.0, 60).leave == ["h1"]
    assert plan(two, 2.0, 260.0, 60).resume == ["h1"]  # demand came back first


def test_plan_skips_an_unhealthy_host_until_it_is_due_a_new_check() -> None:
    two = hosts(UNHEALTHY, OUT)
    two[0].since = 100.0
    assert plan(two, 1.0, 110.0, 60).check == ["h1"]
    assert plan(two, 1.0, 131.0, 60).check == ["h0"]


def test_a_host_in_service_is_kept_while_the_one_before_it_is_rechecked() -> None:
    two = hosts(UNHEALTHY, IN_SERVICE)
    two[0].since = 100.0
    assert not plan(two, 1.0, 110.0, 60)  # the replacement serves; nothing to do
    due = plan(two, 1.0, 131.0, 60)
    # the unhealthy host is checked again, and the one serving in its place keeps taking jobs
    # until the check has passed (a host that is still down must not leave no host in service)
    assert due.check == ["h0"] and due.drain == []
    two[0].state = JOINING
    assert not plan(two, 1.0, 132.0, 60)
    two[0].state = IN_SERVICE
    assert plan(two, 1.0, 133.0, 60).drain == ["h1"]  # it passed: the replacement drains
    draining = hosts(JOINING, DRAINING)
    draining[1].since = 0.0
    assert not plan(draining, 1.0, 500.0, 60).leave  # not out while the one covering is unproven


def test_decide_places_a_job_on_one_host_never_on_the_sum() -> None:
    env = Environment("pair", 2, 2 * GIB, hosts=hosts(IN_SERVICE, IN_SERVICE))
    env.hosts[0].used_vcpus = env.used_vcpus = 0.5
    queue = Queue("q", 1, ("pair",))
    slots = [Slot("big", 1, 1.0, MIB, 0.0), Slot("small", 2, 0.5, MIB, 0.0), Slot("more", 3, 0.6, MIB, 0.0)]
    out = decide([QueueView(queue, slots)], {"pair": env}, 1.0)
    # 1.5 vCPUs are free in all, but no 1 vCPU job fits h0 (0.5 free): big goes to h1, small to h0
    assert out.placements == [("big", "pair"), ("small", "pair")]
    assert out.hosts == {"big": "h1", "small": "h0"}
    env.hosts[1].state = DRAINING  # takes no new job
    out = decide([QueueView(queue, slots[1:])], {"pair": env}, 1.0)
    assert out.hosts == {"small": "h0"}


def test_the_scan_stops_when_no_one_host_has_room_though_the_sum_has() -> None:
    fleet = hosts(*[IN_SERVICE] * 8, vcpus=2)
    for h in fleet:
        h.used_vcpus = 1.5
    env = Environment("fleet", 16, 8 * GIB, used_vcpus=12, hosts=fleet)
    slots = [Slot(f"j{i}", i, 1.0, MIB, 0.0) for i in range(500)]
    out = decide([QueueView(Queue("q", 1, ("fleet",)), slots, 1.0, MIB)], {"fleet": env}, 1.0)
    assert out.placements == [] and out.examined == 1  # 4 vCPUs free in all, 0.5 on each host


def test_preemption_frees_one_host_where_the_sum_would_already_fit() -> None:
    env = Environment("pair", 2, 2 * GIB, hosts=hosts(IN_SERVICE, IN_SERVICE))
    for h in env.hosts:
        h.used_vcpus, h.used_memory = 0.5, MIB
    env.used_vcpus, env.used_memory = 1.0, 2 * MIB
    low, high = Queue("low", 1, ("pair",)), Queue("high", 9, ("pair",), preemption=Preemption(True))
    running = [Running("v0", "pair", 1, 10.0, 0.5, MIB, "h0"), Running("v1", "pair", 1, 20.0, 0.5, MIB, "h1")]
    head = [Slot("head", 1, 1.0, MIB, 0.0)]
    out = decide([QueueView(high, head), QueueView(low, [])], {"pair": env}, 30.0, running=running)
    # 1 vCPU is free in all, on no one host (the sum alone would wait forever): the first host
    # that one victim can free is freed, and only that victim goes
    assert out.placements == [] and out.preemptions == [("v0", "head")]
    assert out.reservations == {"pair": "head"}


# -- on real daemons ------------------------------------------------------------------------------


async def pair(svc: BatchService, *, first: str = "local", second: str = B, min_vcpus: float = 0) -> None:
    await svc.put_environment(
        {
            "name": "pair",
            "hosts": [
                {"name": "a", "endpoint": first, "vcpus": 1, "memory": "512MiB"},
                {"name": "b", "endpoint": second, "vcpus": 1, "memory": "512MiB"},
            ],
            "min_vcpus": min_vcpus,
            "scale_in_cooldown": "1s",
        },
        create=True,
    )
    await svc.put_queue({"name": "p", "priority": 1, "environments": ["pair"]}, create=True)


def states(svc: BatchService) -> dict[str, str]:
    return {h.name: h.state for h in svc.envs["pair"].hosts}


async def scaling_events(svc: BatchService) -> list[dict[str, Any]]:
    sql = "SELECT body FROM events WHERE detail_type=? ORDER BY seq"
    found = await svc.store.read(lambda c: c.execute(sql, (SCALING_DETAIL_TYPE,)).fetchall())
    return [json.loads(r[0])["detail"] for r in found]


async def on_daemon(client: DockerClient, label: str) -> set[str]:
    found = await client.list({TEST_LABEL: label}, all=True)
    return {c["Labels"]["sluice.job-id"] for c in found}


@pytest.mark.docker
async def test_hosts_are_validated_and_max_is_their_sum(batch: MakeBatch) -> None:
    svc = await batch()
    one = {"endpoint": "local", "vcpus": 1, "memory": "1GiB"}
    for body, problem in [
        ({"hosts": []}, "hosts: a list of 1..64 Docker hosts"),
        ({"hosts": [{**one, "vcpus": 0}]}, r"hosts\[0\].vcpus: a positive number"),
        ({"hosts": [{**one, "memory": "lots"}]}, r"hosts\[0\].memory: expected a size"),
        ({"hosts": [one, one]}, r"hosts\[1\].name: 'host-1'|hosts\[1\].endpoint: local is listed twice"),
        ({"hosts": [one], "endpoint": "local"}, "endpoint: give either one endpoint or a list of hosts"),
        ({"hosts": [{**one, "endpoint": "tcp://10.0.0.9:2375"}]}, r"hosts\[0\].endpoint: .* plain TCP"),
        ({"hosts": [one], "max_vcpus": 3}, "max_vcpus: at most the hosts' 1 vCPUs together"),
        ({"hosts": [one], "type": "slurm", "slurm": {}}, "slurm"),
        ({"hosts": [{**one, "where": 1}]}, r"hosts\[0\]: unknown field\(s\) where"),
        ({"hosts": [one], "scale_in_cooldown": "soon"}, "scale_in_cooldown: expected a duration"),
        ({"hosts": [one], "scale_in_cooldown": 7200}, "scale_in_cooldown: seconds from 0 to 3600"),
    ]:
        with pytest.raises(JobError, match=problem):
            await svc.put_environment({"name": "bad", **body}, create=True)
    assert "bad" not in svc.envs  # nothing was written
    out = await svc.put_environment(
        {"name": "two", "hosts": [one, {**one, "endpoint": B, "vcpus": 2}], "min_vcpus": 0}, create=True
    )
    assert (out["max_vcpus"], out["max_memory"], out["endpoint"]) == (3, 2 * GIB, "hosts")
    assert [(h["name"], h["state"]) for h in out["hosts"]] == [("host-1", OUT), ("host-2", OUT)]
    await svc.put_queue({"name": "t", "priority": 1, "environments": ["two"]}, create=True)
    with pytest.raises(JobError, match="a job runs on one host, the largest host-2 with 2 vCPUs"):
        await svc.submit({"queue": "t", "container": box(["true"], vcpus=2.5)})
    back = await svc.put_environment({"name": "two", "endpoint": "local"}, create=False)
    assert back["endpoint"] == "local" and "hosts" not in back and not svc.envs["two"].hosts


@pytest.mark.docker
async def test_demand_brings_the_second_host_in_and_it_drains_and_leaves_after(
    batch: MakeBatch, docker_b: DockerClient, docker_test_label: str, docker_client: DockerClient
) -> None:
    svc = await batch()
    await pair(svc)
    assert states(svc) == {"a": OUT, "b": OUT} and svc.envs["pair"].desired_vcpus == 0
    ids = [
        (await svc.submit({"queue": "p", "container": box(["sleep", "3"], vcpus=1)}))["job_id"]
        for _ in range(4)
    ]
    await until(lambda: states(svc) == {"a": IN_SERVICE, "b": IN_SERVICE}, 20, what="both hosts in service")
    assert svc.envs["pair"].desired_vcpus == 2  # 4 vCPUs asked for, capped at the hosts' 2
    # one job on each daemon at once, as their own containers show
    both = await until(
        lambda: _both(docker_client, docker_b, docker_test_label), 30, what="a job on each daemon"
    )
    assert not both[0] & both[1]
    for job_id in ids:
        assert await svc.wait(job_id, 60) == "SUCCEEDED"
    ran_on = []
    for job_id in ids:
        desc = await svc.describe(job_id)
        assert desc is not None
        ran_on.append(desc["attempts"][-1]["host"])
    assert sorted(ran_on) == ["a", "a", "b", "b"]
    # demand gone: desired back to min (0), both drain, then leave after the cooldown
    await until(lambda: states(svc) == {"a": OUT, "b": OUT}, 20, what="both hosts out of service")
    assert svc.envs["pair"].desired_vcpus == 0
    seen = [(e["host"], e["previousState"], e["state"]) for e in await scaling_events(svc)]
    for host in ("a", "b"):
        mine = [(p, s) for h, p, s in seen if h == host]
        assert mine[:2] == [(OUT, JOINING), (JOINING, IN_SERVICE)], mine
        assert mine[-2:] == [(IN_SERVICE, DRAINING), (DRAINING, OUT)], mine
    events = await scaling_events(svc)
    assert max(e["desiredvCpus"] for e in events) == 2 and events[-1]["desiredvCpus"] == 0
    assert events[0]["computeEnvironmentArn"].endswith(":compute-environment/pair")


async def _both(a: DockerClient, b: DockerClient, label: str) -> tuple[set[str], set[str]] | None:
    on_a, on_b = await on_daemon(a, label), await on_daemon(b, label)
    return (on_a, on_b) if on_a and on_b else None


@pytest.mark.docker
async def test_a_host_that_is_down_is_skipped_with_the_reason(batch: MakeBatch, tmp_path: Any) -> None:
    svc = await batch()
    await pair(svc)
    missing = f"unix://{tmp_path}/no-daemon.sock"
    await svc.put_environment(
        {
            "name": "pair",
            "hosts": [
                {"name": "gone", "endpoint": missing, "vcpus": 1, "memory": "512MiB"},
                {"name": "a", "endpoint": "local", "vcpus": 1, "memory": "512MiB"},
            ],
        },
        create=False,
    )
    out = await svc.submit({"queue": "p", "container": box(["sleep", "2"], vcpus=1)})
    await until(lambda: svc.jobs[out["job_id"]].status == "RUNNING", 30, what="the job running on a")
    # a second job waits for a: the skipped host is not retried before its recheck is due
    later = await svc.submit({"queue": "p", "container": box(["true"], vcpus=1)})
    svc.schedule()
    reason = svc.waiting_reason(later["job_id"])
    assert reason is not None and "0 free in pair (host gone unhealthy)" in reason, reason
    assert await svc.wait(out["job_id"], 30) == "SUCCEEDED"
    assert await svc.wait(later["job_id"], 30) == "SUCCEEDED"
    gone = svc.envs["pair"].hosts[0]
    assert gone.state == UNHEALTHY  # a, in service for the job, may be draining already
    assert gone.reason is not None and gone.reason.startswith("health check failed: ")
    assert "no-daemon.sock" in gone.reason
    desc = await svc.describe(out["job_id"])
    assert desc is not None and desc["attempts"][0]["host"] == "a"
    events = await scaling_events(svc)
    skipped = [e for e in events if e["host"] == "gone" and e["state"] == UNHEALTHY]
    assert skipped and skipped[0]["reason"] == gone.reason
    assert [(e["previousState"], e["state"]) for e in events if e["host"] == "a"][:2] == [
        (OUT, JOINING),
        (JOINING, IN_SERVICE),
    ]


@pytest.mark.docker
async def test_a_restart_mid_scale_loses_nothing(
    batch: MakeBatch, docker_b: DockerClient, docker_test_label: str
) -> None:
    svc = await batch()
    # host a is the machine's engine by its socket: a runner of its own besides the local one,
    # so its containers must not be reported as strangers by the local one after the restart
    await pair(svc, first="unix:///var/run/docker.sock")
    ids = [
        (await svc.submit({"queue": "p", "container": box(["sleep", "4"], vcpus=1)}))["job_id"]
        for _ in range(3)
    ]
    await until(lambda: sum(svc.jobs[j].status == "RUNNING" for j in ids) == 2, 30, what="two jobs running")
    on_b = {j for j in ids if svc.jobs[j].host == "b"}
    assert len(on_b) == 1 and await on_daemon(docker_b, docker_test_label) == on_b
    await svc.aclose()  # like a crash: the containers keep running on both daemons
    await svc.store.close()

    again = await batch()
    assert states(again) == {"a": IN_SERVICE, "b": IN_SERVICE}  # as they were
    b = again.envs["pair"].host("b")
    assert b is not None and b.used_vcpus == 1  # its job was re-adopted there, not started again
    for job_id in ids:
        assert await again.wait(job_id, 60) == "SUCCEEDED"
    for job_id in ids:
        desc = await again.describe(job_id)
        assert desc is not None and len(desc["attempts"]) == 1, desc["attempts"]
    reported = await again.store.read(
        lambda c: c.execute("SELECT detail FROM audit WHERE kind='unknown-container'").fetchall()
    )
    # other tests' containers on the machine's engine are strangers; none of this test's is
    mine = [r for r in reported if json.loads(r[0])["labels"].get(TEST_LABEL) == docker_test_label]
    assert mine == []
    await until(lambda: states(again) == {"a": OUT, "b": OUT}, 20, what="scaled in after the restart")


@pytest.mark.docker
async def test_a_draining_host_is_still_draining_after_a_restart(
    batch: MakeBatch, docker_b: DockerClient
) -> None:
    svc = await batch()
    await pair(svc)
    await svc.put_environment({"name": "pair", "scale_in_cooldown": "1h"}, create=False)
    ids = [
        (await svc.submit({"queue": "p", "container": box(["true"], vcpus=1)}))["job_id"] for _ in range(2)
    ]
    for job_id in ids:
        assert await svc.wait(job_id, 60) == "SUCCEEDED"
    await until(lambda: states(svc) == {"a": DRAINING, "b": DRAINING}, 20, what="both draining")
    await svc.aclose()
    await svc.store.close()

    again = await batch()
    assert states(again) == {"a": DRAINING, "b": DRAINING}  # not back in service, not lost
    assert again.envs["pair"].scale_in_cooldown_s == 3600  # kept, as the hosts' states are
    await again.put_environment({"name": "pair", "scale_in_cooldown": 0.5}, create=False)
    await until(lambda: states(again) == {"a": OUT, "b": OUT}, 20, what="out after the restart")


@pytest.mark.docker
async def test_logs_timeouts_and_terminate_reach_the_host_the_job_runs_on(
    batch: MakeBatch, docker_b: DockerClient, docker_test_label: str
) -> None:
    svc = await batch()
    await svc.put_environment(
        {"name": "far", "hosts": [{"name": "b", "endpoint": B, "vcpus": 2, "memory": "512MiB"}]}, create=True
    )
    await svc.put_queue({"name": "f", "priority": 1, "environments": ["far"]}, create=True)
    said = await svc.submit({"queue": "f", "container": box(["sh", "-c", "echo hello from b"])})
    slow = await svc.submit({"queue": "f", "container": box(["sleep", "60"], timeout=1)})
    stuck = await svc.submit({"queue": "f", "container": box(["sleep", "60"])})
    await until(lambda: svc.jobs[stuck["job_id"]].status == "RUNNING", 30, what="the long job running")
    assert stuck["job_id"] in await on_daemon(docker_b, docker_test_label)  # on b, not on local
    await svc.terminate(stuck["job_id"], "stopped by the test")
    assert await svc.wait(stuck["job_id"], 30) == "FAILED"
    assert await svc.wait(said["job_id"], 30) == "SUCCEEDED"
    assert await svc.wait(slow["job_id"], 30) == "FAILED"
    desc = await svc.describe(said["job_id"])
    assert desc is not None and desc["host"] == "b"
    text = await asyncio.to_thread(Path(desc["attempts"][0]["log_path"]).read_text)
    assert text.strip() == "hello from b"
    timed = await svc.describe(slow["job_id"])
    assert timed is not None and timed["attempts"][0]["reason"] == TIMED_OUT
    ended = await svc.describe(stuck["job_id"])
    assert ended is not None and ended["status_reason"] == "stopped by the test"
    assert await on_daemon(docker_b, docker_test_label) == set()  # every container removed from b


@pytest.mark.docker
async def test_a_host_that_goes_away_in_service_is_taken_out_and_the_next_comes_in(
    batch: MakeBatch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scaling, "HEALTH_EVERY_S", 3600.0)  # found by the job, not by the watch
    proxy = SocketProxy(str(tmp_path / "docker.sock"))  # the machine's engine, until it vanishes
    await proxy.start()
    svc = await batch()
    await pair(svc, first=f"unix://{proxy.path}", second="local")
    first = await svc.submit({"queue": "p", "container": box(["true"], vcpus=1)})
    assert await svc.wait(first["job_id"], 30) == "SUCCEEDED"
    assert (await svc.describe(first["job_id"]) or {})["host"] == "a"
    assert states(svc)["a"] in (IN_SERVICE, DRAINING)  # the cooldown (1 s) keeps it a moment
    await proxy.vanish()
    retried = await svc.submit(
        {"queue": "p", "container": box(["true"], vcpus=1, retry_strategy={"attempts": 2})}
    )
    assert await svc.wait(retried["job_id"], 60) == "SUCCEEDED"
    desc = await svc.describe(retried["job_id"])
    assert desc is not None and [a["host"] for a in desc["attempts"]] == ["a", "b"], desc["attempts"]
    a = svc.envs["pair"].hosts[0]
    assert a.state == UNHEALTHY and a.reason is not None and a.reason.startswith("unreachable under job")


@pytest.mark.docker
async def test_an_idle_host_in_service_that_goes_away_is_replaced_and_comes_back(
    batch: MakeBatch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scaling, "HEALTH_EVERY_S", 0.5)
    monkeypatch.setattr(hosting, "RECHECK_S", 3600.0)  # not before the restart below
    proxy = SocketProxy(str(tmp_path / "docker.sock"))  # the machine's engine, until it vanishes
    await proxy.start()
    try:
        svc = await batch()
        # min 1 vCPU: one host stays in service with no job at all
        await pair(svc, first=f"unix://{proxy.path}", second="local", min_vcpus=1)
        await until(lambda: states(svc) == {"a": IN_SERVICE, "b": OUT}, 20, what="a in service, idle")
        await proxy.vanish()
        await until(lambda: states(svc) == {"a": UNHEALTHY, "b": IN_SERVICE}, 10, what="a replaced by b")
        reason = svc.envs["pair"].hosts[0].reason
        assert reason is not None and reason.startswith("health check failed while in service: "), reason
        assert "docker.sock" in reason
        events = await scaling_events(svc)
        down = [
            e for e in events if (e["host"], e["previousState"], e["state"]) == ("a", IN_SERVICE, UNHEALTHY)
        ]
        assert [e["reason"] for e in down] == [reason]
        assert down[0]["inServicevCpus"] == 0  # a no longer counted; b came in after
        out = await svc.submit({"queue": "p", "container": box(["true"], vcpus=1)})
        assert await svc.wait(out["job_id"], 30) == "SUCCEEDED"
        desc = await svc.describe(out["job_id"])
        assert desc is not None and [t["host"] for t in desc["attempts"]] == ["b"], desc["attempts"]
        await svc.aclose()  # a restart keeps the states and the reason
        await svc.store.close()
        svc = await batch()
        assert states(svc) == {"a": UNHEALTHY, "b": IN_SERVICE}
        assert svc.envs["pair"].hosts[0].reason == reason
        # still down at its recheck: b keeps serving meanwhile
        monkeypatch.setattr(hosting, "RECHECK_S", 1.0)
        await until(lambda: _rechecked(svc), 10, what="a rechecked while still down")
        assert states(svc)["b"] == IN_SERVICE and states(svc)["a"] in (UNHEALTHY, JOINING)
        assert not [e for e in await scaling_events(svc) if e["host"] == "b" and e["state"] == DRAINING]
        # it answers again: back at its next recheck, and b, no longer needed, drains and leaves
        await proxy.start()
        await until(lambda: states(svc) == {"a": IN_SERVICE, "b": OUT}, 20, what="a back, b out")
    finally:
        await proxy.vanish()


async def _rechecked(svc: BatchService) -> bool:
    return any(
        (e["host"], e["previousState"], e["state"]) == ("a", JOINING, UNHEALTHY)
        for e in await scaling_events(svc)
    )
