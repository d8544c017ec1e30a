"""The store: migrations, group commit, per-write isolation, durability across reopen."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from engine.schema import MIGRATIONS
from engine.states import IllegalTransition, check
from engine.store import Store, StoreClosed


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
