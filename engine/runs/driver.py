"""One run, driven through its DAG: dispatch ready steps, retry, fan out, wait, finish.

A :class:`RunDriver` is one asyncio task per run. It keeps the run's step
statuses in memory (the store has the same facts; recovery rebuilds them from
it) and commits every state change before acting on it: a step's SUCCEEDED is
durable before any step that needs it is dispatched, so a crash never re-runs a
finished step.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.backoff import retry_delay
from engine.events import RUN_DETAIL_TYPE, RUN_SOURCE, STEP_DETAIL_TYPE, STEP_SOURCE, envelope, iso_ms
from engine.executors.base import FunctionCall, Outcome
from engine.states import TERMINAL, Status
from engine.store import records
from engine.store.records import RunRecord
from workflows.errors import SluiceError

if TYPE_CHECKING:
    from engine.runs.orchestrator import Orchestrator

log = logging.getLogger(__name__)

Write = Callable[[sqlite3.Connection], Any]


#: jitter only needs to be spread, not secret; one generator (seeding one per run cost ~10 us)
_RNG = random.Random()


class Drained(Exception):
    """A sleeping step gave way to an engine shutdown; it resumes from the store on restart."""


def _error(error_type: str, message: str) -> dict[str, Any]:
    return {"errorType": error_type, "errorMessage": message}


def is_retryable(spec: Any, error_type: str | None) -> bool:
    return "*" in spec.errors or "States.ALL" in spec.errors or (error_type in spec.errors)


def parse_when(value: Any, where: str) -> float:
    """A wait's ``until``: an ISO 8601 timestamp (``Z`` or offset) or epoch seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                raise SluiceError(f"{where}: timestamp {value!r} has no time zone (add Z or +01:00)")
            return moment.timestamp()
    raise SluiceError(f"{where}: expected an ISO 8601 timestamp like 2026-01-31T12:00:00Z, got {value!r}")


class RunDriver:
    def __init__(self, orch: Orchestrator, run: RunRecord, workflow: Any) -> None:
        self.o = orch
        self.run = run
        self.wf = workflow
        self.status: dict[str, str] = dict.fromkeys(workflow.steps, Status.PENDING)
        self.step_ctx: dict[str, dict[str, Any]] = {}
        self.step_error: dict[str, dict[str, Any] | None] = {}
        self.t0 = time.monotonic()
        self.attempts_total = 0  #: function attempts made by this driver (destinations report it)
        self._pending: tuple[list[Write], list[dict[str, Any]]] | None = None
        #: counted in ``Orchestrator.in_engine`` since it was started, until its first commit
        self.starting = False
        self._rng = _RNG
        self._resume: dict[str, dict[str, Any]] = {}
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

    # -- committing -------------------------------------------------------------------------

    async def commit(self, writes: list[Write], events: list[dict[str, Any]]) -> None:
        """Commit these writes and publish these events in one transaction; return once durable."""
        await self.enqueue(writes, events)

    def enqueue(self, writes: list[Write], events: list[dict[str, Any]]) -> asyncio.Future[None]:
        """Queue the transaction now (the writer keeps queue order); the future ends when durable.

        Queued synchronously, so a later write of this run is ordered after it without waiting for
        it: an attempt's end can follow its start into the writer while the start still commits.
        """
        bus, depth, o = self.o.bus, self.run.depth, self.o
        if self._pending is not None:  # the run's RUNNING, or its last step's end (_defer), rides along
            writes = [*self._pending[0], *writes]
            events = [*self._pending[1], *events]
            self._pending = None

        def tx(conn: sqlite3.Connection) -> list[RunRecord]:
            for write in writes:
                write(conn)
            started: list[RunRecord] = []
            for env in events:
                started.extend(bus.publish(conn, env, depth))
            return started

        written = o.store.write_nowait(tx)  # raises StoreClosed before anything is counted
        if self.starting:  # the unit counted at start carries over to this commit
            self.starting = False
        else:
            o.in_engine += 1
        durable: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def settle(written: asyncio.Future[list[RunRecord]]) -> None:
            o.in_engine -= 1
            if written.cancelled():
                durable.cancel()
                return
            exc = written.exception()
            if exc is None:  # committed: the runs its events started go on even if nobody waits
                bus.deliver(written.result())
            if durable.done():  # the waiter was cancelled
                return
            if exc is not None:
                durable.set_exception(exc)
            else:
                durable.set_result(None)

        written.add_done_callback(settle)
        return durable

    def run_event(
        self, status: str, previous: str, *, reason: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        now = time.time()
        detail = {
            "run_id": self.run.id,
            "workflow": self.run.workflow,
            "status": str(status),  # plain str: patterns compare JSON types exactly
            "previous_status": str(previous),
            "statusReason": reason,
            "trigger": self.run.trigger,
            "event_id": self.run.event.get("id"),
            "created_at": iso_ms(self.run.created_at),
            "started_at": iso_ms(self.run.started_at),
            "depth": self.run.depth,
            **extra,
        }
        if status in TERMINAL:
            detail["ended_at"] = iso_ms(now)
            detail["duration_s"] = round(now - (self.run.started_at or now), 6)
            detail["params"] = self.run.params  # the request payload of an invocation record
            detail["attempts"] = self.attempts_total
        if "outputs" in detail:  # docs/events.md: outputs above 64 KiB of JSON stay in the store
            size = len(records.dumps(detail["outputs"]).encode())
            if size > 64 * 1024:
                detail["outputs"] = None
                detail["outputs_truncated"] = {"size_bytes": size, "url": f"/api/v1/runs/{self.run.id}"}
        return envelope(RUN_SOURCE, RUN_DETAIL_TYPE, detail, resources=[f"run/{self.run.id}"], at=now)

    def step_event(self, step: str, status: str, previous: str, **extra: Any) -> dict[str, Any]:
        detail = {
            "run_id": self.run.id,
            "workflow": self.run.workflow,
            "step": step,
            "status": str(status),
            "previous_status": str(previous),
            **extra,
        }
        if "output" in detail:  # the same 64 KiB rule as a run's outputs (docs/events.md)
            size = len(records.dumps(detail["output"]).encode())
            if size > 64 * 1024:
                detail["output"] = None
                detail["output_truncated"] = {"size_bytes": size, "url": f"/api/v1/runs/{self.run.id}"}
        return envelope(STEP_SOURCE, STEP_DETAIL_TYPE, detail, resources=[f"run/{self.run.id}/{step}"])

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
            self._pending = (
                [lambda c: records.set_run_status(c, run_id, Status.PENDING, Status.RUNNING, now)],
                [self.run_event(Status.RUNNING, Status.PENDING)],
            )
            self.run.status = Status.RUNNING
            self.o.emit_progress("run", self.run, None, Status.RUNNING, {})
        running: dict[asyncio.Task[None], str] = {}
        try:
            for name, row in self._resume.items():
                running[self._spawn(name, row)] = name
            await self._loop(running)
        except asyncio.CancelledError:
            await self._stop_steps(running)
            raise
        if self.o.draining and any(s == Status.RUNNING or s == Status.PENDING for s in self.status.values()):
            return Status.RUNNING
        return await self._finish()

    async def _loop(self, running: dict[asyncio.Task[None], str]) -> None:
        while True:
            if not self.o.draining:
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
                        error=_error("Sluice.EngineError", f"{type(exc).__name__}: {exc}"),
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
                    await self._finish_step(
                        name, Status.FAILED, error=_error("Sluice.TemplateError", str(exc))
                    )
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
                lambda c, n=name, r=reason: records.finish_step(
                    c, run_id, n, -1, Status.PENDING, Status.SKIPPED, now, reason=r
                )
            )
            events.append(self.step_event(name, Status.SKIPPED, Status.PENDING, statusReason=reason))
        await self.commit(writes, events)
        for name, reason in skips.items():
            self.status[name] = Status.SKIPPED
            self._set_ctx(name, Status.SKIPPED, None, None)
            self.o.emit_progress("step", self.run, name, Status.SKIPPED, {"reason": reason})

    async def _stop_steps(self, running: dict[asyncio.Task[None], str]) -> None:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    # -- steps --------------------------------------------------------------------------------

    async def _run_step(self, name: str, resume: dict[str, Any] | None) -> None:
        spec = self.wf.steps[name]
        if spec.kind == "wait":
            await self._wait_step(name, spec, resume)
        elif spec.kind == "fail":
            await self._fail_step(name, spec)
        elif spec.kind == "container":
            await self._container_step(name, spec, resume)
        elif spec.for_each is not None:
            await self._fan_out(name, spec, resume)
        else:
            outcome = await self._attempts(name, spec, -1, None, resume)
            self._record(name, outcome)

    def _record(self, name: str, outcome: Outcome) -> None:
        status = Status.SUCCEEDED if outcome.ok else Status.FAILED
        self.status[name] = status
        self._set_ctx(name, status, outcome.output, outcome.error)
        self.o.emit_progress(
            "step",
            self.run,
            name,
            status,
            {"duration_s": outcome.duration_s, "error": outcome.error, "output": outcome.output},
        )

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
        self, name: str, spec: Any, idx: int, item: tuple[Any, int] | None, resume: dict[str, Any] | None
    ) -> Outcome:
        """Attempt a function step (or one fan-out item) until it succeeds or retries run out."""
        ctx = self.ctx if item is None else {**self.ctx, "item": item[0], "index": item[1]}
        attempt = int(resume["attempts"]) if resume else 0
        budget = spec.retry.attempts + (int(resume["interrupted"]) if resume else 0)
        if resume and resume.get("wake_at"):
            await self.sleep_until(resume["wake_at"])
        try:
            event = self.run.event if spec.input is None else spec.input.render(ctx)
        except SluiceError as exc:
            outcome = Outcome(False, error=_error("Sluice.TemplateError", str(exc)))
            await self._final_write(name, idx, attempt, outcome, started=attempt > 0)
            return outcome
        failures = 0
        while True:
            attempt += 1
            outcome, started = await self._one_attempt(
                name, spec, idx, attempt, event, first=attempt == 1 and not resume
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
                        lambda c, a=attempt, o=outcome, r=run_id, at=retry_at: records.end_attempt(
                            c, r, name, idx, a, Status.FAILED, time.time(), o.error, retry_at=at
                        )
                    ],
                    [],
                )
            finally:
                await started  # done by now (queued first); this surfaces its error
            self.o.emit_progress(
                "retry",
                self.run,
                name,
                Status.RUNNING,
                {"attempt": attempt, "delay_s": delay, "error": outcome.error},
            )
            await self.sleep_until(retry_at)

    async def _one_attempt(
        self, name: str, spec: Any, idx: int, attempt: int, event: Any, *, first: bool
    ) -> tuple[Outcome, asyncio.Future[None]]:
        """Start an attempt (its start is queued, not awaited) and run it: (outcome, the start).

        The caller queues the attempt's end and then awaits the start: the writer keeps queue
        order, so the end can follow the start into the same or the next commit without a round
        trip through the event loop in between."""
        run_id = self.run.id
        self.attempts_total += 1
        suffix = "" if idx < 0 else f".{idx}"
        log_path = str(self.o.logs_dir / run_id / f"{name}{suffix}.{attempt}.log")
        now = time.time()
        writes: list[Write] = [
            lambda c: records.start_attempt(c, run_id, name, idx, attempt, now, log_path, first=first)
        ]
        events = (
            [self.step_event(name, Status.RUNNING, Status.PENDING, attempt=attempt)]
            if first and idx < 0
            else []
        )
        started = self.enqueue(writes, events)
        if idx < 0:
            self.o.emit_progress("step", self.run, name, Status.RUNNING, {"attempt": attempt})
        call = FunctionCall(
            attempt_id=f"{run_id}/{name}{'' if idx < 0 else f'[{idx}]'}#{attempt}",
            handler=spec.function,
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
        )
        try:
            outcome = await self.o.functions.execute(call)
        except ValueError as exc:  # the rendered input is not JSON (e.g. a template made a range)
            outcome = Outcome(False, error=_error("Sluice.InvalidInput", str(exc)))
        except BaseException:
            await started
            raise
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
        writes.append(
            lambda c: records.finish_step(
                c,
                run_id,
                name,
                idx,
                old,
                status,
                now,
                output=outcome.output,
                error=outcome.error,
                reason=None if outcome.error is None else str(outcome.error.get("errorMessage", ""))[:500],
            )
        )
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
            self._defer(writes, events)
            return
        await self.commit(writes, events)

    def _defer(self, writes: list[Write], events: list[dict[str, Any]]) -> None:
        """Have the run's next commit carry these too (see ``commit``)."""
        if self._pending is None:
            self._pending = (writes, events)
        else:
            self._pending[0].extend(writes)
            self._pending[1].extend(events)

    async def _fan_out(self, name: str, spec: Any, resume: dict[str, Any] | None) -> None:
        try:
            items = spec.for_each.render(self.ctx)
            if not isinstance(items, list):
                raise SluiceError(f"steps.{name}.for_each must render to a list, got {type(items).__name__}")
        except SluiceError as exc:
            await self._finish_step(name, Status.FAILED, error=_error("Sluice.TemplateError", str(exc)))
            return
        run_id, now = self.run.id, time.time()
        if resume is None:
            await self.commit(
                [lambda c: records.begin_step(c, run_id, name, -1, now, items=len(items))],
                [self.step_event(name, Status.RUNNING, Status.PENDING, items=len(items))],
            )
            self.o.emit_progress("step", self.run, name, Status.RUNNING, {"items": len(items)})
        prior = {idx: row for (step, idx), row in self.run.steps.items() if step == name and idx >= 0}
        outcomes = await asyncio.gather(
            *(self._item(name, spec, i, item, prior.get(i)) for i, item in enumerate(items))
        )
        failed = [(i, o) for i, o in enumerate(outcomes) if not o.ok]
        if failed:
            i, first = failed[0]
            error = dict(first.error or {})
            error["errorMessage"] = (
                f"{len(failed)} of {len(items)} items failed; item {i}: {error.get('errorMessage')}"
            )
            await self._finish_step(name, Status.FAILED, error=error)
        else:
            await self._finish_step(name, Status.SUCCEEDED, output=[o.output for o in outcomes])

    async def _item(self, name: str, spec: Any, idx: int, item: Any, prior: dict[str, Any] | None) -> Outcome:
        if prior is not None and prior["status"] == Status.SUCCEEDED:
            return Outcome(True, prior["output"])
        if prior is not None and prior["status"] == Status.FAILED:
            return Outcome(False, error=prior["error"])
        return await self._attempts(name, spec, idx, (item, idx), prior)

    async def _wait_step(self, name: str, spec: Any, resume: dict[str, Any] | None) -> None:
        if resume is not None and resume.get("wake_at"):
            wake_at = float(resume["wake_at"])
        else:
            try:
                if spec.wait.seconds is not None:
                    wake_at = time.time() + spec.wait.seconds
                else:
                    wake_at = parse_when(spec.wait.until.render(self.ctx), f"steps.{name}.wait")
            except SluiceError as exc:
                await self._finish_step(name, Status.FAILED, error=_error("Sluice.TemplateError", str(exc)))
                return
            run_id, now = self.run.id, time.time()
            await self.commit(
                [lambda c: records.begin_step(c, run_id, name, -1, now, wake_at=wake_at)],
                [self.step_event(name, Status.RUNNING, Status.PENDING, wake_at=iso_ms(wake_at))],
            )
            self.o.emit_progress("step", self.run, name, Status.RUNNING, {"wake_at": wake_at})
        await self.sleep_until(wake_at)
        await self._finish_step(name, Status.SUCCEEDED, output={"waited_until": iso_ms(wake_at)})

    async def _fail_step(self, name: str, spec: Any) -> None:
        try:
            cause = "" if spec.fail.cause is None else str(spec.fail.cause.render(self.ctx))
        except SluiceError as exc:
            cause = f"(cause did not render: {exc})"
        await self._finish_step(
            name, Status.FAILED, error=_error(spec.fail.error, cause), reason=cause or None
        )

    async def _container_step(self, name: str, spec: Any, resume: dict[str, Any] | None) -> None:
        runner = await self.o.container_runner()
        if runner is None:
            await self._finish_step(
                name,
                Status.FAILED,
                error=_error(
                    "Sluice.NoContainerRuntime",
                    "container steps need a Docker engine; start dockerd (see README) and run again",
                ),
            )
            return
        outcome = await runner.run_step(self, name, spec, resume)
        self._record(name, outcome)

    async def sleep_until(self, wake_at: float) -> None:
        """Sleep durably (the wake time is in the store), giving way at once to a drain."""
        delay = wake_at - time.time()
        if self.o.draining:
            raise Drained
        if delay <= 0:
            return
        try:
            await asyncio.wait_for(self.o.drain_event.wait(), timeout=delay)
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
            error = self.step_error.get(failed[0]) or _error("Sluice.StepFailed", f"step {failed[0]} failed")
            reason = f"step {failed[0]} failed: {error.get('errorType')}: {error.get('errorMessage')}"
        elif self.wf.outputs is not None:
            try:
                outputs = self.wf.outputs.render(self.ctx)
            except SluiceError as exc:
                status, error = Status.FAILED, _error("Sluice.TemplateError", f"outputs: {exc}")
                reason = error["errorMessage"]
        await self._end_run(status, reason=reason, outputs=outputs, error=error)
        return status

    async def _end_run(
        self, status: str, *, reason: str | None, outputs: Any = None, error: dict[str, Any] | None = None
    ) -> None:
        run_id, now, old = self.run.id, time.time(), self.run.status
        extra: dict[str, Any] = {}
        if outputs is not None:
            extra["outputs"] = outputs
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
        self.o.emit_progress(
            "run",
            self.run,
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
            writes.append(
                lambda c, n=name, s=status: (
                    c.execute(
                        "UPDATE attempts SET status=?, ended_at=? WHERE run_id=? AND step=? AND status=?",
                        (Status.CANCELLED, now, run_id, n, Status.RUNNING),
                    ),
                    records.finish_step(c, run_id, n, -1, s, Status.CANCELLED, now, reason=reason),
                )
            )
            self.status[name] = Status.CANCELLED
        await self.commit(writes, [])
        await self._end_run(Status.CANCELLED, reason=reason)
