"""Durable key/value state for triggers (last cron fire, files seen), kept in the store."""

from __future__ import annotations

import json
import time
from typing import Any

from engine.store.records import dumps
from engine.store.store import Store


class StoreKV:
    """The ``triggers.base.KV`` protocol over the ``kv`` table; each ``set`` is committed."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, key: str) -> Any | None:
        query = "SELECT value FROM kv WHERE key=?"
        row = await self.store.read(lambda c: c.execute(query, (key,)).fetchone())
        return None if row is None else json.loads(row[0])

    async def set(self, key: str, value: Any) -> None:
        text, now = dumps(value), time.time()
        await self.store.write(
            lambda c: c.execute(
                "INSERT INTO kv (key, value, updated_at) VALUES (?,?,?) "
                "ON CONFLICT (key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
                (key, text, now),
            )
        )
