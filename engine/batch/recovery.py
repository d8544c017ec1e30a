"""Recovery after a restart: reload state from the store, re-adopt containers, report strangers.

A mixin of :class:`~engine.batch.service.BatchService`. Containers carry ``sluice.job-id`` and
``sluice.attempt`` labels, so the store and Docker together say where each job was: see the
BatchService docstring for the cases.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from engine.batch.jobs import DONE, FAILED, PENDING, RUNNABLE, RUNNING, STARTING, SUCCEEDED, Job, slot_of
from engine.batch.queues import DEFAULT_ENVIRONMENT, DEFAULT_QUEUE, Environment, Queue
from engine.executors.docker import ContainerResult
from engine.executors.docker_api import DockerError
from engine.store.records import dumps

if TYPE_CHECKING:
    from engine.batch.service import BatchService

log = logging.getLogger(__name__)


class RecoveryMixin:
    async def _settle_loaded_dependencies(self: BatchService) -> None:
        """After a crash between a job's end and its dependents' update: finish that work now."""
        ids = [d for d in self.dependents if d not in self.jobs]
        if not ids:
            return
        rows = await self.store.read(
            lambda c: [
                tuple(r)
                for r in c.execute(
                    f"SELECT id, status, status_reason FROM jobs WHERE id IN ({','.join('?' * len(ids))})",
                    ids,
                )
            ]
        )
        changes: list[tuple[Job, str]] = []
        for job_id, status, reason in rows:
            if status in DONE:
                done = Job(id=job_id, name="", queue="", spec=None, status=status, status_reason=reason)  # type: ignore[arg-type]
                changes.extend(self._settle(done))
        if changes:
            await self.commit(changes)

    # -- recovery -----------------------------------------------------------------------------

    async def _recover_containers(self: BatchService) -> None:
        try:
            managed = await self.runner.find_managed()
        except DockerError as exc:
            log.warning("cannot list managed containers: %s", exc)
            managed = []
        by_job = {(c["labels"].get("sluice.job-id"), c["labels"].get("sluice.attempt")): c for c in managed}
        now = time.time()
        for job in [j for j in self.jobs.values() if j.status in (STARTING, RUNNING)]:
            found = by_job.pop((job.id, str(job.attempts)), None)
            log_path = self.log_path(job, job.attempts)
            if found is not None and found["state"] != "created":
                if job.status == STARTING:
                    self._mark_running(job, found["id"], now)
                job.container_id = found["id"]
                log.info("job %s: re-adopting container %s", job.id, found["id"][:12])
                self._attempts[job.id] = asyncio.create_task(
                    self._attempt(job, None, log_path, found["id"]), name=f"adopt {job.id}"
                )
            elif job.status == STARTING:
                if found is not None:
                    await self.runner.adopt(found["id"], self._request(job, log_path))  # removes it
                await self._restart_attempt(job)
            else:
                lost = ContainerResult(
                    None, None, "ContainerLost: the container was gone after an engine restart"
                )
                self._attempts[job.id] = asyncio.create_task(self._finish_lost(job, lost))
        await self._report_unknown(list(by_job.values()))

    async def _finish_lost(self: BatchService, job: Job, result: ContainerResult) -> None:
        try:
            await self._finish_attempt(job, result)
        finally:
            self._attempts.pop(job.id, None)

    async def _restart_attempt(self: BatchService, job: Job) -> None:
        env = self.envs.get(job.environment or "")
        if env is not None:
            env.used_vcpus = max(0.0, env.used_vcpus - job.spec.vcpus)
            env.used_memory = max(0, env.used_memory - job.spec.memory)
        job.status, job.runnable_at = RUNNABLE, time.time()
        job.attempts -= 1
        job.status_reason = "the engine restarted before the container was created; starting it again"
        self.index.add(job.queue, slot_of(job))
        await self.commit([(job, STARTING)])

    async def _report_unknown(self: BatchService, containers: list[dict[str, Any]]) -> None:
        if not containers:
            return
        now = time.time()
        for c in containers:
            log.warning(
                "container %s (%s) is labelled sluice.managed but belongs to no unfinished job; "
                "leaving it alone (remove it with `docker rm -f %s` if it is not needed)",
                c["id"][:12],
                c["name"],
                c["id"][:12],
            )
        rows = [
            (
                now,
                "unknown-container",
                c["id"],
                dumps({"name": c["name"], "labels": c["labels"], "state": c["state"]}),
            )
            for c in containers
        ]
        await self.store.write(
            lambda conn: conn.executemany(
                "INSERT INTO audit (at, kind, subject, detail) VALUES (?,?,?,?)", rows
            )
        )


def ensure_defaults(conn: sqlite3.Connection, info: dict[str, Any]) -> None:
    """The local environment (this machine's cores and memory) and the default queue, once."""
    now = time.time()
    cpus = float(info.get("NCPU") or 1)
    memory = int(info.get("MemTotal") or 1 << 30)
    conn.execute(
        "INSERT OR IGNORE INTO compute_environments "
        "(name, endpoint, max_vcpus, max_memory, state, created_at) VALUES (?,?,?,?,?,?)",
        (DEFAULT_ENVIRONMENT, "local", cpus, memory, "ENABLED", now),
    )
    conn.execute(
        "INSERT OR IGNORE INTO job_queues (name, priority, environments, state, created_at) "
        "VALUES (?,?,?,?,?)",
        (DEFAULT_QUEUE, 1, json.dumps([DEFAULT_ENVIRONMENT]), "ENABLED", now),
    )


def load_config(conn: sqlite3.Connection) -> tuple[dict[str, Environment], dict[str, Queue], dict[str, Any]]:
    envs = {
        r["name"]: Environment(r["name"], r["max_vcpus"], r["max_memory"], r["state"], r["endpoint"])
        for r in conn.execute("SELECT * FROM compute_environments")
    }
    queues = {
        r["name"]: Queue(r["name"], r["priority"], tuple(json.loads(r["environments"])), r["state"])
        for r in conn.execute("SELECT * FROM job_queues")
    }
    defs: dict[str, dict[int, tuple[str, dict[str, Any]]]] = {}
    for r in conn.execute("SELECT * FROM job_definitions ORDER BY name, revision"):
        defs.setdefault(r["name"], {})[r["revision"]] = (r["status"], json.loads(r["body"]))
    return envs, queues, defs


def load_state(conn: sqlite3.Connection) -> tuple[list[Any], list[Any], dict[str, list[str]]]:
    """Unfinished jobs, the dependencies of PENDING ones, failed children of unfinished arrays."""
    jobs = conn.execute(
        "SELECT * FROM jobs WHERE status NOT IN (?, ?) ORDER BY seq", (SUCCEEDED, FAILED)
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
    return jobs, deps, failed  # type: ignore[return-value]
