"""A run's state changes on their way to the store, and their events (``sluice.run``, ``sluice.step``).

:class:`RunChanges` is the one path of a run's writes: each batch of writes commits in one
transaction with the events that tell of it, so pattern rules, destinations and the
notification outbox see a change atomically, and nothing acts on a change before it is durable. Fields are
documented in docs/events.md; values above 64 KiB of JSON stay in the store and the event
points to them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from engine.bus.bus import Bus
from engine.events import RUN_DETAIL_TYPE, RUN_SOURCE, STEP_DETAIL_TYPE, STEP_SOURCE, envelope, iso_ms
from engine.runs.admission import Admission
from engine.states import TERMINAL
from engine.store.records import RunRecord, dumps
from engine.store.store import Store

Write = Callable[[sqlite3.Connection], Any]

#: outputs larger than this (bytes of JSON) are left out of events (docs/events.md)
MAX_EVENT_VALUE = 64 * 1024


class RunChanges:
    """One run's commit stream, in order; counts the engine-side work it puts in flight (admission)."""

    def __init__(self, store: Store, bus: Bus, admission: Admission, depth: int) -> None:
        self.store, self.bus, self.admission, self.depth = store, bus, admission, depth
        self._pending: tuple[list[Write], list[dict[str, Any]]] | None = None
        #: counted in ``Admission.in_engine`` since the run was started, until its first commit
        self.starting = False

    def defer(self, writes: list[Write], events: list[dict[str, Any]]) -> None:
        """Have the run's next commit carry these too (its RUNNING, or its last step's end)."""
        if self._pending is None:
            self._pending = (list(writes), list(events))
        else:
            self._pending[0].extend(writes)
            self._pending[1].extend(events)

    def parked(self) -> None:
        """The run waits (for a function worker) before its first commit: it stops counting as
        engine work now, as a run waiting after a commit does; what is deferred rides on its next
        commit, when the wait is over or recorded (runs/starts.py)."""
        if self.starting:
            self.starting = False
            self.admission.work_done()

    def enqueue(self, writes: list[Write], events: list[dict[str, Any]]) -> asyncio.Future[None]:
        """Queue the transaction now (the writer keeps queue order); the future ends when durable.

        Queued synchronously, so a later write of this run is ordered after it without waiting for
        it: an attempt's end can follow its start into the writer while the start still commits.
        """
        bus, depth, admission = self.bus, self.depth, self.admission
        if self._pending is not None:
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

        queued_at = time.monotonic()
        written = self.store.write_nowait(tx)  # raises StoreClosed before anything is counted
        if self.starting:  # the unit counted at start carries over to this commit
            self.starting = False
        else:
            admission.work_started()
        durable: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def settle(written: asyncio.Future[list[RunRecord]]) -> None:
            admission.work_done()
            if written.cancelled():
                durable.cancel()
                return
            exc = written.exception()
            if exc is None:  # committed: the runs its events started go on even if nobody waits
                bus.telemetry.committed(events, queued_at)
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
    run: RunRecord, status: str, previous: str, *, attempts: int, reason: str | None = None, **extra: Any
) -> dict[str, Any]:
    now = time.time()
    detail = {
        "run_id": run.id,
        "workflow": run.workflow,
        "status": str(status),  # plain str: patterns compare JSON types exactly
        "previous_status": str(previous),
        "statusReason": reason,
        "trigger": run.trigger,
        "event_id": run.event.get("id"),
        "created_at": iso_ms(run.created_at),
        "started_at": iso_ms(run.started_at),
        "depth": run.depth,
        "outputs": None,  #: every run event has it (null until the run ends with outputs)
        **extra,
    }
    if status in TERMINAL:
        detail["ended_at"] = iso_ms(now)
        detail["duration_s"] = round(now - (run.started_at or now), 6)
        detail["params"] = run.params
        detail["event"] = run.event  # the invocation's event: a destination's requestPayload
        detail["attempts"] = attempts
    _bound(detail, "outputs", run.id)
    _bound(detail, "event", run.id)
    return envelope(RUN_SOURCE, RUN_DETAIL_TYPE, detail, resources=[f"run/{run.id}"], at=now)


def step_event(run: RunRecord, step: str, status: str, previous: str, **extra: Any) -> dict[str, Any]:
    detail = {
        "run_id": run.id,
        "workflow": run.workflow,
        "step": step,
        "status": str(status),
        "previous_status": str(previous),
        **extra,
    }
    _bound(detail, "output", run.id)
    return envelope(STEP_SOURCE, STEP_DETAIL_TYPE, detail, resources=[f"run/{run.id}/{step}"])


def _bound(detail: dict[str, Any], key: str, run_id: str) -> None:
    if key not in detail:
        return
    size = len(dumps(detail[key]).encode())
    if size > MAX_EVENT_VALUE:
        detail[key] = None
        detail[f"{key}_truncated"] = {"size_bytes": size, "url": f"/api/v1/runs/{run_id}"}
