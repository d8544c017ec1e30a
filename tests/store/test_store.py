"""The store: migrations, group commit, per-write isolation, durability across reopen."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.ids import event_id, ordered_id
from engine.states import IllegalTransition, check
from engine.store import queries
from engine.store import store as store_module
from engine.store.readers import READERS
from engine.store.schema import MIGRATIONS
from engine.store.store import LINGER_TURNS, Store, StoreClosed, StoreUnavailable
from tests.support.waiting import wait_until as until


@pytest.fixture
async def store(tmp_path: Path):
    s = Store(tmp_path / "sluice.db")
    await s.open()
    yield s
    await s.close()


async def test_schema_is_versioned_and_wal(store: Store) -> None:
    version, mode = await store.read(
        lambda c: (
            c.execute("PRAGMA user_version").fetchone()[0],
            c.execute("PRAGMA journal_mode").fetchone()[0],
        )
    )
    assert version == len(MIGRATIONS)
    assert mode == "wal"


async def test_concurrent_writes_share_commits(store: Store) -> None:
    def put(i: int):
        return lambda c: c.execute(
            "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, 0)", (f"k{i}", str(i))
        )

    await asyncio.gather(*(store.write(put(i)) for i in range(500)))
    count = await store.read(lambda c: c.execute("SELECT count(*) FROM kv").fetchone()[0])
    assert count == 500
    assert store.transactions == 500
    assert store.commits < 100, "500 concurrent writes must be group-committed, not one commit each"


async def test_a_failing_write_rolls_back_only_itself(store: Store) -> None:
    def good(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO kv (key, value, updated_at) VALUES ('a', '1', 0)")

    def bad(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO kv (key, value, updated_at) VALUES ('b', '1', 0)")
        raise ValueError("boom")

    results = await asyncio.gather(store.write(good), store.write(bad), return_exceptions=True)
    assert results[0] is None and isinstance(results[1], ValueError)
    keys = await store.read(lambda c: [r[0] for r in c.execute("SELECT key FROM kv")])
    assert keys == ["a"]


async def test_data_survives_reopen(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.sqlite")
    await s.open()
    await s.write(lambda c: c.execute("INSERT INTO kv (key, value, updated_at) VALUES ('x', '42', 0)"))
    await s.close()
    s2 = Store(tmp_path / "db.sqlite")
    await s2.open()
    try:
        assert await s2.read(lambda c: c.execute("SELECT value FROM kv").fetchone()[0]) == "42"
    finally:
        await s2.close()


async def test_newer_schema_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    conn.close()
    s = Store(path)
    with pytest.raises(RuntimeError, match="newer than this Sluice knows"):
        await s.open()
    await s.close()


async def test_one_store_file_has_one_owner_at_a_time(tmp_path: Path) -> None:
    first = Store(tmp_path / "db.sqlite")
    await first.open()
    second = Store(tmp_path / "db.sqlite")
    with pytest.raises(StoreUnavailable, match=rf"another Sluice engine \(pid {os.getpid()}\).*--data-dir"):
        await second.open()
    await first.close()
    await second.open()  # released on close
    await second.close()


async def test_closed_store_refuses_writes(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.sqlite")
    await s.open()
    await s.close()
    with pytest.raises(StoreClosed):
        await s.write(lambda c: None)


def test_transition_table_names_both_states() -> None:
    check("run", "r-1", "PENDING", "RUNNING")
    with pytest.raises(IllegalTransition, match="run r-1: illegal transition SUCCEEDED -> RUNNING"):
        check("run", "r-1", "SUCCEEDED", "RUNNING")


def _marker(order: list[str]) -> Callable[[str], Callable[[sqlite3.Connection], None]]:
    """Writes that note their key in ``order`` when they run: the commit order."""

    def mark(key: str) -> Callable[[sqlite3.Connection], None]:
        def write(c: sqlite3.Connection) -> None:
            order.append(key)
            c.execute("INSERT OR REPLACE INTO kv (key, value, updated_at) VALUES (?, '', 0)", (key,))

        return write

    return mark


def _put(key: str, value: str = "x"):
    return lambda c: c.execute("INSERT INTO kv (key, value, updated_at) VALUES (?, ?, 0)", (key, value))


async def test_a_lone_write_commits_on_the_loop_and_a_burst_on_the_writer_thread(store: Store) -> None:
    """Sequential workflows wait for every commit: a small batch skips the thread round trip."""
    for i in range(20):
        await store.write(_put(f"seq{i}"))
    assert store.inline_commits == store.commits == 20
    await asyncio.gather(*(store.write(_put(f"burst{i}")) for i in range(200)))
    assert store.transactions == 220
    assert store.commits - store.inline_commits >= 1, "a burst of 200 must go to the writer thread"
    assert await store.read(lambda c: c.execute("SELECT count(*) FROM kv").fetchone()[0]) == 220


async def test_a_heavy_write_never_runs_on_the_event_loop(store: Store) -> None:
    """Thousands of rows in one write would stall every task; they go to the writer thread."""
    threads: list[str] = []

    def bulk(c: sqlite3.Connection) -> None:
        threads.append(threading.current_thread().name)
        c.executemany(
            "INSERT INTO kv (key, value, updated_at) VALUES (?, '', 0)", ((f"k{i}",) for i in range(5_000))
        )

    await store.write(bulk, heavy=True)
    await store.write(_put("light"))
    assert len(threads) == 1 and threads[0].startswith("sluice-store-writer")
    assert store.inline_commits == 1  # only the light one


async def test_writes_commit_in_queue_order_across_loop_and_thread_batches(store: Store) -> None:
    """A run's later write may be queued before its earlier one commits: order must hold."""
    order: list[str] = []
    mark = _marker(order)
    futures = [store.write_nowait(mark(f"a{i}")) for i in range(50)]  # a thread batch
    await asyncio.sleep(0)
    futures += [store.write_nowait(mark(f"b{i}")) for i in range(3)]  # queued behind it
    await asyncio.gather(*futures)
    futures = [store.write_nowait(mark("c0"))]  # a loop batch
    futures += [store.write_nowait(mark(f"d{i}")) for i in range(50)]
    await asyncio.gather(*futures)
    expected = [f"a{i}" for i in range(50)] + [f"b{i}" for i in range(3)] + ["c0"]
    assert order == expected + [f"d{i}" for i in range(50)]


async def test_the_wal_stays_bounded_under_a_long_stream_of_single_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits never checkpoint themselves: the checkpointer copies the WAL beside the writer, and
    past WAL_RESTART_PAGES the writer checkpoints once so the WAL starts over."""
    monkeypatch.setattr(store_module, "WAL_RESTART_PAGES", 1_000)
    s = Store(tmp_path / "db.sqlite")
    await s.open()
    try:
        for i in range(4_500):
            await s.write(_put(f"k{i}", "v" * 2_000))
        assert s.inline_commits == 4_500
        await until(lambda: not s._checkpointing, 10)
        wal = tmp_path / "db.sqlite-wal"
        # without checkpoints these commits leave a 110 MB WAL; with them, a few times 1,000 pages
        # (~15 MB; it grows on while the checkpointer runs, and far more on a loaded machine)
        assert wal.stat().st_size < 60_000_000, f"WAL is {wal.stat().st_size} bytes, {s!r}"
        assert s.checkpoints >= 10 and 2 <= s.restarts < s.checkpoints
    finally:
        await s.close()


async def test_close_commits_what_was_queued(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.sqlite")
    await s.open()
    futures = [s.write_nowait(_put(f"k{i}")) for i in range(3)]
    futures += [s.write_nowait(_put(f"m{i}")) for i in range(100)]
    await s.close()
    assert all(f.done() and f.exception() is None for f in futures)
    s2 = Store(tmp_path / "db.sqlite")
    await s2.open()
    try:
        assert await s2.read(lambda c: c.execute("SELECT count(*) FROM kv").fetchone()[0]) == 103
    finally:
        await s2.close()


async def _staggered_writes(store: Store, n: int) -> list[str]:
    """``n`` writers, one arriving per loop turn (as a flood's requests do); the commit order."""
    order: list[str] = []
    mark = _marker(order)

    async def writer(i: int) -> None:
        for _ in range(i):
            await asyncio.sleep(0)
        await store.write(mark(f"k{i:02}"))

    await asyncio.gather(*(writer(i) for i in range(n)))
    return order


async def test_a_flood_lingers_a_few_loop_turns_so_its_writes_share_commits(store: Store) -> None:
    """Group commit under load: writers a turn apart share a commit only if the store waits for them."""
    flooding = False
    store.linger = lambda: flooding

    commits = store.commits
    assert await _staggered_writes(store, 40) == [f"k{i:02}" for i in range(40)]
    calm = store.commits - commits
    assert calm >= 20, f"without a flood each turn's write commits at once ({calm} commits)"

    flooding, commits = True, store.commits
    assert await _staggered_writes(store, 40) == [f"k{i:02}" for i in range(40)]
    flood = store.commits - commits
    assert flood <= 40 // (LINGER_TURNS - 1), f"a flood's writes must share commits ({flood} for 40)"

    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    counter = asyncio.create_task(count_turns())
    await store.write(_put("lone"))  # a flood that brings nothing more: the wait is bounded
    counter.cancel()
    assert turns <= LINGER_TURNS + 3


async def test_a_long_read_does_not_hold_up_the_next(store: Store) -> None:
    """A client's slow history query runs beside a webhook's one-row read, not before it."""
    release = threading.Event()

    def long_read(conn: sqlite3.Connection) -> int:
        release.wait(10)  # stands for a scan of a large history
        return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])

    slow = asyncio.ensure_future(store.read(long_read))
    await asyncio.sleep(0.05)
    try:
        one = await asyncio.wait_for(store.read(lambda c: c.execute("SELECT 1").fetchone()[0]), 2)
        assert one == 1
        assert not slow.done()
    finally:
        release.set()
    assert await slow == 0


async def test_a_long_async_read_does_not_hold_up_the_next(store: Store) -> None:
    """The API's async queries: a statement blocked on one pooled connection, a one-row read on another."""
    release = threading.Event()
    async with store.reader() as db:
        await db.create_function("held", 0, lambda: int(release.wait(10)))
        slow = asyncio.ensure_future(db.execute_fetchall("SELECT held()"))
        await asyncio.sleep(0.05)
        try:
            async with asyncio.timeout(2), store.reader() as other:
                assert other is not db
                assert list(next(iter(await other.execute_fetchall("SELECT 1")))) == [1]
            assert not slow.done()
            async with asyncio.timeout(2):  # and the sync path for components shares the pool
                assert await store.read(lambda c: c.execute("SELECT 2").fetchone()[0]) == 2
        finally:
            release.set()
        assert list(next(iter(await slow))) == [1]


async def test_readers_cannot_write(store: Store) -> None:
    """One writer per table: a read connection refuses to change the store, whatever SQL it gets."""
    async with store.reader() as db:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await db.execute("INSERT INTO kv (key, value) VALUES ('k', 'v')")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await store.read(lambda c: c.execute("DELETE FROM kv"))
    assert await store.read(lambda c: c.execute("SELECT count(*) FROM kv").fetchone()[0]) == 0


async def test_a_closed_store_refuses_reads(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.sqlite")
    await s.open()
    await s.close()
    with pytest.raises(StoreClosed):
        await s.read(lambda c: None)
    with pytest.raises(StoreClosed):
        async with s.reader():
            pass


async def test_history_pages_are_newest_first_and_the_cursor_walks_back(store: Store) -> None:
    """Creation order decides, as the API's ``next`` cursor promises: no run twice, none skipped."""
    ids = [ordered_id("r-") for _ in range(25)]

    def insert(conn: sqlite3.Connection) -> None:
        for i, run_id in enumerate(ids):
            conn.execute(
                "INSERT INTO runs (id, workflow, event_id, origin_id, status, params, created_at) "
                "VALUES (?,?,?,?,?,?,?)",
                (run_id, f"wf{i % 2}", event_id(), "o", "FAILED" if i % 3 == 0 else "SUCCEEDED", "{}", 1.0),
            )  # one created_at for all: the order is the creation order, not the clock's

    await store.write(insert)
    seen: list[str] = []
    cursor = None
    while True:
        async with store.reader() as db:
            page = await queries.list_runs(db, limit=10, before=cursor)
        assert page is not None
        seen += [r["run_id"] for r in page]
        if len(page) < 10:
            break
        cursor = page[-1]["run_id"]
    assert seen == ids[::-1]
    async with store.reader() as db:
        failed = await queries.list_runs(db, status="FAILED", workflow="wf0", limit=50) or []
        assert await queries.list_runs(db, before="r-no-such-run") is None  # a bad cursor, not a page
    assert [r["run_id"] for r in failed] == [r for i, r in enumerate(ids) if i % 6 == 0][::-1]


async def test_a_cancelled_read_leaves_its_connection_usable(store: Store) -> None:
    """A client that hangs up mid-read (its handler cancelled) must not leave a read transaction
    open on a pooled connection, nor hand one on while a thread still uses it."""
    release = threading.Event()
    entered = asyncio.Event()

    async def snapshot_then_cancelled() -> None:
        async with store.snapshot() as db:
            entered.set()
            await db.execute_fetchall("SELECT count(*) FROM runs")
            await asyncio.sleep(10)

    for i in range(READERS * 2):  # every connection of the pool, twice over
        entered.clear()
        task = asyncio.ensure_future(snapshot_then_cancelled())
        if i % 2:
            await asyncio.sleep(0)  # cancelled while its BEGIN is queued on the connection's thread
        else:
            await entered.wait()  # cancelled inside the block
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    for _ in range(READERS):
        async with store.snapshot() as db:  # BEGIN here would fail inside an open transaction
            assert list(next(iter(await db.execute_fetchall("SELECT 1")))) == [1]

    def held(conn: sqlite3.Connection) -> int:
        release.wait(10)
        return int(conn.execute("SELECT 1").fetchone()[0])

    slow = asyncio.ensure_future(store.read(held))
    await asyncio.sleep(0.05)
    slow.cancel()  # the thread goes on: its connection stays out of the pool until it is done
    borrowed = [store.reader() for _ in range(READERS - 1)]
    conns = [await b.__aenter__() for b in borrowed]
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3), store.reader():
                pass  # every other connection is out: this one waits
        release.set()
        async with asyncio.timeout(5), store.reader() as db:
            assert db not in conns
    finally:
        release.set()
        for b in borrowed:
            await b.__aexit__(None, None, None)


def _wal_frames(path: Path) -> int:
    """Frames in the WAL now, from a connection of its own (a PASSIVE checkpoint reports them)."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        conn.close()


async def test_a_due_wal_restart_waits_for_a_quiet_moment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a ``quiet`` hook (the orchestrator: no run is driving), a restart that falls due while
    work is in flight does not stall that work's commits: it waits, and goes at ``quiet_moment``,
    after which the WAL starts over."""
    monkeypatch.setattr(store_module, "WAL_RESTART_PAGES", 200)
    monkeypatch.setattr(store_module, "RESTART_PATIENCE_S", 60)
    busy = True
    s = Store(tmp_path / "db.sqlite")
    s.quiet = lambda: not busy
    await s.open()
    try:
        for i in range(1_000):
            await s.write(_put(f"k{i}", "v" * 2_000))
        await until(lambda: not s._checkpointing, 10)
        assert s.checkpoints >= 1 and s.restarts == 0, repr(s)
        assert _wal_frames(s.path) >= 200
        busy = False
        s.quiet_moment()
        await until(lambda: s.restarts == 1 and not s._on_thread, 10)
        await s.write(_put("after", "v"))
        assert _wal_frames(s.path) < 20, "the WAL did not start over after the quiet moment's restart"
    finally:
        await s.close()


async def test_a_never_quiet_store_still_restarts_its_wal_after_the_patience(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine that is never quiet (runs always in flight) still bounds its WAL: a due restart
    goes RESTART_PATIENCE_S later, at the next batch or on its own if nothing is queued."""
    monkeypatch.setattr(store_module, "WAL_RESTART_PAGES", 200)
    monkeypatch.setattr(store_module, "RESTART_PATIENCE_S", 0.2)
    s = Store(tmp_path / "db.sqlite")
    s.quiet = lambda: False
    await s.open()
    try:
        for i in range(1_000):
            await s.write(_put(f"k{i}", "v" * 2_000))
        await until(lambda: s.restarts >= 1 and not s._on_thread, 10)
        await s.write(_put("after", "v"))
        assert _wal_frames(s.path) < 400, repr(s)
    finally:
        await s.close()


async def test_a_checkpoint_that_ends_after_close_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The checkpointer may report back while the store closes: no writer checkpoint is started
    on the writer thread that close has shut down (it failed in a loop callback)."""
    monkeypatch.setattr(store_module, "WAL_RESTART_PAGES", 1)
    for round_ in range(10):
        s = Store(tmp_path / f"db{round_}.sqlite")
        await s.open()
        for i in range(store_module.CHECKPOINT_AFTER):
            await s.write(_put(f"k{i}", "v" * 2_000))
        await s.close()
        await asyncio.sleep(0.02)  # the checkpointer's report, if it came after the close
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
