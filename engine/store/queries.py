"""What the API, the CLI and the dashboard ask of runs and events: async queries over aiosqlite.

Each takes a connection of the store's read pool (``store.reader()`` or, where several
statements must agree, ``store.snapshot()``) and awaits each statement, so a query never holds a
thread between statements and never waits for another client's query (engine/store/readers.py).
A query is one statement where it can be: each ``await`` is a thread hop.
"""

from __future__ import annotations

import json
import time
from typing import Any

import aiosqlite

from engine.store.records import loads

#: the run's columns, then each top-level step's (prefixed ``s_``), one row per step
_SUMMARY = (
    "SELECT r.*, s.step AS s_step, s.status AS s_status, s.attempts AS s_attempts, s.items AS s_items,"
    " s.started_at AS s_started_at, s.ended_at AS s_ended_at, s.reason AS s_reason,"
    " s.error AS s_error, s.output AS s_output,"
    # a function step waiting for a worker shows WAITING, since when; a fan-out, how many items wait
    " (SELECT MIN(a.queued_at) FROM attempts a WHERE a.run_id = r.id AND a.step = s.step AND a.idx = -1"
    "  AND a.status = 'WAITING') AS s_waiting_since,"
    " (SELECT COUNT(*) FROM attempts a WHERE a.run_id = r.id AND a.step = s.step AND a.idx >= 0"
    "  AND a.status = 'WAITING') AS s_items_waiting"
    " FROM runs r LEFT JOIN steps s ON s.run_id = r.id AND s.idx = -1"
    " WHERE r.id = ? ORDER BY s.started_at"
)


async def run_summary(db: aiosqlite.Connection, run_id: str) -> dict[str, Any] | None:
    """A run as users see it (CLI ``--json``, the API): status, outputs, error, and each step.

    One statement (the run joined to its steps): one hop, and one snapshot without a transaction
    around it. ``run_to_end`` asks it after every run, so W1 pays each extra hop."""
    rows = list(await db.execute_fetchall(_SUMMARY, (run_id,)))
    if not rows:
        return None
    row = rows[0]
    steps: dict[str, dict[str, Any]] = {}
    for srow in rows:
        if srow["s_step"] is None:  # a run with no step row yet
            continue
        steps[srow["s_step"]] = {
            "status": srow["s_status"],
            "attempts": srow["s_attempts"],
            "items": srow["s_items"],
            "started_at": srow["s_started_at"],
            "ended_at": srow["s_ended_at"],
            "reason": srow["s_reason"],
            "error": loads(srow["s_error"]),
            "output": loads(srow["s_output"]),
        }
        if srow["s_status"] == "RUNNING" and srow["s_waiting_since"] is not None:
            steps[srow["s_step"]].update(status="WAITING", waiting_since=srow["s_waiting_since"])
        elif srow["s_status"] == "RUNNING" and srow["s_items_waiting"]:
            steps[srow["s_step"]]["items_waiting"] = srow["s_items_waiting"]
    return {
        "run_id": row["id"],
        "workflow": row["workflow"],
        "status": row["status"],
        "trigger": row["trigger"],
        "event_id": row["event_id"],
        "workflow_version": row["workflow_version"],
        "params": loads(row["params"]),
        "outputs": loads(row["outputs"]),
        "error": loads(row["error"]),
        "reason": row["reason"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "steps": steps,
    }


def _run_row(row: Any) -> dict[str, Any]:
    ended, started = row["ended_at"], row["started_at"]
    return {
        "run_id": row["id"],
        "workflow": row["workflow"],
        "status": row["status"],
        "trigger": row["trigger"],
        "reason": row["reason"],
        "created_at": row["created_at"],
        "started_at": started,
        "ended_at": ended,
        "duration_s": None if ended is None or started is None else round(ended - started, 3),
    }


async def list_runs(
    db: aiosqlite.Connection,
    *,
    workflow: str | None = None,
    status: str | None = None,
    limit: int = 50,
    before: str | None = None,
    trigger: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> list[dict[str, Any]] | None:
    """Runs newest first; ``before`` is a run id (the cursor). None when that run does not exist.

    ``trigger`` is a trigger name (``manual`` for runs started by hand); ``since``/``until``
    bound ``created_at`` (Unix seconds).

    Newest is last created: the rowid, which the table and each of its indexes already hold in
    order, so a page is a walk backwards that stops at ``limit`` rows whatever the history's size.
    The cursor's rowid is looked up inside the same statement (one hop, and no gap between the
    lookup and the page for a retention pass to fall into).
    """
    where: list[str] = []
    args: list[Any] = []
    if before is not None:
        where.append("rowid < (SELECT rowid FROM runs WHERE id=?)")
        args.append(before)
    if workflow:
        where.append("workflow = ?")
        args.append(workflow)
    if status:
        where.append("status = ?")
        args.append(status)
    if trigger:
        where.append("trigger IS NULL" if trigger == "manual" else "trigger = ?")
        args.extend([] if trigger == "manual" else [trigger])
    if since is not None:
        where.append("created_at >= ?")
        args.append(since)
    if until is not None:
        where.append("created_at < ?")
        args.append(until)
    sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY rowid DESC LIMIT ?"
    rows = [_run_row(r) for r in await db.execute_fetchall(sql, (*args, limit))]
    if not rows and before is not None:  # an empty page: the end of the history, or a bad cursor?
        known = await db.execute_fetchall("SELECT 1 FROM runs WHERE id=?", (before,))
        if not list(known):
            return None
    return rows


async def run_attempts(
    db: aiosqlite.Connection, run_id: str, step: str | None = None, attempt: int | None = None
) -> list[dict[str, Any]]:
    """Every attempt of a run (optionally one step / attempt number), in start order."""
    sql = "SELECT * FROM attempts WHERE run_id=?"
    args: list[Any] = [run_id]
    if step is not None:
        sql += " AND step=?"
        args.append(step)
    if attempt is not None:
        sql += " AND attempt=?"
        args.append(attempt)
    rows = await db.execute_fetchall(sql + " ORDER BY started_at, step, idx, attempt", args)
    return [
        {
            "step": r["step"],
            "index": None if r["idx"] < 0 else r["idx"],
            "attempt": r["attempt"],
            "status": r["status"],
            "started_at": None if r["status"] == "WAITING" else r["started_at"],
            "ended_at": r["ended_at"],
            "error": loads(r["error"]),
            "log_path": r["log_path"],
            "queued_at": r["queued_at"],
            "waited_s": _waited(r),
        }
        for r in rows
    ]


def _waited(row: Any) -> float | None:
    """How long an attempt waited for a function worker (so far, while it still waits)."""
    if row["queued_at"] is None:
        return None
    until = time.time() if row["status"] == "WAITING" else row["started_at"]
    return round(max(0.0, until - row["queued_at"]), 3)


async def list_events(
    db: aiosqlite.Connection,
    *,
    source: str | None = None,
    detail_type: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Stored events newest first (by the time the bus received them)."""
    where: list[str] = []
    args: list[Any] = []
    for clause, value in (
        ("source = ?", source),
        ("detail_type = ?", detail_type),
        ("received_at >= ?", since),
        ("received_at < ?", until),
    ):
        if value is not None:
            where.append(clause)
            args.append(value)
    sql = "SELECT body, received_at FROM events" + (" WHERE " + " AND ".join(where) if where else "")
    rows = await db.execute_fetchall(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit))
    return [{**json.loads(r["body"]), "received_at": r["received_at"]} for r in rows]


async def job_tag(db: aiosqlite.Connection, job_id: str, tag: str) -> str | None:
    """The value of one of a job's tags, or None (no such job, or no such tag)."""
    rows = list(await db.execute_fetchall("SELECT spec FROM jobs WHERE id=?", (job_id,)))
    if not rows:
        return None
    tags = (loads(rows[0][0]) or {}).get("tags") or {}
    value = tags.get(tag) if isinstance(tags, dict) else None
    return value if isinstance(value, str) else None


async def run_event_resources(db: aiosqlite.Connection, run_id: str, source: str) -> list[str]:
    """The ``resources`` of the event that made a run, if that event came from ``source`` ([] for
    no such run, an event from elsewhere, or one pruned)."""
    sql = "SELECT e.body FROM runs r JOIN events e ON e.id = r.event_id WHERE r.id=? AND e.source=?"
    rows = list(await db.execute_fetchall(sql, (run_id, source)))
    body = loads(rows[0][0]) if rows else None
    resources = body.get("resources") if isinstance(body, dict) else None
    return [r for r in resources if isinstance(r, str)] if isinstance(resources, list) else []
