"""Rows of runs, steps and attempts: the orchestrator's and the bus's SQL.

Every function here takes a ``sqlite3.Connection`` and runs inside the store's group commit
(or, for recovery's ``load_active_runs``, one read snapshot); none awaits. Each write function
is one state change and is checked against the transition table first. What the API and the
dashboard ask is in engine/store/queries.py, as async functions over aiosqlite.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ENGINE_RESTARTED, ENGINE_SHUTDOWN, error_record
from engine.states import Status, check
from workflows.secrets import hide_json
from workflows.spec import Workflow

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def dumps(value: Any) -> str:
    """JSON for a column: a secret from ``${env:...}`` is stored as its reference, never in clear."""
    return hide_json(_dumps(value))


class Encoded(str):
    """A value :func:`dumps` encoded before its transaction (a 10,000-child list takes ~10 ms to
    encode, which would otherwise hold the writer): stored as it is."""


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(slots=True)
class RunRecord:
    """A run as the orchestrator drives it (created by the bus, or loaded on recovery)."""

    id: str
    workflow: str
    event: dict[str, Any]
    params: dict[str, Any]
    created_at: float
    depth: int = 0
    trigger: str | None = None
    status: str = Status.PENDING
    started_at: float | None = None
    error: dict[str, Any] | None = None
    steps: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)  #: recovery only
    #: the workflow version it was created with (a hash of the file: engine/reload.py) and that
    #: version's spec, so a reload swapping the catalog never changes a run already made
    version: str | None = None
    spec: Workflow | None = field(default=None, repr=False, compare=False)


def insert_run(conn: sqlite3.Connection, run: RunRecord, origin_id: str) -> bool:
    """Insert a run; False when the (event, workflow) pair already has one (idempotent routing)."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO runs (id, workflow, event_id, origin_id, trigger, status, params, error, "
        "reason, depth, created_at, ended_at, workflow_version) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            run.id,
            run.workflow,
            run.event["id"],
            origin_id,
            run.trigger,
            run.status,
            dumps(run.params),
            None if run.error is None else dumps(run.error),
            None if run.error is None else run.error.get("errorMessage"),
            run.depth,
            run.created_at,
            run.created_at if run.status != Status.PENDING else None,
            run.version,
        ),
    )
    return cur.rowcount == 1


def set_run_status(
    conn: sqlite3.Connection,
    run_id: str,
    old: str,
    new: str,
    at: float,
    *,
    reason: str | None = None,
    outputs: Any = None,
    error: dict[str, Any] | None = None,
) -> None:
    check("run", run_id, old, new)
    if new == Status.RUNNING:
        conn.execute("UPDATE runs SET status=?, started_at=? WHERE id=?", (new, at, run_id))
        return
    conn.execute(
        "UPDATE runs SET status=?, ended_at=?, reason=?, outputs=?, error=? WHERE id=?",
        (
            new,
            at,
            reason,
            None if outputs is None else dumps(outputs),
            None if error is None else dumps(error),
            run_id,
        ),
    )


def start_attempt(
    conn: sqlite3.Connection,
    run_id: str,
    step: str,
    idx: int,
    attempt: int,
    at: float,
    log_path: str | None,
    *,
    first: bool,
    waiting: bool = False,
    queued_at: float | None = None,
) -> None:
    """Record an attempt starting; the first one also moves the step PENDING -> RUNNING.

    ``waiting``: it waits for a function worker (WAITING since ``at``) until :func:`take_attempt`;
    its step is RUNNING already, so recovery finds it. ``queued_at``: it waited since then."""
    if first:
        conn.execute(
            "INSERT INTO steps (run_id, step, idx, status, attempts, started_at) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT (run_id, step, idx) DO UPDATE SET status=excluded.status, "
            "attempts=excluded.attempts, started_at=excluded.started_at, wake_at=NULL",
            (run_id, step, idx, Status.RUNNING, attempt, at),
        )
    else:
        conn.execute(
            "UPDATE steps SET attempts=?, wake_at=NULL WHERE run_id=? AND step=? AND idx=?",
            (attempt, run_id, step, idx),
        )
    conn.execute(
        "INSERT INTO attempts (run_id, step, idx, attempt, status, started_at, log_path, queued_at) "
        "VALUES (?,?,?,?,?,?,?,?)",
        (run_id, step, idx, attempt, Status.WAITING if waiting else Status.RUNNING, at, log_path,
         at if waiting else queued_at),
    )  # fmt: skip


def take_attempt(conn: sqlite3.Connection, run_id: str, step: str, idx: int, attempt: int, at: float) -> None:
    """A worker took a WAITING attempt: it is RUNNING, started at ``at``."""
    sql = "UPDATE attempts SET status=?, started_at=? WHERE run_id=? AND step=? AND idx=? AND attempt=? AND "
    conn.execute(sql + "status=?", (Status.RUNNING, at, run_id, step, idx, attempt, Status.WAITING))


def end_attempt(
    conn: sqlite3.Connection,
    run_id: str,
    step: str,
    idx: int,
    attempt: int,
    status: str,
    at: float,
    error: dict[str, Any] | None,
    *,
    retry_at: float | None = None,
) -> None:
    conn.execute(
        "UPDATE attempts SET status=?, ended_at=?, error=? WHERE run_id=? AND step=? AND idx=? AND attempt=?",
        (status, at, None if error is None else dumps(error), run_id, step, idx, attempt),
    )
    if retry_at is not None:
        conn.execute(
            "UPDATE steps SET wake_at=? WHERE run_id=? AND step=? AND idx=?", (retry_at, run_id, step, idx)
        )


def begin_step(
    conn: sqlite3.Connection,
    run_id: str,
    step: str,
    idx: int,
    at: float,
    *,
    items: int | None = None,
    wake_at: float | None = None,
) -> None:
    """A step (or a fan-out parent, or a wait) moves PENDING -> RUNNING without an attempt."""
    conn.execute(
        "INSERT INTO steps (run_id, step, idx, status, started_at, items, wake_at) VALUES (?,?,?,?,?,?,?) "
        "ON CONFLICT (run_id, step, idx) DO UPDATE SET status=excluded.status, items=excluded.items, "
        "wake_at=excluded.wake_at",
        (run_id, step, idx, Status.RUNNING, at, items, wake_at),
    )


def finish_step(
    conn: sqlite3.Connection,
    run_id: str,
    step: str,
    idx: int,
    old: str,
    new: str,
    at: float,
    *,
    output: Any = None,
    error: dict[str, Any] | None = None,
    reason: str | None = None,
) -> None:
    check("step", f"{run_id}/{step}", old, new)
    conn.execute(
        "INSERT INTO steps (run_id, step, idx, status, output, error, reason, ended_at) "
        "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (run_id, step, idx) DO UPDATE SET status=excluded.status, "
        "output=excluded.output, error=excluded.error, reason=excluded.reason, "
        "ended_at=excluded.ended_at, wake_at=NULL",
        (
            run_id,
            step,
            idx,
            new,
            None if output is None else output if isinstance(output, Encoded) else dumps(output),
            None if error is None else dumps(error),
            reason,
            at,
        ),
    )


def copy_steps(
    conn: sqlite3.Connection, run_id: str, outputs: Mapping[str, Any], origin: str, at: float
) -> None:
    """A retry from the failed steps begins with these steps SUCCEEDED, outputs copied from ``origin``.

    Rows inserted SUCCEEDED (not a PENDING -> SUCCEEDED transition: nothing ran), no attempts.
    """
    conn.executemany(
        "INSERT INTO steps (run_id, step, idx, status, output, reason, started_at, ended_at) "
        "VALUES (?,?,?,?,?,?,?,?)",
        [
            (run_id, name, -1, Status.SUCCEEDED, dumps(output), f"kept from {origin}", at, at)
            for name, output in outputs.items()
        ],
    )


def note_interrupted(conn: sqlite3.Connection, run_id: str, step: str, idx: int, at: float) -> int:
    """After a crash: close attempts left RUNNING, count the interruption; returns the last attempt number."""
    error = dumps(error_record(ENGINE_RESTARTED, "the engine stopped during this attempt"))
    conn.execute(
        "UPDATE attempts SET status=?, ended_at=?, error=? WHERE run_id=? AND step=? AND idx=? "
        "AND status IN (?,?)",
        (Status.CANCELLED, at, error, run_id, step, idx, Status.RUNNING, Status.WAITING),
    )
    conn.execute(
        "UPDATE steps SET interrupted=interrupted+1 WHERE run_id=? AND step=? AND idx=?", (run_id, step, idx)
    )
    row = conn.execute(
        "SELECT attempts FROM steps WHERE run_id=? AND step=? AND idx=?", (run_id, step, idx)
    ).fetchone()
    return 0 if row is None else int(row[0])


def load_active_runs(conn: sqlite3.Connection) -> list[RunRecord]:
    """Every run not yet finished, with its step rows and its event, oldest first."""
    runs: list[RunRecord] = []
    rows = conn.execute(
        "SELECT r.*, e.body FROM runs r JOIN events e ON e.id = r.event_id "
        "WHERE r.status IN (?, ?) ORDER BY r.created_at",
        (Status.PENDING, Status.RUNNING),
    ).fetchall()
    for row in rows:
        run = RunRecord(
            id=row["id"],
            workflow=row["workflow"],
            event=json.loads(row["body"]),
            params=json.loads(row["params"]),
            created_at=row["created_at"],
            depth=row["depth"],
            trigger=row["trigger"],
            status=row["status"],
            started_at=row["started_at"],
        )
        for srow in conn.execute("SELECT * FROM steps WHERE run_id=?", (run.id,)):
            run.steps[(srow["step"], srow["idx"])] = {
                "status": srow["status"],
                "attempts": srow["attempts"],
                "interrupted": srow["interrupted"],
                "items": srow["items"],
                "output": loads(srow["output"]),
                "error": loads(srow["error"]),
                "reason": srow["reason"],
                "wake_at": srow["wake_at"],
                "job_id": srow["job_id"],
            }
        runs.append(run)
    return runs


# -- events ---------------------------------------------------------------------------------------


def insert_event(
    conn: sqlite3.Connection, env: dict[str, Any], received_at: float, dedupe_key: str | None = None
) -> None:
    """Store an envelope (keys starting with ``_`` are the bus's own notes and stay out of the body)."""
    conn.execute(
        "INSERT INTO events (id, source, detail_type, time, received_at, dedupe_key, replay_name, "
        "origin_id, body) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            env["id"],
            str(env.get("source", "")),
            str(env.get("detail-type", "")),
            str(env.get("time", "")),
            received_at,
            dedupe_key,
            env.get("replay-name"),
            env.get("_origin_id"),
            dumps({k: v for k, v in env.items() if not k.startswith("_")}),
        ),
    )


def delete_old_events(conn: sqlite3.Connection, cutoff: float, limit: int) -> int:
    """Retention: up to ``limit`` events received before ``cutoff`` that nothing still needs.

    Kept: the trigger event of an unfinished run (recovery reads it) and an event a pending
    notification still carries."""
    return conn.execute(
        "DELETE FROM events WHERE seq IN (SELECT e.seq FROM events e WHERE e.received_at < ? "
        "AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.event_id = e.id "
        "AND r.status IN ('PENDING','RUNNING')) "
        "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.id AND o.status = 'pending') "
        "ORDER BY e.seq LIMIT ?)",
        (cutoff, limit),
    ).rowcount


_FINISHED = "('SUCCEEDED','FAILED','CANCELLED')"  # a run never ends SKIPPED


def delete_old_runs(conn: sqlite3.Connection, cutoff: float, limit: int) -> list[str]:
    """Retention: up to ``limit`` finished runs that ended before ``cutoff``, with their steps and
    attempts; returns their ids (their log folders go after the commit). Oldest first: they sit
    at the start of the rowid order, so the scan stops as soon as it has ``limit``."""
    ids = [
        r[0]
        for r in conn.execute(
            f"SELECT id FROM runs WHERE status IN {_FINISHED} AND ended_at < ? ORDER BY rowid LIMIT ?",
            (cutoff, limit),
        )
    ]
    _delete_runs(conn, ids)
    return ids


def delete_runs_over(conn: sqlite3.Connection, workflow: str, keep: int, limit: int) -> list[str]:
    """Retention by count: a workflow's finished runs older than its newest ``keep`` runs."""
    row = conn.execute(
        "SELECT rowid FROM runs WHERE workflow = ? ORDER BY rowid DESC LIMIT 1 OFFSET ?", (workflow, keep - 1)
    ).fetchone()
    if row is None:
        return []
    ids = [
        r[0]
        for r in conn.execute(
            f"SELECT id FROM runs WHERE workflow = ? AND rowid < ? AND status IN {_FINISHED} "
            "ORDER BY rowid LIMIT ?",
            (workflow, row[0], limit),
        )
    ]
    _delete_runs(conn, ids)
    return ids


def _delete_runs(conn: sqlite3.Connection, ids: list[str]) -> None:
    rows = [(run_id,) for run_id in ids]
    conn.executemany("DELETE FROM attempts WHERE run_id = ?", rows)
    conn.executemany("DELETE FROM steps WHERE run_id = ?", rows)
    conn.executemany("DELETE FROM runs WHERE id = ?", rows)


# -- steps and attempts beyond one state change ----------------------------------------------------


def close_interrupted_attempts(conn: sqlite3.Connection, at: float) -> int:
    """A shutdown cut attempts short: close them CANCELLED and count the interruption on their step.

    The steps stay RUNNING and resume on the next start; returns how many attempts were closed."""
    error = dumps(error_record(ENGINE_SHUTDOWN, "engine shut down"))
    closed = conn.execute(
        "UPDATE attempts SET status=?, ended_at=?, error=? WHERE status IN (?,?)",
        (Status.CANCELLED, at, error, Status.RUNNING, Status.WAITING),
    ).rowcount
    conn.execute(
        "UPDATE steps SET interrupted=interrupted+1 WHERE status=? AND (run_id, step, idx) IN "
        "(SELECT run_id, step, idx FROM attempts WHERE status=? AND ended_at=?)",
        (Status.RUNNING, Status.CANCELLED, at),
    )
    return closed


def cancel_open_attempts(conn: sqlite3.Connection, run_id: str, step: str, at: float) -> None:
    """A user cancelled the run: the step's running attempts end CANCELLED."""
    conn.execute(
        "UPDATE attempts SET status=?, ended_at=? WHERE run_id=? AND step=? AND status IN (?,?)",
        (Status.CANCELLED, at, run_id, step, Status.RUNNING, Status.WAITING),
    )


def begin_job_step(
    conn: sqlite3.Connection, run_id: str, step: str, at: float, job_id: str, items: int | None
) -> None:
    """A container step moves PENDING -> RUNNING with the Batch job that runs it (recovery waits on it)."""
    begin_step(conn, run_id, step, -1, at, items=items)
    conn.execute(
        "UPDATE steps SET job_id=?, attempts=1 WHERE run_id=? AND step=? AND idx=-1", (job_id, run_id, step)
    )


#: one container attempt as the step's history shows it: (index or None, attempt, status,
#: started_at, ended_at, error or None, log_path)
JobAttempt = tuple[int | None, int, str, float, float, dict[str, Any] | None, str | None]


def link_job_attempts(conn: sqlite3.Connection, run_id: str, step: str, attempts: list[JobAttempt]) -> None:
    """Copy a job's attempts into the step's, so logs and the step view show container output."""
    conn.executemany(
        "INSERT OR REPLACE INTO attempts (run_id, step, idx, attempt, status, started_at, ended_at, "
        "error, log_path) VALUES (?,?,?,?,?,?,?,?,?)",
        [
            (run_id, step, -1 if index is None else index, attempt, status, started, ended,
             None if error is None else dumps(error), log_path)
            for index, attempt, status, started, ended, error, log_path in attempts
        ],
    )  # fmt: skip
