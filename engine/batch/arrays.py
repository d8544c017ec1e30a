"""Array jobs: a parent's children spelled out, written to the store in chunks, finished after a crash.

A 10,000-child array is 10,000 rows and 30,000 events. Written in one transaction that held the
store for over a second, and every webhook, step end and job transition waited behind it; in
chunks of ``ARRAY_CHUNK`` each commit is a few milliseconds and other writes get in between
(bench/arrays.py). The parent is committed first, so it is visible at once, and its
``statusSummary`` counts a child not written yet as SUBMITTED (``rows.array_summary``): the counts
always add up to the array's size.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from engine.batch import rows
from engine.batch.book import Book, Change
from engine.batch.detail import job_event
from engine.batch.jobs import FAILED, PENDING, SUBMITTED, ChildError, Job, JobSpec
from engine.bus.bus import Bus
from engine.events import iso_ms
from engine.store.records import dumps
from engine.store.store import Store

#: children per transaction of a big array: ~0.1 ms of SQLite work each (a row and three events),
#: so a commit holds the store for a few ms even while the loop competes for the GIL
ARRAY_CHUNK = 25
#: the reason of a child whose row a crash kept from being written
INTERRUPTED = "the engine stopped before this array child was stored; submit the array again"

#: a child's reason is kept whole up to this, as a failed dependency's is
MAX_REASON = 500

Deps = dict[str, list[tuple[str, str]]]


async def expand(
    job: Job,
    size: int | None,
    deps: list[tuple[str, str]],
    spec_of: Callable[[JobSpec, int], JobSpec] | None = None,
) -> tuple[list[Job], list[tuple[str, str, str]]]:
    """The job and its array children, and each one's dependency rows (N_TO_N, SEQUENTIAL spelled out).

    ``spec_of(spec, i)``: child *i*'s own spec (a container ``for_each``: its item); a child whose
    spec it refuses (:class:`ChildError`) is created FAILED, with no attempt, and the rest run. 10,000
    children take ~30 ms to build: the loop gets a turn every ``ARRAY_CHUNK * 40`` of them
    (every ``ARRAY_CHUNK * 4`` when each renders its own spec, ~10x the work)."""
    if size is None:
        return [job], [(job.id, d, "ALL_DONE" if m == "ALL_DONE" else "STANDARD") for d, m in deps]
    jobs, out = [job], []
    turn = ARRAY_CHUNK * (40 if spec_of is None else 4)
    for i in range(size):
        if i and i % turn == 0:
            await asyncio.sleep(0)
        child = child_of(job, i)
        if spec_of is not None:
            try:
                child.spec = spec_of(job.spec, i)
            except ChildError as exc:
                child.status, child.status_reason = FAILED, str(exc)[:MAX_REASON]
                child.stopped_at = job.created_at
        jobs.append(child)
        for d, m in deps:
            if m == "SEQUENTIAL":
                if i > 0:
                    out.append((child.id, f"{job.id}:{i - 1}", "STANDARD"))
            else:
                dep = f"{d}:{i}" if m == "N_TO_N" else d
                out.append((child.id, dep, "ALL_DONE" if m == "ALL_DONE" else "STANDARD"))
    return jobs, out


def describe_unwritten(job: Job) -> dict[str, Any]:
    """A child whose chunk is still queued, as the API shows a stored one: SUBMITTED (as the
    parent's ``statusSummary`` counts it), with its spec and no attempts yet. AWS answers
    DescribeJobs for ``parent:N`` as soon as SubmitJob has returned, and scripts poll at once."""
    return {
        "job_id": job.id,
        "name": job.name,
        "queue": job.queue,
        "status": SUBMITTED,
        "status_reason": None,
        "parent_id": job.parent_id,
        "array_size": None,
        "array_index": job.array_index,
        "attempt_count": 0,
        "preemptions": 0,
        "environment": None,
        "exit_code": None,
        "run_id": job.run_id,
        "step": job.step,
        "created_at": iso_ms(job.created_at),
        "started_at": None,
        "stopped_at": None,
        "spec": json.loads(dumps(job.spec.to_json())),
        "attempts": [],
        "depends_on": [],
    }


def child_of(parent: Job, index: int) -> Job:
    return replace(
        parent,
        id=f"{parent.id}:{index}",
        name=f"{parent.name}:{index}",
        parent_id=parent.id,
        array_index=index,
        array_size=None,
        seq=0,
    )


async def write_children(
    store: Store,
    book: Book,
    bus: Bus,
    children: list[Job],
    deps_of: Deps,
    now: float,
    wake: Callable[[], None],
) -> None:
    """Commit the children (already in the book, as ``unwritten``) one chunk per transaction."""
    for at in range(0, len(children), ARRAY_CHUNK):
        part = children[at : at + ARRAY_CHUNK]
        written = store.write_nowait(chunk_tx(bus, part, deps_of, now), heavy=True)
        # a change made from now on is queued behind this chunk, so it may be committed itself
        book.unwritten.difference_update(j.id for j in part)
        bus.deliver(await written)
        book.written(part)
        wake()


def chunk_tx(bus: Bus, part: list[Job], deps_of: Deps, now: float) -> Callable[[sqlite3.Connection], Any]:
    snaps = [copy.copy(j) for j in part]  # as they are now: a cancel may have ended some already
    events: list[dict[str, Any]] = []
    dep_rows: list[tuple[str, str, str]] = []
    for j in snaps:
        deps = deps_of.get(j.id, [])
        dep_rows.extend((j.id, dep_id, mode) for dep_id, mode in deps)
        for early in (SUBMITTED, PENDING):
            events.append(job_event(replace(j, status=early, status_reason=None), now, (), deps))
        if j.status != PENDING:
            events.append(job_event(j, now, (), deps))

    def tx(conn: sqlite3.Connection) -> list[Any]:
        for real, snap in zip(part, snaps, strict=True):
            real.seq = snap.seq = rows.insert_job(conn, snap)
        rows.insert_dependencies(conn, dep_rows)
        runs: list[Any] = []
        for env in events:
            runs.extend(bus.publish(conn, env, 0))
        return runs

    return tx


def finish_interrupted(
    book: Book, missing: dict[str, list[int]], now: float
) -> tuple[list[Change], Callable[[sqlite3.Connection], None]]:
    """After a crash in the middle of a submission: the children never written end FAILED.

    Returns what that settles (the parent, once none of its children is left) and the write of
    their rows, to be committed together."""
    lost: list[Job] = []
    changes: list[Change] = []
    for parent_id, indexes in missing.items():
        parent = book.jobs.get(parent_id)
        if parent is None:
            continue
        book.array_left[parent_id] = book.array_left.get(parent_id, 0) + len(indexes)
        for i in indexes:
            child = child_of(parent, i)
            child.status, child.status_reason, child.stopped_at = FAILED, INTERRUPTED, now
            lost.append(child)
            changes.extend(book.settle(child))

    def tx(conn: sqlite3.Connection) -> None:
        for child in lost:
            child.seq = rows.insert_job(conn, child)

    return changes, tx
