"""The ledger: commit job transitions with their ``aws.batch`` events, and wait for jobs to end.

Every change the book makes in memory reaches the store through here, in one transaction with
its events (so pattern rules and subscribers see it atomically), before the service acts on it.
"""

from __future__ import annotations

import asyncio
import copy
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any

from engine.batch import rows
from engine.batch.book import Book, Change
from engine.batch.detail import job_event
from engine.batch.jobs import DONE, Job
from engine.bus.bus import Bus
from engine.store.records import RunRecord
from engine.store.store import Store
from engine.types import WriteFn

#: how many recently ended jobs wait() remembers
ENDED_KEPT = 20_000

Extra = Callable[[sqlite3.Connection], None]


class Ledger:
    def __init__(self, store: Store, bus: Bus, book: Book) -> None:
        self.store, self.bus, self.book = store, bus, book
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}
        self._ended: dict[str, str] = {}  #: recently ended jobs (committed), for wait() races
        self._children: dict[str, Callable[[Job], None]] = {}  #: array parent -> told of each child's end

    def tx(self, changes: Iterable[Change], extra: Extra | None = None) -> WriteFn[list[RunRecord]]:
        """A write function committing ``changes`` and their events (snapshotted now)."""
        now = time.time()
        # a change to an array child whose row is not written yet lands with its chunk instead
        unwritten = self.book.unwritten
        snaps = [(copy.copy(job), old) for job, old in changes if job.id not in unwritten]
        bus = self.bus

        def tx(conn: sqlite3.Connection) -> list[RunRecord]:
            if extra is not None:
                extra(conn)
            for snap, old in snaps:
                rows.save_job(conn, snap, old, now)
            # built after the writes, so a job's event shows the attempt this commit ends
            events = [
                job_event(s, now, *rows.aws_context(conn, s.id, s.attempts, s.is_parent)) for s, _ in snaps
            ]
            started: list[RunRecord] = []
            for env in events:
                started.extend(bus.publish(conn, env, 0))
            return started

        return tx

    def commit_nowait(self, changes: Iterable[Change], extra: Extra | None = None) -> asyncio.Future[Any]:
        """Queue the commit now (the writer keeps queue order); deliver its runs when it lands."""
        return self.store.write_nowait(self.tx(changes, extra))

    async def commit(self, changes: Iterable[Change], extra: Extra | None = None) -> None:
        """Commit ``changes``; then wake whoever waits on a job that ended in them."""
        changes = list(changes)
        ended = [(job.id, job.status) for job, _ in changes if job.status in DONE]
        children = [j for j, _ in changes if j.status in DONE and j.parent_id in self._children]
        self.bus.deliver(await self.store.write(self.tx(changes, extra)))
        for child in children:
            told = self._children.get(child.parent_id or "")
            if told is not None:
                told(child)
        for job_id, status in ended:
            self._ended[job_id] = status
            self._resolve(job_id, status)
        while len(self._ended) > ENDED_KEPT:
            self._ended.pop(next(iter(self._ended)))

    def watch_children(self, parent_id: str, told: Callable[[Job], None]) -> Callable[[], None]:
        """Call ``told(child)`` once each child of this array has ended and been committed (a
        container ``for_each`` counts them for the run's progress); returns the way to stop."""
        self._children[parent_id] = told
        return lambda: self._children.pop(parent_id, None) and None

    def _resolve(self, job_id: str, status: str) -> None:
        for fut in self._waiters.pop(job_id, []):
            if not fut.done():
                fut.set_result(status)

    async def wait(self, job_id: str, timeout_s: float | None = None) -> str:
        """Wait for a job to end; its final status (KeyError for no such job)."""
        if job_id not in self.book.jobs:
            status = await self.store.read(lambda c: rows.status_of(c, job_id))
            if status is None:
                raise KeyError(job_id)
            if status in DONE:
                return status
            if job_id in self._ended:  # ended while we read: its commit has landed since
                return self._ended[job_id]
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(fut)
        async with asyncio.timeout(timeout_s):
            return await fut
