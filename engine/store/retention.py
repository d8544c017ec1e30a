"""Retention: delete what is past its keep-by date, in small chunks, so the one writer is never held.

A *sweep* is one table's rule, written by the module that owns the table (events:
:func:`engine.store.records.delete_old_events`; finished runs with their steps, attempts and
log folders: :class:`RunSweep`; delivered notifications:
:func:`engine.notify.outbox.delete_delivered`); ``sluice serve`` composes them
(engine/server.py). Each pass runs every sweep a chunk per transaction until it has nothing
left to delete, then gives the freed pages back to the file system a few at a time (stores
made by this version use SQLite's incremental auto-vacuum; an older file keeps its size until
``VACUUM`` is run on it by hand).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from engine.store import records
from engine.store.store import Store

log = logging.getLogger(__name__)

RETENTION_DAYS = 30.0
#: finished runs are kept as long as Step Functions keeps an execution's history
RUN_RETENTION_DAYS = 90.0
COMPACT_EVERY_S = 3600.0
CHUNK = 2_000
#: a run carries its steps and attempts: a chunk of runs is several rows each
RUN_CHUNK = 200
#: free pages handed back per transaction (4 KiB each)
VACUUM_PAGES = 256

#: ``(conn, now, limit) -> rows deleted``: one chunk of one table's retention rule
Sweep = Callable[[sqlite3.Connection, float, int], int]


def retention_days(arg: float | None = None) -> float:
    """The explicit argument wins, then ``SLUICE_RETENTION_DAYS``, then 30 (``0`` = keep forever)."""
    if arg is not None:
        return float(arg)
    return float(os.environ.get("SLUICE_RETENTION_DAYS") or RETENTION_DAYS)


def run_retention_days(arg: float | None = None) -> float:
    """The explicit argument wins, then ``SLUICE_RUN_RETENTION_DAYS``, then 90 (``0`` = forever)."""
    if arg is not None:
        return float(arg)
    return float(os.environ.get("SLUICE_RUN_RETENTION_DAYS") or RUN_RETENTION_DAYS)


def keep_runs(arg: int | None = None) -> int:
    """Finished runs kept per workflow: the argument, then ``SLUICE_KEEP_RUNS``; ``0`` = no cap."""
    if arg is not None:
        return int(arg)
    return int(os.environ.get("SLUICE_KEEP_RUNS") or 0)


class RunSweep:
    """Finished runs past ``days`` or beyond the newest ``keep`` of their workflow, with their
    steps, attempts and (after the commit: never a file operation while the writer is held)
    their log folders. Unfinished runs are never touched."""

    chunk = RUN_CHUNK

    def __init__(
        self, days: float, keep: int, workflows: Callable[[], Iterable[str]], logs_dir: Path | None
    ) -> None:
        self.days, self.keep, self.workflows, self.logs_dir = days, keep, workflows, logs_dir
        self._deleted: list[str] = []

    def __call__(self, conn: sqlite3.Connection, now: float, limit: int) -> int:
        ids: list[str] = []
        if self.days > 0:
            ids += records.delete_old_runs(conn, now - self.days * 86400.0, limit)
        if self.keep > 0:
            for workflow in self.workflows():
                if len(ids) >= limit:
                    break
                ids += records.delete_runs_over(conn, workflow, self.keep, limit - len(ids))
        self._deleted += ids
        return len(ids)

    def remove_logs(self) -> None:
        """Delete the log folders of the runs deleted so far (run ids never hold a separator)."""
        deleted, self._deleted = self._deleted, []
        if self.logs_dir is None:
            return
        for run_id in deleted:
            if run_id and "/" not in run_id and not run_id.startswith("."):
                shutil.rmtree(self.logs_dir / run_id, ignore_errors=True)


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
        limit = sweep.chunk if isinstance(sweep, RunSweep) else CHUNK
        while True:
            deleted = await store.write(functools.partial(_chunk, sweep, now=now, limit=limit), heavy=True)
            total[name] += deleted
            if isinstance(sweep, RunSweep):
                await asyncio.to_thread(sweep.remove_logs)
            if deleted < limit:
                break
    if any(total.values()):
        log.info("retention: deleted %s", ", ".join(f"{n} {name}" for name, n in total.items() if n))
        while await store.write(_vacuum, heavy=True):
            pass
    return total


def _chunk(sweep: Sweep, conn: sqlite3.Connection, *, now: float, limit: int) -> int:
    return sweep(conn, now, limit)


def _vacuum(conn: sqlite3.Connection) -> bool:
    """Give up to ``VACUUM_PAGES`` free pages back; True while more are left (incremental mode)."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        return False
    for _ in range(VACUUM_PAGES):  # one page per statement: Python's sqlite3 steps a pragma once
        conn.execute("PRAGMA incremental_vacuum(1)")
    return bool(conn.execute("PRAGMA freelist_count").fetchone()[0])


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
