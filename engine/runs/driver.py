"""One run, driven through its DAG: dispatch ready steps, retry, fan out, wait, finish.

A :class:`RunDriver` is one asyncio task per run. It keeps the run's step
statuses in memory (the store has the same facts; recovery rebuilds them from
it) and commits every state change before acting on it: a step's SUCCEEDED is
durable before any step that needs it is dispatched, so a crash never re-runs a
finished step.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from engine.backoff import is_retryable, retry_delay
from engine.errors import (
    ENGINE_ERROR,
    INVALID_INPUT,
    NO_CONTAINER_RUNTIME,
    STEP_FAILED,
    TEMPLATE_ERROR,
    error_record,
)
from engine.events import iso_ms
from engine.executors.base import FunctionCall, Outcome
from engine.runs import changes
from engine.runs.services import RunServices
from engine.runs.starts import AttemptStart, Calls, WaitWatch
from engine.states import TERMINAL, Status
from engine.store import records
from engine.store.records import RunRecord
from workflows.errors import SluiceError, UnitError
from workflows.spec import FailSpec, StepSpec, WaitSpec, Workflow
from workflows.templating import Renderable
from workflows.units import parse_instant

log = logging.getLogger(__name__)

#: items of one ``for_each`` in flight at once: enough to keep every worker of the pool busy,
#: few enough that a fan-out over 100,000 items holds a few hundred attempts, not all of them
FAN_OUT_LANES = 256

Write = Callable[[sqlite3.Connection], Any]

#: jitter only needs to be spread, not secret; one generator (seeding one per run cost ~10 us)
_RNG = random.Random()


class Drained(Exception):
    """A sleeping step gave way to an engine shutdown; it resumes from the store on restart."""


class RunDriver:
    """A run through its DAG; also the :class:`~engine.types.StepHost` its container steps see."""

    def __init__(self, services: RunServices, run: RunRecord, workflow: Workflow) -> None:
        self.services = services
        self.run = run
        self.workflow = workflow
        self.status: dict[str, str] = dict.fromkeys(workflow.steps, Status.PENDING)
        self.step_ctx: dict[str, dict[str, Any]] = {}
        self.step_error: dict[str, dict[str, Any] | None] = {}
        self.t0 = time.monotonic()
        self.attempts_total = 0  #: function attempts made by this driver (destinations report it)
        self.end: dict[str, Any] | None = None  #: outputs and error, once the run's end is committed
        self.changes = changes.RunChanges(services.store, services.bus, services.admission, run.depth)
        self._rng = _RNG
        self._resume: dict[str, dict[str, Any]] = {}
        self.waits = WaitWatch()  #: its function attempts waiting for a worker (runs/starts.py)
        self._restore()
        self.ctx: dict[str, Any] = {
            "event": run.event,
            "params": run.params,
            "run": {"id": run.id, "workflow": run.workflow, "started_at": iso_ms(run.started_at)},
            "steps": self.step_ctx,
        }

    def _restore(self) -> None:
        for (name, idx), row in self.run.steps.items():
            if idx != -1 or name not in self.status:
                continue
            status = row["status"]
            self.status[name] = status
            if status in TERMINAL:
                self._set_ctx(name, status, row["output"], row["error"])
            elif status == Status.RUNNING:
                self._resume[name] = row

    def _set_ctx(self, name: str, status: str, output: Any, error: dict[str, Any] | None) -> None:
        self.step_ctx[name] = {"output": output, "status": status, "error": error}
        self.step_error[name] = error

    # -- committing (engine/runs/changes.py) -------------------------------------------------

    async def commit(self, writes: list[Write], events: list[dict[str, Any]]) -> None:
        """Commit these writes and publish these events in one transaction; return once durable."""
        await self.changes.enqueue(writes, events)

    def run_event(
        self, status: str, previous: str, *, reason: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        return changes.run_event(
            self.run, status, previous, attempts=self.attempts_total, reason=reason, **extra
        )

    def step_event(self, step: str, status: str, previous: str, **extra: Any) -> dict[str, Any]:
        return changes.step_event(self.run, step, status, previous, **extra)

    # -- what a step runner may use (engine.types.StepHost) ---------------------------------

    @property
    def wf(self) -> Workflow:
        return self.workflow

    @property
    def draining(self) -> bool:
        return self.services.draining

    def cancel_reason(self) -> str | None:
        return self.services.cancel_reason(self.run.id)

    def progress(self, kind: str, step: str | None, status: str, info: dict[str, Any]) -> None:
        self.services.progress(kind, self.run, step, status, info)

    # -- the run ------------------------------------------------------------------------------

    async def drive(self) -> str:
        """Run to the end (returns the final status), or give way to a drain/cancel."""
        if self.run.status == Status.PENDING:
            now = time.time()
            self.run.started_at = now
            self.ctx["run"]["started_at"] = iso_ms(now)
            run_id = self.run.id
            # committed with the run's first step change (one transaction instead of two): until
            # then nothing has happened that a crash could lose, and recovery starts it over
            self.changes.defer(
                [lambda c: records.set_run_status(c, run_id, Status.PENDING, Status.RUNNING, now)],
                [self.run_event(Status.RUNNING, Status.PENDING)],
            )
            self.run.status = Status.RUNNING
            self.progress("run", None, Status.RUNNING, {})
        running: dict[asyncio.Task[None], str] = {}
        try:
            for name, row in self._resume.items():
                running[self._spawn(name, row)] = name
            await self._loop(running)
        except asyncio.CancelledError:
            await self._stop_steps(running)
            raise
        if self.services.draining and any(
            s == Status.RUNNING or s == Status.PENDING for s in self.status.values()
        ):
            return Status.RUNNING
        return await self._finish()

    async def _loop(self, running: dict[asyncio.Task[None], str]) -> None:
        while True:
            if not self.services.draining:
                progressed = await self._dispatch(running)
                if progressed:
                    continue
            if not running:
                return
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                name = running.pop(task)
                exc = task.exception()
                if isinstance(exc, Drained):
                    continue
                if exc is not None:
                    log.error("run %s step %s: engine error", self.run.id, name, exc_info=exc)
                    await self._finish_step(
                        name,
                        Status.FAILED,
                        error=error_record(ENGINE_ERROR, f"{type(exc).__name__}: {exc}"),
                    )

    async def _dispatch(self, running: dict[asyncio.Task[None], str]) -> bool:
        """Start ready steps, commit skips; True when statuses changed without a new task."""
        ready, skips = self.wf.dag.next_actions(self.status)
        changed = False
        for name in ready:
            spec = self.wf.steps[name]
            if spec.when is not None:
                try:
                    go = bool(spec.when.render(self.ctx))
                except SluiceError as exc:
                    await self._finish_step(name, Status.FAILED, error=error_record(TEMPLATE_ERROR, str(exc)))
                    changed = True
                    continue
                if not go:
                    skips[name] = "when is false"
                    continue
            self.status[name] = Status.RUNNING
            running[self._spawn(name, None)] = name
        if skips:
            await self._skip(skips)
            changed = True
        return changed

    def _spawn(self, name: str, resume: dict[str, Any] | None) -> asyncio.Task[None]:
        self.status[name] = Status.RUNNING
        return asyncio.create_task(self._run_step(name, resume), name=f"{self.run.id}/{name}")

    async def _skip(self, skips: dict[str, str]) -> None:
        now, run_id = time.time(), self.run.id
        writes: list[Write] = []
        events = []
        for name, reason in skips.items():
            writes.append(
                functools.partial(
                    records.finish_step, run_id=run_id, step=name, idx=-1, old=Status.PENDING,
                    new=Status.SKIPPED, at=now, reason=reason,
                )
            )  # fmt: skip
            events.append(self.step_event(name, Status.SKIPPED, Status.PENDING, statusReason=reason))
        await self.commit(writes, events)
        for name, reason in skips.items():
            self.status[name] = Status.SKIPPED
            self._set_ctx(name, Status.SKIPPED, None, None)
            self.progress("step", name, Status.SKIPPED, {"reason": reason})

    async def _stop_steps(self, running: dict[asyncio.Task[None], str]) -> None:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    # -- steps --------------------------------------------------------------------------------

    async def _run_step(self, name: str, resume: dict[str, Any] | None) -> None:
        spec = self.wf.steps[name]
        # the loader gives each kind its part (wait, fail, container); a function step has none
        if spec.wait is not None:
            await self._wait_step(name, spec.wait, resume)
        elif spec.fail is not None:
            await self._fail_step(spec.fail, name)
        elif spec.container is not None:
            await self._container_step(name, spec, resume)
        elif spec.for_each is not None:
            await self._fan_out(name, spec, spec.for_each, resume)
        else:
            outcome = await self._attempts(name, spec, -1, None, resume)
            self._record(name, outcome)

    def _record(self, name: str, outcome: Outcome) -> None:
        status = Status.SUCCEEDED if outcome.ok else Status.FAILED
        self.status[name] = status
        self._set_ctx(name, status, outcome.output, outcome.error)
        info = dict(duration_s=outcome.duration_s, error=outcome.error, output=outcome.output)
        self.progress("step", name, status, {**info, "log_path": outcome.log_path})

    async def _finish_step(
        self,
        name: str,
        status: str,
        *,
        output: Any = None,
        error: dict[str, Any] | None = None,
        reason: str | None = None,
        previous: str = Status.RUNNING,
    ) -> None:
        now, run_id = time.time(), self.run.id
        prev = previous if self.status.get(name) != Status.PENDING else Status.PENDING
        write: Write = lambda c: records.finish_step(  # noqa: E731
            c, run_id, name, -1, prev, status, now, output=output, error=error, reason=reason
        )
        extra: dict[str, Any] = {"statusReason": reason or (error or {}).get("errorMessage")}
        if error is not None:
            extra["error"] = error
        await self.commit([write], [self.step_event(name, status, prev, **extra)])
        self._record(name, Outcome(status == Status.SUCCEEDED, output, error))

    async def _attempts(
        self, name: str, spec: StepSpec, idx: int, item: tuple[Any, int] | None, resume: dict[str, Any] | None
    ) -> Outcome:
        """Attempt a function step (or one fan-out item) until it succeeds or retries run out."""
        ctx = self.ctx if item is None else {**self.ctx, "item": item[0], "index": item[1]}
        attempt = int(resume["attempts"]) if resume else 0
        budget = spec.retry.attempts + (int(resume["interrupted"]) if resume else 0)
        if resume and resume.get("wake_at"):
            await self.sleep_until(resume["wake_at"])
        try:
            event = self.run.event if spec.input is None else spec.input.render(ctx)
            calls = self.services.keys.calls(self.services.functions, self.run.workflow, spec, ctx)
        except SluiceError as exc:
            outcome = Outcome(False, error=error_record(TEMPLATE_ERROR, str(exc)))
            await self._final_write(name, idx, attempt, outcome, started=attempt > 0)
            return outcome
        failures = 0
        while True:
            attempt += 1
            outcome, started = await self._one_attempt(
                name, spec, idx, attempt, event, calls, first=attempt == 1 and not resume
            )
            try:
                if outcome.ok or attempt >= budget or not is_retryable(spec.retry, outcome.error_type):
                    await self._final_write(name, idx, attempt, outcome, started=True)
                    return outcome
                failures += 1
                delay = retry_delay(spec.retry, failures, self._rng)
                retry_at = time.time() + delay
                run_id = self.run.id
                await self.commit(
                    [
                        functools.partial(
                            records.end_attempt,
                            run_id=run_id,
                            step=name,
                            idx=idx,
                            attempt=attempt,
                            status=Status.FAILED,
                            at=time.time(),
                            error=outcome.error,
                            retry_at=retry_at,
                        )
                    ],
                    [],
                )
            finally:
                await started.settled()  # done by now (queued first); this surfaces its error
            info = dict(attempt=attempt, delay_s=delay, error=outcome.error, index=idx)
            self.progress("retry", name, Status.RUNNING, {**info, "log_path": outcome.log_path})
            await self.sleep_until(retry_at)

    async def _one_attempt(
        self, name: str, spec: StepSpec, idx: int, attempt: int, event: Any, calls: Calls, *, first: bool
    ) -> tuple[Outcome, AttemptStart]:
        """Run an attempt (its start is queued when a worker takes it, not awaited): (outcome, start).

        The caller queues the attempt's end and then awaits the start: the writer keeps queue
        order, so the end can follow the start into the same or the next commit without a round
        trip through the event loop in between."""
        run_id = self.run.id
        api = await self.services.api(run_id)  # before the attempt starts: it may wait for the bind
        self.attempts_total += 1
        suffix = "" if idx < 0 else f".{idx}"
        # plain strings, not a Path per attempt: pathlib interns each new name it parses, and a
        # 100,000-item fan-out's names stayed in the interpreter's table (bench/RESULTS.md)
        log_path = f"{self.services.logs_dir}{os.sep}{run_id}{os.sep}{name}{suffix}.{attempt}.log"
        started = AttemptStart(
            self.changes, run_id, name, idx, attempt, log_path, first=first, event=self.step_event,
            progress=lambda step, status, info: self.progress("step", step, status, info),
            watch=self.waits,
        )  # fmt: skip
        call = FunctionCall(
            attempt_id=f"{run_id}/{name}{'' if idx < 0 else f'[{idx}]'}#{attempt}",
            handler=spec.function or "",  # the loader requires it of a function step
            base_dir=str(self.wf.dir),
            event=event,
            run_id=run_id,
            step=name,
            attempt=attempt,
            timeout_s=spec.timeout_s,
            memory_bytes=spec.memory_bytes,
            concurrency=spec.concurrency,
            log_path=log_path,
            index=None if idx < 0 else idx,
            extra={"workflow": self.run.workflow},
            env=spec.env,
            api=api,
        )
        try:
            outcome = await calls.execute(call, started)
        except ValueError as exc:  # the rendered input is not JSON (e.g. a template made a range)
            outcome = Outcome(False, error=error_record(INVALID_INPUT, str(exc)))
        except BaseException:  # a WAITING attempt stays so until a cancel or recovery closes it
            started.abandon()
            await started.settled()
            raise
        started.ensure_started(time.time())  # an executor that does not call the hook
        return outcome, started

    async def _final_write(
        self, name: str, idx: int, attempt: int, outcome: Outcome, *, started: bool
    ) -> None:
        run_id, now = self.run.id, time.time()
        status = Status.SUCCEEDED if outcome.ok else Status.FAILED
        writes: list[Write] = []
        if started:
            writes.append(
                lambda c: records.end_attempt(c, run_id, name, idx, attempt, status, now, outcome.error)
            )
        old = Status.RUNNING if started else Status.PENDING
        reason = None if outcome.error is None else str(outcome.error.get("errorMessage", ""))[:500]
        ended = {"output": outcome.output, "error": outcome.error, "reason": reason}
        writes.append(lambda c: records.finish_step(c, run_id, name, idx, old, status, now, **ended))
        events: list[dict[str, Any]] = []
        if idx < 0:
            extra: dict[str, Any] = {"attempt": attempt, "duration_s": round(outcome.duration_s, 6)}
            if outcome.ok:
                extra["output"] = outcome.output
            else:
                extra["error"] = outcome.error
                extra["statusReason"] = (outcome.error or {}).get("errorMessage")
            events.append(self.step_event(name, status, old, **extra))
        if idx < 0 and all(s in TERMINAL for n, s in self.status.items() if n != name):
            # the run's last step: nothing can depend on it and the run's end follows at once, so
            # both ride on one transaction (a writer round trip less per run). A crash in between
            # finds the attempt still open and runs it again, as for a crash a moment earlier.
            self.changes.defer(writes, events)
            return
        await self.commit(writes, events)

    async def _fan_out(
        self, name: str, spec: StepSpec, for_each: Renderable, resume: dict[str, Any] | None
    ) -> None:
        try:
            items = for_each.render(self.ctx)
            if not isinstance(items, list):
                raise SluiceError(f"steps.{name}.for_each must render to a list, got {type(items).__name__}")
        except SluiceError as exc:
            await self._finish_step(name, Status.FAILED, error=error_record(TEMPLATE_ERROR, str(exc)))
            return
        run_id, now = self.run.id, time.time()
        if resume is None:
            await self.commit(
                [lambda c: records.begin_step(c, run_id, name, -1, now, items=len(items))],
                [self.step_event(name, Status.RUNNING, Status.PENDING, items=len(items))],
            )
            self.progress("step", name, Status.RUNNING, {"items": len(items)})
        prior = {idx: row for (step, idx), row in self.run.steps.items() if step == name and idx >= 0}
        # only what the step's end needs is kept per item (its output, and the failures), not
        # each Outcome: a 100,000-item fan-out holds its items and outputs, nothing more
        outputs: list[Any] = [None] * len(items)
        failed: dict[int, dict[str, Any] | None] = {}
        queue, done = iter(enumerate(items)), 0

        async def lane() -> None:  # an item's end is progress too: `sluice run` counts `work 37/120`
            nonlocal done
            for i, item in queue:  # the lanes share one iterator: each takes the next item
                outcome = await self._item(name, spec, i, item, prior.get(i))
                if outcome.ok:
                    outputs[i] = outcome.output
                else:
                    failed[i] = outcome.error
                done += 1
                info = dict(index=i, done=done, items=len(items), error=outcome.error)
                status = Status.SUCCEEDED if outcome.ok else Status.FAILED
                self.progress("item", name, status, {**info, "log_path": outcome.log_path})

        lanes = min(FAN_OUT_LANES, len(items), spec.max_concurrency or FAN_OUT_LANES)
        await asyncio.gather(*(lane() for _ in range(lanes)))
        if failed:
            i = min(failed)
            error = dict(failed[i] or {})
            error["errorMessage"] = (
                f"{len(failed)} of {len(items)} items failed; item {i}: {error.get('errorMessage')}"
            )
            await self._finish_step(name, Status.FAILED, error=error)
        else:
            await self._finish_step(name, Status.SUCCEEDED, output=outputs)

    async def _item(
        self, name: str, spec: StepSpec, idx: int, item: Any, prior: dict[str, Any] | None
    ) -> Outcome:
        if prior is not None and prior["status"] == Status.SUCCEEDED:
            return Outcome(True, prior["output"])
        if prior is not None and prior["status"] == Status.FAILED:
            return Outcome(False, error=prior["error"])
        return await self._attempts(name, spec, idx, (item, idx), prior)

    async def _wait_step(self, name: str, wait: WaitSpec, resume: dict[str, Any] | None) -> None:
        if resume is not None and resume.get("wake_at"):
            wake_at = float(resume["wake_at"])
        else:
            try:
                if wait.seconds is not None:
                    wake_at = time.time() + wait.seconds
                elif wait.until is not None:
                    wake_at = parse_instant(wait.until.render(self.ctx))  # ISO 8601 with a zone, or seconds
                else:  # the loader refuses a wait with neither
                    raise SluiceError(f"steps.{name}.wait has neither seconds nor until")
            except SluiceError as exc:  # a UnitError too: the rendered time is not one
                message = f"steps.{name}.wait.until: {exc}" if isinstance(exc, UnitError) else str(exc)
                await self._finish_step(name, Status.FAILED, error=error_record(TEMPLATE_ERROR, message))
                return
            run_id, now = self.run.id, time.time()
            await self.commit(
                [lambda c: records.begin_step(c, run_id, name, -1, now, wake_at=wake_at)],
                [self.step_event(name, Status.RUNNING, Status.PENDING, wake_at=iso_ms(wake_at))],
            )
            self.progress("step", name, Status.RUNNING, {"wake_at": wake_at})
        await self.sleep_until(wake_at)
        await self._finish_step(name, Status.SUCCEEDED, output={"waited_until": iso_ms(wake_at)})

    async def _fail_step(self, fail: FailSpec, name: str) -> None:
        try:
            cause = "" if fail.cause is None else str(fail.cause.render(self.ctx))
        except SluiceError as exc:
            cause = f"(cause did not render: {exc})"
        await self._finish_step(
            name, Status.FAILED, error=error_record(fail.error, cause), reason=cause or None
        )

    async def _container_step(self, name: str, spec: StepSpec, resume: dict[str, Any] | None) -> None:
        runner = await self.services.containers()
        if runner is None:
            await self._finish_step(
                name,
                Status.FAILED,
                error=error_record(
                    NO_CONTAINER_RUNTIME,
                    "container steps need a Docker engine; start dockerd (see README) and run again",
                ),
            )
            return
        outcome = await runner.run_step(self, name, spec, resume)
        self._record(name, outcome)

    async def sleep_until(self, wake_at: float) -> None:
        """Sleep durably (the wake time is in the store), giving way at once to a drain."""
        delay = wake_at - time.time()
        if self.services.draining:
            raise Drained
        if delay <= 0:
            return
        try:
            await asyncio.wait_for(self.services.drain.wait(), timeout=delay)
        except TimeoutError:
            return
        raise Drained

    # -- the end --------------------------------------------------------------------------------

    async def _finish(self) -> str:
        failed = [
            n for n, s in self.status.items() if s == Status.FAILED and self.wf.steps[n].on_failure == "fail"
        ]
        status, error, reason, outputs = Status.SUCCEEDED, None, None, None
        if failed:
            status = Status.FAILED
            error = self.step_error.get(failed[0]) or error_record(STEP_FAILED, f"step {failed[0]} failed")
            reason = f"step {failed[0]} failed: {error.get('errorType')}: {error.get('errorMessage')}"
        elif self.wf.outputs is not None:
            try:
                outputs = self.wf.outputs.render(self.ctx)
            except SluiceError as exc:
                status, error = Status.FAILED, error_record(TEMPLATE_ERROR, f"outputs: {exc}")
                reason = error["errorMessage"]
        else:
            outputs = self._sink_outputs()
        await self._end_run(status, reason=reason, outputs=outputs, error=error)
        return status

    def _sink_outputs(self) -> Any:
        """Without ``outputs:``, a run's output is its terminal step's, as a state machine's is its
        last state's; with several terminal steps (a DAG), a mapping of each one to its output."""
        dag = self.wf.dag
        sinks = [name for name in dag.order if not dag.dependents(name)]
        outputs = {name: (self.step_ctx.get(name) or {}).get("output") for name in sinks}
        return outputs[sinks[0]] if len(sinks) == 1 else outputs

    async def _end_run(
        self, status: str, *, reason: str | None, outputs: Any = None, error: dict[str, Any] | None = None
    ) -> None:
        run_id, now, old = self.run.id, time.time(), self.run.status
        extra: dict[str, Any] = {"outputs": outputs}
        if error is not None:
            extra["error"] = error
        await self.commit(
            [
                lambda c: records.set_run_status(
                    c, run_id, old, status, now, reason=reason, outputs=outputs, error=error
                )
            ],
            [self.run_event(status, old, reason=reason, **extra)],
        )
        self.run.status = status
        self.end = {"outputs": outputs, "error": error}
        self.progress(
            "run",
            None,
            status,
            {"duration_s": time.monotonic() - self.t0, "outputs": outputs, "error": error, "reason": reason},
        )

    async def cancel_steps_and_run(self, reason: str) -> None:
        """After a user cancel: close what was running, mark the rest, end the run CANCELLED."""
        run_id, now = self.run.id, time.time()
        writes: list[Write] = []
        for name, status in self.status.items():
            if status in TERMINAL:
                continue
            writes.append(functools.partial(records.cancel_open_attempts, run_id=run_id, step=name, at=now))
            writes.append(
                functools.partial(
                    records.finish_step, run_id=run_id, step=name, idx=-1, old=status,
                    new=Status.CANCELLED, at=now, reason=reason,
                )
            )  # fmt: skip
            self.status[name] = Status.CANCELLED
        await self.commit(writes, [])
        await self._end_run(Status.CANCELLED, reason=reason)
