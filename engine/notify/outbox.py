"""The outbox and the dead letters: the one writer of the ``outbox`` and ``dead_letters`` tables.

Why an outbox: the row that says "tell X about event E" is inserted by a bus tx hook inside the
very transaction that commits E, so a crash between the commit and the HTTP POST loses nothing:
the sender finds the row on restart. The hook only inserts rows (no I/O), so a slow or dead
receiver can never hold up the engine; it costs only its own queue.

That queue is bounded: a subscriber whose backlog (undelivered rows) reaches its
``max_backlog`` is *paused*. Its new events go straight to the dead letters with a reason (an
operator retries them with ``sluice notifications dlq retry`` once the receiver is back), so a
receiver that never answers costs a bounded outbox and one dead-letter row per event instead of
a queue that grows for a day. The sender resumes it when the backlog has drained below 90 % of
the cap. Both transitions are events (``sluice.notify`` / ``Subscriber State Change``). The
backlog is counted in memory (the hook adds on the writer thread, the sender subtracts on the
loop) and recounted from the table every few seconds, so a rolled-back transaction cannot skew
it for long.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from engine.notify.subscribers import Subscriber, safe_url

log = logging.getLogger(__name__)

#: rows read per lane and query
BATCH = 64

_INSERT = "INSERT INTO outbox (subscriber, url, event_id, body, created_at, next_at) VALUES (?,?,?,?,?,?)"


class Outbox:
    """The bus hook: for each committed event, one row per matching subscriber, same transaction."""

    def __init__(self, subscribers: Sequence[Subscriber], clock: Any = time.time) -> None:
        self.subscribers = list(subscribers)
        self.clock = clock
        #: highest outbox seq inserted per subscriber (written on the writer thread, read on the loop)
        self.latest: dict[str, int] = {}
        #: undelivered rows per subscriber (see the module doc)
        self.backlog: dict[str, int] = {}
        self.paused: set[str] = set()
        #: (subscriber, "PAUSED"/"ACTIVE", backlog) not yet published; the sender publishes them
        self.transitions: list[tuple[str, str, int]] = []

    def hook(self, conn: sqlite3.Connection, env: dict[str, Any], depth: int) -> None:
        subs = [s for s in self.subscribers if s.matches(env)]
        if not subs:
            return
        now = self.clock()
        for sub in subs:
            try:
                body = sub.body(env)
            except Exception as exc:  # one subscriber's transform must not fail the event's commit
                log.error("subscriber %s: transform failed for event %s: %s", sub.key, env.get("id"), exc)
                continue
            key = sub.key
            waiting = self.backlog.get(key, 0)
            if key not in self.paused and waiting >= sub.max_backlog:
                self.paused.add(key)
                self.transitions.append((key, "PAUSED", waiting))
                log.warning("subscriber %s: %d notifications undelivered (max_backlog); paused, new events "
                            "go to the dead letters until it catches up", key, waiting)  # fmt: skip
            if key in self.paused:
                why = (
                    f"subscriber paused: {waiting} notifications undelivered (max_backlog {sub.max_backlog})"
                )
                conn.execute(_DEAD, (key, safe_url(sub.url), env["id"], body, now, now, 0, None, why))
                continue
            cur = conn.execute(_INSERT, (key, safe_url(sub.url), env["id"], body, now, now))
            self.latest[key] = int(cur.lastrowid or 0)
            self.backlog[key] = waiting + 1

    def settled(self, key: str, cap: int, *, delta: int = 1) -> None:
        """``delta`` of ``key``'s rows left the queue (delivered or dead-lettered): resume it below 90 %."""
        left = self.backlog[key] = max(0, self.backlog.get(key, 0) - delta)
        if key in self.paused and left < cap * 0.9:
            self.paused.discard(key)
            self.transitions.append((key, "ACTIVE", left))
            log.info("subscriber %s: backlog down to %d; resumed", key, left)


_DEAD = (
    "INSERT INTO dead_letters (subscriber, url, event_id, body, created_at, failed_at, attempts, "
    "last_status, last_error) VALUES (?,?,?,?,?,?,?,?,?)"
)


def backlogs(conn: sqlite3.Connection) -> dict[str, int]:
    """Undelivered rows per subscriber, counted in the table."""
    sql = "SELECT subscriber, COUNT(*) FROM outbox WHERE status='pending' GROUP BY subscriber"
    return {key: int(n) for key, n in conn.execute(sql)}


def dead_letter(
    conn: sqlite3.Connection,
    row: sqlite3.Row,
    now: float,
    attempts: int,
    status: int | None,
    error: str | None,
) -> None:
    conn.execute(
        _DEAD,
        (
            *(row[k] for k in ("subscriber", "url", "event_id", "body", "created_at")),
            now,
            attempts,
            status,
            error,
        ),
    )
    conn.execute("DELETE FROM outbox WHERE seq=?", (row["seq"],))


# --- dead letters (API and CLI) -------------------------------------------------------------------------


def _where_ids(ids: Sequence[int] | None) -> tuple[str, tuple[int, ...]]:
    if ids is None:
        return "", ()
    return f" WHERE seq IN ({','.join('?' * len(ids)) or 'NULL'})", tuple(int(i) for i in ids)


def dlq_list(conn: sqlite3.Connection, limit: int = 100) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM dead_letters ORDER BY seq LIMIT ?", (limit,)).fetchall()
    return [
        {
            "id": r["seq"],
            "subscriber": r["subscriber"],
            "url": r["url"],
            "event_id": r["event_id"],
            "attempts": r["attempts"],
            "last_status": r["last_status"],
            "last_error": r["last_error"],
            "created_at": r["created_at"],
            "failed_at": r["failed_at"],
        }
        for r in rows
    ]


def dlq_retry(conn: sqlite3.Connection, ids: Sequence[int] | None, now: float) -> int:
    """Move dead letters back to the outbox with a fresh attempt budget; returns how many."""
    where, args = _where_ids(ids)
    rows = conn.execute(f"SELECT * FROM dead_letters{where} ORDER BY seq", args).fetchall()
    for r in rows:
        conn.execute(
            _INSERT,
            (r["subscriber"], r["url"], r["event_id"], r["body"], now, now),
        )
        conn.execute("DELETE FROM dead_letters WHERE seq=?", (r["seq"],))
    return len(rows)


def dlq_purge(conn: sqlite3.Connection, ids: Sequence[int] | None) -> int:
    where, args = _where_ids(ids)
    return conn.execute(f"DELETE FROM dead_letters{where}", args).rowcount


# --- wiring ---------------------------------------------------------------------------------------------


# --- the sender's reads and outcomes -------------------------------------------------------------------


def due(
    conn: sqlite3.Connection, sub: Subscriber, now: float, busy: tuple[int, ...]
) -> tuple[list[sqlite3.Row], int, float | None]:
    """A lane's next rows (due, not in flight), the highest seq it has, and when the next is due.

    An ``ordered`` subscriber gets at most its head row, and nothing while the head is in flight
    or not yet due (strict order)."""
    key = sub.key
    known = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox WHERE subscriber=?", (key,)).fetchone()[0]
    if sub.ordered:
        head = conn.execute(
            "SELECT * FROM outbox WHERE subscriber=? AND status='pending' ORDER BY seq LIMIT 1", (key,)
        ).fetchone()
        if head is None or head["seq"] in busy:
            return [], known, None
        if head["next_at"] > now:
            return [], known, head["next_at"]
        return [head], known, None
    holes = ",".join("?" * len(busy))
    skip = f" AND seq NOT IN ({holes})" if busy else ""
    rows = conn.execute(
        f"SELECT * FROM outbox WHERE subscriber=? AND status='pending' AND next_at<=?{skip} "
        f"ORDER BY seq LIMIT {BATCH}",
        (key, now, *busy),
    ).fetchall()
    nxt = conn.execute(
        f"SELECT MIN(next_at) FROM outbox WHERE subscriber=? AND status='pending' AND next_at>?{skip}",
        (key, now, *busy),
    ).fetchone()[0]
    return rows, known, nxt


def delivered(conn: sqlite3.Connection, seq: int, at: float, attempts: int, status: int) -> None:
    conn.execute(
        "UPDATE outbox SET status='delivered', delivered_at=?, attempts=?, last_status=? WHERE seq=?",
        (at, attempts, status, seq),
    )


def retry_later(
    conn: sqlite3.Connection, seq: int, attempts: int, next_at: float, status: int | None, error: str | None
) -> None:
    conn.execute(
        "UPDATE outbox SET attempts=?, next_at=?, last_status=?, last_error=? WHERE seq=?",
        (attempts, next_at, status, error, seq),
    )


def orphans(conn: sqlite3.Connection, keys: Sequence[str], now: float) -> None:
    """Rows of subscribers no longer configured go to the dead letters (nobody would send them)."""
    holes = ",".join("?" * len(keys)) or "''"
    query = f"SELECT * FROM outbox WHERE status='pending' AND subscriber NOT IN ({holes})"
    for row in conn.execute(query, tuple(keys)).fetchall():
        dead_letter(conn, row, now, row["attempts"], None, "subscriber no longer configured")
        log.warning("notification %d for %s: subscriber %s no longer configured; dead-lettered",
                    row["seq"], row["event_id"], row["subscriber"])  # fmt: skip


def delete_delivered(conn: sqlite3.Connection, cutoff: float, limit: int) -> int:
    """Retention: up to ``limit`` delivered rows older than ``cutoff``."""
    return conn.execute(
        "DELETE FROM outbox WHERE seq IN "
        "(SELECT seq FROM outbox WHERE status='delivered' AND delivered_at < ? LIMIT ?)",
        (cutoff, limit),
    ).rowcount
