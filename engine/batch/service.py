"""The BatchService: Sluice's AWS Batch, an Engine service on top of the Docker layer.

It is a thin composition of parts that each own one concern and receive what they need:

- :class:`~engine.batch.book.Book`: every unfinished job in memory (no I/O);
- :class:`~engine.batch.ledger.Ledger`: commits transitions with their ``sluice.job`` events;
- :class:`~engine.batch.attempts.Attempts`: containers started, adopted and finished;
- :class:`~engine.batch.submit.Submitter`: submit, cancel, terminate, definitions, queues;
- :class:`~engine.batch.recovery.Recovery`: what a restart finds;
- :class:`~engine.batch.steps.ContainerSteps`: workflow ``container:`` steps as jobs;
- :class:`~engine.batch.scaling.Scaler`: the hosts in service of environments with several.

The service itself owns the lifecycle and the scheduling loop: it runs the pure scheduler of
:mod:`engine.batch.queues` whenever something changes (and once a second, so waiting jobs age
into reservations) and hands each placement to the attempts. Retry delays are timers here: a
job waiting out its delay is RUNNABLE in the store but kept out of the index until
``runnable_at``, so a restart keeps the wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.batch import arrays, config_rows, interrupts, policies, rows
from engine.batch.attempts import Attempts
from engine.batch.book import Book
from engine.batch.fairshare import FairView, Usage
from engine.batch.hosts import DEFAULT_COOLDOWN_S
from engine.batch.interrupts import Interrupts
from engine.batch.jobs import RUNNABLE, Job, slot_of
from engine.batch.ledger import Ledger
from engine.batch.policies import Policies
from engine.batch.queues import (
    DEFAULT_RESERVE_AFTER_S,
    ENABLED,
    Environment,
    Queue,
    QueueView,
    decide,
    desired_vcpus,
)
from engine.batch.recovery import Recovery
from engine.batch.scaling import Scaler
from engine.batch.steps import ContainerSteps
from engine.batch.submit import BeforeCommit, Submitter
from engine.bus.bus import Bus
from engine.executors.base import Outcome
from engine.executors.docker_api import DockerClient
from engine.store import kv
from engine.store.store import Store
from engine.types import StepHost
from workflows.hostpaths import volume_roots
from workflows.spec import StepSpec

log = logging.getLogger(__name__)


class BatchService:
    """Job queues, compute environments and jobs on Docker. ``start()``, ``run()``, ``aclose()``."""

    name = "batch"

    def __init__(
        self,
        store: Store,
        bus: Bus,
        data_dir: Path,
        client: DockerClient,
        *,
        stop_grace_s: float = 10.0,
        reserve_after_s: float = DEFAULT_RESERVE_AFTER_S,
        pull_timeout_s: float = 60.0,
        tick_s: float = 1.0,
        scale_in_cooldown_s: float = DEFAULT_COOLDOWN_S,
    ) -> None:
        self.store = store
        self.data_dir = Path(data_dir)
        self.reserve_after_s, self.tick_s = reserve_after_s, tick_s
        self.allowed_roots = volume_roots(self.data_dir)
        self.book = Book()
        self.ledger = Ledger(store, bus, self.book)
        self.attempts = Attempts(
            self.book,
            self.ledger,
            client,
            self.data_dir / "logs" / "jobs",
            requeue=self._runnable,
            wake=self.wake,
            stop_grace_s=stop_grace_s,
            pull_timeout_s=pull_timeout_s,
        )
        self.submitter = Submitter(
            store, self.book, self.ledger, self.attempts, self.allowed_roots, self.wake
        )
        self.interrupts = Interrupts(store, self.book, self.attempts, self.wake, stop_grace_s)
        self.attempts.host_lost = self.interrupts.host_lost
        self.policies = Policies(store, self.book, self.wake)
        self.scaler = Scaler(store, bus, self.book, self.attempts, self.wake, cooldown_s=scale_in_cooldown_s)
        self.attempts.host_down = self.scaler.host_down
        self.usage = Usage()  #: each fair-share queue's decayed usage per share
        self._fair_running: dict[tuple[str, str], float] = {}
        self.steps = ContainerSteps(self.submitter, self.ledger, self.describe)
        self.decision_s = 0.0  #: how long the last decision took
        self._retry_timers: dict[str, asyncio.TimerHandle] = {}  #: jobs waiting out a retry delay
        self._wake = asyncio.Event()
        self._started = False
        self._closing = False

    def __repr__(self) -> str:
        return f"<BatchService {self.book!r} {self.attempts!r}>"

    # what the API and tests read
    @property
    def jobs(self) -> dict[str, Job]:
        return self.book.jobs

    @property
    def envs(self) -> dict[str, Environment]:
        return self.book.envs

    @property
    def queues(self) -> dict[str, Queue]:
        return self.book.queues

    @property
    def labels(self) -> dict[str, str]:
        return self.attempts.labels

    @property
    def stop_grace_s(self) -> float:
        return self.attempts.stop_grace_s

    @stop_grace_s.setter
    def stop_grace_s(self, value: float) -> None:
        self.attempts.stop_grace_s = value

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load queues, environments and unfinished jobs; re-adopt containers. Idempotent."""
        if self._started:
            return
        self._started = True
        self.attempts.store_id = await self.store.write(kv.store_id_in)
        info = await self.attempts.client.info()
        await self.store.write(lambda c: config_rows.ensure_defaults(c, info))
        jobs, deps, failed = await self.store.read(rows.load_state)
        envs, queues, defs = await self.store.read(config_rows.load_config)
        self.book.envs, self.book.queues, self.book.definitions = envs, queues, defs
        self.book.policies = await self.store.read(policies.load)
        for job in self.book.load([rows.job_from_row(r, self.allowed_roots) for r in jobs], deps, failed):
            self._runnable(job)
        await Recovery(self.store, self.book, self.ledger, self.attempts).run()
        self.interrupts.resume()
        self._wake.set()

    async def run(self) -> None:
        """The scheduler loop: decide whenever woken, and every ``tick_s`` so waits age."""
        while True:
            try:
                async with asyncio.timeout(self.tick_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self._closing:
                return
            self.schedule()

    async def aclose(self) -> None:
        """Stop deciding and leave running containers running: the next start re-adopts them.

        A graceful stop is treated like a crash on purpose: a job is never failed or run twice
        because the engine restarted. The Docker connections are closed *before* the attempts
        are cancelled, so the runner's stop-on-cancel cannot reach the daemon and the containers
        keep running; nothing is recorded for them.
        """
        self._closing = True
        self._wake.set()
        for timer in self._retry_timers.values():
            timer.cancel()
        await self.interrupts.aclose()
        await self.scaler.aclose()
        await self.attempts.aclose()
        await self.submitter.aclose()

    def wake(self) -> None:
        self._wake.set()

    # -- scheduling ---------------------------------------------------------------------------

    def schedule(self) -> int:
        """One decision: place what fits, start those attempts; returns how many started."""
        if self._closing:
            return 0
        book = self.book
        t0 = time.perf_counter()
        now = time.time()
        views = [book.index.view(q) for q in book.queues.values()]
        self._fair_views(views, now)
        preempting = any(
            q.preemption.enabled and q.state == ENABLED and book.index.count(q.name)
            for q in book.queues.values()
        )
        decision = decide(
            views,
            book.envs,
            now,
            reserve_after_s=self.reserve_after_s,
            running=book.victims() if preempting else (),
            preempting=book.preempting,
        )
        self.decision_s = time.perf_counter() - t0
        book.reservations = decision.reservations
        for victim, by in decision.preemptions:
            self.interrupts.preempt(book.jobs[victim], book.jobs[by])
        running = self._fair_running
        for job_id, env_name in decision.placements:
            job = book.jobs[job_id]
            book.index.remove(job.queue, job_id)
            self.attempts.launch(job, book.place(job, env_name, decision.hosts.get(job_id)))
            if job.spec.share is not None:
                key = (job.queue, job.spec.share)
                running[key] = running.get(key, 0.0) + job.spec.vcpus
        self.usage.running(running)
        wanted = desired_vcpus(book.envs, ((q, book.index.demand(q.name)) for q in book.queues.values()))
        for name, vcpus in wanted.items():
            book.envs[name].desired_vcpus = vcpus
        self.scaler.follow(now)
        return len(decision.placements)

    def _fair_views(self, views: list[QueueView], now: float) -> None:
        """Give each fair-share queue's view its shares, their usage and what they run now."""
        book = self.book
        fair = {v.queue.name: v for v in views if v.queue.policy in book.policies}
        running: dict[tuple[str, str], float] = {}
        if fair:
            for job_id in book.started:
                job = book.jobs.get(job_id)
                if job is not None and job.queue in fair and job.spec.share is not None:
                    key = (job.queue, job.spec.share)
                    running[key] = running.get(key, 0.0) + job.spec.vcpus
        decay = {name: book.policies[v.queue.policy or ""].decay_s for name, v in fair.items()}
        self.usage.advance(now, decay)
        self._fair_running = running
        for name, view in fair.items():
            policy = book.policies[view.queue.policy or ""]
            by_share = book.index.shares(name)
            envs = [book.envs[e] for e in view.queue.environments if e in book.envs]
            view.fair = FairView(
                policy,
                by_share,
                {s: v for (q, s), v in running.items() if q == name},
                {s: self.usage.of(name, s) for s in by_share},
                sum(e.max_vcpus for e in envs if e.state == ENABLED),
            )

    def share_usage(self, queue: str) -> dict[str, dict[str, float]]:
        """A fair-share queue's shares: weight, vCPUs running, decayed usage, RUNNABLE jobs."""
        q = self.book.queues.get(queue)
        policy = self.book.policies.get(q.policy or "") if q is not None else None
        if policy is None:
            return {}
        running: dict[str, float] = {}
        for job_id in self.book.started:
            job = self.book.jobs.get(job_id)
            if job is not None and job.queue == queue and job.spec.share is not None:
                running[job.spec.share] = running.get(job.spec.share, 0.0) + job.spec.vcpus
        waiting = {s: len(list(slots)) for s, slots in self.book.index.shares(queue).items()}
        shares = sorted(set(running) | set(waiting) | set(self.usage.public(queue)))
        return {
            s: {
                "weight_factor": policy.weight(s),
                "running_vcpus": running.get(s, 0.0),
                "usage_vcpu_s": self.usage.of(queue, s),
                "runnable": waiting.get(s, 0),
            }
            for s in shares
        }

    def _runnable(self, job: Job) -> None:
        """Into the scheduler's index, now or (a retry's delay) at ``runnable_at``.

        Cancelling a job that waits works as for any RUNNABLE job: the timer then finds it
        ended and does nothing.
        """
        wait = (job.runnable_at or 0.0) - time.time()
        if wait <= 0:
            self.book.index.add(job.queue, slot_of(job))
            return
        due = job.runnable_at
        self._retry_timers[job.id] = asyncio.get_running_loop().call_later(wait, self._retry_due, job.id, due)

    def _retry_due(self, job_id: str, due: float | None) -> None:
        self._retry_timers.pop(job_id, None)
        job = self.book.jobs.get(job_id)
        if self._closing or job is None or job.status != RUNNABLE or job.runnable_at != due:
            return
        self.book.index.add(job.queue, slot_of(job))
        self.wake()

    # -- the facade: what the API, the CLI and container steps call --------------------------

    async def run_step(
        self, host: StepHost, name: str, spec: StepSpec, resume: dict[str, Any] | None
    ) -> Outcome:
        """Run a workflow's ``container:`` step as a job (the service is the run's StepRunner)."""
        return await self.steps.run_step(host, name, spec, resume)

    async def submit(
        self, req: Mapping[str, Any], *, before_commit: BeforeCommit | None = None
    ) -> dict[str, Any]:
        """``before_commit(conn, job)`` runs in the job's transaction; raising there writes nothing."""
        return await self.submitter.submit(req, before_commit=before_commit)

    async def cancel(self, job_id: str, reason: str | None = None) -> dict[str, Any]:
        return await self.submitter.cancel(job_id, reason)

    async def terminate(self, job_id: str, reason: str | None = None) -> dict[str, Any]:
        return await self.submitter.terminate(job_id, reason)

    async def wait(self, job_id: str, timeout_s: float | None = None) -> str:
        return await self.ledger.wait(job_id, timeout_s)

    async def register_definition(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.submitter.register_definition(body)

    async def deregister_definition(self, ref: str) -> dict[str, Any]:
        return await self.submitter.deregister_definition(ref)

    def list_definitions(self) -> list[dict[str, Any]]:
        return self.submitter.list_definitions()

    async def put_environment(self, body: Mapping[str, Any], *, create: bool) -> dict[str, Any]:
        return await self.submitter.put_environment(body, create=create)

    async def put_queue(self, body: Mapping[str, Any], *, create: bool) -> dict[str, Any]:
        return await self.submitter.put_queue(body, create=create)

    async def reclaim(self, environment: str) -> dict[str, Any]:
        """Take an interruptible environment's capacity back (engine/batch/interrupts.py)."""
        return await self.interrupts.reclaim(environment)

    async def recent_preemptions(self, queue: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The latest preempted attempts (of ``queue``'s jobs, or by its jobs), newest first."""
        found = await self.store.read(lambda c: interrupts.recent_preemptions(c, queue, limit))
        for row in found:
            row["being_preempted"] = row["job_id"] in self.book.preempting
        return found

    def waiting_reason(self, job_id: str) -> str | None:
        return self.book.waiting_reason(job_id)

    async def describe(self, job_id: str) -> dict[str, Any] | None:
        out = await self.store.read(lambda c: rows.describe_rows(c, job_id))
        if out is None:  # in the book but not the store: an array child whose chunk is queued
            job = self.book.jobs.get(job_id)
            return None if job is None or job.parent_id is None else arrays.describe_unwritten(job)
        if out is not None and out["status"] == RUNNABLE:
            out["status_reason"] = self.book.waiting_reason(job_id) or out["status_reason"]
        return out

    async def list_jobs(
        self, queue: str | None = None, status: str | None = None, limit: int = 100, parent: str | None = None
    ) -> list[dict[str, Any]]:
        found = await self.store.read(lambda c: rows.list_public(c, queue, status, parent, limit))
        for r in found:
            if r["status"] == RUNNABLE:
                r["status_reason"] = self.book.waiting_reason(r["job_id"]) or r["status_reason"]
        return found
