"""Closing a trigger's batches into runs (``batch: {max, window}``, as SQS batches reach a Lambda).

The bus parks each event of a batching trigger in ``batch_items`` inside the event's own
transaction (engine/bus/batch_rows.py). This service closes a batch once it holds ``max``
events or its first event has waited ``window``: one transaction takes the rows, commits a
``sluice.batch`` / ``Event Batch`` event that lists the batch's events in order, creates the
run for it and deletes the rows. The run is handed to the orchestrator only after that commit.

It looks when a commit with events wakes it (``Bus.on_commit``) and when the oldest window is
due; the look is one grouped query on a table that holds only what waits. After a restart,
``start`` looks at once: windows that ran out while the engine was down close first.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import Any

from engine.bus import batch_rows
from engine.bus.bus import Bus
from engine.events import BATCH_DETAIL_TYPE, BATCH_SOURCE, complete, envelope
from engine.store.records import RunRecord
from engine.store.store import Store

log = logging.getLogger(__name__)

#: after a wake, wait this long for more of a burst to commit before looking (seconds)
SETTLE_S = 0.005
#: batches of more events than this are closed on the store's writer thread
HEAVY_BATCH = 100


class BatchWindows:
    """An Engine service: closes due batches into runs."""

    name = "batch-windows"

    def __init__(self, store: Store, bus: Bus) -> None:
        self.store, self.bus = store, bus
        self._wake = asyncio.Event()
        self.closed = 0  #: batches closed by this engine
        bus.on_commit(self._wake.set)

    def __repr__(self) -> str:
        return f"<BatchWindows triggers={len(self.bus.batched)} closed={self.closed}>"

    async def start(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            next_due = await self.close_due()
            timeout = None if next_due is None else max(0.0, next_due - time.time())
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
                await asyncio.sleep(SETTLE_S)
            except TimeoutError:
                pass
            self._wake.clear()

    async def close_due(self) -> float | None:
        """Close every batch that is due; answers when the next window runs out (epoch seconds)."""
        while True:
            waiting = await self.store.read(batch_rows.waiting)
            now, next_due, due = time.time(), None, []
            for w in waiting:
                spec = self.bus.batched.get((w.workflow, w.trigger))
                if spec is None:  # the trigger no longer batches: what waited goes as one batch
                    if w.workflow in self.bus.catalog:  # a workflow not loaded keeps its events
                        due.append((w.workflow, w.trigger, max(w.count, 1), 0.0))
                elif w.count >= spec.max_events or now - w.oldest >= spec.window_s:
                    due.append((w.workflow, w.trigger, spec.max_events, spec.window_s))
                else:
                    at = w.oldest + spec.window_s
                    next_due = at if next_due is None else min(next_due, at)
            if not due:
                return next_due
            for workflow, trigger, limit, window_s in due:
                await self._close(workflow, trigger, limit, window_s)

    async def _close(self, workflow: str, trigger: str, limit: int, window_s: float) -> None:
        def close(conn: sqlite3.Connection) -> list[RunRecord]:
            events, depth = batch_rows.take(conn, workflow, trigger, limit, window_s, time.time())
            if not events:
                return []
            detail: dict[str, Any] = {
                "workflow": workflow,
                "trigger": trigger,
                "count": len(events),
                "events": events,
            }
            env = complete(
                envelope(BATCH_SOURCE, BATCH_DETAIL_TYPE, detail, resources=[f"workflow/{workflow}"])
            )
            self.bus.insert_event(conn, env)
            run = self.bus.start_in_tx(conn, env, workflow, trigger, None, None, depth, batched=True)
            return [] if run is None else [run]

        # shielded: a stop mid-write still commits, and recovery then drives the batch's run
        # a big batch is read, built and written on the writer thread, off the loop
        runs = await asyncio.shield(self.store.write(close, heavy=limit > HEAVY_BATCH))
        if runs:
            self.closed += 1
            log.info("batch of %s/%s closed into run %s", workflow, trigger, runs[0].id)
            self.bus.deliver(runs)
