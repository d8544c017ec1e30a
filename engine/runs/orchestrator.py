"""The orchestrator: owns every run's driver task, recovers runs after a restart, drains on stop.

Runs arrive from the bus (already committed). Each gets a :class:`RunDriver`
task held here, so shutdown can count them, let in-flight step attempts finish
within a grace period, and then cancel what is left with a reason. A user's
cancel is told apart from a shutdown's (arq's ``aborting_tasks`` idea): a
cancelled run ends ``CANCELLED``; a run interrupted by shutdown stays
``RUNNING`` in the store and resumes on the next start.

Admission (intake first): the engine has one core, and a run costs it about
as much as taking in its event did. Without a gate a burst of webhooks halves
its own intake rate by starting every run at once. So a new run starts at once
only while fewer than ``ADMIT_AT`` units of engine-side run work are in flight:
runs not yet at their first commit, plus run commits waiting for the store.
Past that it is *held* in arrival order (it is already durable, ``PENDING`` in
the store) and a pump starts held runs as that work drains. Runs waiting on a
worker, a timer or a container do not count, so 1,000 sleeping runs hold
nothing back. It is Little's law: when the core saturates, commits take longer
and the count rises; on an engine that keeps up it stays near zero and nothing
is ever held.

The gate is that tight only while a burst is arriving (``Bus.in_burst``: 4
events within 20 ms). Once intake is quiet it opens 8-fold: more run work in
flight makes bigger group commits, and held runs drain ~2x faster (W4's 10,000
runs: 4.7 s -> 2.5 s after the burst).

During a flood (``Bus.flooding``: 32 events within 20 ms, faster than runs drain
beside intake) it shuts: every new run is held until the flood ebbs. Runs started
mid-flood cost intake more than they gain: W4's 10,000 webhooks were accepted at
3,400-3,500/s with the gate at 8 and 5,700-6,000/s shut, and all 10,000 runs still
ended no later (4.5-4.6 s after the first POST instead of 4.7 s). A flood that lasts holds
no run back longer than ``MAX_HOLD_S``: then the gate is at 8 again, so runs and
intake share the engine as in a burst.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from engine.bus.bus import Bus
from engine.executors.base import Executor, Outcome
from engine.runs.driver import RunDriver
from engine.states import TERMINAL, Status
from engine.store import records
from engine.store.records import RunRecord
from engine.store.store import Store

log = logging.getLogger(__name__)

#: engine-side run work in flight (runs starting + run commits) before new runs are held
ADMIT_AT = 8
#: while no burst of events is arriving, ADMIT_AT times this: held runs drain at full speed
QUIET_FACTOR = 8
#: while runs are held, the pump looks again this often
PUMP_S = 0.002
#: during a flood of events no run waits longer than this (seconds) before the gate lets runs in
MAX_HOLD_S = 5.0

#: ``(kind, run, step, status, info)``: kind is "run", "step" or "retry"; called after the commit
Progress = Callable[[str, RunRecord, str | None, str, dict[str, Any]], None]


class ContainerSteps(Protocol):
    """Runs a workflow's ``container:`` step as a Batch job (engine/batch_steps.py provides it)."""

    async def run_step(
        self, driver: RunDriver, name: str, spec: Any, resume: dict[str, Any] | None
    ) -> Outcome: ...


class Orchestrator:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        catalog: Mapping[str, Any],
        functions: Executor,
        *,
        data_dir: Path,
        containers: ContainerSteps | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.catalog = catalog
        self.functions = functions
        self.containers = containers
        #: while the engine attaches Docker in the background, container steps wait for this
        self.containers_attaching: asyncio.Future[Any] | None = None
        self.logs_dir = Path(data_dir) / "logs"
        self.draining = False
        self.drain_event = asyncio.Event()
        self.listeners: list[Progress] = []
        self._tasks: dict[str, asyncio.Task[str]] = {}
        self._drivers: dict[str, RunDriver] = {}
        self._cancel_reasons: dict[str, str] = {}
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}
        self._held: dict[str, RunRecord] = {}  #: admitted later, in this (arrival) order
        self._pump_timer: asyncio.TimerHandle | None = None
        #: runs not yet at their first commit + run commits in flight (RunDriver.commit keeps it)
        self.in_engine = 0
        self.finished = 0
        bus.on_runs(self.accept)

    def __repr__(self) -> str:
        return (
            f"<Orchestrator active={len(self._tasks)} held={len(self._held)} "
            f"finished={self.finished} draining={self.draining}>"
        )

    @property
    def active(self) -> int:
        return len(self._tasks)

    @property
    def held(self) -> int:
        """Runs committed and waiting for engine-side work to drain (see the module doc)."""
        return len(self._held)

    def emit_progress(
        self, kind: str, run: RunRecord, step: str | None, status: str, info: dict[str, Any]
    ) -> None:
        for listener in self.listeners:
            try:
                listener(kind, run, step, status, info)
            except Exception:  # a broken progress view must not break the run
                log.exception("progress listener failed")

    # -- intake -------------------------------------------------------------------------------

    def accept(self, runs: list[RunRecord]) -> None:
        """Start driving committed runs, or hold them (the bus calls this after each commit)."""
        for run in runs:
            if run.status in TERMINAL:  # refused at routing (bad input): already final in the store
                self.emit_progress("run", run, None, run.status, {"error": run.error, "reason": None})
                self._resolve(run.id, run.status)
                continue
            if run.id in self._tasks or run.id in self._held:
                continue
            if run.workflow not in self.catalog:
                log.error(
                    "run %s: workflow %s is no longer loaded; leaving it for later", run.id, run.workflow
                )
                continue
            if self._held or self.in_engine >= self._admit_limit():
                self._held[run.id] = run
                self._arm_pump()
            else:
                self._start(run)

    def _admit_limit(self) -> int:
        """0 in a flood, ADMIT_AT in a burst (intake first); far more once it has passed.

        More run work in flight means bigger group commits, so held runs drain ~2x faster, but
        during a burst that same work would halve the intake rate (see the module doc)."""
        if self.bus.flooding() and not self._held_too_long():
            return 0
        return ADMIT_AT if self.bus.in_burst() else ADMIT_AT * QUIET_FACTOR

    def _held_too_long(self) -> bool:
        if not self._held:
            return False
        oldest = next(iter(self._held.values()))
        return self.bus.clock() - oldest.created_at > MAX_HOLD_S

    def _start(self, run: RunRecord) -> None:
        driver = RunDriver(self, run, self.catalog[run.workflow])
        self.in_engine += 1  # handed over to the driver's first commit (RunDriver.starting)
        driver.starting = True
        self._drivers[run.id] = driver
        task = asyncio.create_task(self._drive(driver), name=f"run {run.id}")
        # a callback, not a ``finally``: a task cancelled before its first step never runs its body
        task.add_done_callback(lambda _t: self._started(driver))
        self._tasks[run.id] = task

    def _started(self, driver: RunDriver) -> None:
        """Release the start unit of a run that ended before its first commit."""
        if driver.starting:
            driver.starting = False
            self.in_engine -= 1

    def _arm_pump(self) -> None:
        if self._pump_timer is None and not self.draining:
            self._pump_timer = asyncio.get_running_loop().call_later(PUMP_S, self._pump)

    def _pump(self) -> None:
        self._pump_timer = None
        if self.draining:  # held runs stay PENDING in the store; the next start resumes them
            return
        for _ in range(min(self._admit_limit() - self.in_engine, len(self._held))):
            self._start(self._held.pop(next(iter(self._held))))
        if self._held:
            self._arm_pump()

    async def _drive(self, driver: RunDriver) -> str:
        run_id = driver.run.id
        try:
            status = await driver.drive()
        except asyncio.CancelledError:
            reason = self._cancel_reasons.pop(run_id, None)
            if reason is None:  # shutdown: the run resumes from the store on restart
                raise
            await asyncio.shield(driver.cancel_steps_and_run(reason))
            status = Status.CANCELLED
        except Exception:
            log.exception("run %s: the driver failed; marking the run FAILED", run_id)
            status = Status.FAILED
            await asyncio.shield(self._fail_broken(driver))
        finally:
            self._tasks.pop(run_id, None)
            self._drivers.pop(run_id, None)
        if status in TERMINAL:
            self.finished += 1
            self._resolve(run_id, status)
        return status

    async def _fail_broken(self, driver: RunDriver) -> None:
        run_id, now, old = driver.run.id, time.time(), driver.run.status
        await self.store.write(
            lambda c: records.set_run_status(
                c, run_id, old, Status.FAILED, now, reason="engine error (see the engine log)"
            )
        )

    def _resolve(self, run_id: str, status: str) -> None:
        for fut in self._waiters.pop(run_id, []):
            if not fut.done():
                fut.set_result(status)

    async def container_runner(self) -> ContainerSteps | None:
        """The container runtime, once the engine's Docker attach is done (None without Docker)."""
        if self.containers is None and self.containers_attaching is not None:
            await asyncio.shield(self.containers_attaching)
        return self.containers

    # -- queries and control ------------------------------------------------------------------

    async def wait(self, run_id: str, timeout_s: float | None = None) -> str:
        """Wait for a run to end; returns its status (raises TimeoutError, KeyError for no such run)."""
        if run_id not in self._tasks and run_id not in self._held:
            row = await self.store.read(
                lambda c: c.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
            )
            if row is None:
                raise KeyError(run_id)
            if row[0] in TERMINAL or (run_id not in self._tasks and run_id not in self._held):
                return str(row[0])
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(run_id, []).append(fut)
        async with asyncio.timeout(timeout_s):
            return await fut

    async def cancel(self, run_id: str, reason: str = "cancelled by user") -> bool:
        """Cancel a running or held run; False when it is neither here."""
        held = self._held.pop(run_id, None)
        if held is not None:  # never started: end it CANCELLED from PENDING, nothing ran
            driver = RunDriver(self, held, self.catalog[held.workflow])
            await driver.cancel_steps_and_run(reason)
            self.finished += 1
            self._resolve(run_id, Status.CANCELLED)
            return True
        task = self._tasks.get(run_id)
        if task is None:
            return False
        self._cancel_reasons[run_id] = reason
        task.cancel(msg=reason)
        await asyncio.gather(task, return_exceptions=True)
        return True

    # -- lifecycle ----------------------------------------------------------------------------

    async def recover(self) -> int:
        """Resume every run the store says is unfinished; returns how many."""
        now = time.time()
        catalog = self.catalog

        def load(conn: sqlite3.Connection) -> list[RunRecord]:
            runs = records.load_active_runs(conn)
            for run in runs:
                wf = catalog.get(run.workflow)
                for (name, idx), row in run.steps.items():
                    if row["status"] != Status.RUNNING or wf is None or name not in wf.steps:
                        continue
                    if wf.steps[name].kind == "function" and (idx >= 0 or wf.steps[name].for_each is None):
                        has_open = conn.execute(
                            "SELECT 1 FROM attempts WHERE run_id=? AND step=? AND idx=? AND status=?",
                            (run.id, name, idx, Status.RUNNING),
                        ).fetchone()
                        if has_open:
                            records.note_interrupted(conn, run.id, name, idx, now)
                            row["interrupted"] += 1
            return runs

        runs = await self.store.write(load, heavy=True)
        if runs:
            log.info("recovering %d unfinished runs", len(runs))
        self.accept(runs)
        return len(runs)

    async def drain(self, grace_s: float) -> None:
        """Stop starting steps, let running attempts finish for ``grace_s``, then cancel the rest.

        Held runs are left PENDING in the store: nothing of them ran, and the next start runs them."""
        self.draining = True
        self.drain_event.set()
        if self._pump_timer is not None:
            self._pump_timer.cancel()
            self._pump_timer = None
        tasks = list(self._tasks.values())
        if not tasks:
            return
        log.info(
            "waiting up to %.0fs for %d runs' running steps to finish (CTRL+C again to force)",
            grace_s,
            len(tasks),
        )
        done, pending = await asyncio.wait(tasks, timeout=grace_s)
        if pending:
            log.warning(
                "cancelling %d runs still running after the grace period; they resume on restart",
                len(pending),
            )
            for task in pending:
                task.cancel(msg="engine shutdown: grace period exceeded")
            await asyncio.gather(*pending, return_exceptions=True)
            await self._record_interrupted()
        log.info("drained: %d runs finished, %d interrupted", len(done), len(pending))

    async def _record_interrupted(self) -> None:
        """Close attempts a shutdown cut short, so history shows why (the steps resume later)."""
        now = time.time()

        def close(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE attempts SET status=?, ended_at=?, error=? WHERE status=?",
                (
                    Status.CANCELLED,
                    now,
                    records.dumps({"errorType": "Sluice.EngineShutdown", "errorMessage": "engine shut down"}),
                    Status.RUNNING,
                ),
            )
            conn.execute(
                "UPDATE steps SET interrupted=interrupted+1 WHERE status=? AND (run_id, step, idx) IN "
                "(SELECT run_id, step, idx FROM attempts WHERE status=? AND ended_at=?)",
                (Status.RUNNING, Status.CANCELLED, now),
            )
            conn.execute(
                "INSERT INTO audit (at, kind, subject, detail) VALUES (?,?,?,?)",
                (now, "shutdown", "engine", records.dumps({"attempts_interrupted": cur.rowcount})),
            )
            return cur.rowcount

        await self.store.write(close)

    async def aclose(self) -> None:
        """Cancel whatever is left (after a drain there is nothing); held runs stay PENDING."""
        if self._pump_timer is not None:
            self._pump_timer.cancel()
            self._pump_timer = None
        self._held.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel(msg="engine closing")
        await asyncio.gather(*tasks, return_exceptions=True)
