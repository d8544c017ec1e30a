"""The audit table's one writer: what the engine decided not to do, and why.

Rows record the decisions an operator asks about later: a skipped or late cron fire, a
refused file, a workflow chain stopped at its depth limit, a container no job claims, a
shutdown that interrupted attempts. They are append-only and never read on a hot path.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Any

from engine.store.records import dumps
from engine.store.store import Store

_INSERT = "INSERT INTO audit (at, kind, subject, detail) VALUES (?,?,?,?)"


def insert(conn: sqlite3.Connection, kind: str, subject: str, detail: Mapping[str, Any], at: float) -> None:
    """Append one row inside the caller's transaction (so it commits with the decision it explains)."""
    conn.execute(_INSERT, (at, kind, subject, dumps(detail)))


def insert_many(conn: sqlite3.Connection, rows: Iterable[tuple[str, str, Mapping[str, Any], float]]) -> None:
    conn.executemany(_INSERT, [(at, kind, subject, dumps(detail)) for kind, subject, detail, at in rows])


async def record(store: Store, kind: str, subject: str, detail: Mapping[str, Any]) -> None:
    """Append one row in a transaction of its own."""
    now = time.time()
    await store.write(lambda c: insert(c, kind, subject, detail, now))
