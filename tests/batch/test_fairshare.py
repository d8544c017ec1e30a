"""Fair share: weights, decay and the compute reservation, driven through ``decide`` over simulated time.

Two shares each submit 100 one-vCPU jobs of 10 s to a queue whose policy weights them 1 and 3
(AWS's ``weightFactor``: lower gets more). While both have work, the vCPU-seconds they use
come out 3:1 within 10 %, with and without a decay window, and FIFO would not do that.
A real-container test checks the same order on a small scale.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.batch.fairshare import FairView, PolicyError, SchedulingPolicy, Usage
from engine.batch.jobs import JobError
from engine.batch.queues import Environment, Queue, RunnableIndex, Slot, decide
from engine.executors.docker_api import DockerClient
from tests.support.batch import MakeBatch, box
from tests.support.docker import TEST_LABEL
from tests.support.engines import MakeEngine, write_flow
from tests.support.waiting import wait_until as until
from workflows.errors import SpecErrors
from workflows.loader import load_dir

MIB = 1 << 20


def simulate(
    policy: SchedulingPolicy | None, jobs: int = 100, capacity: int = 8, duration: int = 10
) -> dict[str, float]:
    """vCPU-seconds used per share while both shares still had RUNNABLE jobs."""
    queue = Queue("fair", 1, ("local",), policy=None if policy is None else policy.name)
    env = Environment("local", capacity, 64 * 1024 * MIB)
    index = RunnableIndex()
    seq = 0
    for i in range(jobs):  # interleaved submissions: FIFO alternates A, B, A, B
        for share in ("A", "B"):
            seq += 1
            index.add("fair", Slot(f"{share}{i}", seq, 1.0, 64 * MIB, 0.0, share))
    usage, running = Usage(), {}  # job -> (share, end)
    used = {"A": 0.0, "B": 0.0}
    for t in range(0, 10_000):
        for job_id, (_, end) in list(running.items()):
            if end <= t:
                del running[job_id]
                env.give(1.0, 64 * MIB)
        left = {s: len(list(v)) for s, v in index.shares("fair").items()}
        if not running and not left:
            break
        in_use: dict[str, float] = {}
        for share, _ in running.values():
            in_use[share] = in_use.get(share, 0.0) + 1.0
        if left.get("A") and left.get("B"):
            for share, v in in_use.items():
                used[share] += v
        view = index.view(queue)
        if policy is not None:
            usage.advance(t, {"fair": policy.decay_s})
            view.fair = FairView(
                policy, index.shares("fair"), in_use, {s: usage.of("fair", s) for s in ("A", "B")}, capacity
            )
        for job_id, _ in decide([view], {"local": env}, float(t)).placements:
            slot = index.remove("fair", job_id)
            assert slot is not None and slot.share is not None
            env.take(1.0, 64 * MIB)
            running[job_id] = (slot.share, t + duration)
            in_use[slot.share] = in_use.get(slot.share, 0.0) + 1.0
        usage.running({("fair", s): v for s, v in in_use.items()})
    return used


@pytest.mark.parametrize("decay_s", [0, 600])
def test_two_shares_weighted_1_and_3_use_the_capacity_3_to_1(decay_s: int) -> None:
    policy = SchedulingPolicy("p", decay_s, 0, (("A", 1.0), ("B", 3.0)))
    used = simulate(policy)
    ratio = used["A"] / used["B"]
    assert abs(ratio - 3) <= 0.3, used  # within 10 % of 3:1 while both have work
    fifo = simulate(None)
    assert abs(fifo["A"] / fifo["B"] - 1) < 0.1  # without the policy, interleaved submissions share 1:1


def test_weights_by_exact_name_then_longest_prefix_then_one() -> None:
    policy = SchedulingPolicy("p", 0, 0, (("team*", 2.0), ("team_a*", 4.0), ("team_a1", 0.5)))
    assert policy.weight("team_a1") == 0.5
    assert policy.weight("team_a2") == 4.0
    assert policy.weight("team_b") == 2.0
    assert policy.weight("other") == 1.0


def test_decayed_usage_puts_a_share_that_ran_recently_behind() -> None:
    policy = SchedulingPolicy("p", 100, 0, ())
    usage = Usage()
    usage.advance(0, {"q": 100})
    usage.running({("q", "busy"): 4.0})
    usage.advance(50, {"q": 100})  # ran 4 vCPUs for 50 s
    usage.running({})
    usage.advance(60, {"q": 100})
    assert 150 < usage.of("q", "busy") < 200  # 200 vCPU-s, decayed for 10 s
    queue = Queue("q", 1, ("local",), policy="p")
    index = RunnableIndex()
    index.add("q", Slot("b1", 1, 1, 64 * MIB, 0, "busy"))
    index.add("q", Slot("i1", 2, 1, 64 * MIB, 0, "idle"))
    view = index.view(queue)
    view.fair = FairView(policy, index.shares("q"), {}, {"busy": usage.of("q", "busy")}, 1)
    d = decide([view], {"local": Environment("local", 1, 1024 * MIB)}, 60)
    assert d.placements == [("i1", "local")]  # submitted later, but its share has not run


def test_within_a_share_higher_scheduling_priority_goes_first_then_submission_order() -> None:
    policy = SchedulingPolicy("p", 0, 0, ())
    queue = Queue("q", 1, ("local",), policy="p")
    index = RunnableIndex()
    for i, prio in enumerate((0, 0, 5, 0, 5)):
        index.add("q", Slot(f"a{i}", i, 1, 64 * MIB, 0, "A", prio))
    view = index.view(queue)
    view.fair = FairView(policy, index.shares("q"), {}, {}, 3)
    d = decide([view], {"local": Environment("local", 3, 1024 * MIB)}, 0)
    assert [j for j, _ in d.placements] == ["a2", "a4", "a0"]


def test_compute_reservation_keeps_room_for_shares_that_have_not_run() -> None:
    # 50 %: with one active share, half the capacity waits for others (AWS: 0.5 ** 1)
    policy = SchedulingPolicy("p", 0, 50, ())
    queue = Queue("q", 1, ("local",), policy="p")
    index = RunnableIndex()
    for i in range(8):
        index.add("q", Slot(f"a{i}", i, 1, 64 * MIB, 0, "A"))
    env = Environment("local", 8, 8192 * MIB, used_vcpus=1)
    view = index.view(queue)
    view.fair = FairView(policy, index.shares("q"), {"A": 1.0}, {}, 8)
    d = decide([view], {"local": env}, 0)
    assert len(d.placements) == 3  # 1 running + 3 = 4 of 8: the other half is kept
    index.add("q", Slot("b0", 99, 1, 64 * MIB, 0, "B"))
    view = index.view(queue)
    view.fair = FairView(policy, index.shares("q"), {"A": 4.0}, {}, 8)
    env.used_vcpus = 4
    d = decide([view], {"local": env}, 0)
    assert ("b0", "local") in d.placements  # a new share may use the reserved part


def test_bad_policies_are_refused_with_the_field() -> None:
    for body, words in (
        ({"share_decay_s": -1}, "share_decay_s"),
        ({"compute_reservation": 100}, "compute_reservation"),
        ({"share_distribution": [{"share_identifier": "a b"}]}, "share_identifier"),
        ({"share_distribution": [{"share_identifier": "a", "weight_factor": 0}]}, "weight_factor"),
        ({"weights": {}}, "unknown field(s) weights"),
    ):
        with pytest.raises(PolicyError, match=words.replace("(", r"\(").replace(")", r"\)")):
            SchedulingPolicy.from_json("p", body)


@pytest.mark.docker
async def test_a_fair_share_queue_on_real_containers_starts_shares_by_weight(batch: MakeBatch) -> None:
    svc = await batch(vcpus=2)
    await svc.policies.put(
        {
            "name": "teams",
            "share_distribution": [
                {"share_identifier": "alpha", "weight_factor": 1},
                {"share_identifier": "beta", "weight_factor": 3},
            ],
        },
        create=True,
    )
    off = {"name": "fs", "max_vcpus": 2, "max_memory": 1 << 30, "state": "DISABLED"}
    await svc.put_environment(off, create=True)
    await svc.put_queue(
        {"name": "shared", "priority": 1, "environments": ["fs"], "scheduling_policy": "teams"}, create=True
    )
    with pytest.raises(JobError, match="give each job a share_identifier"):
        await svc.submit({"queue": "shared", "container": box(["true"])})
    with pytest.raises(JobError, match="is FIFO"):
        await svc.submit({"queue": "default", "container": box(["true"]), "share_identifier": "alpha"})
    ids: dict[str, list[str]] = {"alpha": [], "beta": []}
    for share in ("beta", "alpha"):  # beta first: FIFO would start beta's jobs first
        for _ in range(6):
            out = await svc.submit(
                {"queue": "shared", "container": box(["sleep", "1"]), "share_identifier": share}
            )
            ids[share].append(out["job_id"])
    await svc.put_environment({"name": "fs", "state": "ENABLED"}, create=False)
    every = ids["alpha"] + ids["beta"]
    await until(lambda: sum(svc.jobs[j].status != "RUNNABLE" for j in every if j in svc.jobs) >= 4, 30)
    first = [j for j in every if j in svc.jobs and svc.jobs[j].status != "RUNNABLE"]
    assert sorted(j in ids["alpha"] for j in first) == [False, True, True, True], first
    usage = svc.share_usage("shared")
    assert usage["alpha"]["running_vcpus"] == 1.5 and usage["beta"]["weight_factor"] == 3
    for job_id in every:
        assert await svc.wait(job_id, 60) == "SUCCEEDED"
    desc = await svc.describe(ids["beta"][0])
    assert desc is not None and desc["spec"]["share_identifier"] == "beta"


STEP_FLOW = """\
name: shared
steps:
  work:
    container:
      image: busybox:1.36
      command: ["true"]
      vcpus: 0.5
      memory: 32MiB
      network: none
      queue: shared
      share_identifier: team_a
      preemptible: false
"""


@pytest.mark.docker
async def test_a_container_step_runs_on_a_fair_share_queue_under_its_share(
    make_engine: MakeEngine, tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> None:
    engine = await make_engine(write_flow(tmp_path / "flows", STEP_FLOW).parent)
    assert engine.batch is not None
    engine.batch.labels[TEST_LABEL] = docker_test_label
    await engine.batch.policies.put({"name": "p"}, create=True)
    queue = {"name": "shared", "priority": 1, "environments": ["local"], "scheduling_policy": "p"}
    await engine.batch.put_queue(queue, create=True)
    summary = await engine.run_to_end("shared", timeout_s=60)
    assert summary["status"] == "SUCCEEDED", summary
    run_id = summary["run_id"]
    job_id = await engine.store.read(
        lambda c: c.execute("SELECT job_id FROM steps WHERE run_id=? AND step='work'", (run_id,)).fetchone()[
            0
        ]
    )
    desc = await engine.batch.describe(job_id)
    assert desc is not None and desc["spec"]["share_identifier"] == "team_a"
    assert desc["spec"]["preemptible"] is False


def test_a_step_share_identifier_is_checked_at_load(tmp_path: Path) -> None:
    bad = STEP_FLOW.replace("share_identifier: team_a", 'share_identifier: "team a"')
    with pytest.raises(SpecErrors, match=r"container.share_identifier: must be up to 255 letters"):
        load_dir(write_flow(tmp_path / "flows", bad).parent)
