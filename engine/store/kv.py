"""Durable key/value state for triggers (last cron fire, files seen), kept in the store.

The store's own id lives here too (:func:`store_id_in`): made once, it tells this store's
containers from those of another engine on the same daemon.

Besides the async protocol, :func:`put_in` and :func:`take_in` write a key inside a transaction
that is already open (a bus hook, a job submission): a row written with the event that owes work
and deleted in the transaction that does it is how "exactly once" survives a ``kill -9``.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Any

from engine.store.records import dumps
from engine.store.store import Store

_UPSERT = (
    "INSERT INTO kv (key, value, updated_at) VALUES (?,?,?) "
    "ON CONFLICT (key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at"
)


#: the key of the store's id (never changes once written)
STORE_ID_KEY = "sluice.store-id"


def store_id_in(conn: sqlite3.Connection) -> str:
    """This store's id, made the first time it is asked for and the same ever after.

    Random, not derived from the path: a data dir that is moved keeps its id, and two data dirs
    never share one (unless one is a copy of the other).
    """
    conn.execute(
        "INSERT INTO kv (key, value, updated_at) VALUES (?,?,?) ON CONFLICT (key) DO NOTHING",
        (STORE_ID_KEY, dumps(f"s-{secrets.token_hex(8)}"), time.time()),
    )
    row = conn.execute("SELECT value FROM kv WHERE key=?", (STORE_ID_KEY,)).fetchone()
    return str(json.loads(row[0]))


def put_in(conn: sqlite3.Connection, key: str, value: Any) -> None:
    """Set ``key`` in the caller's open transaction."""
    conn.execute(_UPSERT, (key, dumps(value), time.time()))


def take_in(conn: sqlite3.Connection, key: str) -> bool:
    """Delete ``key`` in the caller's open transaction; False when it was not there."""
    return conn.execute("DELETE FROM kv WHERE key=?", (key,)).rowcount > 0


class StoreKV:
    """The ``triggers.base.KV`` protocol over the ``kv`` table; each ``set`` is committed."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, key: str) -> Any | None:
        async with self.store.reader() as db:  # one statement, one hop to a read connection
            rows = list(await db.execute_fetchall("SELECT value FROM kv WHERE key=?", (key,)))
        return json.loads(rows[0][0]) if rows else None

    async def set(self, key: str, value: Any) -> None:
        text, now = dumps(value), time.time()
        await self.store.write(lambda c: c.execute(_UPSERT, (key, text, now)))

    async def update(self, values: Mapping[str, Any], deleted: Iterable[str] = ()) -> None:
        """Set ``values`` and delete ``deleted`` in one commit (a file trigger's changed entries)."""
        now = time.time()
        rows = [(key, dumps(value), now) for key, value in values.items()]
        gone = [(key,) for key in deleted]

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(_UPSERT, rows)
            conn.executemany("DELETE FROM kv WHERE key=?", gone)

        await self.store.write(write)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; False when it was not there."""
        return await self.store.write(lambda c: take_in(c, key))

    async def prefixed(self, prefix: str) -> list[tuple[str, Any]]:
        """Every ``(key, value)`` whose key starts with ``prefix``, in key order."""
        query = "SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key"
        async with self.store.reader() as db:
            rows = await db.execute_fetchall(query, (prefix, prefix + "\uffff"))
        return [(k, json.loads(v)) for k, v in rows]
