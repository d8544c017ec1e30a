"""The orchestrator: owns every run's driver task, recovers runs after a restart, drains on stop.

Runs arrive from the bus (already committed). Each gets a :class:`RunDriver`
task held here, so shutdown can count them, let in-flight step attempts finish
within a grace period, and then cancel what is left with a reason. A user's
cancel is told apart from a shutdown's (arq's ``aborting_tasks`` idea): a
cancelled run ends ``CANCELLED``; a run interrupted by shutdown stays
``RUNNING`` in the store and resumes on the next start.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from . import records
from .bus import Bus
from .executors.base import Executor, Outcome
from .records import RunRecord
from .runs import RunDriver
from .states import TERMINAL, Status
from .store import Store

log = logging.getLogger(__name__)

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
        self.logs_dir = Path(data_dir) / "logs"
        self.draining = False
        self.drain_event = asyncio.Event()
        self.listeners: list[Progress] = []
        self._tasks: dict[str, asyncio.Task[str]] = {}
        self._drivers: dict[str, RunDriver] = {}
        self._cancel_reasons: dict[str, str] = {}
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}
        self.finished = 0
        bus.on_runs(self.accept)

    def __repr__(self) -> str:
        return f"<Orchestrator active={len(self._tasks)} finished={self.finished} draining={self.draining}>"

    @property
    def active(self) -> int:
        return len(self._tasks)

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
        """Start driving committed runs (the bus calls this after each commit)."""
        for run in runs:
            if run.status in TERMINAL:  # refused at routing (bad input): already final in the store
                self.emit_progress("run", run, None, run.status, {"error": run.error, "reason": None})
                self._resolve(run.id, run.status)
                continue
            if run.id in self._tasks:
                continue
            workflow = self.catalog.get(run.workflow)
            if workflow is None:
                log.error(
                    "run %s: workflow %s is no longer loaded; leaving it for later", run.id, run.workflow
                )
                continue
            driver = RunDriver(self, run, workflow)
            self._drivers[run.id] = driver
            task = asyncio.create_task(self._drive(driver), name=f"run {run.id}")
            self._tasks[run.id] = task

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

    # -- queries and control ------------------------------------------------------------------

    async def wait(self, run_id: str, timeout_s: float | None = None) -> str:
        """Wait for a run to end; returns its status (raises TimeoutError, KeyError for no such run)."""
        if run_id not in self._tasks:
            row = await self.store.read(
                lambda c: c.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
            )
            if row is None:
                raise KeyError(run_id)
            if row[0] in TERMINAL or run_id not in self._tasks:
                return str(row[0])
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(run_id, []).append(fut)
        async with asyncio.timeout(timeout_s):
            return await fut

    async def cancel(self, run_id: str, reason: str = "cancelled by user") -> bool:
        """Cancel a running run; False when it is not running here."""
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

        runs = await self.store.write(load)
        if runs:
            log.info("recovering %d unfinished runs", len(runs))
        self.accept(runs)
        return len(runs)

    async def drain(self, grace_s: float) -> None:
        """Stop starting steps, let running attempts finish for ``grace_s``, then cancel the rest."""
        self.draining = True
        self.drain_event.set()
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
        """Cancel whatever is left (after a drain there is nothing)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel(msg="engine closing")
        await asyncio.gather(*tasks, return_exceptions=True)
