"""The SQL of the job tables: jobs, job_attempts, job_dependencies. This module is the one writer
of those tables (the configuration's, job_definitions, job_queues and compute_environments, are
engine/batch/config_rows.py's).

Every function takes a ``sqlite3.Connection`` and runs inside a store transaction (on the loop or
the writer thread); none awaits.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.batch.jobs import (
    FAILED,
    PENDING,
    STATES,
    SUBMITTED,
    SUCCEEDED,
    Job,
    JobError,
    check_transition,
    parse_spec,
)
from engine.events import iso_ms
from engine.executors.docker import OUT_OF_MEMORY, TIMED_OUT, ContainerResult
from engine.store.records import dumps


def insert_job(conn: sqlite3.Connection, job: Job) -> int:
    cur = conn.execute(
        "INSERT INTO jobs (id, name, queue, status, status_reason, spec, parent_id, array_size, array_index, "
        "run_id, step, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            job.id,
            job.name,
            job.queue,
            job.status,
            job.status_reason,
            dumps(job.spec.to_json()),
            job.parent_id,
            job.array_size,
            job.array_index,
            job.run_id,
            job.step,
            job.created_at,
            job.created_at,
        ),
    )
    return int(cur.lastrowid or 0)


def save_job(conn: sqlite3.Connection, job: Job, old: str, now: float) -> None:
    """Write a transition (checked against :data:`NEXT`; the row must still be in ``old``)."""
    if old != job.status:
        check_transition(job.id, old, job.status)
    cur = conn.execute(
        "UPDATE jobs SET status=?, status_reason=?, attempts=?, environment=?, exit_code=?, runnable_at=?, "
        "started_at=?, stopped_at=?, updated_at=?, preemptions=? WHERE id=? AND status=?",
        (
            job.status,
            job.status_reason,
            job.attempts,
            job.environment,
            job.exit_code,
            job.runnable_at,
            job.started_at,
            job.stopped_at,
            now,
            job.preemptions,
            job.id,
            old,
        ),
    )
    if cur.rowcount != 1:
        raise JobError(f"job {job.id}: expected it in {old} in the store", "conflict", 409)


def insert_dependencies(conn: sqlite3.Connection, rows: Iterable[tuple[str, str, str]]) -> None:
    conn.executemany("INSERT OR IGNORE INTO job_dependencies (job_id, dep_id, mode) VALUES (?,?,?)", rows)


def start_attempt_row(conn: sqlite3.Connection, job: Job, log_path: str) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO job_attempts (job_id, attempt, environment, log_path, host) "
        "VALUES (?,?,?,?,?)",
        (job.id, job.attempts, job.environment, log_path, job.host),
    )


def end_attempt_row(
    conn: sqlite3.Connection,
    job_id: str,
    attempt: int,
    container_id: str | None,
    exit_code: int | None,
    reason: str,
    started: float | None,
    stopped: float | None,
) -> None:
    conn.execute(
        "UPDATE job_attempts SET container_id=coalesce(?, container_id), exit_code=?, reason=?, "
        "started_at=coalesce(?, started_at), stopped_at=? WHERE job_id=? AND attempt=?",
        (container_id, exit_code, reason, started, stopped, job_id, attempt),
    )


def job_from_row(row: sqlite3.Row, allowed_roots: Sequence[Path]) -> Job:
    body = json.loads(row["spec"])
    # stored specs were checked at submit; the allow-list may have changed since, so don't refuse
    vols = tuple((v["host"], v["container"], bool(v["read_only"])) for v in body.pop("volumes", []))
    spec = parse_spec(body, allowed_roots)
    spec = replace(spec, volumes=vols)
    return Job(
        id=row["id"],
        name=row["name"],
        queue=row["queue"],
        spec=spec,
        seq=row["seq"],
        status=row["status"],
        status_reason=row["status_reason"],
        parent_id=row["parent_id"],
        array_size=row["array_size"],
        array_index=row["array_index"],
        attempts=row["attempts"],
        environment=row["environment"],
        host=row["host"] if "host" in row.keys() else None,  # noqa: SIM118 (a Row has no __contains__ of keys)
        exit_code=row["exit_code"],
        run_id=row["run_id"],
        step=row["step"],
        created_at=row["created_at"],
        runnable_at=row["runnable_at"],
        started_at=row["started_at"],
        stopped_at=row["stopped_at"],
        preemptions=row["preemptions"],
    )


def describe_rows(conn: sqlite3.Connection, job_id: str) -> dict[str, Any] | None:
    """A job as the API shows it: the row, its attempts, its dependencies, array child counts."""
    row = conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
    if row is None:
        return None
    out = public_row(row)
    out["spec"] = json.loads(row["spec"])
    out["attempts"] = [
        {
            "attempt": a["attempt"],
            "environment": a["environment"],
            **({"host": a["host"]} if a["host"] else {}),
            "container_id": a["container_id"],
            "exit_code": a["exit_code"],
            "reason": a["reason"],
            "started_at": iso_ms(a["started_at"]),
            "stopped_at": iso_ms(a["stopped_at"]),
            "log_path": a["log_path"],
            **({"slurm_job_id": a["slurm_job_id"]} if a["slurm_job_id"] else {}),
            **({"preempted_by": a["preempted_by"]} if a["preempted_by"] else {}),
        }
        for a in conn.execute("SELECT * FROM job_attempts WHERE job_id=? ORDER BY attempt", (job_id,))
    ]
    out["depends_on"] = [
        {"job_id": d[0], "mode": d[1]}
        for d in conn.execute("SELECT dep_id, mode FROM job_dependencies WHERE job_id=?", (job_id,))
    ]
    if out["attempts"] and out["attempts"][-1].get("host"):
        out["host"] = out["attempts"][-1]["host"]  #: the host of its environment it runs (ran) on
    if row["array_size"] is not None and row["array_index"] is None:
        counts = array_summary(conn, job_id, row["array_size"])
        out["array_status_summary"] = {s: counts.get(s, 0) for s in STATES}
    return out


def public_row(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "job_id": row["id"],
        "name": row["name"],
        "queue": row["queue"],
        "status": row["status"],
        "status_reason": row["status_reason"],
        "parent_id": row["parent_id"],
        "array_size": row["array_size"],
        "array_index": row["array_index"],
        "attempt_count": row["attempts"],
        "preemptions": row["preemptions"],
        "environment": row["environment"],
        "exit_code": row["exit_code"],
        "run_id": row["run_id"],
        "step": row["step"],
        "created_at": iso_ms(row["created_at"]),
        "started_at": iso_ms(row["started_at"]),
        "stopped_at": iso_ms(row["stopped_at"]),
    }


def load_state(conn: sqlite3.Connection) -> tuple[list[Any], list[Any], dict[str, list[str]]]:
    """Unfinished jobs, the dependencies of PENDING ones, failed children of unfinished arrays."""
    jobs = conn.execute(
        "SELECT j.*, a.host FROM jobs j "
        "LEFT JOIN job_attempts a ON a.job_id = j.id AND a.attempt = j.attempts "
        "WHERE j.status NOT IN (?, ?) ORDER BY j.seq",
        (SUCCEEDED, FAILED),
    ).fetchall()
    deps = [
        tuple(r)
        for r in conn.execute(
            "SELECT d.job_id, d.dep_id, d.mode FROM job_dependencies d JOIN jobs j ON j.id = d.job_id "
            "WHERE j.status = ?",
            (PENDING,),
        )
    ]
    failed: dict[str, list[str]] = {}
    for parent, child in conn.execute(
        "SELECT c.parent_id, c.id FROM jobs c JOIN jobs p ON p.id = c.parent_id "
        "WHERE p.status NOT IN (?, ?) AND c.status = ? ORDER BY c.seq",
        (SUCCEEDED, FAILED, FAILED),
    ):
        failed.setdefault(parent, []).append(child)
    return jobs, deps, failed


def set_attempt_container(
    conn: sqlite3.Connection, job_id: str, attempt: int, container_id: str, at: float
) -> None:
    """The attempt's container has started: note its id (recovery re-adopts it by its labels)."""
    conn.execute(
        "UPDATE job_attempts SET container_id=?, started_at=? WHERE job_id=? AND attempt=?",
        (container_id, at, job_id, attempt),
    )


def set_attempt_slurm_id(conn: sqlite3.Connection, job_id: str, attempt: int, slurm_job_id: str) -> None:
    """Slurm accepted the attempt: keep its job id, so a restart follows it and never submits again."""
    conn.execute(
        "UPDATE job_attempts SET slurm_job_id=? WHERE job_id=? AND attempt=?", (slurm_job_id, job_id, attempt)
    )


def set_status_reason(conn: sqlite3.Connection, job_id: str, status: str, reason: str) -> None:
    """A new ``statusReason`` within the same status (Slurm's pending reason): no transition, no event."""
    conn.execute("UPDATE jobs SET status_reason=? WHERE id=? AND status=?", (reason, job_id, status))


def slurm_ids(conn: sqlite3.Connection, attempts: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """Of these (job, attempt) pairs, the Slurm job ids stored for them."""
    out: dict[tuple[str, int], str] = {}
    for job_id, attempt in attempts:
        row = conn.execute(
            "SELECT slurm_job_id FROM job_attempts WHERE job_id=? AND attempt=? AND slurm_job_id IS NOT NULL",
            (job_id, attempt),
        ).fetchone()
        if row is not None:
            out[(job_id, attempt)] = str(row[0])
    return out


def array_shape(conn: sqlite3.Connection, job_id: str) -> tuple[int | None, int | None] | None:
    """(array_size, array_index) of a stored job, None when there is no such job."""
    row = conn.execute("SELECT array_size, array_index FROM jobs WHERE id=?", (job_id,)).fetchone()
    return None if row is None else (row[0], row[1])


def statuses(conn: sqlite3.Connection, ids: Sequence[str]) -> list[tuple[str, str, str | None]]:
    """(id, status, status_reason) of the stored jobs among ``ids``."""
    out: list[tuple[str, str, str | None]] = []
    for at in range(0, len(ids), 500):
        part = list(ids[at : at + 500])
        sql = f"SELECT id, status, status_reason FROM jobs WHERE id IN ({','.join('?' * len(part))})"
        out.extend((r[0], r[1], r[2]) for r in conn.execute(sql, part))
    return out


def status_of(conn: sqlite3.Connection, job_id: str) -> str | None:
    row = conn.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
    return None if row is None else str(row[0])


def list_public(
    conn: sqlite3.Connection, queue: str | None, status: str | None, parent: str | None, limit: int
) -> list[dict[str, Any]]:
    where, args = ["1=1"], []
    for col, val in (("queue", queue), ("status", status), ("parent_id", parent)):
        if val:
            where.append(f"{col}=?")
            args.append(val)
    if parent is None:
        where.append("parent_id IS NULL")
    sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
    return [public_row(r) for r in conn.execute(sql, (*args, int(limit)))]


def attempts_of(conn: sqlite3.Connection, job_id: str) -> list[tuple[Any, ...]]:
    """Every attempt of a job and of its array children: (attempt, started, stopped, exit code,
    reason, log path, array index)."""
    return [
        tuple(r)
        for r in conn.execute(
            "SELECT a.attempt, a.started_at, a.stopped_at, a.exit_code, a.reason, a.log_path, j.array_index "
            "FROM job_attempts a JOIN jobs j ON j.id = a.job_id WHERE j.id = ? OR j.parent_id = ?",
            (job_id, job_id),
        )
    ]


def recorded_results(
    conn: sqlite3.Connection, attempts: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], ContainerResult]:
    """Of these (job, attempt) pairs, the ones whose container's end was recorded before its removal."""
    out: dict[tuple[str, int], ContainerResult] = {}
    for job_id, attempt in attempts:
        row = conn.execute(
            "SELECT container_id, exit_code, reason, started_at, stopped_at FROM job_attempts "
            "WHERE job_id=? AND attempt=? AND reason IS NOT NULL",
            (job_id, attempt),
        ).fetchone()
        if row is not None:
            cid, code, reason, started, stopped = tuple(row)
            out[(job_id, attempt)] = ContainerResult(
                cid, code, reason, oom_killed=reason == OUT_OF_MEMORY, timed_out=reason == TIMED_OUT,
                started_at=started, stopped_at=stopped,
            )  # fmt: skip
    return out


def attempt_log_paths(
    conn: sqlite3.Connection, attempts: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], str]:
    """Where each of these (job, attempt) pairs wrote its log; an attempt never recorded is absent."""
    out: dict[tuple[str, int], str] = {}
    for job_id, attempt in attempts:
        row = conn.execute(
            "SELECT log_path FROM job_attempts WHERE job_id=? AND attempt=?", (job_id, attempt)
        ).fetchone()
        if row is not None:
            out[(job_id, attempt)] = row[0]
    return out


def aws_context(
    conn: sqlite3.Connection, job_id: str, attempts: int, is_parent: bool
) -> tuple[list[Any], list[tuple[str, str]], dict[str, int] | None]:
    """What a job's AWS shape needs beyond its row: attempts, dependencies, an array's counts.

    Run inside the transaction that commits a transition, so its event sees the attempt it ends;
    the queries are skipped where they cannot find anything (no attempt yet, not an array)."""
    rows: list[Any] = []
    if attempts:
        rows = [
            tuple(r)
            for r in conn.execute(
                "SELECT attempt, container_id, exit_code, reason, started_at, stopped_at, log_path "
                "FROM job_attempts WHERE job_id=? ORDER BY attempt",
                (job_id,),
            )
        ]
    deps = [
        (r[0], r[1])
        for r in conn.execute("SELECT dep_id, mode FROM job_dependencies WHERE job_id=?", (job_id,))
    ]
    summary = None
    if is_parent:
        size = conn.execute("SELECT array_size FROM jobs WHERE id=?", (job_id,)).fetchone()
        summary = array_summary(conn, job_id, size[0] if size else 0)
    return rows, deps, summary


def array_summary(conn: sqlite3.Connection, parent_id: str, size: int) -> dict[str, int]:
    """An array's children by status; those not written yet (a big array is written in chunks)
    are SUBMITTED, so the counts add up to the array's size."""
    counts = dict(
        conn.execute("SELECT status, count(*) FROM jobs WHERE parent_id=? GROUP BY status", (parent_id,))
    )
    unwritten = size - sum(counts.values())
    if unwritten > 0:
        counts[SUBMITTED] = counts.get(SUBMITTED, 0) + unwritten
    return counts


def unwritten_children(conn: sqlite3.Connection) -> dict[str, list[int]]:
    """Unfinished arrays whose submission a crash cut short: parent -> the indexes never written."""
    out: dict[str, list[int]] = {}
    for parent_id, size, written in conn.execute(
        "SELECT p.id, p.array_size, (SELECT count(*) FROM jobs c WHERE c.parent_id = p.id) FROM jobs p "
        "WHERE p.array_size IS NOT NULL AND p.array_index IS NULL AND p.status NOT IN (?, ?)",
        (SUCCEEDED, FAILED),
    ):
        if written < size:
            sql = "SELECT array_index FROM jobs WHERE parent_id=?"
            have = {r[0] for r in conn.execute(sql, (parent_id,))}
            out[parent_id] = [i for i in range(size) if i not in have]
    return out


def jobs_by_id(conn: sqlite3.Connection, ids: Sequence[str]) -> list[sqlite3.Row]:
    """The stored rows of ``ids`` (unknown ids are left out), in the order asked."""
    found = {}
    for at in range(0, len(ids), 500):
        part = list(ids[at : at + 500])
        sql = (
            "SELECT j.*, a.host FROM jobs j "
            "LEFT JOIN job_attempts a ON a.job_id = j.id AND a.attempt = j.attempts "
            f"WHERE j.id IN ({','.join('?' * len(part))})"
        )
        found.update({r["id"]: r for r in conn.execute(sql, part)})
    return [found[i] for i in ids if i in found]


def list_filtered(
    conn: sqlite3.Connection,
    *,
    queue: str | None,
    statuses: Sequence[str] | None,
    parent: str | None,
    name_glob: str | None,
    definition: str | None,
    created_before: float | None,
    created_after: float | None,
    before_seq: int | None,
    limit: int,
) -> list[sqlite3.Row]:
    """ListJobs: newest first, ``before_seq`` the paging cursor; a name glob ends in ``*`` for a
    prefix and is matched case-insensitively, as AWS matches JOB_NAME."""
    where: list[str] = ["1=1"]
    args: list[Any] = []
    if queue is not None:
        where.append("queue=?")
        args.append(queue)
    if statuses:
        where.append(f"status IN ({','.join('?' * len(statuses))})")
        args.extend(statuses)
    if parent is None:
        where.append("parent_id IS NULL")
    else:
        where.append("parent_id=?")
        args.append(parent)
    if name_glob is not None:
        if name_glob.endswith("*"):
            escaped = name_glob[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("name LIKE ? ESCAPE '\\'")
            args.append(escaped + "%")
        else:
            where.append("lower(name)=lower(?)")
            args.append(name_glob)
    if definition is not None:
        where.append("json_extract(spec, '$.definition') LIKE ?")
        args.append(definition if ":" in definition else definition + ":%")
    for op, value in (("<", created_before), (">", created_after)):
        if value is not None:
            where.append(f"created_at {op} ?")
            args.append(value)
    if before_seq is not None:
        where.append("seq < ?")
        args.append(before_seq)
    sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
    return conn.execute(sql, (*args, int(limit))).fetchall()


def unfinished_in_queue(conn: sqlite3.Connection, queue: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM jobs WHERE queue=? AND status NOT IN (?, ?)", (queue, SUCCEEDED, FAILED)
    ).fetchone()
    return int(row[0])


def mark_preempted(conn: sqlite3.Connection, job_id: str, attempt: int, by: str, reason: str) -> None:
    """The persistent marker: this attempt is being preempted by job ``by`` (a restart finishes it).

    Only while the attempt is still open: one that ended on its own meanwhile is left as it ended."""
    cur = conn.execute(
        "UPDATE job_attempts SET preempted_by=? WHERE job_id=? AND attempt=? AND reason IS NULL",
        (by, job_id, attempt),
    )
    if cur.rowcount:
        conn.execute(
            "UPDATE jobs SET status_reason=? WHERE id=? AND attempts=? AND status IN ('STARTING', 'RUNNING')",
            (reason, job_id, attempt),
        )
