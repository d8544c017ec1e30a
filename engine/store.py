"""The store: one SQLite file, one writer, group commit.

Why not a statement per ``await``: a thread hop costs ~0.2 ms here, so a naive
async SQLite layer tops out near 1,400 commits/s. Instead every write is a plain
function of a ``sqlite3.Connection`` queued to the one writer thread; the writer
takes *everything* queued, runs each function in its own savepoint inside one
transaction, commits once, and resolves all the futures. Under load a batch
holds hundreds of transactions, so durability costs one ``COMMIT`` per batch.

``aiosqlite`` was the first choice and measured in DESIGN.md: it hops threads
per statement and offers no public way to run a whole transaction per hop, so the
store keeps its own single writer thread (and one reader thread, which WAL lets
run beside the writer). ``synchronous=NORMAL`` in WAL mode survives a crash of
the process (``kill -9``) at any instant; only an OS crash or power loss may lose
the last commits.

Write functions run on the writer thread: they must only touch the connection
and their arguments, never asyncio objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .schema import MIGRATIONS

log = logging.getLogger(__name__)

T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], T]

#: a batch stops growing here so one huge burst cannot starve the readers of results
MAX_BATCH = 2_000


class StoreClosed(RuntimeError):
    pass


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA cache_size=-16000")
    conn.row_factory = sqlite3.Row
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to the latest version; each migration is one transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"the store's schema is version {version}, newer than this Sluice knows ({len(MIGRATIONS)}); "
            "upgrade Sluice or point --data-dir at another folder"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("store schema migrated to version %d", number)
    return len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    parts, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            parts.append(buf.strip())
            buf = ""
    if buf.strip():
        parts.append(buf.strip())
    return parts


class Store:
    """The durable state of the engine. ``await open()``, then ``write``/``read``, then ``close``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sluice-store-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sluice-store-reader")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._queue: list[tuple[WriteFn[Any], asyncio.Future[Any]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0
        self.transactions = 0

    def __repr__(self) -> str:
        return f"<Store {self.path} commits={self.commits} transactions={self.transactions}>"

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()

        def setup() -> sqlite3.Connection:
            conn = _connect(self.path)
            migrate(conn)
            return conn

        self._wconn = await loop.run_in_executor(self._writer, setup)
        self._rconn = await loop.run_in_executor(self._reader, _connect, self.path)
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._write_loop(), name="sluice-store-writer")

    async def write(self, fn: WriteFn[T]) -> T:
        """Run ``fn(conn)`` in a transaction of its own (a savepoint of a group commit).

        Returns once the transaction is committed. If ``fn`` raises, only its own
        changes are rolled back and the exception is raised here. The write is
        queued at once, so cancelling the caller does not cancel the commit (the
        writer skips resolving a future nobody waits for any more).
        """
        if self._closed or self._wake is None:
            raise StoreClosed("the store is closed")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((fn, fut))
        self._wake.set()
        return await fut

    def write_nowait(self, fn: WriteFn[Any]) -> asyncio.Future[Any]:
        """Queue a write and return its future without awaiting (fire-and-track)."""
        if self._closed or self._wake is None:
            raise StoreClosed("the store is closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((fn, fut))
        self._wake.set()
        return fut

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the reader connection (a consistent WAL snapshot per call)."""
        if self._rconn is None:
            raise StoreClosed("the store is not open")
        conn = self._rconn

        def run() -> T:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        return await asyncio.get_running_loop().run_in_executor(self._reader, run)

    async def _write_loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)  # let this loop turn's other writers join the batch
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    results = await loop.run_in_executor(self._writer, self._apply, batch)
                except BaseException as exc:  # the commit itself failed: every caller learns it
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, fut), (ok, value) in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)
            if self._closed:
                return

    def _apply(self, batch: list[tuple[WriteFn[Any], asyncio.Future[Any]]]) -> list[tuple[bool, Any]]:
        """One transaction for the batch. Optimistic: no savepoints unless a write fails.

        Writes almost never raise (they check before they insert), so each costs just its own
        statements; when one does, the batch is rolled back and replayed with a savepoint per
        write, so only the failing one is lost. (Write functions must therefore be replayable:
        pure functions of the connection and their arguments.)
        """
        conn = self._wconn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = [(True, fn(conn)) for fn, _ in batch]
            conn.execute("COMMIT")
        except Exception:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return self._apply_isolated(batch)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.commits += 1
        self.transactions += len(batch)
        return results

    def _apply_isolated(
        self, batch: list[tuple[WriteFn[Any], asyncio.Future[Any]]]
    ) -> list[tuple[bool, Any]]:
        conn = self._wconn
        assert conn is not None
        results: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for fn, _ in batch:
                conn.execute("SAVEPOINT w")
                try:
                    results.append((True, fn(conn)))
                    conn.execute("RELEASE w")
                except Exception as exc:
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                    results.append((False, exc))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.commits += 1
        self.transactions += len(batch)
        return results

    async def close(self) -> None:
        """Flush queued writes, then close both connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None and self._wake is not None:
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        loop = asyncio.get_running_loop()
        for pool, conn in ((self._writer, self._wconn), (self._reader, self._rconn)):
            if conn is not None:
                await loop.run_in_executor(pool, conn.close)
            pool.shutdown(wait=True)
        self._wconn = self._rconn = None
