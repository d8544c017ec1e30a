"""Workflow ``container:`` steps as Batch jobs: the Batch service's :class:`~engine.types.StepRunner`.

A step is an inline job definition: ``command``/``env`` rendered from the run's context
(values only: argv, never a shell string), ``vcpus``/``memory``/``volumes``/``user``/
``working_dir``/``network``/``parameters`` as written, ``queue`` its job queue, ``array: N``
an array job of N children, ``retry`` its retry strategy (``attempts``, ``evaluate_on_exit``
and, beyond Batch, a delay between attempts: ``interval``, ``backoff_rate``, ``max_delay``,
``jitter``), ``timeout`` the attempt timeout. The job is submitted in the same
transaction that marks the step RUNNING and stores the job id in ``steps.job_id``, so after a
crash the step resumes by waiting on that job; it is never submitted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from engine.batch import rows
from engine.batch.jobs import SUCCEEDED, JobError, RetryStrategy
from engine.batch.ledger import Ledger
from engine.batch.submit import Submitter
from engine.errors import INVALID_JOB, TEMPLATE_ERROR, TIMEOUT
from engine.executors.base import Outcome
from engine.executors.docker import EXITED
from engine.states import Status
from engine.store import records
from engine.types import StepHost
from workflows import secrets
from workflows.errors import SluiceError
from workflows.spec import StepSpec

#: a job as the API shows it (the service's ``describe``)
Describe = Callable[[str], Awaitable[dict[str, Any] | None]]


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def step_body(host: StepHost, name: str, spec: StepSpec) -> dict[str, Any]:
    """The inline definition of a container step, rendered against the run's context."""
    c = spec.container
    assert c is not None, name
    ctx = host.ctx
    command = None if c.command is None else [_text(part.render(ctx)) for part in c.command]
    for i, part in enumerate([*(command or ()), *c.parameters.values()]):
        if secrets.holds_secret(part):
            where = f"command[{i}]" if i < len(command or ()) else "parameters"
            raise JobError(
                f"steps.{name}.container.{where}: holds a value from ${{env:...}}, which would show "
                "in the job's description; pass it through env: and read it as $NAME in the container"
            )
    env: dict[str, str] = {}
    sealed: dict[str, str] = {}
    for key, value in c.env.items():
        text = _text(value.render(ctx))
        ref = secrets.seal(text)
        if ref is None:
            env[key] = text
        else:  # stored and shown as its reference; resolved when the container is created
            sealed[key] = ref
    volumes = [
        {"host": str(Path(host.wf.dir, v.host)), "container": v.container, "read_only": v.read_only}
        for v in c.volumes
    ]
    return {
        "image": c.image,
        "command": command,
        "environment": env,
        "secrets": sealed,
        "vcpus": c.vcpus,
        "memory": c.memory_bytes,
        "volumes": volumes,
        "parameters": dict(c.parameters),
        "timeout": spec.timeout_s,
        "user": c.user,
        "working_dir": c.working_dir,
        "network": c.network,
        "preemptible": c.preemptible,
        "share_identifier": c.share_identifier,
        "retry_strategy": RetryStrategy(
            max(1, min(spec.retry.attempts, 10)),
            spec.retry.evaluate_on_exit,
            spec.retry.interval_s,
            spec.retry.backoff_rate,
            spec.retry.max_delay_s,
            spec.retry.jitter,
        ).to_json(),
    }


def error_type(reason: str | None) -> str:
    head = (reason or "").split(":", 1)[0]
    if head.endswith("Error"):
        return f"Batch.{head}"
    if reason and "timeout" in reason:
        return TIMEOUT
    return "Batch.JobFailed"


class ContainerSteps:
    """Runs a ``container:`` step as a job: submit (with the step's RUNNING, in one transaction),
    wait for it to end, copy its attempts into the step's, and end the step."""

    def __init__(self, submitter: Submitter, ledger: Ledger, describe: Describe) -> None:
        self.submitter, self.ledger, self.describe = submitter, ledger, describe

    async def run_step(
        self, host: StepHost, name: str, spec: StepSpec, resume: dict[str, Any] | None
    ) -> Outcome:
        t0 = time.monotonic()
        job_id = (resume or {}).get("job_id")
        if job_id is None:
            try:
                job_id = await self._submit_step(host, name, spec)
            except (SluiceError, JobError) as exc:
                kind = INVALID_JOB if isinstance(exc, JobError) else TEMPLATE_ERROR
                return await self._end_step(
                    host,
                    name,
                    Outcome(False, error={"errorType": kind, "errorMessage": str(exc)}),
                    previous=Status.PENDING,
                )
        try:
            await self.ledger.wait(job_id)
        except asyncio.CancelledError:
            # a user's cancel of the run stops its job; a shutdown leaves it to be resumed
            reason = host.cancel_reason()
            if reason is not None and not host.draining:
                stopping = asyncio.ensure_future(self.submitter.terminate(job_id, f"run cancelled: {reason}"))
                with contextlib.suppress(Exception):
                    await asyncio.shield(stopping)
            raise
        desc = await self.describe(job_id) or {}
        attempts = desc.get("attempts") or []
        output = {
            "job_id": job_id,
            "status": desc.get("status"),
            "exit_code": desc.get("exit_code"),
            "attempts": len(attempts),
        }
        log_path: str | None = attempts[-1]["log_path"] if attempts else None
        output["log_path"] = log_path
        if desc.get("array_size"):
            output["array_size"] = desc["array_size"]
        ok = desc.get("status") == SUCCEEDED
        reason = desc.get("status_reason")
        error = None if ok else {"errorType": error_type(reason), "errorMessage": f"job {job_id}: {reason}"}
        outcome = Outcome(ok, output if ok else None, error, time.monotonic() - t0, log_path)
        return await self._end_step(host, name, outcome, job_id=job_id)

    async def _submit_step(self, host: StepHost, name: str, spec: StepSpec) -> str:
        assert spec.container is not None
        body = step_body(host, name, spec)
        run_id, now = host.run.id, time.time()
        req = {
            "name": f"{host.run.workflow}-{name}",
            "queue": spec.container.queue,
            "container": body,
            "array_size": spec.array,
        }
        events: list[dict[str, Any]] = []
        bus, depth = self.ledger.bus, host.run.depth

        def before(conn: sqlite3.Connection, job: Any) -> list[Any]:
            records.begin_job_step(conn, run_id, name, now, job.id, spec.array)
            event = host.step_event(name, Status.RUNNING, Status.PENDING, job_id=job.id)
            events.append(event)
            return bus.publish(conn, event, depth)

        out = await self.submitter.submit(req, run_step=(run_id, name), before_commit=before)
        host.progress("step", name, Status.RUNNING, {"job_id": out["job_id"]})
        return str(out["job_id"])

    async def _end_step(
        self,
        host: StepHost,
        name: str,
        outcome: Outcome,
        previous: str = Status.RUNNING,
        job_id: str | None = None,
    ) -> Outcome:
        run_id, now = host.run.id, time.time()
        writes = [] if job_id is None else [lambda c: link_attempts(c, run_id, name, job_id, now)]
        status = Status.SUCCEEDED if outcome.ok else Status.FAILED
        reason = None if outcome.error is None else str(outcome.error.get("errorMessage"))[:500]
        extra: dict[str, Any] = {"statusReason": reason}
        if outcome.ok:
            extra["output"] = outcome.output
        else:
            extra["error"] = outcome.error
        await host.commit(
            [
                *writes,
                lambda c: records.finish_step(
                    c,
                    run_id,
                    name,
                    -1,
                    previous,
                    status,
                    now,
                    output=outcome.output,
                    error=outcome.error,
                    reason=reason,
                ),
            ],
            [host.step_event(name, status, previous, **extra)],
        )
        return outcome


def link_attempts(conn: sqlite3.Connection, run_id: str, step: str, job_id: str, now: float) -> None:
    """Copy the job's attempts (an array's: each child's) into the step's, so ``sluice logs RUN``
    and the step view show container output like a function step's."""
    attempts: list[records.JobAttempt] = []
    for attempt, started, stopped, code, reason, log_path, index in rows.attempts_of(conn, job_id):
        ok = code == 0 and reason == EXITED
        error = None if ok else {"errorType": error_type(reason), "errorMessage": f"{reason} (exit {code})"}
        status = Status.SUCCEEDED if ok else Status.FAILED
        attempts.append((index, attempt, status, started or now, stopped or now, error, log_path))
    records.link_job_attempts(conn, run_id, step, attempts)
