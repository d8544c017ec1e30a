"""The BatchService: Sluice's AWS Batch, an Engine service on top of the Docker layer.

It keeps every unfinished job in memory (the store holds the same facts and rebuilds them
at start), runs the scheduler of :mod:`engine.batch.queues` whenever something changes (and once
a second, so waiting jobs age into reservations), starts each placed attempt through a
:class:`~engine.executors.docker.ContainerRunner`, and commits every transition together
with its ``sluice.job`` event before acting on it.

Recovery (``start()``): containers carry ``sluice.job-id``/``sluice.attempt`` labels. A job
RUNNING (or STARTING) whose container still exists is re-adopted, never started again; one
whose container is gone lost its result and is judged by its retry strategy; a job STARTING
with no container is put back to RUNNABLE and started again; managed containers of no known
job are reported (log and audit row), never killed.

Submission, cancel and terminate live in :mod:`engine.batch.submit` (a mixin over the same
state); workflow ``container:`` steps in :mod:`engine.batch.steps`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from engine.backoff import retry_delay
from engine.batch.jobs import (
    DONE,
    FAILED,
    PENDING,
    RUNNABLE,
    RUNNING,
    STARTING,
    SUCCEEDED,
    Job,
    end_attempt_row,
    job_event,
    job_from_row,
    save_job,
    slot_of,
    start_attempt_row,
    volume_roots,
)
from engine.batch.queues import (
    DEFAULT_RESERVE_AFTER_S,
    Environment,
    Queue,
    RunnableIndex,
    decide,
)
from engine.batch.recovery import RecoveryMixin, ensure_defaults, load_config, load_state
from engine.batch.steps import StepsMixin
from engine.batch.submit import SubmitMixin
from engine.events import iso_ms
from engine.executors.docker import EXITED, ContainerRequest, ContainerResult, ContainerRunner
from engine.executors.docker_api import DockerClient, DockerError
from engine.store.records import RunRecord
from engine.store.store import Store

log = logging.getLogger(__name__)

#: how many recently ended jobs wait() remembers
_ENDED_KEPT = 20_000
Change = tuple[Job, str]  #: a job (already changed in memory) and its status before


class _HookedClient:
    """The DockerClient, telling the service the moment a container has really started."""

    def __init__(self, client: DockerClient, on_start: Callable[[str], None]) -> None:
        self._client, self._on_start = client, on_start

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def start(self, container_id: str) -> None:
        await self._client.start(container_id)
        self._on_start(container_id)


class BatchService(SubmitMixin, StepsMixin, RecoveryMixin):
    """Job queues, compute environments and jobs on Docker. ``start()``, ``run()``, ``aclose()``."""

    name = "batch"

    def __init__(
        self,
        store: Store,
        bus: Any,
        data_dir: Path,
        client: DockerClient,
        *,
        stop_grace_s: float = 10.0,
        reserve_after_s: float = DEFAULT_RESERVE_AFTER_S,
        pull_timeout_s: float = 60.0,
        tick_s: float = 1.0,
    ) -> None:
        self.store, self.bus, self.client = store, bus, client
        self.data_dir = Path(data_dir)
        self.logs_dir = self.data_dir / "logs" / "jobs"
        self.stop_grace_s, self.reserve_after_s, self.tick_s = stop_grace_s, reserve_after_s, tick_s
        self.pull_timeout_s = pull_timeout_s
        self.runner = ContainerRunner(_HookedClient(client, self._on_started), pull_timeout_s=pull_timeout_s)
        self._runners: dict[str, ContainerRunner] = {}
        self.labels: dict[str, str] = {}  #: extra labels on every container (tests tag theirs)
        self.allowed_roots = volume_roots(self.data_dir)
        self.jobs: dict[str, Job] = {}  #: every unfinished job (and array parent)
        self.envs: dict[str, Environment] = {}
        self.queues: dict[str, Queue] = {}
        self.definitions: dict[str, dict[int, tuple[str, dict[str, Any]]]] = {}
        self.index = RunnableIndex()
        self.waiting_on: dict[str, dict[str, str]] = {}  #: job -> {dependency id: mode}
        self.dependents: dict[str, list[str]] = {}
        self.array_left: dict[str, int] = {}  #: parent -> children not finished
        self.array_failed: dict[str, list[str]] = {}  #: parent -> failed children, in order
        self.reservations: dict[str, str] = {}
        self.decision_s = 0.0  #: how long the last decision took
        self._attempts: dict[str, asyncio.Task[None]] = {}
        self._running_writes: dict[str, asyncio.Future[Any]] = {}
        self._terminating: dict[str, str] = {}
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}
        self._background: set[asyncio.Future[Any]] = set()
        self._ended: dict[str, str] = {}  #: recently ended jobs (committed), for wait() races
        self._retry_timers: dict[str, asyncio.TimerHandle] = {}  #: jobs waiting out a retry delay
        self._rng = random.Random()
        self._wake = asyncio.Event()
        self._started = False
        self._closing = False

    def __repr__(self) -> str:
        return (
            f"<BatchService jobs={len(self.jobs)} runnable={len(self.index)} running={len(self._attempts)}>"
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load queues, environments and unfinished jobs; re-adopt containers. Idempotent."""
        if self._started:
            return
        self._started = True
        info = await self.client.info()
        await self.store.write(lambda c: ensure_defaults(c, info))
        jobs, deps, statuses = await self.store.read(load_state)
        (envs, queues, defs) = await self.store.read(load_config)
        self.envs, self.queues, self.definitions = envs, queues, defs
        for row in jobs:
            self.jobs[row["id"]] = job_from_row(row, self.allowed_roots)
        for job_id, dep_id, mode in deps:
            if job_id in self.jobs:
                self.waiting_on.setdefault(job_id, {})[dep_id] = mode
                self.dependents.setdefault(dep_id, []).append(job_id)
        for job in sorted(self.jobs.values(), key=lambda j: j.seq):
            if job.parent_id is not None and job.parent_id in self.jobs:
                self.array_left[job.parent_id] = self.array_left.get(job.parent_id, 0) + 1
            if job.status == RUNNABLE:
                self._runnable(job)
            elif job.status in (STARTING, RUNNING) and job.environment in self.envs:
                env = self.envs[job.environment]
                env.used_vcpus += job.spec.vcpus
                env.used_memory += job.spec.memory
        for parent, failed in statuses.items():
            self.array_failed[parent] = failed
        await self._settle_loaded_dependencies()
        await self._recover_containers()
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
        tasks = list(self._attempts.values())
        for runner in self._runners.values():
            await runner.client.aclose()
        await self.client.aclose()
        for task in tasks:
            task.cancel(msg="engine stopping")
        await asyncio.gather(*tasks, return_exceptions=True)
        for runner in (self.runner, *self._runners.values()):
            await runner.aclose()
        for bg in list(self._background):
            bg.cancel()

    def wake(self) -> None:
        self._wake.set()

    # -- scheduling ---------------------------------------------------------------------------

    def schedule(self) -> int:
        """One decision: place what fits, start those attempts; returns how many started."""
        if self._closing:
            return 0
        t0 = time.perf_counter()
        views = [self.index.view(q) for q in self.queues.values()]
        decision = decide(views, self.envs, time.time(), reserve_after_s=self.reserve_after_s)
        self.decision_s = time.perf_counter() - t0
        self.reservations = decision.reservations
        for job_id, env_name in decision.placements:
            job = self.jobs[job_id]
            self.index.remove(job.queue, job_id)
            self._launch(job, env_name)
        return len(decision.placements)

    def _launch(self, job: Job, env_name: str) -> None:
        env = self.envs[env_name]
        env.used_vcpus += job.spec.vcpus
        env.used_memory += job.spec.memory
        job.status, job.environment = STARTING, env_name
        job.attempts += 1
        job.status_reason = f"placed in {env_name}; starting attempt {job.attempts}"
        log_path = self.log_path(job, job.attempts)
        snap = copy.copy(job)
        changes = [(job, RUNNABLE), *self._parent_running(job)]
        write = self.store.write_nowait(self._tx(changes, lambda c: start_attempt_row(c, snap, log_path)))
        self._attempts[job.id] = asyncio.create_task(
            self._attempt(job, write, log_path, None), name=f"job {job.id}#{job.attempts}"
        )

    def _runnable(self, job: Job) -> None:
        """Into the scheduler's index, now or (a retry's delay) at ``runnable_at``.

        A waiting retry is RUNNABLE in the store with its ``runnable_at`` ahead, so a restart
        keeps the wait; the scheduler never sees it early. Cancelling it works as for any
        RUNNABLE job: the timer then finds it ended and does nothing.
        """
        wait = (job.runnable_at or 0.0) - time.time()
        if wait <= 0:
            self.index.add(job.queue, slot_of(job))
            return
        due = job.runnable_at
        self._retry_timers[job.id] = asyncio.get_running_loop().call_later(wait, self._retry_due, job.id, due)

    def _retry_due(self, job_id: str, due: float | None) -> None:
        self._retry_timers.pop(job_id, None)
        job = self.jobs.get(job_id)
        if self._closing or job is None or job.status != RUNNABLE or job.runnable_at != due:
            return
        self.index.add(job.queue, slot_of(job))
        self.wake()

    def log_path(self, job: Job, attempt: int) -> str:
        folder = self.logs_dir / (job.parent_id or job.id)
        return str(folder / f"{job.id.replace(':', '.')}.{attempt}.log")

    def _parent_running(self, child: Job) -> list[Change]:
        parent = self.jobs.get(child.parent_id or "")
        if parent is None or parent.status != PENDING:
            return []
        parent.status, parent.status_reason = RUNNING, f"child {child.id} started"
        parent.started_at = time.time()
        return [(parent, PENDING)]

    # -- attempts -----------------------------------------------------------------------------

    def _request(self, job: Job, log_path: str) -> ContainerRequest:
        spec = job.spec
        env = dict(spec.environment)
        env.update(
            AWS_BATCH_JOB_ID=job.id,
            AWS_BATCH_JOB_ATTEMPT=str(job.attempts),
            AWS_BATCH_JQ_NAME=job.queue,
            AWS_BATCH_CE_NAME=job.environment or "",
        )
        if job.array_index is not None:
            env["AWS_BATCH_JOB_ARRAY_INDEX"] = env["SLUICE_ARRAY_INDEX"] = str(job.array_index)
        return ContainerRequest(
            job_id=job.id,
            attempt=job.attempts,
            image=spec.image,
            log_path=log_path,
            command=spec.substituted(),
            env=env,
            vcpus=spec.vcpus,
            memory_bytes=spec.memory,
            labels=dict(self.labels),
            volumes=spec.volumes,
            working_dir=spec.working_dir,
            user=spec.user,
            network=spec.network,
            timeout_s=spec.timeout_s,
            stop_grace_s=self.stop_grace_s,
        )

    def _runner_for(self, job: Job) -> ContainerRunner:
        env = self.envs.get(job.environment or "")
        endpoint = env.endpoint if env is not None else "local"
        if endpoint == "local":
            return self.runner
        if endpoint not in self._runners:
            self._runners[endpoint] = ContainerRunner(
                _HookedClient(DockerClient(endpoint), self._on_started), pull_timeout_s=self.pull_timeout_s
            )
        return self._runners[endpoint]

    async def _attempt(
        self, job: Job, write: asyncio.Future[Any] | None, log_path: str, adopt: str | None
    ) -> None:
        """Run (or adopt) one attempt to its end and record it; shutdown leaves the job as it is."""
        try:
            if write is not None:
                self.bus.deliver(await write)
            req = self._request(job, log_path)
            runner = self._runner_for(job)
            try:
                result = await (runner.adopt(adopt, req) if adopt else runner.run(req))
            except (DockerError, RuntimeError, OSError) as exc:
                if self._closing:
                    raise asyncio.CancelledError from exc
                if not isinstance(exc, DockerError):
                    raise
                result = ContainerResult(None, None, f"CannotStartContainerError: {exc}")
            if self._closing:
                raise asyncio.CancelledError
            pending = self._running_writes.pop(job.id, None)
            if pending is not None:
                self.bus.deliver(await pending)
            await self._finish_attempt(job, result)
        except asyncio.CancelledError:
            if not self._closing:
                raise
            log.info("job %s: engine stopping; attempt %d resumes on restart", job.id, job.attempts)
        except Exception:
            log.exception("job %s: recording attempt %d failed", job.id, job.attempts)
        finally:
            self._attempts.pop(job.id, None)

    def _on_started(self, container_id: str) -> None:
        """The hooked client's callback: commit STARTING -> RUNNING with the container id."""
        key = next(
            (
                k
                for runner in (self.runner, *self._runners.values())
                for k, v in runner.running.items()
                if v == container_id
            ),
            None,
        )
        job = self.jobs.get(key[0]) if key else None
        if job is None or job.status != STARTING:
            return
        self._mark_running(job, container_id, time.time())

    def _mark_running(self, job: Job, container_id: str, at: float) -> None:
        job.status, job.container_id, job.started_at = RUNNING, container_id, job.started_at or at
        job.status_reason = f"container {container_id[:12]} running in {job.environment}"
        attempt, job_id = job.attempts, job.id

        def extra(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE job_attempts SET container_id=?, started_at=? WHERE job_id=? AND attempt=?",
                (container_id, at, job_id, attempt),
            )

        self._running_writes[job.id] = self.store.write_nowait(self._tx([(job, STARTING)], extra))

    async def _finish_attempt(self, job: Job, result: ContainerResult) -> None:
        now = time.time()
        old = job.status
        env = self.envs.get(job.environment or "")
        if env is not None:
            env.used_vcpus = max(0.0, env.used_vcpus - job.spec.vcpus)
            env.used_memory = max(0, env.used_memory - job.spec.memory)
        reason, code = result.status_reason, result.exit_code
        terminated = self._terminating.pop(job.id, None)
        job.exit_code, job.stopped_at = code, result.stopped_at or now
        if job.attempts == 1 and result.started_at:
            job.started_at = result.started_at
        if terminated is not None:
            job.status, job.status_reason = FAILED, terminated
        elif code == 0 and reason == EXITED:
            job.status, job.status_reason = SUCCEEDED, reason
        elif result.timed_out:
            job.status, job.status_reason = FAILED, reason  # AWS: a timed-out attempt is not retried
        elif job.spec.retry.should_retry(job.attempts, code, reason, reason):
            delay = retry_delay(job.spec.retry, job.attempts, self._rng) if job.spec.retry.interval_s else 0.0
            job.status, job.runnable_at = RUNNABLE, now + delay
            job.status_reason = f"attempt {job.attempts} failed ({reason}; exit code {code}); retrying" + (
                f" in {delay:.1f}s, at {iso_ms(now + delay)}" if delay else ""
            )
        else:
            job.status = FAILED
            job.status_reason = reason if code in (None, 0) else f"{reason} (exit code {code})"
        attempt, job_id = job.attempts, job.id
        changes: list[Change] = [(job, old)]
        if job.status in DONE:
            changes.extend(self._settle(job))
        else:
            self._runnable(job)

        def extra(conn: sqlite3.Connection) -> None:
            end_attempt_row(
                conn, job_id, attempt, result.container_id, code, reason, result.started_at, result.stopped_at
            )

        await self.commit(changes, extra)
        self.wake()

    # -- settling: dependencies and array parents --------------------------------------------

    def _settle(self, done: Job) -> list[Change]:
        """A job ended: free its dependents (or fail them), update its array parent; cascade."""
        changes: list[Change] = []
        work = [done]
        while work:
            job = work.pop()
            self.jobs.pop(job.id, None)
            for dep_id in self.dependents.pop(job.id, []):
                changes.extend(self._dependency_done(dep_id, job, work))
            parent = self.jobs.get(job.parent_id or "")
            if parent is not None:
                changes.extend(self._child_done(parent, job, work))
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
            self.index.add(job.queue, slot_of(job))
            return [(job, PENDING)]
        return []

    def _child_done(self, parent: Job, child: Job, work: list[Job]) -> list[Change]:
        left = self.array_left[parent.id] = self.array_left.get(parent.id, 1) - 1
        if child.status == FAILED:
            self.array_failed.setdefault(parent.id, []).append(child.id)
        if left > 0:
            return []
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
        work.append(parent)
        return [(parent, old)]

    # -- committing ---------------------------------------------------------------------------

    def _tx(
        self, changes: Iterable[Change], extra: Callable[[sqlite3.Connection], None] | None = None
    ) -> Any:
        """A write function committing ``changes`` and their events (snapshotted now)."""
        now = time.time()
        snaps = [(copy.copy(job), old) for job, old in changes]
        events = [job_event(s, old if old != s.status else None, now) for s, old in snaps]
        bus = self.bus

        def tx(conn: sqlite3.Connection) -> list[RunRecord]:
            if extra is not None:
                extra(conn)
            for snap, old in snaps:
                save_job(conn, snap, old, now)
            runs: list[RunRecord] = []
            for env in events:
                runs.extend(bus.publish(conn, env, 0))
            return runs

        return tx

    async def commit(
        self, changes: Iterable[Change], extra: Callable[[sqlite3.Connection], None] | None = None
    ) -> None:
        """Commit ``changes``; then wake whoever waits on a job that ended in them."""
        changes = list(changes)
        ended = [(job.id, job.status) for job, _ in changes if job.status in DONE]
        self.bus.deliver(await self.store.write(self._tx(changes, extra)))
        for job_id, status in ended:
            self._ended[job_id] = status
            self._resolve(job_id, status)
        while len(self._ended) > _ENDED_KEPT:
            self._ended.pop(next(iter(self._ended)))

    def _resolve(self, job_id: str, status: str) -> None:
        for fut in self._waiters.pop(job_id, []):
            if not fut.done():
                fut.set_result(status)

    async def wait(self, job_id: str, timeout_s: float | None = None) -> str:
        """Wait for a job to end; its final status (KeyError for no such job)."""
        if job_id not in self.jobs:
            row = await self.store.read(
                lambda c: c.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
            )
            if row is None:
                raise KeyError(job_id)
            if row[0] in DONE:
                return str(row[0])
            if job_id in self._ended:  # ended while we read: its commit has landed since
                return self._ended[job_id]
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(fut)
        async with asyncio.timeout(timeout_s):
            return await fut


async def attach_batch(engine: Any) -> BatchService | None:
    """Give ``engine`` a BatchService when a Docker engine answers; otherwise say why, once.

    Without Docker the engine still starts: container steps then fail with
    ``Sluice.NoContainerRuntime`` (engine/runs.py).
    """
    if getattr(engine, "batch", None) is not None:
        return engine.batch
    client = DockerClient(call_timeout_s=float(os.environ.get("SLUICE_DOCKER_TIMEOUT", "60")))
    try:
        async with asyncio.timeout(5.0):
            await client.ping()
    except (DockerError, TimeoutError) as exc:
        log.info("no Docker engine (%s); container steps and batch jobs are unavailable", exc)
        await client.aclose()
        return None
    service = BatchService(engine.store, engine.bus, engine.settings.data_dir, client)
    await service.start()
    engine.batch = service
    engine.orchestrator.containers = service
    engine.services.insert(0, service)
    engine.closers.append(service.aclose)
    return service
