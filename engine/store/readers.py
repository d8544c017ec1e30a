"""The store's read side: a pool of read-only aiosqlite connections beside the writer.

Reads are the opposite of writes in what they need. A write is one small transaction among
hundreds per second, so the writer batches whole transactions per thread hop (store.py says why
that rules aiosqlite out there). A read is one API or dashboard question, a statement or three,
asked a few times a second: a hop per statement (~60-200 us) is nothing beside an HTTP answer, and
aiosqlite gives each query an ``await`` of its own, so the API's queries are plain async functions
(engine/store/queries.py) rather than sync functions shipped to a thread.

``READERS`` connections, each with its own thread (aiosqlite's), all opened ``mode=ro``: WAL lets
them read beside the writer and beside each other, so a client's long history scan holds one
connection while a webhook's one-row read takes another instead of queueing behind it. A read
waits only when all of them are busy.

Engine components whose read SQL lives beside their write SQL (batch rows, the outbox) still hand
a sync function to :meth:`Readers.run`; it borrows a connection from the same pool, so the bound
on concurrent readers and the read-only guarantee hold for them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import aiosqlite

T = TypeVar("T")

#: read connections: a long read holds one, the others serve the short reads meanwhile
READERS = 4


class StoreClosed(RuntimeError):
    """The store is closed (or not open yet): nothing was read or written."""


def _connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection (``mode=ro``): a query here can never change the store."""
    conn = sqlite3.connect(
        path.resolve().as_uri() + "?mode=ro",
        uri=True,
        isolation_level=None,
        check_same_thread=False,  # Readers.run lends it to a sync function on another thread
        timeout=30.0,
    )
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA cache_size=-16000")
    conn.row_factory = sqlite3.Row
    return conn


class Readers:
    """``READERS`` aiosqlite connections to the store's file; ``open`` after the writer's migrations."""

    def __init__(self, path: Path, size: int = READERS) -> None:
        self.path = path
        self.size = size
        self._all: list[tuple[aiosqlite.Connection, sqlite3.Connection]] = []
        self._idle: asyncio.Queue[tuple[aiosqlite.Connection, sqlite3.Connection]] = asyncio.Queue()
        self._open = False

    async def open(self) -> None:
        for _ in range(self.size):
            raw: list[sqlite3.Connection] = []

            def connector(raw: list[sqlite3.Connection] = raw) -> sqlite3.Connection:
                raw.append(_connect_ro(self.path))
                return raw[0]

            db = await aiosqlite.Connection(connector, iter_chunk_size=256)
            self._all.append((db, raw[0]))
            self._idle.put_nowait((db, raw[0]))
        self._open = True

    @contextlib.asynccontextmanager
    async def _borrow(self) -> AsyncIterator[tuple[aiosqlite.Connection, sqlite3.Connection]]:
        if not self._open:
            raise StoreClosed("the store is not open")
        pair = await self._idle.get()
        try:
            yield pair
        finally:
            self._idle.put_nowait(pair)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[aiosqlite.Connection]:
        """A connection to itself while the block runs; each statement reads its own snapshot."""
        async with self._borrow() as (db, _):
            yield db

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[aiosqlite.Connection]:
        """A connection inside one read transaction: every statement sees the same commit."""
        async with self._borrow() as (db, _):
            # statements run on the connection's thread in the order they were queued, and a
            # cancelled await does not take one back: so COMMIT is queued whatever happened (BEGIN
            # itself cancelled included), and runs before the next borrower's first statement
            try:
                await db.execute("BEGIN")
                yield db
            finally:
                with contextlib.suppress(sqlite3.OperationalError):  # BEGIN failed: nothing to end
                    await asyncio.shield(db.execute("COMMIT"))

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(conn)`` in one read transaction, on a borrowed connection (one thread hop)."""

        def call(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        if not self._open:
            raise StoreClosed("the store is not open")
        pair = await self._idle.get()
        job = asyncio.get_running_loop().run_in_executor(None, call, pair[1])
        # the connection comes back when the thread is done with it, even if the caller is cancelled
        job.add_done_callback(lambda _: self._idle.put_nowait(pair))
        return await asyncio.shield(job)

    async def close(self) -> None:
        """Wait for every connection to come back, then close them all."""
        if not self._open:
            return
        self._open = False
        for _ in self._all:  # a read still running keeps its connection until it ends
            await self._idle.get()
        for db, _ in self._all:
            await db.close()
        self._all.clear()
