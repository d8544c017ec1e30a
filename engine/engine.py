"""The Engine: builds the components, starts them in order, and stops them in logged stages.

Start is two-phase (ready means ready): the store is open and migrated, the
worker pool is warm and unfinished runs are re-adopted before ``start()``
returns; only then do sources (triggers, HTTP) begin to feed it. Stop runs the
stages uvicorn taught us: stop intake, let running steps finish within a grace
period, cancel the rest with a recorded reason, close executors, flush and
close the store. A second signal forces the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.bus.bus import Bus, Target
from engine.catalog import LiveCatalog
from engine.events import MANUAL_DETAIL_TYPE, MANUAL_SOURCE, envelope
from engine.executors.base import Executor
from engine.pauses import TriggerPauses
from engine.runs.admission import AdmissionSettings
from engine.runs.orchestrator import Orchestrator
from engine.runtokens import RUN_TAG
from engine.store import queries
from engine.store.kv import StoreKV
from engine.store.store import Store
from engine.types import Service
from workflows import secrets
from workflows.loader import resolve_input
from workflows.spec import Workflow

if TYPE_CHECKING:  # imported when Docker is attached: the client pulls in aiohttp
    from engine.batch.service import BatchService

log = logging.getLogger(__name__)


#: young collections every 10,000 net allocations (CPython: 700), older ones rarer still
GC_THRESHOLDS = (10_000, 50, 100)


def tune_gc() -> None:
    """Collect garbage less often in an engine's own process (``sluice serve``, ``sluice run``).

    An engine keeps thousands of objects alive while it works (held runs with their events, run
    drivers, futures) and allocates a few dozen per event. At CPython's default thresholds the
    cyclic collector kept rescanning those survivors: in a webhook flood it cost a measurable share
    of the engine's CPU at no gain in memory (bench/RESULTS.md, "Measured reasons for the code's
    constants"). Reference counting still frees
    everything not in a cycle at once. Process-wide, so only Sluice's own entry points call it,
    never an import.
    """
    gc.set_threshold(*GC_THRESHOLDS)


def default_data_dir(arg: str | os.PathLike[str] | None = None) -> Path:
    """The explicit argument wins, then ``SLUICE_DATA_DIR``, then ``./.sluice``."""
    if arg:
        return Path(arg)
    return Path(os.environ.get("SLUICE_DATA_DIR") or ".sluice")


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    workers: int | None = None  #: warm function workers (default: the number of cores, at least 2)
    max_workers: int | None = None  #: the pool grows to this for waiting calls (default: 32)
    grace_s: float = 30.0  #: how long running steps may take to finish on shutdown
    host: str = "127.0.0.1"
    port: int = 8765
    recover: bool = True  #: resume unfinished runs at start (``sluice run`` leaves that to ``serve``)
    #: the intake-first gate for new runs (engine/runs/admission.py)
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)


class Engine:
    """The running system. Use ``async with Engine(settings, catalog) as engine:`` or ``serve()``."""

    def __init__(
        self, settings: Settings, catalog: Mapping[str, Workflow], *, functions: Executor | None = None
    ) -> None:
        self.settings = settings
        #: one object everyone holds: a hot reload (engine/reload.py) swaps what it serves
        self.catalog = catalog = LiveCatalog(catalog)
        # before anything is stored, answered or logged: the catalog's ${env:...} values are secret
        secrets.register(name for wf in catalog.values() for name in wf.secrets)
        self.store = Store(settings.data_dir / "sluice.db")
        self.bus = Bus(self.store, catalog)
        self.pauses = TriggerPauses(StoreKV(self.store))  #: loaded at start, before the triggers
        self.bus.paused = lambda: self.pauses.paused
        if functions is None:
            from engine.executors.function import FunctionExecutor

            functions = FunctionExecutor(
                workers=settings.workers,
                max_workers=settings.max_workers,
                lock_path=settings.data_dir / "workers.lock",  # a killed engine's workers end first
            )
        self.functions = functions
        self.orchestrator = Orchestrator(
            self.store,
            self.bus,
            catalog,
            self.functions,
            data_dir=settings.data_dir,
            admission=settings.admission,
        )
        #: the Batch service, once a Docker engine answered (see ``start``); None without Docker
        self.batch: BatchService | None = None
        self._services: list[Service] = []  #: started last, in order; stopped first
        self._closers: list[Callable[[], Awaitable[None]]] = []  #: closed in reverse, after the drain
        self._group_task: asyncio.Task[None] | None = None
        self._started = False
        self._stopped = False
        self.should_exit = asyncio.Event()
        self.force_exit = False
        self.crashed = False  #: a component failed and stopped the engine (``serve`` returns 1)
        # a trigger with ``batch:``: its events wait for their batch's run. Not in a one-shot
        # ``sluice run`` (recover off): it leaves other runs, and batches, to ``sluice serve``
        if self.bus.batched and settings.recover:
            from engine.bus.batches import BatchWindows

            self.add_service(BatchWindows(self.store, self.bus))

    def __repr__(self) -> str:
        return f"<Engine data_dir={self.settings.data_dir} {self.orchestrator!r}>"

    def add_service(self, service: Service, *, closer: Callable[[], Awaitable[None]] | None = None) -> None:
        """Compose a service in before ``start`` (engine/server.py does); ``closer`` runs at stop,
        even if the service never got to run."""
        if self._started:
            raise RuntimeError(f"add {service.name!r} before the engine starts, not after")
        self._services.append(service)
        if closer is not None:
            self._closers.append(closer)

    @property
    def services(self) -> tuple[Service, ...]:
        return tuple(self._services)

    async def start(self) -> None:
        """Open the store, warm the workers, resume unfinished runs; then start the services."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        secrets.install_log_filter()
        self.store.claim()  # another engine on this data dir: refuse before any worker starts
        await asyncio.gather(self.store.open(), self.functions.start())
        # functions resumed below reach the API (context.sluice) once the HTTP service is up
        self.orchestrator.api_expected = any(s.name == "http" for s in self._services)
        await self.pauses.load()
        attaching = None
        if self._wants_batch():
            # in the background: a slow dockerd must not hold up resumed function steps; container
            # steps wait for it (Orchestrator.container_runner)
            attaching = asyncio.ensure_future(self._attach_batch())
            self.orchestrator.containers_attaching = attaching
        try:
            if self.settings.recover:
                recovered = await self.orchestrator.recover()
                if recovered:
                    log.info("resumed %d unfinished runs", recovered)
        except BaseException:
            if attaching is not None:
                attaching.cancel()
            raise
        if attaching is not None:
            await attaching  # before the services: the BatchService is one of them
        self._started = True
        for service in self._services:  # in order; each is ready (socket bound, watch armed) on return
            await service.start()
        if self._services:
            self._group_task = asyncio.create_task(self._run_services(), name="sluice-services")

    async def _attach_batch(self) -> None:
        """Compose the Batch service in when a Docker engine answers; otherwise say why, once.

        Without Docker the engine still starts: container steps then fail with
        ``Sluice.NoContainerRuntime`` (engine/runs/driver.py)."""
        from engine.batch.service import BatchService
        from engine.executors.docker_api import DockerClient, DockerError

        client = DockerClient(call_timeout_s=float(os.environ.get("SLUICE_DOCKER_TIMEOUT", "60")))
        try:
            async with asyncio.timeout(5.0):
                await client.ping()
        except (DockerError, TimeoutError) as exc:
            log.info("no Docker engine (%s); container steps and batch jobs are unavailable", exc)
            await client.aclose()
            return
        service = BatchService(self.store, self.bus, self.settings.data_dir, client)
        await service.start()
        self.batch = service
        self.orchestrator.containers = service
        self._services.insert(0, service)
        self._closers.append(service.aclose)

    def _wants_batch(self) -> bool:
        """Batch (Docker) for a serving engine, or when a loaded workflow has a container step.

        A one-shot ``sluice run`` of function steps never touches Docker, so it does not pay for
        importing the client and pinging the daemon; ``sluice serve`` always offers the jobs API.
        """
        if self.settings.recover or any(s.name == "http" for s in self._services):
            return True  # an engine with an API offers its jobs (`sluice run --api` too)
        return any(step.kind == "container" for wf in self.catalog.values() for step in wf.steps.values())

    async def _run_services(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for service in self._services:
                    tg.create_task(service.run(), name=service.name)
        except* Exception as group:  # a component bug: stop the engine loudly
            for exc in group.exceptions:
                log.error("component failed; stopping the engine", exc_info=exc)
            self.crashed = True
            self.should_exit.set()
            raise

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop in stages (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.settings.grace_s if grace_s is None else grace_s
        if self._group_task is not None:
            log.info("stopping intake (triggers, HTTP)")
            self._group_task.cancel(msg="engine stopping")
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._group_task
        if self._started:
            await self.orchestrator.drain(grace)
            await self.orchestrator.aclose()
        for close in reversed(self._closers):
            try:
                await close()
            except Exception:
                log.exception("closing a component failed")
        await self.functions.aclose()
        await self.store.close()
        log.info("engine stopped")

    async def start_run(
        self,
        workflow: str,
        params: Mapping[str, Any] | None = None,
        *,
        depth: int = 0,
        started_by: str | None = None,
    ) -> str:
        """Start one run of ``workflow`` by hand (a ``sluice.manual`` event); returns the run id.

        Raises ``KeyError`` for an unknown workflow and ``InputError`` for params that do not
        fit the workflow; either way nothing is stored. ``depth``: how deep in a chain of runs
        starting runs it is (a function's ``context.sluice`` passes its run's depth + 1, and its run
        as ``started_by``).
        """
        wf = self.catalog[workflow]
        resolved = resolve_input(wf, dict(params or {}))
        resources = [f"workflow/{workflow}"]
        if started_by is not None:  # the run is that run's own, across restarts (engine/runtokens.py)
            resources.append(f"{RUN_TAG}/{started_by}")
        event = envelope(MANUAL_SOURCE, MANUAL_DETAIL_TYPE, dict(params or {}), resources=resources)
        result = await self.bus.put(event, target=Target(workflow, None, resolved), depth=depth)
        return result.run_ids[0]

    async def describe_run(self, run_id: str) -> dict[str, Any] | None:
        async with self.store.reader() as db:
            summary = await queries.run_summary(db, run_id)
        if summary is not None and summary["status"] == "PENDING" and summary.get("reason") is None:
            summary["reason"] = self.orchestrator.keyed.reason(run_id)  # waiting for its key, and why
        elif summary is not None and summary["status"] == "RUNNING":
            for name, step in summary["steps"].items():  # a step (or its items) waiting for its key
                step["reason"] = self.orchestrator.keys.reason(run_id, name) or step["reason"]
        return summary

    async def run_to_end(
        self, workflow: str, params: Mapping[str, Any] | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Start a run, wait for it to end, return its summary (tests and embedding)."""
        run_id = await self.start_run(workflow, params)
        await self.orchestrator.wait(run_id, timeout_s)
        summary = await self.describe_run(run_id)
        assert summary is not None
        return summary

    async def __aenter__(self) -> Engine:
        try:
            await self.start()
        except BaseException:
            await self.stop(grace_s=0)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve(self, *, handle_signals: bool = True) -> int:
        """Run until SIGINT/SIGTERM (or ``should_exit``), then stop gracefully.

        Returns the process's exit status: 0 for a requested stop, 1 when a component crashed."""
        with self.capture_signals(handle_signals):
            await self.start()
            log.info("Sluice is running (data: %s). Press CTRL+C to stop.", self.settings.data_dir)
            await self.should_exit.wait()
            log.info("shutting down: finishing running steps (CTRL+C again to force)")
            stop = asyncio.create_task(self.stop())
            while not stop.done():
                await asyncio.wait([stop], timeout=0.1)
                if self.force_exit and not stop.done():
                    log.warning("forced exit: cancelling everything now")
                    await self.orchestrator.aclose()
                    break
            await stop
        return 1 if self.crashed else 0

    @contextlib.contextmanager
    def capture_signals(self, enabled: bool) -> Iterator[None]:
        if not enabled:
            yield
            return
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        """Signal handlers only set flags (huey's rule); the first asks, the second forces."""
        if self.should_exit.is_set():
            self.force_exit = True
        self.should_exit.set()
        log.info("received %s", signal.Signals(sig).name)
