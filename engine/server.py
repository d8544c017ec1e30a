"""``sluice serve``: the composition root. The Engine (the core) plus its intake and its outputs.

This is the one place that decides what a serving engine is made of, in this order: the
workflows' file and schedule triggers, notifications (the outbox hook on the bus, its sender),
retention, and last the HTTP server with its route groups (webhooks, the API, the dashboard,
batch jobs, dead letters and replay, the AWS-compatible Batch and EventBridge APIs), so HTTP
intake opens only after everything else is ready.
Every other module receives what it needs in its constructor; none reaches into the Engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from engine import aws
from engine.api import batch as batch_api
from engine.api import metrics
from engine.api import notify as notify_api
from engine.api.app import HttpService
from engine.api.auth import AuthPolicy
from engine.config import ServerConfig, load_config
from engine.engine import Engine, Settings
from engine.notify import outbox as outbox_rows
from engine.notify.outbox import Outbox
from engine.notify.sender import NotifyService
from engine.notify.subscribers import (
    Subscriber,
    subscribers_from_catalog,
    subscribers_from_config,
    url_subscribers,
)
from engine.pauses import TriggerPauses
from engine.reload import WorkflowReloader
from engine.store import audit
from engine.store.kv import StoreKV
from engine.store.retention import (
    RetentionService,
    RunSweep,
    Sweep,
    event_sweep,
    keep_runs,
    retention_days,
    run_retention_days,
)
from engine.store.store import Store
from triggers.base import Emit, Trigger
from workflows.hostpaths import volume_roots
from workflows.loader import Catalog
from workflows.spec import FileTrigger, ScheduleTrigger, Workflow

log = logging.getLogger(__name__)

#: delivered notifications are kept this long (seconds) for the API, then deleted
DELIVERED_KEEP_S = 3600.0


class TriggerService:
    """Adapts a trigger (``start``/``run(emit)``) to an Engine service, and contains its failure.

    A trigger that fails after it started (its folder went away, a schedule ran past the dates
    Python can count) is logged, recorded in the audit table and disabled alone: the other
    workflows' triggers, the API and running work go on. ``failed`` says why (``/readyz``).

    Pausing (engine/pauses.py) stops the runner as the engine's stop would, and resuming makes a
    fresh one from ``make``, which starts as after a restart: from the trigger's durable state.
    """

    def __init__(
        self,
        make: Callable[[], Trigger],
        emit: Emit,
        name: str,
        store: Store | None = None,
        *,
        pauses: TriggerPauses | None = None,
        key: tuple[str, str] = ("", ""),
    ) -> None:
        self.make = make
        self.trigger: Trigger | None = None
        self.emit = emit
        self.name = name
        self.store = store
        self.pauses = pauses
        self.key = key
        self.failed: str | None = None

    def _paused(self) -> bool:
        return self.pauses is not None and self.pauses.is_paused(*self.key)

    async def start(self) -> None:
        if not self._paused():  # a trigger paused before the restart stays unarmed
            self.trigger = self.make()
            await self.trigger.start()

    async def run(self) -> None:
        try:
            while True:
                changed = self.pauses.changed(*self.key) if self.pauses is not None else asyncio.Event()
                if self._paused():
                    await changed.wait()
                    continue
                if self.trigger is None:  # resumed: a fresh runner, from the durable state
                    self.trigger = self.make()
                    await self.trigger.start()
                if await self._run_until(changed):
                    return
        except Exception as exc:
            self.failed = f"{type(exc).__name__}: {exc}"
            log.error("%s failed and is disabled; the rest of the engine goes on: %s", self.name, self.failed,
                      exc_info=exc)  # fmt: skip
            if self.store is not None:
                subject = self.name.removeprefix("trigger ")
                with contextlib.suppress(Exception):  # the audit row is a courtesy; the log has it
                    await audit.record(self.store, "trigger-failed", subject, {"error": self.failed})
            await asyncio.Event().wait()  # disabled until the engine stops

    async def _run_until(self, changed: asyncio.Event) -> bool:
        """Run the trigger until it returns (True) or it is paused (False: stopped, as at shutdown)."""
        assert self.trigger is not None
        running = asyncio.ensure_future(self.trigger.run(self.emit))
        waiting = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                running.result()
                return True
            running.cancel()  # paused (or paused and resumed at once): stop it as at shutdown
            await asyncio.gather(running, return_exceptions=True)
            self.trigger = None
            if self._paused():
                log.info("%s paused", self.name)
            return False
        finally:
            for task in (running, waiting):
                task.cancel()
            await asyncio.gather(running, waiting, return_exceptions=True)


def trigger_services(engine: Engine) -> list[TriggerService]:
    """One service per file and schedule trigger of every loaded workflow."""
    make = trigger_factory(engine)
    return [service for wf in engine.catalog.values() for service in make(wf)]


def trigger_factory(engine: Engine) -> Callable[[Workflow], list[TriggerService]]:
    """Makes one service per file and schedule trigger of a workflow (at start, and at a reload)."""
    kv = StoreKV(engine.store)

    async def record(kind: str, workflow: str, trigger: str, scheduled: datetime, reason: str) -> None:
        detail = {"workflow": workflow, "trigger": trigger, "reason": reason}
        detail["scheduled_time"] = scheduled.isoformat()
        await audit.record(engine.store, f"schedule-{kind}", f"{workflow}/{trigger}", detail)

    async def file_audit(kind: str, subject: str, detail: Mapping[str, object]) -> None:
        await audit.record(engine.store, kind, subject, detail)

    def services(wf: Workflow) -> list[TriggerService]:
        made: list[TriggerService] = []
        for spec in wf.triggers:
            make: Callable[[], Trigger]
            if isinstance(spec, FileTrigger):  # imported only when used: watchdog's observer is not free
                from triggers.files import FileTriggerRunner

                make = functools.partial(FileTriggerRunner.from_spec, wf.name, spec, kv=kv, audit=file_audit)
            elif isinstance(spec, ScheduleTrigger):
                from triggers.schedule import ScheduleTriggerRunner

                make = functools.partial(ScheduleTriggerRunner.from_spec, wf.name, spec, kv=kv, audit=record)
            else:
                continue
            emit = engine.bus.emitter(wf.name, spec.name)
            name = f"trigger {wf.name}/{spec.name}"
            made.append(
                TriggerService(make, emit, name, engine.store, pauses=engine.pauses, key=(wf.name, spec.name))
            )
        return made

    return services


def add_notifications(engine: Engine, extra: Sequence[Subscriber] = ()) -> NotifyService:
    """The outbox hook on the bus and the sender that drains it (before ``start``).

    Subscribers: the workflows' ``notify:``, their URL destinations, and ``extra`` (the server
    config's global ones)."""
    catalog = engine.catalog
    box = Outbox([*subscribers_from_catalog(catalog), *url_subscribers(catalog), *extra])
    keys = [s.key for s in box.subscribers]
    if len(set(keys)) != len(keys):
        raise ValueError(f"subscriber names must be unique, got {sorted(keys)}")
    sender = NotifyService(engine.store, box, publish=engine.bus.put)
    engine.bus.add_tx_hook(box.hook)
    engine.bus.on_commit(sender.wake)
    engine.add_service(sender, closer=sender.aclose)
    return sender


def retention_sweeps(days: float, runs: RunSweep | None = None) -> dict[str, Sweep]:
    """What retention deletes: events past ``days`` (0 keeps them), finished runs by ``runs``'
    rule, delivered notifications."""
    sweeps: dict[str, Sweep] = {"events": event_sweep(days)}
    if runs is not None:
        sweeps["runs"] = runs
    sweeps["outbox"] = lambda conn, now, limit: outbox_rows.delete_delivered(
        conn, now - DELIVERED_KEEP_S, limit
    )
    return sweeps


@dataclass(frozen=True, slots=True)
class Server:
    """A composed serving engine and the parts a test or an operator may look at."""

    engine: Engine
    notify: NotifyService
    http: HttpService


def compose(engine: Engine, config: ServerConfig, *, watch: Path | None = None) -> Server:
    """``watch``: the workflow folder to hot-reload (engine/reload.py), which then owns the triggers."""
    if watch is None:
        for service in trigger_services(engine):
            engine.add_service(service)
    else:
        roots = volume_roots(engine.settings.data_dir)
        engine.add_service(WorkflowReloader(engine, watch, trigger_factory(engine), volume_roots=roots))
    rules = aws.EventRules(engine)  # EventBridge rules made through the AWS API, kept in the store;
    engine.add_service(rules)  # started before the sender, which then has their webhook targets
    sender = rules.notify = add_notifications(engine, subscribers_from_config(config.subscribers))
    runs = RunSweep(
        run_retention_days(config.run_retention_days),
        keep_runs(config.keep_runs_per_workflow),
        lambda: list(engine.catalog),
        engine.orchestrator.logs_dir,
    )
    days = retention_days(config.retention_days)
    engine.add_service(RetentionService(engine.store, retention_sweeps(days, runs)))
    auth = AuthPolicy.from_env(engine.settings.host, config.allowed_hosts)
    groups = [
        batch_api.routes(engine),
        notify_api.routes(engine.bus, sender),
        metrics.routes(engine, sender),
        aws.routes(engine, rules),
    ]
    http = HttpService(engine, groups, auth=auth)
    engine.add_service(http, closer=http.aclose)  # last: intake over HTTP opens when all else is up
    return Server(engine, sender, http)


def build_server(
    settings: Settings,
    catalog: Catalog,
    workflows_dir: Path,
    *,
    config: ServerConfig | None = None,
    watch: bool = True,
) -> Engine:
    """What ``sluice serve DIR`` runs (``config`` defaults to the file named by ``$SLUICE_CONFIG``);
    ``watch``: reload the workflows when their files change."""
    engine = Engine(settings, catalog)
    compose(engine, load_config() if config is None else config, watch=workflows_dir if watch else None)
    return engine
