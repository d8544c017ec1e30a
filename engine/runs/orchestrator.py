"""The orchestrator: owns every run's driver task, recovers runs after a restart, drains on stop.

Runs arrive from the bus (already committed). Each gets a :class:`RunDriver`
task held here, so shutdown can count them, let in-flight step attempts finish
within a grace period, and then cancel what is left with a reason. A user's
cancel is told apart from a shutdown's (arq's ``aborting_tasks`` idea): a
cancelled run ends ``CANCELLED``; a run interrupted by shutdown stays
``RUNNING`` in the store and resumes on the next start.

Admission (intake first: whether a committed run starts now or waits) is
:class:`~engine.runs.admission.Admission`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.bus.bus import Bus
from engine.events import MANUAL_SOURCE
from engine.executors.base import Executor
from engine.runs.admission import Admission, AdmissionSettings
from engine.runs.driver import RunDriver
from engine.runs.keyed import KeyedGate
from engine.runs.services import RunServices
from engine.runs.step_keys import StepKeys, interrupted_ticket
from engine.runtokens import RUN_TAG, RunTokens
from engine.states import TERMINAL, Status
from engine.store import audit, queries, records
from engine.store.records import RunRecord
from engine.store.store import Store
from engine.types import Progress, StepRunner
from workflows import secrets
from workflows.spec import Workflow

log = logging.getLogger(__name__)

#: how a run ended, as the engine that drove it saw it: ``{"outputs": ..., "error": ...}``
RunEnd = dict[str, Any]


class Orchestrator:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        catalog: Mapping[str, Workflow],
        functions: Executor,
        *,
        data_dir: Path,
        containers: StepRunner | None = None,
        admission: AdmissionSettings | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.catalog = catalog
        self.functions = functions
        self.containers = containers
        #: while the engine attaches Docker in the background, container steps wait for this
        self.containers_attaching: asyncio.Future[Any] | None = None
        self.logs_dir = Path(data_dir) / "logs"
        self.drain_event = asyncio.Event()
        self.listeners: list[Progress] = []
        self._tasks: dict[str, asyncio.Task[str]] = {}
        self._drivers: dict[str, RunDriver] = {}
        self._cancel_reasons: dict[str, str] = {}
        self._waiters: dict[str, list[asyncio.Future[tuple[str, RunEnd | None]]]] = {}
        self.admission = Admission(bus, self._start, admission or AdmissionSettings())
        #: a workflow's ``concurrency``: runs over their key's limit wait here, PENDING, in order
        self.keyed = KeyedGate(catalog)
        #: a function step's keyed ``concurrency``: its attempts over their key's limit wait here
        self.keys = StepKeys()
        #: the run-scoped tokens of ``context.sluice``; good while the run's driver is here
        self.tokens = RunTokens(lambda run_id: run_id in self._tasks, self._made_by)
        #: where function handlers reach the engine's API (``set_api_url``, by the HTTP service once
        #: bound); while ``api_expected`` and not yet bound, a function's attempt waits for it
        self.api_url: str | None = None
        self.api_expected = False
        self._api_bound = asyncio.Event()
        self.services = RunServices(
            store=store,
            bus=bus,
            functions=functions,
            admission=self.admission,
            logs_dir=self.logs_dir,
            drain=self.drain_event,
            progress=self.emit_progress,
            containers=self.container_runner,
            cancel_reason=self._cancel_reasons.get,
            api=self._api_for,
            keys=self.keys,
        )
        self.finished = 0
        store.quiet = lambda: not self._tasks
        bus.on_runs(self.accept)

    def __repr__(self) -> str:
        return (
            f"<Orchestrator active={len(self._tasks)} {self.admission!r} "
            f"finished={self.finished} draining={self.draining}>"
        )

    @property
    def active(self) -> int:
        return len(self._tasks)

    @property
    def held(self) -> int:
        """Runs committed and waiting for engine-side work to drain (engine/runs/admission.py)."""
        return len(self.admission.held)

    @property
    def in_engine(self) -> int:
        return self.admission.in_engine

    @property
    def draining(self) -> bool:
        return self.drain_event.is_set()

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
        """Start driving committed runs, or hold them (the bus calls this after each commit).

        Runs already started (recovery) come first: they hold their concurrency slots again before
        a PENDING run of the same key can take one."""
        for run in sorted(runs, key=lambda r: r.status != Status.RUNNING):
            if run.status in TERMINAL:  # refused at routing (bad input): already final in the store
                self.emit_progress("run", run, None, run.status, {"error": run.error, "reason": None})
                self._resolve(run.id, run.status, {"outputs": None, "error": run.error})
                continue
            if run.id in self._tasks or run.id in self.admission.held:
                continue
            if run.spec is None and run.workflow not in self.catalog:
                log.error(
                    "run %s: workflow %s is no longer loaded; leaving it for later", run.id, run.workflow
                )
                continue
            if self.keyed.enter(run):
                self.admission.offer(run)

    def _release(self, run_id: str) -> None:
        """A run ended: its concurrency slot goes to the next run of its key (none while draining:
        the waiting runs stay PENDING and the next start runs them)."""
        for run in self.keyed.leave(run_id):
            if self.draining:
                return
            self.admission.offer(run)

    def _start(self, run: RunRecord) -> None:
        # the version the run was made with: a hot reload since changes only runs made after it
        driver = RunDriver(self.services, run, run.spec or self.catalog[run.workflow])
        self.admission.work_started()  # handed over to the driver's first commit (RunChanges.starting)
        driver.changes.starting = True
        self._drivers[run.id] = driver
        task = asyncio.create_task(self._drive(driver), name=f"run {run.id}")
        # a callback, not a ``finally``: a task cancelled before its first step never runs its body
        task.add_done_callback(lambda _t: self._started(driver))
        self._tasks[run.id] = task

    def _started(self, driver: RunDriver) -> None:
        """Release the start unit of a run that ended before its first commit."""
        if driver.changes.starting:
            driver.changes.starting = False
            self.admission.work_done()

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
            status, driver.end = Status.FAILED, None
            await asyncio.shield(self._fail_broken(driver))
        finally:
            self._tasks.pop(run_id, None)
            self._drivers.pop(run_id, None)
            self.tokens.forget(run_id)
            self.keys.forget(run_id)
        if status in TERMINAL:
            self.finished += 1
            self._resolve(run_id, status, driver.end)
            self._release(run_id)
        if not self._tasks:  # the store's WAL restart, if due, stalls no run now
            self.store.quiet_moment()
        return status

    def set_api_url(self, url: str) -> None:
        self.api_url = url
        self._api_bound.set()

    async def _api_for(self, run_id: str) -> dict[str, str] | None:
        """The API for a function of ``run_id``. A step resumed by recovery starts before the HTTP
        service binds (it is started last): its attempt waits those few milliseconds for it."""
        if self.api_url is None and self.api_expected:
            await self._api_bound.wait()
        if self.api_url is None:
            return None
        return {"url": self.api_url, "token": self.tokens.mint(run_id)}

    async def _fail_broken(self, driver: RunDriver) -> None:
        run_id, now, old = driver.run.id, time.time(), driver.run.status
        await self.store.write(
            lambda c: records.set_run_status(
                c, run_id, old, Status.FAILED, now, reason="engine error (see the engine log)"
            )
        )

    def _resolve(self, run_id: str, status: str, end: RunEnd | None = None) -> None:
        for fut in self._waiters.pop(run_id, []):
            if not fut.done():
                fut.set_result((status, end))

    async def container_runner(self) -> StepRunner | None:
        """The container runtime, once the engine's Docker attach is done (None without Docker)."""
        if self.containers is None and self.containers_attaching is not None:
            await asyncio.shield(self.containers_attaching)
        return self.containers

    # -- queries and control ------------------------------------------------------------------

    async def wait(self, run_id: str, timeout_s: float | None = None) -> str:
        """Wait for a run to end; returns its status (raises TimeoutError, KeyError for no such run)."""
        return (await self.wait_end(run_id, timeout_s))[0]

    async def wait_end(self, run_id: str, timeout_s: float | None = None) -> tuple[str, RunEnd | None]:
        """``wait``, and the run's outputs and error when this engine saw it end (``?wait`` answers
        with them instead of reading the store back); None when the store has to say."""
        if not self._here(run_id):
            row = await self.store.read(
                lambda c: c.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
            )
            if row is None:
                raise KeyError(run_id)
            if row[0] in TERMINAL or not self._here(run_id):
                return str(row[0]), None
        fut: asyncio.Future[tuple[str, RunEnd | None]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(run_id, []).append(fut)
        async with asyncio.timeout(timeout_s):
            return await fut

    def depth_of(self, run_id: str) -> int:
        """How deep a running run is in a chain of runs starting runs (0 when not running here)."""
        driver = self._drivers.get(run_id)
        return 0 if driver is None else driver.run.depth

    async def _made_by(self, run_id: str, thing: str) -> bool:
        """The store says run ``run_id`` made job or run ``thing`` (in this process or before)."""
        async with self.store.reader() as db:
            if await queries.job_tag(db, thing, RUN_TAG) == run_id:
                return True
            # only a manual start's event: its source is the engine's own (PutEvents refuses
            # sluice.*), so a resource someone else wrote into an event grants nothing
            made = await queries.run_event_resources(db, thing, MANUAL_SOURCE)
            return f"{RUN_TAG}/{run_id}" in made

    def _here(self, run_id: str) -> bool:
        """Driven, held by admission, or waiting for its concurrency key."""
        return run_id in self._tasks or run_id in self.admission.held or self.keyed.is_waiting(run_id)

    async def cancel(self, run_id: str, reason: str = "cancelled by user") -> bool:
        """Cancel a running or held run; False when it is neither here."""
        held = self.keyed.withdraw(run_id) or self.admission.withdraw(run_id)
        if held is not None:  # never started: end it CANCELLED from PENDING, nothing ran
            driver = RunDriver(self.services, held, held.spec or self.catalog[held.workflow])
            await driver.cancel_steps_and_run(reason)
            self.finished += 1
            self._resolve(run_id, Status.CANCELLED, driver.end)
            self._release(run_id)
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
        cut: list[tuple[str, tuple[str, str, int], float]] = []  #: keyed steps' places (step_keys.py)

        def load(conn: sqlite3.Connection) -> list[RunRecord]:
            runs = records.load_active_runs(conn)
            for run in runs:
                wf = catalog.get(run.workflow)
                if wf is not None and wf.secrets:  # stored as references: the defaults hold the values
                    run.params = secrets.restore_defaults(
                        run.params, {n: p.default for n, p in wf.params.items()}
                    )
                for (name, idx), row in run.steps.items():
                    if row["status"] != Status.RUNNING or wf is None or name not in wf.steps:
                        continue
                    if wf.steps[name].kind == "function" and (idx >= 0 or wf.steps[name].for_each is None):
                        keyed = wf.steps[name].keyed is not None
                        ticket = interrupted_ticket(conn, run.id, name, idx) if keyed else None
                        if ticket is not None:
                            cut.append((run.workflow, (run.id, name, idx), ticket))
                        has_open = conn.execute(
                            "SELECT 1 FROM attempts WHERE run_id=? AND step=? AND idx=? AND status IN (?,?)",
                            (run.id, name, idx, Status.RUNNING, Status.WAITING),  # WAITING: for a worker
                        ).fetchone()
                        if has_open:
                            records.note_interrupted(conn, run.id, name, idx, now)
                            row["interrupted"] += 1
            return runs

        runs = await self.store.write(load, heavy=True)
        if runs:
            log.info("recovering %d unfinished runs", len(runs))
        self.keys.seed(sorted(cut, key=lambda c: c[2]))
        self.accept(runs)
        return len(runs)

    async def drain(self, grace_s: float) -> None:
        """Stop starting steps, let running attempts finish for ``grace_s``, then cancel the rest.

        Held runs are left PENDING in the store: nothing of them ran, and the next start runs them."""
        self.drain_event.set()
        self.admission.stop()
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
        cut = [t for t in done if t.cancelled()]  # a forced exit (aclose) cancelled them meanwhile
        if pending or cut:
            await self._record_interrupted()
        ended = sum(1 for t in done if not t.cancelled() and t.exception() is None and t.result() in TERMINAL)
        log.info(
            "drained: %d runs ended, %d paused between steps, %d interrupted (both resume on restart)",
            ended,
            len(done) - ended - len(cut),
            len(pending) + len(cut),
        )

    async def _record_interrupted(self) -> None:
        """Close attempts a shutdown cut short, so history shows why (the steps resume later)."""
        now = time.time()

        def close(conn: sqlite3.Connection) -> int:
            closed = records.close_interrupted_attempts(conn, now)
            audit.insert(conn, "shutdown", "engine", {"attempts_interrupted": closed}, now)
            return closed

        await self.store.write(close)

    async def aclose(self) -> None:
        """Cancel whatever is left (after a drain there is nothing); held runs stay PENDING."""
        self.admission.stop(forget=True)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel(msg="engine closing")
        await asyncio.gather(*tasks, return_exceptions=True)
