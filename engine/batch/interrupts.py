"""Interruptions: attempts ended early for a reason that is not the job's own, preemption and reclaim.

- **Preemption** (a queue with ``preemption.enabled``): the scheduler names victims
  (engine/batch/queues.py, :func:`~engine.batch.queues.preempt`); here each one's attempt row is
  marked ``preempted_by`` *before* its container gets SIGTERM, then the grace period, then
  SIGKILL. The attempt ends RUNNABLE, not counted against the retry strategy. The marker is what
  a restart honours: a marked attempt still running is stopped again, one that ended is requeued,
  and the scheduler counts marked victims as capacity already on its way, so nothing is
  preempted twice.
- **Reclaim** (an ``interruptible`` environment, Spot-like): the environment is DISABLED with
  ``reclaimed_at`` set, in one write, and its attempts are killed at once; each ends with AWS's
  Spot text, ``Host EC2 (instance i-...) terminated.`` and no exit code, so the retry strategy
  decides as it would on AWS (``onStatusReason: "Host EC2*"``). It takes no job until it is
  enabled again. A restart finds its attempts still running and kills them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from engine.batch import config_rows, rows
from engine.batch.attempts import Attempts
from engine.batch.book import Book
from engine.batch.jobs import RUNNING, STARTING, Job, JobError
from engine.batch.queues import DISABLED, Environment
from engine.events import iso_ms
from engine.store.store import Store

log = logging.getLogger(__name__)


def instance_id(env: Environment) -> str:
    """A stable EC2-like instance id for an environment (what AWS's Spot reason names)."""
    return "i-" + hashlib.sha256(f"{env.name} {env.endpoint}".encode()).hexdigest()[:17]


def host_terminated(env: Environment) -> str:
    """The statusReason AWS gives an attempt whose Spot instance was taken back."""
    return f"Host EC2 (instance {instance_id(env)}) terminated."


def preempt_marks(conn: sqlite3.Connection, attempts: Sequence[tuple[str, int]]) -> dict[str, str]:
    """Of these (job, attempt) pairs, the jobs whose attempt a preemption is ending -> the preemptor."""
    out: dict[str, str] = {}
    for job_id, attempt in attempts:
        row = conn.execute(
            "SELECT preempted_by FROM job_attempts WHERE job_id=? AND attempt=? AND preempted_by IS NOT NULL",
            (job_id, attempt),
        ).fetchone()
        if row is not None:
            out[job_id] = str(row[0])
    return out


def recent_preemptions(conn: sqlite3.Connection, queue: str | None, limit: int = 20) -> list[dict[str, Any]]:
    """The latest preempted attempts, newest first: who was preempted, by whom, from which queues."""
    where = "" if queue is None else " AND (v.queue = :q OR p.queue = :q)"
    rows = conn.execute(
        "SELECT a.job_id, a.attempt, a.preempted_by, a.stopped_at, a.started_at, v.queue, p.queue "
        "FROM job_attempts a JOIN jobs v ON v.id = a.job_id LEFT JOIN jobs p ON p.id = a.preempted_by "
        f"WHERE a.preempted_by IS NOT NULL{where} ORDER BY coalesce(a.stopped_at, 1e18) DESC LIMIT :n",
        {"q": queue, "n": int(limit)},
    ).fetchall()
    return [
        {
            "job_id": r[0],
            "attempt": r[1],
            "preempted_by": r[2],
            "stopped_at": iso_ms(r[3]),
            "queue": r[5],
            "preemptor_queue": r[6],
        }
        for r in rows
    ]


class Interrupts:
    def __init__(
        self, store: Store, book: Book, attempts: Attempts, wake: Callable[[], None], grace_s: float
    ) -> None:
        self.store, self.book, self.attempts, self.wake = store, book, attempts, wake
        self.grace_s = grace_s  #: for a preemption resumed after a restart (its queue may be gone)
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<Interrupts preempting={len(self.book.preempting)} stopping={len(self._tasks)}>"

    # -- preemption ---------------------------------------------------------------------------

    def preempt(self, victim: Job, by: Job) -> None:
        """Preempt ``victim``'s attempt for ``by`` (the scheduler chose it); returns at once."""
        self.book.preempting[victim.id] = by.id
        self._spawn(self._preempt(victim, by.id, self._grace(by.id)), f"preempt {victim.id}")

    def _grace(self, by: str) -> float:
        """The preemptor's queue's grace period (the service's stop grace if it is gone)."""
        preemptor = self.book.jobs.get(by)
        queue = self.book.queues.get(preemptor.queue) if preemptor is not None else None
        return queue.preemption.grace_s if queue is not None else self.grace_s

    async def _preempt(self, job: Job, by: str, grace_s: float) -> None:
        attempt, job_id = job.attempts, job.id
        if job.status not in (STARTING, RUNNING):
            return  # it ended on its own since the decision (its end took the marker back)
        text = self.reason(by)
        job.status_reason = f"being preempted: {text}; SIGTERM, then SIGKILL after {grace_s:g}s"
        note = job.status_reason
        await self.store.write(lambda c: rows.mark_preempted(c, job_id, attempt, by, note))
        log.info("job %s#%d: preempted by %s; stopping it (grace %gs)", job_id, attempt, by, grace_s)
        if job.status in (STARTING, RUNNING) and job.attempts == attempt:
            await self.attempts.stop(job, text, grace_s)

    def reason(self, by: str) -> str:
        """The victim's statusReason: who preempted it, from which queue."""
        preemptor = self.book.jobs.get(by)
        queue = self.book.queues.get(preemptor.queue) if preemptor is not None else None
        where = f" (queue {queue.name}, priority {queue.priority})" if queue is not None else ""
        return f"Preempted by job {by}{where}"

    # -- reclaim ------------------------------------------------------------------------------

    async def reclaim(self, name: str) -> dict[str, Any]:
        """Take an interruptible environment's capacity back: disable it, kill its attempts."""
        env = self.book.envs.get(name)
        if env is None:
            raise JobError(f"compute environment {name!r} does not exist", "not_found", 404)
        if not env.interruptible:
            raise JobError(
                f"compute environment {name} is not interruptible; only an environment created with "
                "interruptible: true (AWS: a SPOT compute environment) can be reclaimed",
                "not_interruptible",
                409,
            )
        if env.reclaimed_at is None:
            env.state, env.reclaimed_at = DISABLED, time.time()
            await self._save_reclaimed(env)
        stopped = self.stop_reclaimed(env)
        self.wake()
        return {**env.public(), "interrupted_jobs": stopped}

    async def _save_reclaimed(self, env: Environment) -> None:
        now = env.reclaimed_at or time.time()
        await self.store.write(lambda c: config_rows.save_environment(c, env, now))
        log.warning("compute environment %s reclaimed (%s)", env.name, instance_id(env))

    def host_lost(self, name: str) -> str:
        """An interruptible environment's engine went away under an attempt: reclaim it all.

        Called by the attempt that noticed; returns the reason that attempt ends with. The
        environment is disabled here, before that attempt ends: its retry must not be placed on
        the engine that just went away (the write and the other attempts' kills follow)."""
        env = self.book.envs[name]
        if env.reclaimed_at is None:
            log.warning("compute environment %s: its engine went away; reclaiming it", name)
            env.state, env.reclaimed_at = DISABLED, time.time()
            self._spawn(self._reclaim_after_loss(env), f"reclaim {name}")
        return host_terminated(env)

    async def _reclaim_after_loss(self, env: Environment) -> None:
        await self._save_reclaimed(env)
        self.stop_reclaimed(env)
        self.wake()

    def stop_reclaimed(self, env: Environment) -> list[str]:
        """Kill every attempt still holding capacity in reclaimed ``env``; their ids."""
        text = host_terminated(env)
        ids = []
        for job_id in list(self.book.started):
            job = self.book.jobs.get(job_id)
            if job is None or job.environment != env.name or job.status not in (STARTING, RUNNING):
                continue
            if job_id in self.attempts.reclaiming:
                continue
            self.attempts.reclaiming[job_id] = text
            self._spawn(self.attempts.stop(job, text, 0.0), f"reclaim {job_id}")
            ids.append(job_id)
        return ids

    # -- after a restart ----------------------------------------------------------------------

    def resume(self) -> None:
        """Finish what a restart interrupted: stop marked victims again, kill reclaimed attempts.

        Recovery has put the marked victims into ``book.preempting`` before adopting them."""
        for job_id, by in list(self.book.preempting.items()):
            job = self.book.jobs.get(job_id)
            if job is not None and job.status in (STARTING, RUNNING) and job_id in self.attempts.tasks:
                log.info("job %s: resuming its preemption by %s after a restart", job_id, by)
                stop = self.attempts.stop(job, self.reason(by), self._grace(by))
                self._spawn(stop, f"preempt {job_id}")
        for env in self.book.envs.values():
            if env.reclaimed_at is not None:
                self.stop_reclaimed(env)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def aclose(self) -> None:
        """Stop stopping: a restart resumes from the markers."""
        for task in list(self._tasks):
            task.cancel(msg="engine stopping")
        await asyncio.gather(*self._tasks, return_exceptions=True)
