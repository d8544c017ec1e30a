"""Ids: unique, time-ordered (the store's indexes rely on it), and never shared by two processes."""

from __future__ import annotations

import os
import re
import time
import uuid

from engine import ids
from engine.batch.jobs import new_job_id
from engine.bus.bus import new_run_id
from engine.events import complete


def test_event_ids_are_uuid7_that_sort_by_time() -> None:
    made = []
    for _ in range(3):
        made += [complete({"source": "t"})["id"] for _ in range(2_000)]
        time.sleep(0.002)
    parsed = [uuid.UUID(i) for i in made]
    assert {u.version for u in parsed} == {7} and {u.variant for u in parsed} == {uuid.RFC_4122}
    assert len(set(made)) == len(made)
    millis = [u.int >> 80 for u in parsed]
    assert millis == sorted(millis) and abs(millis[-1] / 1000 - time.time()) < 5
    assert made[:2_000] < made[2_000:4_000] < made[4_000:]  # string order is time order, across ms


def test_run_and_job_ids_strictly_increase_within_one_millisecond() -> None:
    runs = [new_run_id() for _ in range(20_000)]  # many share a millisecond: ties count up
    assert all(re.fullmatch(r"r-[0-9a-f]{22}", r) for r in runs)
    assert runs == sorted(runs) and len(set(runs)) == len(runs)
    job = new_job_id()
    assert re.fullmatch(r"j-[0-9a-f]{22}", job) and job[2:] > runs[-1][2:]
    assert abs(int(job[2:14], 16) / 1000 - time.time()) < 5


def test_a_forked_child_draws_other_random_bits() -> None:
    """Without the reseed at fork, a worker would repeat the engine's sequence and its ids."""
    read_fd, write_fd = os.pipe()
    state = ids._RANDOM.getstate()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write_fd, ids._RANDOM.getrandbits(64).to_bytes(8, "big"))
        os._exit(0)
    os.close(write_fd)
    try:
        child = int.from_bytes(os.read(read_fd, 8), "big")
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    ids._RANDOM.setstate(state)
    assert child != ids._RANDOM.getrandbits(64)
