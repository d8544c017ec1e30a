"""The one writer of ``batch_items``: a trigger's events waiting for their batch to close.

An event for a batching trigger is committed with its ``batch_items`` row in the event's own
transaction; a batch closes in one transaction that takes its rows, commits the batch's event
and run, and deletes the rows. So a crash at any moment leaves each event either waiting or in
exactly one batch's run: none lost, none in two.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Waiting:
    """What waits for one trigger's batch: how many events, and since when (the oldest)."""

    workflow: str
    trigger: str
    count: int
    oldest: float


def add(conn: sqlite3.Connection, workflow: str, trigger: str, event_id: str, depth: int, now: float) -> bool:
    """The event waits for the trigger's next batch; False when it already does (re-routed)."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO batch_items (workflow, trigger, event_id, depth, added_at) VALUES (?,?,?,?,?)",
        (workflow, trigger, event_id, depth, now),
    )
    return cur.rowcount == 1


def waiting(conn: sqlite3.Connection) -> list[Waiting]:
    rows = conn.execute(
        "SELECT workflow, trigger, COUNT(*), MIN(added_at) FROM batch_items GROUP BY workflow, trigger"
    ).fetchall()
    return [Waiting(r[0], r[1], r[2], r[3]) for r in rows]


def take(
    conn: sqlite3.Connection, workflow: str, trigger: str, limit: int, window_s: float, now: float
) -> tuple[list[dict[str, Any]], int]:
    """A batch that is due (``limit`` events, or its first waiting ``window_s``): its events,
    oldest first, and their largest depth; their rows are deleted here, and the caller's
    transaction commits the batch's run with that. ``([], 0)`` when no batch is due."""
    rows = conn.execute(
        "SELECT b.seq, b.depth, b.added_at, e.body FROM batch_items b "
        "LEFT JOIN events e ON e.id = b.event_id WHERE b.workflow=? AND b.trigger=? ORDER BY b.seq LIMIT ?",
        (workflow, trigger, limit),
    ).fetchall()
    if not rows or (len(rows) < limit and now - rows[0][2] < window_s):
        return [], 0
    conn.execute(
        "DELETE FROM batch_items WHERE workflow=? AND trigger=? AND seq <= ?",
        (workflow, trigger, rows[-1][0]),
    )
    events = [json.loads(r[3]) for r in rows if r[3] is not None]  # None: retention took it meanwhile
    return events, max(r[1] for r in rows)


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM batch_items").fetchone()[0])
