"""The book: every unfinished job in memory, with its dependencies, arrays and the capacity in use.

The store holds the same facts (and rebuilds the book at start); the book exists so the
scheduler can decide without a query. It does no I/O: each method changes jobs in memory and
returns the changes, ``(job, status before)``, for the ledger to commit with their events.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from engine.batch.fairshare import SchedulingPolicy
from engine.batch.jobs import DONE, FAILED, PENDING, RUNNABLE, RUNNING, STARTING, SUCCEEDED, Job, slot_of
from engine.batch.queues import Environment, Queue, RunnableIndex, Running, explain

Change = tuple[Job, str]  #: a job (already changed in memory) and its status before

#: how many ended jobs the book remembers for the submissions being written meanwhile
ENDED_KEPT = 10_000


class Book:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}  #: every unfinished job (and array parent)
        self.envs: dict[str, Environment] = {}
        self.queues: dict[str, Queue] = {}
        #: name -> revision -> (status, body)
        self.definitions: dict[str, dict[int, tuple[str, dict[str, Any]]]] = {}
        self.index = RunnableIndex()
        self.waiting_on: dict[str, dict[str, str]] = {}  #: job -> {dependency id: mode}
        self.dependents: dict[str, list[str]] = {}
        self.array_left: dict[str, int] = {}  #: parent -> children not finished
        self.array_failed: dict[str, list[str]] = {}  #: parent -> failed children, in order
        self.reservations: dict[str, str] = {}
        self.started: dict[str, float] = {}  #: jobs holding capacity -> when their attempt was placed
        self.preempting: dict[str, str] = {}  #: victim -> the job it is preempted for
        self.policies: dict[str, SchedulingPolicy] = {}  #: fair-share scheduling policies by name
        #: array children admitted but whose rows are not written yet (a big array goes to the store
        #: in chunks): kept out of the index, and their changes wait for their chunk (see ``written``)
        self.unwritten: set[str] = set()
        #: jobs ended lately (id -> status, reason): a submission reads its dependencies' states
        #: before its write and is admitted after, so one may end in between (see ``admit``)
        self.ended: dict[str, tuple[str, str | None]] = {}

    def __repr__(self) -> str:
        return f"<Book jobs={len(self.jobs)} runnable={len(self.index)}>"

    # -- loading ------------------------------------------------------------------------------

    def load(
        self,
        jobs: Iterable[Job],
        deps: Iterable[tuple[str, str, str]],
        failed_children: dict[str, list[str]],
    ) -> list[Job]:
        """Rebuild from the store's unfinished jobs; returns the RUNNABLE ones (to be indexed)."""
        for job in jobs:
            self.jobs[job.id] = job
        for job_id, dep_id, mode in deps:
            if job_id in self.jobs:
                self.waiting_on.setdefault(job_id, {})[dep_id] = mode
                self.dependents.setdefault(dep_id, []).append(job_id)
        runnable = []
        for job in sorted(self.jobs.values(), key=lambda j: j.seq):
            if job.parent_id is not None and job.parent_id in self.jobs:
                self.array_left[job.parent_id] = self.array_left.get(job.parent_id, 0) + 1
            if job.status == RUNNABLE:
                runnable.append(job)
            elif job.status in (STARTING, RUNNING) and job.environment in self.envs:
                env = self.envs[job.environment]
                env.take(job.spec.vcpus, job.spec.memory)
                host = env.host(job.host)
                if host is not None:
                    host.take(job.spec.vcpus, job.spec.memory)
                self.started[job.id] = job.started_at or job.created_at
        self.array_failed.update(failed_children)
        return runnable

    # -- capacity -----------------------------------------------------------------------------

    def place(self, job: Job, env_name: str, host_name: str | None = None) -> list[Change]:
        """The scheduler placed ``job`` (on one of the environment's hosts, if it has them): take
        its capacity, start its next attempt (STARTING)."""
        env = self.envs[env_name]
        env.take(job.spec.vcpus, job.spec.memory)
        host = env.host(host_name)
        if host is not None:
            host.take(job.spec.vcpus, job.spec.memory)
        self.started[job.id] = time.time()
        job.status, job.environment, job.host = STARTING, env_name, host_name
        job.attempts += 1
        where = env_name if host is None else f"{env_name} (host {host_name})"
        job.status_reason = f"placed in {where}; starting attempt {job.attempts}"
        return [(job, RUNNABLE), *self._parent_running(job)]

    def release(self, job: Job) -> None:
        """An attempt ended (or never began): give its capacity back."""
        env = self.envs.get(job.environment or "")
        if env is not None and self.started.pop(job.id, None) is not None:
            env.give(job.spec.vcpus, job.spec.memory)
            host = env.host(job.host)
            if host is not None:
                host.give(job.spec.vcpus, job.spec.memory, time.time())

    def victims(self) -> list[Running]:
        """The RUNNING jobs a preempting queue may take capacity from (``preemptible`` ones)."""
        out = []
        for job_id, placed_at in self.started.items():
            job = self.jobs.get(job_id)
            queue = self.queues.get(job.queue) if job is not None else None
            if job is None or queue is None or job.status != RUNNING or not job.spec.preemptible:
                continue
            out.append(
                Running(
                    job_id,
                    job.environment or "",
                    queue.priority,
                    placed_at,
                    job.spec.vcpus,
                    job.spec.memory,
                    job.host,
                )
            )
        return out

    def _parent_running(self, child: Job) -> list[Change]:
        parent = self.jobs.get(child.parent_id or "")
        if parent is None or parent.status != PENDING:
            return []
        parent.status, parent.status_reason = RUNNING, f"child {child.id} started"
        parent.started_at = time.time()
        return [(parent, PENDING)]

    def waiting_reason(self, job_id: str) -> str | None:
        """Why a RUNNABLE job is not placed yet (the scheduler's own words), else None."""
        job = self.jobs.get(job_id)
        if job is None or job.status != RUNNABLE:
            return None
        slot = self.index.get(job.queue, job_id)
        queue = self.queues.get(job.queue)
        if slot is None or queue is None:
            return None
        reason = explain(slot, queue, self.envs, self.reservations)
        for holder in set(self.preempting.values()) & set(self.reservations.values()):
            reason = reason.replace(
                f"reserved for {holder}, which has waited longest",
                f"reserved for {holder}, which preempts lower-priority jobs there",
            )
        victims = [v for v, by in self.preempting.items() if by == job_id]
        if victims:
            shown = ", ".join(victims[:3]) + (f" and {len(victims) - 3} more" if len(victims) > 3 else "")
            reason = f"preempting {shown} (lower priority) to make room; {reason}"
        return reason

    # -- admitting new jobs -------------------------------------------------------------------

    def admit(self, jobs: list[Job], waiting: dict[str, dict[str, str]]) -> list[Change]:
        """Take in a committed submission (a job, or an array parent first and its children).

        Returns the changes of children that failed at once (a failed dependency) and what that
        settles: the caller commits them."""
        parent = jobs[0] if jobs[0].is_parent else None
        if parent is not None:
            self.jobs[parent.id] = parent
            self.array_left[parent.id] = parent.array_size or 0
        changes: list[Change] = []
        gone: dict[str, tuple[str, str | None]] = {}
        new = {j.id for j in jobs}
        for j in jobs[1:] if parent is not None else jobs:
            if j.status == FAILED:
                changes.extend(self.settle(j))
                continue
            self.jobs[j.id] = j
            if j.status == RUNNABLE and j.id not in self.unwritten:
                self.index.add(j.queue, slot_of(j))
            elif waiting.get(j.id):
                self.waiting_on[j.id] = waiting[j.id]
                for dep_id in waiting[j.id]:
                    self.dependents.setdefault(dep_id, []).append(j.id)
                    if dep_id not in self.jobs and dep_id not in new and dep_id in self.ended:
                        gone[dep_id] = self.ended[dep_id]
        # ended while the submission was written: nothing would ever tell its dependents
        changes.extend(self.settle_stored((d, status, reason) for d, (status, reason) in gone.items()))
        return changes

    def written(self, jobs: Iterable[Job]) -> None:
        """Their rows are committed (a chunk of a big array): the RUNNABLE ones may be placed now."""
        for j in jobs:
            if j.status == RUNNABLE and self.jobs.get(j.id) is j and self.index.get(j.queue, j.id) is None:
                self.index.add(j.queue, slot_of(j))

    def withdraw(self, job: Job, reason: str, now: float) -> list[Change]:
        """A job not started yet is cancelled: it ends FAILED, and what depended on it settles."""
        old = job.status
        self.index.remove(job.queue, job.id)
        self.waiting_on.pop(job.id, None)
        job.status, job.status_reason, job.stopped_at = FAILED, reason, now
        return [(job, old), *self.settle(job)]

    # -- settling: dependencies and array parents ---------------------------------------------

    def settle(self, done: Job) -> list[Change]:
        """A job ended: free its dependents (or fail them), update its array parent; cascade."""
        changes: list[Change] = []
        work = [done]
        while work:
            job = work.pop()
            self.jobs.pop(job.id, None)
            if job.status in DONE:
                self.ended[job.id] = (job.status, job.status_reason)
                while len(self.ended) > ENDED_KEPT:
                    self.ended.pop(next(iter(self.ended)))
            for dep_id in self.dependents.pop(job.id, []):
                changes.extend(self._dependency_done(dep_id, job, work))
            parent = self.jobs.get(job.parent_id or "")
            if parent is not None:
                changes.extend(self._child_done(parent, job, work))
        return changes

    def settle_stored(self, rows: Iterable[tuple[str, str, str | None]]) -> list[Change]:
        """After a crash between a job's end and its dependents' update: settle from stored rows."""
        changes: list[Change] = []
        for job_id, status, reason in rows:
            if status in DONE:
                changes.extend(self.settle(Job.ended(job_id, status, reason)))
        return changes

    def _dependency_done(self, job_id: str, dep: Job, work: list[Job]) -> list[Change]:
        waiting = self.waiting_on.get(job_id)
        job = self.jobs.get(job_id)
        if waiting is None or job is None or job.status != PENDING:
            return []
        mode = waiting.pop(dep.id, "STANDARD")
        if dep.status == FAILED and mode != "ALL_DONE":
            self.waiting_on.pop(job_id, None)
            job.status, job.stopped_at = FAILED, time.time()
            job.status_reason = f"Dependent job {dep.id} failed: {dep.status_reason}"[:500]
            work.append(job)
            return [(job, PENDING)]
        if not waiting:
            self.waiting_on.pop(job_id, None)
            job.status, job.runnable_at = RUNNABLE, time.time()
            job.status_reason = "dependencies met; waiting for capacity"
            if job.id not in self.unwritten:
                self.index.add(job.queue, slot_of(job))
            return [(job, PENDING)]
        return []

    def _child_done(self, parent: Job, child: Job, work: list[Job]) -> list[Change]:
        left = self.array_left[parent.id] = self.array_left.get(parent.id, 1) - 1
        if child.status == FAILED:
            self.array_failed.setdefault(parent.id, []).append(child.id)
        if left > 0:
            return []
        work.append(parent)
        return [self._end_array(parent)]

    def _end_array(self, parent: Job) -> Change:
        """Every child has ended: the array ends by AWS's rule, FAILED if any child failed."""
        old = parent.status
        failed = self.array_failed.pop(parent.id, [])
        self.array_left.pop(parent.id, None)
        parent.stopped_at = time.time()
        if failed:
            parent.status = FAILED
            parent.status_reason = (
                f"{len(failed)} of {parent.array_size} child jobs failed; first: {failed[0]}"
            )
        else:
            parent.status = SUCCEEDED
            parent.status_reason = f"all {parent.array_size} child jobs succeeded"
        return (parent, old)

    def settle_ended_arrays(self) -> list[Change]:
        """After a crash between a submission and its parent's end: arrays with no child left.

        A submission whose children all failed at once (an item that does not fit, a failed
        dependency) commits the children, then the parent's end in a second commit; ``load``
        counts only unfinished children, so nothing else would ever end such a parent. Call once
        every child is loaded or stored (after ``arrays.finish_interrupted``)."""
        changes: list[Change] = []
        for parent in [j for j in self.jobs.values() if j.is_parent]:
            ended = self.jobs.get(parent.id) is not parent or parent.status in DONE
            if not ended and self.array_left.get(parent.id, 0) <= 0 and parent.id not in self.unwritten:
                changes.append(self._end_array(parent))
                changes.extend(self.settle(parent))
        return changes
