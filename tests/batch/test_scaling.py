"""Managed scaling's bookkeeping: each environment's min, desired and max vCPUs.

Desired follows what runs plus the RUNNABLE demand of the queues that list the environment,
between its min and max (AWS Batch's ``desiredvCpus``); with one Docker engine per environment
nothing is added, so desired is what the environment would need (docs/batch.md).
"""

from __future__ import annotations

import pytest

from engine.batch.jobs import JobError
from engine.batch.queues import DISABLED, Environment, Queue, desired_vcpus
from tests.support.batch import MakeBatch, box
from tests.support.waiting import wait_until as until

MIB = 1 << 20


def test_desired_is_use_plus_demand_in_queue_order_within_min_and_max() -> None:
    envs = {
        "a": Environment("a", 4, 1024 * MIB, used_vcpus=1, min_vcpus=0),
        "b": Environment("b", 8, 1024 * MIB, min_vcpus=2),
        "c": Environment("c", 8, 1024 * MIB, state=DISABLED, used_vcpus=1, min_vcpus=0),
    }
    high = Queue("high", 10, ("a", "b"))
    low = Queue("low", 1, ("c", "a"))
    want = desired_vcpus(envs, [(low, 2.0), (high, 5.0)])
    # high first: a fills to its max (1 running + 3), b takes the other 2; low's 2 then go past a's max
    assert want == {"a": 4, "b": 2, "c": 1}
    assert desired_vcpus(envs, [(high, 0.0)]) == {"a": 1, "b": 2, "c": 1}  # b stays at its min
    assert desired_vcpus(envs, [(high, 100.0)])["b"] == 8  # capped at max


@pytest.mark.docker
async def test_desired_follows_the_runnable_demand_of_a_real_environment(batch: MakeBatch) -> None:
    svc = await batch(vcpus=2)
    out = await svc.put_environment(
        {"name": "grow", "max_vcpus": 1.5, "max_memory": 1 << 30, "min_vcpus": 0.5}, create=True
    )
    assert (out["min_vcpus"], out["desired_vcpus"], out["max_vcpus"]) == (0.5, 0.5, 1.5)
    with pytest.raises(JobError, match="min_vcpus: a number from 0 to max_vcpus"):
        await svc.put_environment({"name": "grow", "min_vcpus": 3}, create=False)
    await svc.put_queue({"name": "g", "priority": 1, "environments": ["grow"]}, create=True)
    ids = [
        (await svc.submit({"queue": "g", "container": box(["sleep", "2"])}))["job_id"]  # 0.5 vCPU each
        for _ in range(5)
    ]
    await until(lambda: svc.envs["grow"].used_vcpus == 1.5, 30, what="grow full")
    assert svc.envs["grow"].desired_vcpus == 1.5  # 3 running + 2 waiting, capped at max
    for job_id in ids:
        await svc.wait(job_id, 60)
    await until(lambda: svc.envs["grow"].desired_vcpus == 0.5, 10, what="back to min")
