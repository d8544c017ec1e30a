"""The capacity scheduler as a pure function: priorities, packing, spill-over, backfill, reasons."""

from __future__ import annotations

import time

from engine.batch.queues import (
    DISABLED,
    Environment,
    Queue,
    QueueView,
    RunnableIndex,
    Slot,
    decide,
    explain,
)

MIB = 1 << 20


def slot(job_id: str, seq: int, vcpus: float = 1, memory: int = 64 * MIB, since: float = 0.0) -> Slot:
    return Slot(job_id, seq, vcpus, memory, since)


def env(name: str = "local", vcpus: float = 2, memory: int = 1024 * MIB, **kw: float) -> Environment:
    return Environment(name, vcpus, memory, **kw)  # type: ignore[arg-type]


def view(queue: Queue, slots: list[Slot]) -> QueueView:
    index = RunnableIndex()
    for s in slots:
        index.add(queue.name, s)
    return index.view(queue)


def test_priority_then_submission_order_with_capacity_one() -> None:
    envs = {"local": env(vcpus=1)}
    low = Queue("low", 1, ("local",))
    high = Queue("high", 10, ("local",))
    d = decide([view(low, [slot("l1", 1)]), view(high, [slot("h2", 3), slot("h1", 2)])], envs, now=0)
    assert d.placements == [("h1", "local")]


def test_packs_vcpus_and_memory() -> None:
    envs = {"local": env(vcpus=2, memory=256 * MIB)}
    q = Queue("q", 1, ("local",))
    slots = [slot("a", 1, 0.5, 100 * MIB), slot("b", 2, 0.5, 100 * MIB), slot("c", 3, 0.5, 100 * MIB)]
    d = decide([view(q, slots)], envs, now=0)
    assert [j for j, _ in d.placements] == ["a", "b"]  # memory is full before vCPUs are


def test_spills_over_to_the_next_environment_in_order() -> None:
    envs = {"a": env("a", vcpus=1), "b": env("b", vcpus=2)}
    q = Queue("q", 1, ("a", "b"))
    d = decide([view(q, [slot("1", 1), slot("2", 2), slot("3", 3), slot("4", 4)])], envs, now=0)
    assert d.placements == [("1", "a"), ("2", "b"), ("3", "b")]


def test_backfills_small_jobs_behind_a_big_head_job() -> None:
    envs = {"local": env(vcpus=4, used_vcpus=3)}
    q = Queue("q", 1, ("local",))
    big, small = slot("big", 1, vcpus=4, since=100), slot("small", 2, vcpus=1, since=100)
    d = decide([view(q, [big, small])], envs, now=110, reserve_after_s=60)
    assert d.placements == [("small", "local")]
    assert d.reservations == {}


def test_head_job_that_waited_long_reserves_capacity_so_it_cannot_starve() -> None:
    envs = {"local": env(vcpus=4, used_vcpus=3)}
    q = Queue("q", 1, ("local",))
    big, small = slot("big", 1, vcpus=4, since=0), slot("small", 2, vcpus=1, since=0)
    d = decide([view(q, [big, small])], envs, now=61, reserve_after_s=60)
    assert d.placements == []
    assert d.reservations == {"local": "big"}
    reason = explain(small, q, envs, d.reservations)
    assert "reserved for big" in reason
    # once the running jobs end, the big job is placed first
    envs["local"].used_vcpus = 0
    d = decide([view(q, [big, small])], envs, now=62, reserve_after_s=60)
    assert d.placements == [("big", "local")]


def test_reservation_blocks_lower_priority_queues_too_but_not_other_environments() -> None:
    envs = {"a": env("a", vcpus=4, used_vcpus=2), "b": env("b", vcpus=1)}
    high = Queue("high", 5, ("a",))
    low = Queue("low", 1, ("a", "b"))
    d = decide(
        [view(high, [slot("big", 1, vcpus=4)]), view(low, [slot("x", 2, since=90), slot("y", 3, since=90)])],
        envs,
        now=100,
        reserve_after_s=60,
    )
    assert d.reservations == {"a": "big"}
    assert d.placements == [("x", "b")]


def test_disabled_queue_and_environment_are_skipped() -> None:
    envs = {"a": env("a", state=DISABLED), "b": env("b")}  # type: ignore[arg-type]
    q1 = Queue("q1", 1, ("a", "b"))
    q2 = Queue("q2", 9, ("b",), state=DISABLED)
    d = decide([view(q1, [slot("1", 1)]), view(q2, [slot("2", 2)])], envs, now=0)
    assert d.placements == [("1", "b")]
    assert "queue q2 is DISABLED" in explain(slot("2", 2), q2, envs, {})


def test_status_reason_names_what_is_missing() -> None:
    envs = {"local": env(vcpus=2, used_vcpus=1)}
    q = Queue("default", 1, ("local",))
    assert explain(slot("j", 1, vcpus=4), q, envs, {}).startswith(
        "waiting for 4 vCPUs, 64 MiB; 1 free in local"
    )
    envs["local"].used_memory = 1000 * MIB
    assert "memory free in local" in explain(slot("j", 1, vcpus=1), q, envs, {})


def test_same_snapshot_same_decision() -> None:
    envs = {"a": env("a", vcpus=3), "b": env("b", vcpus=2)}
    q = Queue("q", 1, ("a", "b"))
    slots = [slot(str(i), i, vcpus=(i % 3) + 0.5, since=i) for i in range(50)]
    first = decide([view(q, slots)], envs, now=100, reserve_after_s=60)
    again = decide([view(q, list(reversed(slots)))], envs, now=100, reserve_after_s=60)
    assert first.placements == again.placements and first.reservations == again.reservations


def test_index_keeps_submission_order_when_a_retry_comes_back() -> None:
    index = RunnableIndex()
    q = Queue("q", 1, ("local",))
    for i in range(1, 4):
        index.add("q", slot(f"j{i}", i))
    removed = index.remove("q", "j1")
    assert removed is not None
    index.add("q", removed)  # a retried job returns to its place, not the end
    assert [s.job_id for s in index.view(q).runnable] == ["j1", "j2", "j3"]
    assert len(index) == 3


def test_decision_with_10000_runnable_jobs_is_fast() -> None:
    envs = {"local": env(vcpus=8, memory=32 << 30, used_vcpus=7.5)}
    q = Queue("q", 1, ("local",))
    index = RunnableIndex()
    for i in range(10_000):
        index.add("q", slot(f"j{i}", i, vcpus=1 + (i % 4), since=time.time()))
    best = min(_timed(lambda: decide([index.view(q)], envs, now=time.time())) for _ in range(20))
    assert best < 0.005, f"decision took {best * 1e3:.2f} ms"
    # worst case: every job looked at (none fits, free room above the smallest request)
    envs["local"].used_vcpus = 6.5
    index2 = RunnableIndex()
    for i in range(10_000):
        index2.add("q", slot(f"k{i}", i, vcpus=2, since=time.time()))
    index2.add("q", slot("tiny", 10_001, vcpus=0.25))
    d = decide([index2.view(q)], envs, now=time.time())
    worst = min(_timed(lambda: decide([index2.view(q)], envs, now=time.time())) for _ in range(5))
    assert d.examined <= 1_000
    assert worst < 0.005, f"worst-case decision took {worst * 1e3:.2f} ms"


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0
