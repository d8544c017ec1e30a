"""Attempts: start a placed job's container, adopt one after a restart, and record how it ended.

Each attempt is one asyncio task held here. Its start (STARTING, with the attempt row) is
queued to the store before the container is created; RUNNING is committed the moment Docker
says the container started; the result row is committed *before* the container is removed
(``ContainerRunner.on_exited``), so a crash at any instant leaves either a container to
re-adopt or a recorded result, never neither; the job's final transition follows.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.backoff import retry_delay
from engine.batch import rows
from engine.batch.book import Book, Change
from engine.batch.environments import ssh_options, tls_files
from engine.batch.jobs import DONE, FAILED, RUNNABLE, RUNNING, STARTING, SUCCEEDED, Job, split_reasons
from engine.batch.ledger import Ledger
from engine.events import iso_ms
from engine.executors.compute import ComputeRunner
from engine.executors.docker import EXITED, ContainerRequest, ContainerResult, ContainerRunner
from engine.executors.docker_api import DockerClient, DockerError
from engine.executors.podman import PodmanRunner, default_host
from engine.executors.slurm import SlurmConfig, SlurmError, SlurmRunner
from workflows import secrets

log = logging.getLogger(__name__)


class Attempts:
    def __init__(
        self,
        book: Book,
        ledger: Ledger,
        client: DockerClient,
        logs_dir: Path,
        *,
        requeue: Callable[[Job], None],
        wake: Callable[[], None],
        stop_grace_s: float = 10.0,
        pull_timeout_s: float = 60.0,
    ) -> None:
        self.book, self.ledger, self.client, self.logs_dir = book, ledger, client, logs_dir
        self.requeue, self.wake = requeue, wake
        self.stop_grace_s, self.pull_timeout_s = stop_grace_s, pull_timeout_s
        self.labels: dict[str, str] = {}  #: extra labels on every container (tests tag theirs)
        #: the store's id, labelled on every container (the service sets it once the store is open)
        self.store_id: str | None = None
        self.runner = self._make_runner(client)
        self._runners: dict[str, ContainerRunner] = {}  #: endpoint and TLS -> runner, for remote engines
        self._slurm: dict[str, tuple[SlurmConfig, SlurmRunner]] = {}  #: environment -> its runner
        self.tasks: dict[str, asyncio.Task[None]] = {}  #: job id -> its attempt's task
        self._running_writes: dict[str, asyncio.Future[Any]] = {}
        self._terminating: dict[str, str] = {}
        #: attempts of a reclaimed (interruptible) environment being killed -> AWS's Spot reason
        self.reclaiming: dict[str, str] = {}
        #: called with an interruptible environment whose engine went away; returns the reason
        self.host_lost: Callable[[str], str] | None = None
        #: called with (environment, host, reason) when one of an environment's hosts went away
        self.host_down: Callable[[str, str, str], None] | None = None
        self._rng = random.Random()
        self.closing = False

    def __repr__(self) -> str:
        return f"<Attempts running={len(self.tasks)}>"

    def _make_runner(
        self, client: DockerClient, kind: type[ContainerRunner] = ContainerRunner
    ) -> ContainerRunner:
        return kind(
            client, pull_timeout_s=self.pull_timeout_s, on_started=self._on_started, on_exited=self._on_exited
        )

    def runner_for(self, job: Job) -> ComputeRunner:
        env = self.book.envs.get(job.environment or "")
        if env is not None and env.type == "slurm":
            return self._slurm_runner(env.name, SlurmConfig.from_json(env.config))
        endpoint = env.endpoint if env is not None else "local"
        config: dict[str, Any] = env.config if env is not None else {}
        host = env.host(job.host) if env is not None else None
        if host is not None:  # one of the environment's hosts: the one its attempt was placed on
            endpoint, config = host.endpoint, host.config
        if env is not None and env.type == "podman":
            sock = default_host() if endpoint == "local" else endpoint
            if f"podman {sock}" not in self._runners:
                self._runners[f"podman {sock}"] = self._make_runner(DockerClient(sock), PodmanRunner)
            return self._runners[f"podman {sock}"]
        if endpoint == "local":
            return self.runner
        return self.docker_runner(endpoint, config)

    def docker_runner(self, endpoint: str, config: dict[str, Any]) -> ContainerRunner:
        """The runner of one Docker daemon (made once, shared by every environment naming it)."""
        if endpoint == "local":
            return self.runner
        tls, ssh = tls_files(config), ssh_options(config)
        key = f"{endpoint} {tls} {ssh}"
        if key not in self._runners:
            self._runners[key] = self._make_runner(DockerClient(endpoint, tls=tls, ssh=ssh))
        return self._runners[key]

    def _slurm_runner(self, name: str, config: SlurmConfig) -> SlurmRunner:
        known = self._slurm.get(name)
        if known is not None and known[0] == config:
            return known[1]
        runner = SlurmRunner(
            config,
            pull_timeout_s=self.pull_timeout_s,
            on_submitted=self._on_submitted,
            on_waiting=self._on_waiting,
            on_started=self._on_started,
            on_exited=self._on_exited,
        )
        self._slurm[name] = (config, runner)
        return runner

    def runners(self) -> list[ComputeRunner]:
        """The local Docker runner and every runner made for an environment so far."""
        return [self.runner, *self._runners.values(), *(r for _, r in self._slurm.values())]

    def log_path(self, job: Job, attempt: int) -> str:
        folder = self.logs_dir / (job.parent_id or job.id)
        return str(folder / f"{job.id.replace(':', '.')}.{attempt}.log")

    # -- starting ---------------------------------------------------------------------------

    def launch(self, job: Job, changes: list[Change]) -> None:
        """The book placed ``job`` (``changes``): commit its start and run its container."""
        log_path = self.log_path(job, job.attempts)
        snap = copy.copy(job)
        runner = self.runner_for(job)
        if isinstance(runner, SlurmRunner) and job.array_index is not None:
            runner.expect(job.id, job.attempts)  # one sbatch for the siblings this decision placed
        write = self.ledger.commit_nowait(changes, lambda c: rows.start_attempt_row(c, snap, log_path))
        self._spawn(job, self._attempt(job, write, log_path, None), f"job {job.id}#{job.attempts}")

    def adopt(self, job: Job, container_id: str) -> None:
        """After a restart: follow the attempt's container (or Slurm job), which is still there."""
        if job.status == STARTING and not self.runner_for(job).reports_adopted_start:
            self._mark_running(job, container_id, time.time())
        job.container_id = container_id
        log.info("job %s: re-adopting %s", job.id, container_id[:12])
        log_path = self.log_path(job, job.attempts)
        self._spawn(job, self._attempt(job, None, log_path, container_id), f"adopt {job.id}")

    def finish_lost(self, job: Job, result: ContainerResult) -> None:
        """After a restart: the attempt's container is gone; end the attempt with ``result``."""
        self._spawn(job, self._finish(job, result), f"finish {job.id}")

    async def remove_unstarted(self, job: Job, container_id: str) -> None:
        """A container created but never started before a crash: remove it (it is started anew)."""
        await self.runner_for(job).adopt(container_id, self.request(job, self.log_path(job, job.attempts)))

    def _spawn(self, job: Job, work: Any, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self.tasks[job.id] = task
        task.add_done_callback(lambda t: self._forget(job.id, t))

    def _forget(self, job_id: str, task: asyncio.Task[None]) -> None:
        # a retry's next attempt may already be running under the same job id
        if self.tasks.get(job_id) is task:
            del self.tasks[job_id]

    def request(self, job: Job, log_path: str) -> ContainerRequest:
        spec = job.spec
        env = dict(spec.environment)
        env.update((name, secrets.reveal(sealed)) for name, sealed in spec.secrets.items())  # at launch
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
            store_id=self.store_id,
        )

    # -- one attempt ------------------------------------------------------------------------

    async def _attempt(
        self, job: Job, write: asyncio.Future[Any] | None, log_path: str, adopt: str | None
    ) -> None:
        """Run (or adopt) one attempt to its end and record it; shutdown leaves the job as it is."""
        try:
            if write is not None:
                self.ledger.bus.deliver(await write)
            req = self.request(job, log_path)
            runner = self.runner_for(job)
            try:
                result = await (runner.adopt(adopt, req) if adopt else runner.run(req))
            except (DockerError, SlurmError, RuntimeError, OSError) as exc:
                if self.closing:
                    raise asyncio.CancelledError from exc
                if not isinstance(exc, DockerError | SlurmError):
                    raise
                result = ContainerResult(None, None, f"CannotStartContainerError: {exc}")
                if self._host_gone(job, exc):
                    result = ContainerResult(job.container_id, None, str(exc))
                else:
                    self._host_unreachable(job, exc)
            if self.closing:
                raise asyncio.CancelledError
            pending = self._running_writes.pop(job.id, None)
            if pending is not None:
                self.ledger.bus.deliver(await pending)
            await self._finish_attempt(job, result)
        except asyncio.CancelledError:
            if not self.closing:
                raise
            log.info("job %s: engine stopping; attempt %d resumes on restart", job.id, job.attempts)
        except Exception:
            log.exception("job %s: recording attempt %d failed", job.id, job.attempts)

    async def _finish(self, job: Job, result: ContainerResult) -> None:
        try:
            await self._finish_attempt(job, result)
        except Exception:
            log.exception("job %s: recording attempt %d failed", job.id, job.attempts)

    def _host_gone(self, job: Job, exc: Exception) -> bool:
        """An interruptible environment's engine stopped answering under an attempt: reclaimed.

        The runner has already waited for the daemon to come back (``reconnect_s``); for
        Spot-like capacity, that is the instance going away, and it is recorded as AWS does."""
        env = self.book.envs.get(job.environment or "")
        if env is None or not env.interruptible or not isinstance(exc, DockerError) or exc.status != 0:
            return False
        if self.host_lost is not None:
            self.reclaiming[job.id] = self.host_lost(env.name)
        return True

    def _host_unreachable(self, job: Job, exc: Exception) -> None:
        """One of several hosts stopped answering under an attempt: the scaler takes it out."""
        if job.host is not None and isinstance(exc, DockerError) and exc.status == 0 and self.host_down:
            self.host_down(job.environment or "", job.host, f"unreachable under job {job.id}: {exc}")

    def _on_started(self, req: ContainerRequest, container_id: str) -> None:
        """The runner's callback: commit STARTING -> RUNNING with the container id."""
        job = self.book.jobs.get(req.job_id)
        if job is None or job.status != STARTING or job.attempts != req.attempt:
            return
        self._mark_running(job, container_id, time.time())

    async def _on_submitted(self, req: ContainerRequest, slurm_id: str) -> None:
        """Slurm accepted the attempt: its job id is durable before anything else happens."""
        job_id, attempt = req.job_id, req.attempt
        await self.ledger.store.write(lambda c: rows.set_attempt_slurm_id(c, job_id, attempt, slurm_id))

    def _on_waiting(self, req: ContainerRequest, reason: str) -> None:
        """Slurm keeps the attempt pending: its reason becomes the job's ``statusReason``."""
        job = self.book.jobs.get(req.job_id)
        if job is None or job.status != STARTING or job.attempts != req.attempt:
            return
        job.status_reason = f"{reason} in Slurm ({job.environment})"
        text, job_id = job.status_reason, job.id
        self.ledger.store.write_nowait(lambda c: rows.set_status_reason(c, job_id, STARTING, text))

    async def _on_exited(self, req: ContainerRequest, result: ContainerResult) -> None:
        """The runner's callback before it removes the container: make the result durable."""
        job_id, attempt = req.job_id, req.attempt
        await self.ledger.store.write(
            lambda c: rows.end_attempt_row(
                c, job_id, attempt, result.container_id, result.exit_code, result.status_reason,
                result.started_at, result.stopped_at,
            )
        )  # fmt: skip

    def _mark_running(self, job: Job, container_id: str, at: float) -> None:
        job.status, job.container_id, job.started_at = RUNNING, container_id, job.started_at or at
        job.status_reason = f"container {container_id[:12]} running in {job.environment}" + (
            f" (host {job.host})" if job.host else ""
        )
        attempt, job_id = job.attempts, job.id

        def extra(conn: sqlite3.Connection) -> None:
            rows.set_attempt_container(conn, job_id, attempt, container_id, at)

        self._running_writes[job.id] = self.ledger.commit_nowait([(job, STARTING)], extra)

    async def _finish_attempt(self, job: Job, result: ContainerResult) -> None:
        now = time.time()
        old = job.status
        self.book.release(job)
        reason, code = result.status_reason, result.exit_code
        terminated = self._terminating.pop(job.id, None)
        preemptor = self.book.preempting.pop(job.id, None)
        host = self.reclaiming.pop(job.id, None)
        if host is not None and not (code == 0 and reason == EXITED):
            reason, code = host, None  # as AWS reports a Spot reclaim: no exit code
        job.exit_code, job.stopped_at = code, result.stopped_at or now
        if job.attempts == 1 and result.started_at:
            job.started_at = result.started_at
        if terminated is not None:
            job.status, job.status_reason = FAILED, terminated
        elif code == 0 and reason == EXITED:
            job.status, job.status_reason = SUCCEEDED, reason
        elif preemptor is not None:
            job.status, job.runnable_at = RUNNABLE, now
            job.preemptions += 1
            job.status_reason = (
                f"{reason if reason.startswith('Preempted') else 'Preempted by job ' + preemptor}; "
                "back in the queue (a preemption does not use up an attempt)"
            )
        elif result.timed_out:
            job.status, job.status_reason = FAILED, reason  # AWS: a timed-out attempt is not retried
        elif job.spec.retry.should_retry(job.attempts - job.preemptions, code, *split_reasons(reason)):
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
            changes.extend(self.book.settle(job))
        else:
            self.requeue(job)

        def extra(conn: sqlite3.Connection) -> None:
            rows.end_attempt_row(
                conn, job_id, attempt, result.container_id, code, reason, result.started_at, result.stopped_at
            )

        await self.ledger.commit(changes, extra)
        self.wake()

    # -- stopping ---------------------------------------------------------------------------

    async def terminate(self, job: Job, reason: str) -> None:
        """SIGTERM, grace, SIGKILL the attempt's container; its task records the end."""
        self._terminating[job.id] = reason
        await self.stop(job, reason, self.stop_grace_s)

    async def stop(self, job: Job, reason: str, grace_s: float) -> None:
        """Stop the current attempt (``reason`` becomes its reason); returns once it has ended."""
        task = self.tasks.get(job.id)
        runner = self.runner_for(job)
        unreachable = False
        while task is not None and not task.done():
            cid = runner.running.get((job.id, job.attempts))
            if cid is not None and not unreachable:
                try:
                    await runner.terminate(cid, grace_s, reason)
                except (DockerError, SlurmError) as exc:  # its engine is gone: the attempt ends anyway
                    log.warning("job %s: cannot stop attempt %d: %s", job.id, job.attempts, exc)
                    unreachable = True
            await asyncio.wait([task], timeout=0.5)

    async def aclose(self) -> None:
        """Leave running containers running (the next start re-adopts them); see the service."""
        self.closing = True
        tasks = list(self.tasks.values())
        for docker in self._runners.values():
            await docker.client.aclose()
        await self.client.aclose()
        for task in tasks:
            task.cancel(msg="engine stopping")
        await asyncio.gather(*tasks, return_exceptions=True)
        for runner in self.runners():
            await runner.aclose()
