"""``sluice serve``: the Engine plus its intake — triggers and the HTTP API.

Each workflow trigger becomes a :class:`TriggerService` whose events go through
the bus to that workflow. Event-pattern triggers need no service: they are bus
rules.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.engine import Engine, Settings
from engine.store.kv import StoreKV, record_audit
from triggers.base import Emit, Trigger

log = logging.getLogger(__name__)


class TriggerService:
    """Adapts a trigger (``start``/``run(emit)``) to an Engine service."""

    def __init__(self, trigger: Trigger, emit: Emit, name: str) -> None:
        self.trigger = trigger
        self.emit = emit
        self.name = name

    async def start(self) -> None:
        await self.trigger.start()

    async def run(self) -> None:
        await self.trigger.run(self.emit)


def trigger_services(engine: Engine) -> list[TriggerService]:
    """One service per file and schedule trigger of every loaded workflow."""
    kv = StoreKV(engine.store)

    async def audit(kind: str, workflow: str, trigger: str, scheduled: datetime, reason: str) -> None:
        detail = {"workflow": workflow, "trigger": trigger, "reason": reason}
        detail["scheduled_time"] = scheduled.isoformat()
        await record_audit(engine.store, f"schedule-{kind}", f"{workflow}/{trigger}", detail)

    services: list[TriggerService] = []
    for wf in engine.catalog.values():
        for spec in wf.triggers:
            kind = type(spec).__name__
            runner: Any
            if kind == "FileTrigger":  # imported only when used: watchdog's observer is not free
                from triggers.files import FileTriggerRunner

                runner = FileTriggerRunner.from_spec(wf.name, spec, kv=kv)
            elif kind == "ScheduleTrigger":
                from triggers.schedule import ScheduleTriggerRunner

                runner = ScheduleTriggerRunner.from_spec(wf.name, spec, kv=kv, audit=audit)
            else:
                continue
            emit = engine.bus.emitter(wf.name, spec.name)
            services.append(TriggerService(runner, emit, f"trigger {wf.name}/{spec.name}"))
    return services


def build_server(settings: Settings, catalog: Any, workflows_dir: Path) -> Engine:
    engine = Engine(settings, catalog)
    engine.services.extend(trigger_services(engine))
    from engine.notify.sender import install_from_config

    install_from_config(engine)  # notifications, retention; global config from $SLUICE_CONFIG
    from engine.api.batch import add_routes as add_batch_routes

    engine.api_extensions.append(lambda app: add_batch_routes(app, engine))  # batch jobs (503 without Docker)
    from engine.api.app import HttpService

    engine.services.append(HttpService(engine))  # after the triggers: intake over HTTP opens last
    return engine
