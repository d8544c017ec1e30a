"""The store: one SQLite file, one writer, group commit.

Why not a statement per ``await``: a thread hop costs ~60 us here, so a naive
async SQLite layer (a hop per statement) tops out near 1,400 commits/s. Instead
every write is a plain function of a ``sqlite3.Connection``; the store takes
*everything* queued in one turn of the event loop, runs each function inside one
transaction, commits once, and resolves all the futures. Under load a batch holds
hundreds of transactions, so durability costs one ``COMMIT`` per batch.

Where a batch runs depends on its size. A small one (an idle engine's step end,
a single webhook, the 2-16 webhooks of a flood's few loop turns: ``LINGER_TURNS``) is applied
on the event loop itself: a commit costs ~10 us of SQLite work but ~60 us as a round trip to a
thread, and a sequential workflow or a waiting HTTP client waits for every one. A
large one (hundreds of run transitions) goes to the writer thread, whose SQLite work
then overlaps the loop's work on the next ones; while it is there, new writes queue
up and become the next batch. Either way one writer at a time owns
the connection. Checkpoints, the only part of a WAL commit that waits for the
disk (``fsync``, ~3 ms here), run on a connection and thread of their own
(``PASSIVE``: they copy what is committed while the writer goes on committing), so
neither the loop nor a queued write waits for the disk. The WAL can only start over at a
moment when every page is copied and nothing was committed since, which a busy writer never
leaves; past ``WAL_RESTART_PAGES`` the writer thread checkpoints once itself, between batches.

``aiosqlite`` was the first choice and measured in DESIGN.md: it hops threads
per statement (~210 us an ``await``, so ~1,400 commits/s naively, against ~97k rows/s grouped)
and offers no public way to run a whole transaction per hop, so the store keeps its own writer.
Reads are another matter and do go through aiosqlite: a pool of read-only connections
(engine/store/readers.py) that WAL lets run beside the writer and beside each other.
``synchronous=NORMAL`` in WAL mode survives a crash of the process (``kill -9``) at any
instant; only an OS crash or power loss may lose the last commits.

Write functions may run on the loop or on the writer thread: they must only touch
the connection and their arguments, never asyncio objects.

A full disk (``SQLITE_FULL``) is not a failure of the writes that met it: the engine's own
writes (run and job transitions, trigger state) stay queued, in order, and are retried every
``FULL_RETRY_S`` until space returns, so no run fails and no step runs twice because a disk
filled up. Intake writes are queued with ``shed=True`` (a webhook, PutEvents, a submit): while
the disk is full they fail at once with :class:`StoreFull`, which their callers answer with a
503 and ``Retry-After``, so nothing is acknowledged that is not stored and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from engine.store.errors import StoreFull, StoreUnavailable, is_full
from engine.store.migrations import migrate
from engine.store.readers import Readers, StoreClosed

__all__ = ["Store", "StoreClosed", "StoreFull", "StoreUnavailable", "migrate"]

log = logging.getLogger(__name__)

T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], T]
Batch = list[tuple[WriteFn[Any], "asyncio.Future[Any]"]]

#: a batch stops growing here so one huge burst cannot starve the readers of results
MAX_BATCH = 2_000
#: batches up to this many transactions are applied on the event loop when the writer thread is
#: idle (~1 ms at most). Lower, a webhook flood sends many of its batches to the thread and takes
#: in fewer per second, with sequential runs unchanged (bench/RESULTS.md, "Measured reasons").
INLINE_MAX = 16
#: during a flood (``Store.linger``), a small batch waits up to this many loop turns for more writes
#: to join its commit: in a webhook flood that more than doubles the webhooks per commit. A timed
#: wait idles the loop instead and takes in fewer (bench/RESULTS.md, "Measured reasons").
LINGER_TURNS = 4
#: commits (a few WAL pages each) after which the checkpointer copies the WAL into the database
CHECKPOINT_AFTER = 100
#: WAL pages (4 KiB) past which the writer checkpoints itself so the WAL starts over: a stall of
#: a few ms every few hundred runs instead of every ~15. Fewer restarts, fewer slow requests at the
#: price of a larger WAL file (bench/RESULTS.md, "The one-client tail")
WAL_RESTART_PAGES = 16_384
#: how long a due restart waits for a quiet moment (``Store.quiet``) before it stalls what is in flight
RESTART_PATIENCE_S = 0.1
#: while the disk is full, the queued writes are tried again this often (seconds)
FULL_RETRY_S = 0.5


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    # a new file only (no effect once a table exists): retention can then hand free pages back
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA cache_size=-16000")
    conn.row_factory = sqlite3.Row
    return conn


class Store:
    """The durable state of the engine. ``await open()``, then ``write``/``read``, then ``close``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sluice-store-writer")
        self.readers = Readers(self.path)  #: the read side (aiosqlite), opened after the migrations
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="sluice-store-checkpoint")
        self._cconn: sqlite3.Connection | None = None  #: the checkpointer's own connection
        self._wconn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock_fd: int | None = None
        self._queue: Batch = []
        self._flush_at: asyncio.Handle | None = None  #: a flush is scheduled for the next loop turn
        #: a batch (or a checkpoint) is on the writer thread, which owns the connection until it returns
        self._on_thread = False
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._closed = False
        self.commits = 0
        self.transactions = 0
        self.inline_commits = 0
        self.checkpoints = 0  #: by the checkpointer, beside the writer
        self.restarts = 0  #: checkpoints by the writer itself, so the WAL starts over
        self._since_checkpoint = 0  #: commits since the checkpointer last started
        self._checkpointing = False  #: the checkpointer is at work
        self._restart_due = False  #: the WAL passed WAL_RESTART_PAGES: the writer checkpoints soon
        self._restart_due_at = 0.0  #: loop time it did
        #: says that nothing is in flight a restart's stall would hold up (the orchestrator: no run
        #: is driving). With it, a due restart waits for ``quiet_moment`` (or RESTART_PATIENCE_S),
        #: so its fsyncs fall between runs; without it, the restart goes at the next batch.
        self.quiet: Callable[[], bool] | None = None
        self._heavy = False  #: a heavy write is queued (see ``write``)
        #: while this says so (the bus: a flood of events), small batches linger (``LINGER_TURNS``)
        self.linger: Callable[[], bool] | None = None
        self._turns_lingered = 0
        self._shed: set[asyncio.Future[Any]] = set()  #: writes to fail at once while the disk is full
        self.full_since: float | None = None  #: loop time the disk was found full, while it is
        self._full_at: float | None = None  #: loop time it was last found full

    def __repr__(self) -> str:
        return (
            f"<Store {self.path} commits={self.commits} transactions={self.transactions} "
            f"checkpoints={self.checkpoints} restarts={self.restarts}>"
        )

    def claim(self) -> None:
        """Take the store's lock now (``open`` does it too): fail before starting anything else."""
        if self._lock_fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = self._lock()

    async def open(self) -> None:
        self.claim()
        loop = asyncio.get_running_loop()

        def setup() -> sqlite3.Connection:
            conn = _connect(self.path)
            migrate(conn)
            conn.execute("PRAGMA wal_autocheckpoint=0")  # never inside a COMMIT: see _checkpoint_due
            return conn

        try:
            self._wconn = await loop.run_in_executor(self._writer, setup)
            await loop.run_in_executor(self._checkpointer, self._open_checkpointer)
            await self.readers.open()
        except BaseException:
            self._unlock()
            raise
        self._loop = loop

    def _lock(self) -> int:
        """Hold ``<db>.lock`` while open: two engines on one data dir would resume each other's runs.

        ``flock`` dies with the process (``kill -9`` included), so a crash never leaves it stale.
        The descriptor is close-on-exec: workers and containers never hold it.
        """
        path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreUnavailable(
                f"{self.path.parent}: another Sluice engine (pid {holder}) is using this data dir; "
                "stop it first, or give this one its own --data-dir",
                held_by=holder,
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    async def write(self, fn: WriteFn[T], *, heavy: bool = False, shed: bool = False) -> T:
        """Run ``fn(conn)`` in a transaction of its own (a savepoint of a group commit).

        Returns once the transaction is committed. If ``fn`` raises, only its own
        changes are rolled back and the exception is raised here. The write is
        queued at once, so cancelling the caller does not cancel the commit (the
        writer skips resolving a future nobody waits for any more).

        ``heavy``: the write may take milliseconds (thousands of rows), so it always runs on the
        writer thread, never on the event loop.

        ``shed``: intake; while the disk is full, fail with :class:`StoreFull` instead of waiting.
        """
        return await self.write_nowait(fn, heavy=heavy, shed=shed)

    def write_nowait(
        self, fn: WriteFn[Any], *, heavy: bool = False, shed: bool = False
    ) -> asyncio.Future[Any]:
        """Queue a write and return its future without awaiting (fire-and-track).

        Writes are committed in the order they were queued.
        """
        loop = self._loop
        if self._closed or loop is None:
            raise StoreClosed("the store is closed")
        fut: asyncio.Future[Any] = loop.create_future()
        if shed:
            if self._full_at is not None and loop.time() - self._full_at < FULL_RETRY_S:
                fut.set_exception(StoreFull(self.path))  # found full just now: don't even try
                return fut
            self._shed.add(fut)
            fut.add_done_callback(self._shed.discard)
        self._queue.append((fn, fut))
        self._heavy = self._heavy or heavy
        if self._flush_at is None and not self._on_thread:
            # next turn: every write queued in this turn joins the batch
            self._flush_at = loop.call_soon(self._flush)
        return fut

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run the sync ``fn(conn)`` in one read snapshot (engine/store/readers.py, ``Readers.run``).

        For components whose read SQL sits beside their write SQL; the API's queries are async
        functions over ``reader()``/``snapshot()`` instead."""
        return await self.readers.run(fn)

    def reader(self) -> contextlib.AbstractAsyncContextManager[aiosqlite.Connection]:
        """``async with store.reader() as db``: a read-only aiosqlite connection, one snapshot a statement."""
        return self.readers.connection()

    def snapshot(self) -> contextlib.AbstractAsyncContextManager[aiosqlite.Connection]:
        """``async with store.snapshot() as db``: every statement of the block sees one commit."""
        return self.readers.snapshot()

    # -- the writer -------------------------------------------------------------------------

    def _flush(self) -> None:
        """Commit what is queued: here if the batch is small, else on the writer thread."""
        self._flush_at = None
        if self._lingers():
            return
        while self._queue and not self._on_thread:
            if self._checkpoint_due():
                return
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            if len(batch) > INLINE_MAX or self._heavy:
                self._heavy = False
                self._to_thread(self._apply, batch)
                return
            try:
                results = self._apply(batch)
                self.inline_commits += 1
                self._committed()
            except StoreFull:
                self._hold(batch)
                return
            except BaseException as exc:
                self._fail(batch, exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            self._disk_back()
            self._resolve(batch, results)
        if not self._on_thread and not self._checkpoint_due():
            self._maybe_idle()

    def _lingers(self) -> bool:
        """Group commit under load (PostgreSQL's ``commit_delay``, in loop turns, not time).

        In a flood each loop turn brings only the few requests whose sockets were ready; a commit
        of events and their runs costs ~30 us of SQLite work however few it holds (a single-row
        commit ~10 us). Waiting a few turns lets the requests already read reach their write, so
        one commit serves several times as many; the loop never idles for it.
        """
        if (
            self._turns_lingered >= LINGER_TURNS
            or len(self._queue) >= INLINE_MAX
            or self._heavy
            or self.linger is None
            or not self.linger()
        ):
            self._turns_lingered = 0
            return False
        assert self._loop is not None
        self._turns_lingered += 1
        self._flush_at = self._loop.call_soon(self._flush)
        return True

    def _checkpoint_due(self) -> bool:
        """The WAL is past WAL_RESTART_PAGES: the writer checkpoints now, before the next batch.

        With a ``quiet`` hook the restart waits for a quiet moment instead: a batch queued while
        nothing is in flight is how new work begins (a webhook's event and its run), so stalling
        it would only move the stall to the next run's first commit. Past RESTART_PATIENCE_S the
        restart goes anyway, so a never-quiet engine still bounds its WAL.
        """
        if not self._restart_due or self._closed:
            return False
        if self.quiet is not None and not self._restart_overdue():
            return False
        self._restart()
        return True

    def _restart_overdue(self) -> bool:
        assert self._loop is not None
        return self._loop.time() - self._restart_due_at >= RESTART_PATIENCE_S

    def _restart(self) -> None:
        self._restart_due = False
        self.restarts += 1
        self._to_thread(self._checkpoint, [])

    def quiet_moment(self) -> None:
        """Nothing is in flight now (the orchestrator's last run has ended): a due restart goes at
        once, on the writer thread, so its fsyncs overlap the gap before the next work arrives
        instead of a run's commit."""
        if self._restart_due and not self._closed and not self._on_thread and not self._queue:
            self._restart()

    def _restart_waited(self, due_at: float) -> None:
        """RESTART_PATIENCE_S after a restart fell due and no quiet moment came: go now."""
        if not self._restart_due or self._restart_due_at != due_at or self._closed:
            return
        self._restart_due_at = float("-inf")  # overdue: the next batch waits for it
        if not self._on_thread:
            if not self._queue:
                self._restart()
            elif self._flush_at is None:
                self._flush()

    def _committed(self) -> None:
        """Every ``CHECKPOINT_AFTER`` commits, start the checkpointer (never two at once)."""
        self._since_checkpoint += 1
        if self._since_checkpoint < CHECKPOINT_AFTER or self._checkpointing or self._closed:
            return
        if self._restart_due:  # the writer's own checkpoint comes first (beside this one it is busy)
            return
        self._since_checkpoint, self._checkpointing = 0, True
        job = self._checkpointer.submit(self._checkpoint_beside)
        job.add_done_callback(lambda job: self._threadsafe(self._checkpointed, job))

    def _open_checkpointer(self) -> None:
        """The checkpointer's connection, opened with the store (before any write can compete):
        none of ``_connect``'s settings, which would wait for the writer's lock to be set."""
        self._cconn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)

    def _checkpoint_beside(self) -> int:
        """On the checkpointer thread: copy the committed WAL pages; how many the WAL holds."""
        assert self._cconn is not None
        _busy, pages, _copied = self._cconn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(pages)

    def _checkpointed(self, job: Future[int]) -> None:
        self._checkpointing = False
        if self._closed:  # the writer thread is (being) shut down: the next open goes on from here
            return
        exc = job.exception()
        if exc is not None:  # the next one retries; commits go on meanwhile
            log.warning("store checkpoint failed: %s", exc)
            return
        self.checkpoints += 1
        if job.result() < WAL_RESTART_PAGES or self._loop is None:
            return
        self._restart_due, self._restart_due_at = True, self._loop.time()
        if self.quiet is None:
            if not self._on_thread and self._flush_at is None:
                self._flush_at = self._loop.call_soon(self._flush)
            return
        self._loop.call_later(RESTART_PATIENCE_S, self._restart_waited, self._restart_due_at)
        if self.quiet():
            self.quiet_moment()

    def _to_thread(self, fn: Callable[[Batch], list[tuple[bool, Any]]], batch: Batch) -> None:
        """Hand the connection to the writer thread for ``fn(batch)``; ``_applied`` takes it back."""
        self._on_thread = True
        job = self._writer.submit(fn, batch)
        job.add_done_callback(lambda job: self._threadsafe(self._applied, batch, job))

    def _threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
            self._loop.call_soon_threadsafe(fn, *args)

    def _applied(self, batch: Batch, job: Future[list[tuple[bool, Any]]]) -> None:
        """Back from the writer thread: resolve the batch, then commit what queued meanwhile."""
        self._on_thread = False
        exc = job.exception()
        if isinstance(exc, StoreFull):
            self._hold(batch)
            return
        if exc is None:
            if batch:
                self._disk_back()
                self._committed()
            self._resolve(batch, job.result())
        else:
            self._fail(batch, exc)
        self._flush()

    def _hold(self, batch: Batch) -> None:
        """The disk is full: shed intake, keep the engine's own writes in order, retry later."""
        assert self._loop is not None
        self._full_at = self._loop.time()
        if self.full_since is None:
            self.full_since = self._full_at
            log.warning("the disk holding %s is full: intake answers 503, the engine's own writes wait; "
                        "free some space and it goes on by itself", self.path.parent)  # fmt: skip
        kept = []
        for fn, fut in [*batch, *self._queue]:
            if fut in self._shed:
                if not fut.done():
                    fut.set_exception(StoreFull(self.path))
            else:  # a write whose caller stopped waiting still commits (see ``write``)
                kept.append((fn, fut))
        self._queue = kept
        if self._flush_at is not None:
            self._flush_at.cancel()
        self._flush_at = self._loop.call_later(FULL_RETRY_S, self._flush)

    def _disk_back(self) -> None:
        if self.full_since is not None:
            assert self._loop is not None
            full_for = self._loop.time() - self.full_since
            log.warning("disk space is back after %.1fs; intake is open again", full_for)
            self.full_since = self._full_at = None

    def _resolve(self, batch: Batch, results: list[tuple[bool, Any]]) -> None:
        for (_, fut), (ok, value) in zip(batch, results, strict=True):
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    @staticmethod
    def _fail(batch: Batch, exc: BaseException) -> None:
        """The commit itself failed: every caller learns it."""
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))

    def _maybe_idle(self) -> None:
        if not self._queue and not self._on_thread:
            for waiter in self._idle_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._idle_waiters.clear()

    def _checkpoint(self, batch: Batch) -> list[tuple[bool, Any]]:
        """Copy the rest of the WAL into the database file (on the writer thread, between batches).

        With no write in between, the checkpoint finishes and the next transaction starts the WAL
        over. (The checkpointer, beside a writer that keeps committing, copies the pages but never
        finds that moment: alone, the WAL grew by hundreds of MB per thousand sequential runs.)
        """
        assert self._wconn is not None
        try:
            self._wconn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # the next one retries; commits go on meanwhile
            log.warning("store checkpoint failed: %s", exc)
        return []

    def _apply(self, batch: Batch) -> list[tuple[bool, Any]]:
        """One transaction for the batch. Optimistic: no savepoints unless a write fails.

        Writes almost never raise (they check before they insert), so each costs just its own
        statements; when one does, the batch is rolled back and replayed with a savepoint per
        write, so only the failing one is lost. (Write functions must therefore be replayable:
        pure functions of the connection and their arguments.)

        A ``COMMIT`` never checkpoints (``wal_autocheckpoint=0``): its fsync would stall the loop,
        or every write queued behind it; the checkpointer does it beside the writer instead.
        """
        conn = self._wconn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = [(True, fn(conn)) for fn, _ in batch]
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if is_full(exc):
                raise StoreFull(self.path) from None
            return self._apply_isolated(batch)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.commits += 1
        self.transactions += len(batch)
        return results

    def _apply_isolated(self, batch: Batch) -> list[tuple[bool, Any]]:
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
                    if is_full(exc):
                        raise StoreFull(self.path) from None
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                    results.append((False, exc))
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if is_full(exc):
                raise StoreFull(self.path) from None
            raise
        self.commits += 1
        self.transactions += len(batch)
        return results

    async def close(self) -> None:
        """Flush queued writes, then close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        if self._queue or self._on_thread:
            waiter = loop.create_future()
            self._idle_waiters.append(waiter)
            if self._flush_at is None and not self._on_thread:
                self._flush_at = loop.call_soon(self._flush)
            await waiter
        if self._wconn is not None:
            await loop.run_in_executor(self._writer, self._wconn.close)
        self._writer.shutdown(wait=True)
        if self._cconn is not None:
            await loop.run_in_executor(self._checkpointer, self._cconn.close)
            self._cconn = None
        self._checkpointer.shutdown(wait=True)
        await self.readers.close()
        self._wconn = None
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
