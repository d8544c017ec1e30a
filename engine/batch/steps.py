"""Workflow ``container:`` steps as Batch jobs (the orchestrator's ``ContainerSteps``).

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
from pathlib import Path
from typing import Any

from engine.batch.jobs import SUCCEEDED, JobError, RetryStrategy
from engine.executors.base import Outcome
from engine.executors.docker import EXITED
from engine.states import Status
from engine.store import records
from workflows.errors import SluiceError


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def step_body(driver: Any, name: str, spec: Any) -> dict[str, Any]:
    """The inline definition of a container step, rendered against the run's context."""
    c = spec.container
    ctx = driver.ctx
    command = None if c.command is None else [_text(part.render(ctx)) for part in c.command]
    env = {k: _text(v.render(ctx)) for k, v in c.env.items()}
    volumes = [
        {"host": str(Path(driver.wf.dir, v.host)), "container": v.container, "read_only": v.read_only}
        for v in c.volumes
    ]
    return {
        "image": c.image,
        "command": command,
        "environment": env,
        "vcpus": c.vcpus,
        "memory": c.memory_bytes,
        "volumes": volumes,
        "parameters": dict(c.parameters),
        "timeout": spec.timeout_s,
        "user": c.user,
        "working_dir": c.working_dir,
        "network": c.network,
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
        return "Sluice.Timeout"
    return "Batch.JobFailed"


class StepsMixin:
    """``run_step`` for :class:`~engine.batch.service.BatchService`."""

    async def run_step(
        self: Any, driver: Any, name: str, spec: Any, resume: dict[str, Any] | None
    ) -> Outcome:
        run_id, t0 = driver.run.id, time.monotonic()
        job_id = (resume or {}).get("job_id")
        if job_id is None:
            try:
                job_id = await self._submit_step(driver, name, spec)
            except (SluiceError, JobError) as exc:
                kind = "Sluice.InvalidJob" if isinstance(exc, JobError) else "Sluice.TemplateError"
                return await self._end_step(
                    driver,
                    name,
                    Outcome(False, error={"errorType": kind, "errorMessage": str(exc)}),
                    previous=Status.PENDING,
                )
        try:
            await self.wait(job_id)
        except asyncio.CancelledError:
            # a user's cancel of the run stops its job; a shutdown leaves it to be resumed
            reason = getattr(driver.o, "_cancel_reasons", {}).get(run_id)
            if reason is not None and not driver.o.draining:
                stopping = asyncio.ensure_future(self.terminate(job_id, f"run cancelled: {reason}"))
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
            "log_path": attempts[-1]["log_path"] if attempts else None,
        }
        if desc.get("array_size"):
            output["array_size"] = desc["array_size"]
        ok = desc.get("status") == SUCCEEDED
        reason = desc.get("status_reason")
        error = None if ok else {"errorType": error_type(reason), "errorMessage": f"job {job_id}: {reason}"}
        outcome = Outcome(ok, output if ok else None, error, time.monotonic() - t0, output["log_path"])
        return await self._end_step(driver, name, outcome, job_id=job_id)

    async def _submit_step(self: Any, driver: Any, name: str, spec: Any) -> str:
        body = step_body(driver, name, spec)
        run_id, now = driver.run.id, time.time()
        req = {
            "name": f"{driver.run.workflow}-{name}",
            "queue": spec.container.queue,
            "container": body,
            "array_size": spec.array,
        }
        events: list[dict[str, Any]] = []
        bus, depth = self.bus, driver.run.depth

        def before(conn: sqlite3.Connection, job: Any) -> list[Any]:
            records.begin_step(conn, run_id, name, -1, now, items=spec.array)
            conn.execute(
                "UPDATE steps SET job_id=?, attempts=1 WHERE run_id=? AND step=? AND idx=-1",
                (job.id, run_id, name),
            )
            event = driver.step_event(name, Status.RUNNING, Status.PENDING, job_id=job.id)
            events.append(event)
            return bus.publish(conn, event, depth)

        out = await self.submit(req, run_step=(run_id, name), before_commit=before)
        driver.o.emit_progress("step", driver.run, name, Status.RUNNING, {"job_id": out["job_id"]})
        return str(out["job_id"])

    async def _end_step(
        self: Any,
        driver: Any,
        name: str,
        outcome: Outcome,
        previous: str = Status.RUNNING,
        job_id: str | None = None,
    ) -> Outcome:
        run_id, now = driver.run.id, time.time()
        writes = [] if job_id is None else [lambda c: link_attempts(c, run_id, name, job_id, now)]
        status = Status.SUCCEEDED if outcome.ok else Status.FAILED
        reason = None if outcome.error is None else str(outcome.error.get("errorMessage"))[:500]
        extra: dict[str, Any] = {"statusReason": reason}
        if outcome.ok:
            extra["output"] = outcome.output
        else:
            extra["error"] = outcome.error
        await driver.commit(
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
            [driver.step_event(name, status, previous, **extra)],
        )
        return outcome


def link_attempts(conn: sqlite3.Connection, run_id: str, step: str, job_id: str, now: float) -> None:
    """Copy the job's attempts (an array's: each child's) into the step's, so ``sluice logs RUN``
    and the step view show container output like a function step's."""
    rows = conn.execute(
        "SELECT a.attempt, a.started_at, a.stopped_at, a.exit_code, a.reason, a.log_path, j.array_index "
        "FROM job_attempts a JOIN jobs j ON j.id = a.job_id WHERE j.id = ? OR j.parent_id = ?",
        (job_id, job_id),
    ).fetchall()
    for attempt, started, stopped, code, reason, log_path, index in rows:
        ok = code == 0 and reason == EXITED
        error = (
            None
            if ok
            else json.dumps({"errorType": error_type(reason), "errorMessage": f"{reason} (exit {code})"})
        )
        conn.execute(
            "INSERT OR REPLACE INTO attempts (run_id, step, idx, attempt, status, started_at, ended_at, "
            "error, log_path) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                run_id,
                step,
                -1 if index is None else index,
                attempt,
                Status.SUCCEEDED if ok else Status.FAILED,
                started or now,
                stopped or now,
                error,
                log_path,
            ),
        )
