"""``GET /metrics`` in the Prometheus text format, and ``GET /readyz``.

What happened since the engine started (runs started and ended, events accepted, step
durations, commit latency) comes from in-memory counters (engine/telemetry.py), never from
counting the history: a scrape's cost must not grow with the store (a ``GROUP BY`` over the runs
table took ~200 ms at a million runs). What is true now comes from the components' own state
(pool, environments, backlog) and from two small reads whose size is bounded by open work, not
history: unfinished batch jobs (an index walk) and the dead-letter queue. Nothing global: two
engines in one process, as tests have, do not mix.

Names follow Prometheus' conventions: ``sluice_`` prefix, ``_total`` for counters, base units.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol, cast

import aiosqlite
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from engine.engine import Engine

#: job states that still hold a place in a queue or an environment
OPEN_JOB_STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
#: how long the store's writer may take to answer /readyz's probe before it counts as stalled
WRITER_PROBE_S = 2.0


class Backlogs(Protocol):
    """What /metrics needs of the notification sender (engine/notify/sender.py)."""

    delivered: int
    dead: int

    def backlog(self) -> dict[str, int]: ...


async def _snapshot(db: aiosqlite.Connection) -> dict[str, Any]:
    marks = ",".join("?" * len(OPEN_JOB_STATES))
    jobs = await db.execute_fetchall(
        f"SELECT queue, status, COUNT(*) FROM jobs WHERE status IN ({marks}) GROUP BY queue, status",
        OPEN_JOB_STATES,
    )
    dead = await db.execute_fetchall("SELECT subscriber, COUNT(*) FROM dead_letters GROUP BY subscriber")
    return {"jobs": jobs, "dead": dead}


class _Snapshot(Collector):
    def __init__(self, engine: Engine, rows: dict[str, Any], sender: Backlogs | None) -> None:
        self.engine, self.rows, self.sender = engine, rows, sender

    def collect(self) -> Any:
        engine, rows = self.engine, self.rows
        yield GaugeMetricFamily(
            "sluice_runs_active", "Runs being driven now", value=engine.orchestrator.active
        )
        yield GaugeMetricFamily(
            "sluice_runs_held", "Runs committed and waiting for admission", value=engine.orchestrator.held
        )
        yield from self._pool()
        paused = GaugeMetricFamily(
            "sluice_trigger_paused",
            "1 for a trigger an operator paused, 0 for one that emits (engine/pauses.py)",
            labels=["workflow", "trigger"],
        )
        for wf in sorted(engine.catalog.values(), key=lambda w: w.name):
            for trigger in wf.triggers:
                paused.add_metric(
                    [wf.name, trigger.name], int(engine.pauses.is_paused(wf.name, trigger.name))
                )
        yield paused
        depth = GaugeMetricFamily(
            "sluice_queue_jobs", "Unfinished batch jobs by queue and state", labels=["queue", "state"]
        )
        for queue, status, n in rows["jobs"]:
            depth.add_metric([queue, status], n)
        yield depth
        yield from self._environments()
        yield from self._notifications()
        yield CounterMetricFamily(
            "sluice_store_commits", "Store commits since start", value=engine.store.commits
        )

    def _pool(self) -> Any:
        pool: Callable[[], dict[str, int]] | None = getattr(self.engine.functions, "pool", None)
        if pool is None:
            return
        numbers = pool()
        for key, text in (
            ("size", "Warm function workers the pool keeps"),
            ("max", "The most function workers the pool grows to"),
            ("workers", "Function worker processes now"),
            ("busy", "Function workers running a call now"),
            ("waiting", "Function calls waiting for a worker"),
        ):
            yield GaugeMetricFamily(f"sluice_function_pool_{key}", text, value=numbers[key])

    def _environments(self) -> Any:
        batch = self.engine.batch
        if batch is None:
            return
        names = ["environment"]
        vcpus = GaugeMetricFamily(
            "sluice_environment_vcpus_used", "vCPUs in use per compute environment", labels=names
        )
        vmax = GaugeMetricFamily(
            "sluice_environment_vcpus_max", "vCPU capacity per compute environment", labels=names
        )
        mem = GaugeMetricFamily(
            "sluice_environment_memory_used_bytes", "Memory in use per compute environment", labels=names
        )
        for env in batch.envs.values():
            vcpus.add_metric([env.name], env.used_vcpus)
            vmax.add_metric([env.name], env.max_vcpus)
            mem.add_metric([env.name], env.used_memory)
        yield from (vcpus, vmax, mem)

    def _notifications(self) -> Any:
        dead = GaugeMetricFamily(
            "sluice_dead_letters", "Dead-lettered notifications by subscriber", labels=["subscriber"]
        )
        for sub, n in self.rows["dead"]:
            dead.add_metric([sub], n)
        yield dead
        if self.sender is None:
            return
        backlog = GaugeMetricFamily(
            "sluice_notify_backlog", "Notifications owed per subscriber (the outbox)", labels=["subscriber"]
        )
        for sub, n in sorted(self.sender.backlog().items()):
            backlog.add_metric([sub], n)
        yield backlog
        yield CounterMetricFamily(
            "sluice_notifications_delivered",
            "Notifications delivered since start",
            value=self.sender.delivered,
        )


async def scrape(engine: Engine, sender: Backlogs | None) -> bytes:
    async with engine.store.reader() as db:
        rows = await _snapshot(db)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(engine, rows, sender))
    # two registries, one text: the families of each are distinct
    return generate_latest(engine.bus.telemetry.registry) + generate_latest(registry)


def routes(engine: Engine, sender: Backlogs | None = None) -> Callable[[web.Application], None]:
    """``/metrics`` for ``engine`` (with the notification backlog when ``sender`` is given)."""

    async def metrics(request: web.Request) -> web.Response:
        body = await scrape(engine, sender)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def add(app: web.Application) -> None:
        app.router.add_get("/metrics", metrics)

    return add


async def _probe_read(engine: Engine) -> None:
    async with engine.store.reader() as db:
        await db.execute_fetchall("SELECT 1")


async def readiness(engine: Engine) -> tuple[bool, dict[str, Any]]:
    """Ready when the store answers reads and its writer commits within ``WRITER_PROBE_S``,
    no trigger has failed, and the disk is not full."""
    checks: dict[str, Any] = {}
    try:
        await asyncio.wait_for(_probe_read(engine), WRITER_PROBE_S)
        checks["store"] = "ok"
    except Exception as exc:  # closed, or the reader pool is stuck
        checks["store"] = f"{type(exc).__name__}: {exc}"
    try:
        await asyncio.wait_for(engine.store.write(lambda c: None), WRITER_PROBE_S)
        checks["writer"] = "ok"
    except TimeoutError:
        checks["writer"] = f"stalled: no commit within {WRITER_PROBE_S:.0f}s"
    except Exception as exc:
        checks["writer"] = f"{type(exc).__name__}: {exc}"
    if getattr(engine.store, "full_since", None) is not None:
        checks["disk"] = "full: intake answers 503 until space returns"
    failed: dict[str, str] = {}
    # the trigger services of engine/server.py say why they failed (owned by the reloader, if any)
    for service in [*engine.services, *(c for s in engine.services for c in getattr(s, "children", ()))]:
        why = getattr(cast(Any, service), "failed", None)
        if isinstance(why, str):
            failed[service.name] = why
    checks["triggers"] = failed or "ok"
    return all(v == "ok" for v in checks.values()), checks
