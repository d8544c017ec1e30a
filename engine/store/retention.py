"""Retention: delete what is past its keep-by date, in small chunks, so the one writer is never held.

A *sweep* is one table's rule, written by the module that owns the table (events:
:func:`engine.store.records.delete_old_events`; delivered notifications:
:func:`engine.notify.outbox.delete_delivered`); ``sluice serve`` composes them
(engine/server.py). Each pass runs every sweep a chunk per transaction until it has nothing
left to delete.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Mapping

from engine.store import records
from engine.store.store import Store

log = logging.getLogger(__name__)

RETENTION_DAYS = 30.0
COMPACT_EVERY_S = 3600.0
CHUNK = 2_000

#: ``(conn, now, limit) -> rows deleted``: one chunk of one table's retention rule
Sweep = Callable[[sqlite3.Connection, float, int], int]


def retention_days(arg: float | None = None) -> float:
    """The explicit argument wins, then ``SLUICE_RETENTION_DAYS``, then 30 (``0`` = keep forever)."""
    if arg is not None:
        return float(arg)
    return float(os.environ.get("SLUICE_RETENTION_DAYS") or RETENTION_DAYS)


def event_sweep(days: float) -> Sweep:
    """Events received more than ``days`` ago that nothing still needs (``0`` keeps them forever)."""
    if days <= 0:
        return lambda conn, now, limit: 0
    return lambda conn, now, limit: records.delete_old_events(conn, now - days * 86400.0, limit)


async def compact(store: Store, sweeps: Mapping[str, Sweep], *, now: float | None = None) -> dict[str, int]:
    """One pass over the whole store: each sweep, a chunk per transaction, until none is full."""
    now = time.time() if now is None else now
    total = dict.fromkeys(sweeps, 0)
    for name, sweep in sweeps.items():
        while True:
            deleted = await store.write(functools.partial(_chunk, sweep, now=now), heavy=True)
            total[name] += deleted
            if deleted < CHUNK:
                break
    if any(total.values()):
        log.info("retention: deleted %s", ", ".join(f"{n} {name}" for name, n in total.items() if n))
    return total


def _chunk(sweep: Sweep, conn: sqlite3.Connection, *, now: float) -> int:
    return sweep(conn, now, CHUNK)


class RetentionService:
    """An Engine service: one pass at the start of ``run`` and then every ``interval_s``."""

    name = "retention"

    def __init__(
        self, store: Store, sweeps: Mapping[str, Sweep], interval_s: float = COMPACT_EVERY_S
    ) -> None:
        self.store, self.sweeps, self.interval_s = store, dict(sweeps), interval_s

    async def start(self) -> None:
        return None

    async def run(self) -> None:
        while True:
            try:
                await compact(self.store, self.sweeps)
            except Exception:  # one failed pass is logged; the next one tries again
                log.exception("retention pass failed; retrying in %.0fs", self.interval_s)
            await asyncio.sleep(self.interval_s)
