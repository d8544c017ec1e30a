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
import functools
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from engine.batch import fanout, rows
from engine.batch.jobs import SUCCEEDED, Job, JobError, RetryStrategy
from engine.batch.ledger import Ledger
from engine.batch.submit import Submitter
from engine.errors import INVALID_JOB, TEMPLATE_ERROR, TIMEOUT
from engine.executors.base import Outcome
from engine.executors.docker import EXITED
from engine.states import Status
from engine.store import records
from engine.store.store import Store
from engine.types import StepHost
from workflows import secrets
from workflows.errors import SluiceError
from workflows.spec import StepSpec

#: a job as the API shows it (the service's ``describe``)
Describe = Callable[[str], Awaitable[dict[str, Any] | None]]


def step_body(
    host: StepHost, name: str, spec: StepSpec, fan: fanout.PerChild | None = None
) -> dict[str, Any]:
    """The inline definition of a container step, rendered against the run's context.

    With ``fan`` (a ``for_each``), the parts reading ``item``/``index`` are left to each child."""
    c = spec.container
    assert c is not None, name
    ctx = host.ctx
    command = None if c.command is None else [fanout.env_text(part.render(ctx)) for part in c.command]
    if fan is not None and fan.command is not None:
        command = None  # the array's own spec never runs; each child renders its command
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
        if fan is not None and key in fan.env:
            continue
        text = fanout.env_text(value.render(ctx))
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
    if fanout.misfit(reason):
        return TEMPLATE_ERROR
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
        size: int | None = (resume or {}).get("items")
        if job_id is None:
            try:
                if spec.for_each is not None:
                    job_id, size = await self._submit_fan_out(host, name, spec)
                else:
                    job_id = await self._submit_step(host, name, spec)
            except (SluiceError, JobError) as exc:
                kind = INVALID_JOB if isinstance(exc, JobError) else TEMPLATE_ERROR
                return await self._end_step(
                    host,
                    name,
                    Outcome(False, error={"errorType": kind, "errorMessage": str(exc)}),
                    previous=Status.PENDING,
                )
            if job_id is None:  # an empty for_each: done, as a Map state over []
                return Outcome(True, [], duration_s=time.monotonic() - t0)
        unwatch = None if spec.for_each is None else await self._count_children(host, name, job_id, size)
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
        finally:
            if unwatch is not None:
                unwatch()
        if spec.for_each is not None:
            return await self._end_fan_out(host, name, job_id, size or 0, t0)
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
        fan = None
        if spec.array is not None:  # `{{ index }}` in its env or command: rendered per child
            fan = fanout.per_child(name, spec, host.ctx, None)
            fan = fan if fan.env or fan.command is not None else None
        return await self._submit(host, name, spec, step_body(host, name, spec, fan), spec.array, fan)

    async def _submit_fan_out(self, host: StepHost, name: str, spec: StepSpec) -> tuple[str | None, int]:
        """One array job of a child per item (None: no items, and the step has succeeded)."""
        items = fanout.render_items(name, spec, host.ctx)
        if not items:
            run_id, now = host.run.id, time.time()
            await host.commit(
                [
                    lambda c: records.begin_step(c, run_id, name, -1, now, items=0),
                    lambda c: records.finish_step(
                        c, run_id, name, -1, Status.RUNNING, Status.SUCCEEDED, now, output=[]
                    ),
                ],
                [
                    host.step_event(name, Status.RUNNING, Status.PENDING, items=0),
                    host.step_event(name, Status.SUCCEEDED, Status.RUNNING, items=0, output=[]),
                ],
            )
            host.progress("step", name, Status.RUNNING, {"items": 0})
            return None, 0
        fan = fanout.per_child(name, spec, host.ctx, items)
        body = step_body(host, name, spec, fan)
        return await self._submit(host, name, spec, body, len(items), fan), len(items)

    async def _submit(
        self,
        host: StepHost,
        name: str,
        spec: StepSpec,
        body: dict[str, Any],
        size: int | None,
        fan: fanout.PerChild | None,
    ) -> str:
        assert spec.container is not None
        run_id, now = host.run.id, time.time()
        req = {
            "name": f"{host.run.workflow}-{name}",
            "queue": spec.container.queue,
            "container": body,
            "array_size": size,
        }
        events: list[dict[str, Any]] = []
        bus, depth = self.ledger.bus, host.run.depth
        items = {} if spec.for_each is None else {"items": size}

        def before(conn: sqlite3.Connection, job: Any) -> list[Any]:
            records.begin_job_step(conn, run_id, name, now, job.id, size)
            event = host.step_event(name, Status.RUNNING, Status.PENDING, job_id=job.id, **items)
            events.append(event)
            return bus.publish(conn, event, depth)

        out = await self.submitter.submit(req, run_step=(run_id, name), before_commit=before, per_child=fan)
        host.progress("step", name, Status.RUNNING, {"job_id": out["job_id"], **items})
        return str(out["job_id"])

    async def _count_children(
        self, host: StepHost, name: str, job_id: str, size: int | None
    ) -> Callable[[], None]:
        """Tell the run's progress of each child's end (``sluice run`` shows ``fan 37/120``), and
        of the children whose item did not fit, which ended before there was anyone to tell."""
        total = size or 0
        log_path = self.submitter.attempts.log_path
        done = 0

        def told(child: Job) -> None:
            nonlocal done
            done = min(done + 1, total)
            ok = child.status == SUCCEEDED
            reason = child.status_reason
            info = {
                "index": child.array_index,
                "done": done,
                "items": total,
                "error": None if ok else {"errorType": error_type(reason), "errorMessage": reason},
                "log_path": log_path(child, child.attempts) if child.attempts else None,
            }
            host.progress("item", name, Status.SUCCEEDED if ok else Status.FAILED, info)

        unwatch = self.ledger.watch_children(job_id, told)
        done = await self.ledger.store.read(lambda c: fanout.children_done(c, job_id))
        for index, reason in await self.ledger.store.read(lambda c: fanout.misfits(c, job_id)):
            error = {"errorType": TEMPLATE_ERROR, "errorMessage": reason}
            info = {"index": index, "done": done, "items": total, "error": error, "log_path": None}
            host.progress("item", name, Status.FAILED, info)
        return unwatch

    async def _end_fan_out(self, host: StepHost, name: str, job_id: str, size: int, t0: float) -> Outcome:
        outputs = await self.ledger.store.read(lambda c: fanout.child_outputs(c, job_id))
        message = fanout.failure(outputs, size)
        if message is None:
            outcome = Outcome(True, outputs, None, time.monotonic() - t0)
        else:
            first = next((o for o in outputs if o["status"] != SUCCEEDED), {})
            error = {"errorType": error_type(first.get("status_reason")), "errorMessage": message}
            outcome = Outcome(False, None, error, time.monotonic() - t0, first.get("log_path"))
        return await self._end_step(host, name, outcome, job_id=job_id, items=size)

    async def _end_step(
        self,
        host: StepHost,
        name: str,
        outcome: Outcome,
        previous: str = Status.RUNNING,
        job_id: str | None = None,
        items: int | None = None,
    ) -> Outcome:
        """Commit the step's end; a for_each's (``items``) event carries the count, not the list
        (as a function for_each's does: a 10,000-child list would ride on every subscriber's copy)."""
        run_id, now = host.run.id, time.time()
        writes = []
        if job_id is not None:
            last = await link_in_chunks(self.ledger.store, run_id, name, job_id, now)
            writes.append(lambda c: records.link_job_attempts(c, run_id, name, last))
        stored = None if outcome.output is None else records.Encoded(records.dumps(outcome.output))
        status = Status.SUCCEEDED if outcome.ok else Status.FAILED
        reason = None if outcome.error is None else str(outcome.error.get("errorMessage"))[:500]
        extra: dict[str, Any] = {"statusReason": reason}
        if items is not None:
            extra["items"] = items
        elif outcome.ok:
            extra["output"] = outcome.output
        if not outcome.ok:
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
                    output=stored,
                    error=outcome.error,
                    reason=reason,
                ),
            ],
            [host.step_event(name, status, previous, **extra)],
        )
        return outcome


#: attempts linked into a step's history per transaction: ~20 us each, so 10,000 children's
#: in one commit held the writer ~200 ms (bench.container_fanout); 250 hold it ~5 ms
LINK_CHUNK = 250


async def link_in_chunks(
    store: Store, run_id: str, step: str, job_id: str, now: float
) -> list[records.JobAttempt]:
    """Copy the job's attempts (an array's: each child's) into the step's, so ``sluice logs RUN``
    and the step view show container output like a function step's. All but the last chunk are
    committed here (again after a crash: the copy is idempotent); the last is returned, for the
    step's end to commit with it."""
    found = await store.read(lambda c: rows.attempts_of(c, job_id))
    attempts: list[records.JobAttempt] = []
    for attempt, started, stopped, code, reason, log_path, index in found:
        ok = code == 0 and reason == EXITED
        error = None if ok else {"errorType": error_type(reason), "errorMessage": f"{reason} (exit {code})"}
        status = Status.SUCCEEDED if ok else Status.FAILED
        attempts.append((index, attempt, status, started or now, stopped or now, error, log_path))
    cut = max(0, (len(attempts) - 1) // LINK_CHUNK * LINK_CHUNK)
    for at in range(0, cut, LINK_CHUNK):
        link = functools.partial(
            records.link_job_attempts, run_id=run_id, step=step, attempts=attempts[at : at + LINK_CHUNK]
        )
        await store.write(link, heavy=True)
    return attempts[cut:]
