"""Submitting, cancelling and terminating jobs; registering definitions, queues, environments.

A mixin of :class:`~engine.batch.service.BatchService` (same state, split by concept). Every input is
checked against the in-memory state *before* anything is written, so bad input gets a
:class:`~engine.batch.jobs.JobError` naming the field and leaves no row, event or container.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from engine.batch.jobs import (
    CANCELLED_REASON,
    DEP_MODES,
    DONE,
    FAILED,
    MAX_ARRAY,
    MAX_DEPENDENCIES,
    MIN_ARRAY,
    NOT_STARTED,
    PENDING,
    RUNNABLE,
    STARTING,
    SUBMITTED,
    TERMINATED_REASON,
    Job,
    JobError,
    JobSpec,
    RetryStrategy,
    describe_rows,
    insert_dependencies,
    insert_job,
    job_event,
    new_job_id,
    parse_spec,
    public_row,
    slot_of,
)
from engine.batch.queues import ENABLED, MAX_QUEUE_ENVIRONMENTS, Environment, Queue, explain, size_text

if TYPE_CHECKING:
    from engine.batch.service import BatchService

_STATES = (ENABLED, "DISABLED")


class SubmitMixin:
    # -- definitions --------------------------------------------------------------------------

    async def register_definition(self: BatchService, body: Mapping[str, Any]) -> dict[str, Any]:
        """Register ``body`` as the next revision of its name (AWS RegisterJobDefinition)."""
        name = body.get("name") if isinstance(body, Mapping) else None
        if not isinstance(name, str) or not name.strip() or ":" in name:
            raise JobError("name: required, letters, digits, - and _ (no colon)")
        parse_spec(body, self.allowed_roots)
        clean = {k: v for k, v in body.items() if k != "name"}
        revision = max(self.definitions.get(name, {0: None}), default=0) + 1  # type: ignore[arg-type]
        now = time.time()
        await self.store.write(
            lambda c: c.execute(
                "INSERT INTO job_definitions (name, revision, status, body, created_at) VALUES (?,?,?,?,?)",
                (name, revision, "ACTIVE", json.dumps(clean), now),
            )
        )
        self.definitions.setdefault(name, {})[revision] = ("ACTIVE", clean)
        return {"name": name, "revision": revision, "arn": f"{name}:{revision}"}

    def list_definitions(self: BatchService) -> list[dict[str, Any]]:
        return [
            {"name": name, "revision": rev, "status": status, **body}
            for name, revs in sorted(self.definitions.items())
            for rev, (status, body) in sorted(revs.items())
        ]

    def _definition(self: BatchService, ref: str) -> dict[str, Any]:
        name, _, rev = ref.partition(":")
        revs = self.definitions.get(name)
        if not revs:
            known = ", ".join(sorted(self.definitions)) or "none registered"
            raise JobError(f"definition: no job definition named {name!r} (known: {known})", "not_found", 404)
        if rev:
            if not rev.isdigit() or int(rev) not in revs:
                raise JobError(
                    f"definition: {name} has no revision {rev} (latest is {max(revs)})", "not_found", 404
                )
            return revs[int(rev)][1]
        active = [r for r, (status, _) in revs.items() if status == "ACTIVE"]
        return revs[max(active or revs)][1]

    # -- queues and environments --------------------------------------------------------------

    async def put_environment(self: BatchService, body: Mapping[str, Any], *, create: bool) -> dict[str, Any]:
        name = str(body.get("name") or "")
        old = self.envs.get(name)
        _create_or_update("environment", name, old, create)
        endpoint = str(body.get("endpoint", old.endpoint if old else "local"))
        if endpoint != "local" and not endpoint.startswith(("tcp://", "unix://")):
            raise JobError(f"endpoint: write local, unix:///path or tcp://HOST:PORT, got {endpoint!r}")
        env = Environment(
            name,
            _positive(body.get("max_vcpus", old.max_vcpus if old else None), "max_vcpus"),
            int(_positive(body.get("max_memory", old.max_memory if old else None), "max_memory")),
            _state(body.get("state", old.state if old else ENABLED)),
            endpoint,
        )
        now = time.time()
        await self.store.write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO compute_environments (name, endpoint, max_vcpus, max_memory, state, "
                "created_at) VALUES (?,?,?,?,?,?)",
                (env.name, env.endpoint, env.max_vcpus, env.max_memory, env.state, now),
            )
        )
        if old is not None:
            env.used_vcpus, env.used_memory = old.used_vcpus, old.used_memory
        self.envs[name] = env
        self.wake()
        return env.public()

    async def put_queue(self: BatchService, body: Mapping[str, Any], *, create: bool) -> dict[str, Any]:
        name = str(body.get("name") or "")
        old = self.queues.get(name)
        _create_or_update("queue", name, old, create)
        envs = body.get("environments", list(old.environments) if old else None)
        if not isinstance(envs, list) or not 1 <= len(envs) <= MAX_QUEUE_ENVIRONMENTS:
            raise JobError(f"environments: a list of 1..{MAX_QUEUE_ENVIRONMENTS} compute environment names")
        missing = [e for e in envs if e not in self.envs]
        if missing:
            raise JobError(
                f"environments: no compute environment {missing[0]!r} (known: {', '.join(self.envs)})"
            )
        priority = body.get("priority", old.priority if old else 1)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise JobError(f"priority: an integer (higher runs first), got {priority!r}")
        queue = Queue(name, priority, tuple(envs), _state(body.get("state", old.state if old else ENABLED)))
        now = time.time()
        await self.store.write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO job_queues (name, priority, environments, state, created_at) "
                "VALUES (?,?,?,?,?)",
                (queue.name, queue.priority, json.dumps(list(queue.environments)), queue.state, now),
            )
        )
        self.queues[name] = queue
        self.wake()
        return queue.public()

    # -- submit -------------------------------------------------------------------------------

    def _resolve_spec(self: BatchService, req: Mapping[str, Any]) -> JobSpec:
        if "container" in req:
            base = dict(req["container"])
        elif isinstance(req.get("definition"), str):
            base = dict(self._definition(req["definition"]))
        else:
            raise JobError(
                "definition: give a registered definition name[:revision] (or an inline container)"
            )
        overrides = req.get("container_overrides") or {}
        base.update({k: overrides[k] for k in ("command", "vcpus", "memory") if k in overrides})
        if "environment" in overrides:
            base["environment"] = {**(base.get("environment") or {}), **overrides["environment"]}
        params = req.get("parameters") or {}
        if not isinstance(params, Mapping):
            raise JobError("parameters: an object of name: value")
        base["parameters"] = {**(base.get("parameters") or {}), **params}
        if req.get("timeout") is not None:
            base["timeout"] = req["timeout"]
        spec = parse_spec(base, self.allowed_roots)
        if req.get("attempts") is not None:
            rs = RetryStrategy.from_json({"attempts": req["attempts"]})
            spec = replace(spec, retry=replace(spec.retry, attempts=rs.attempts))
        return spec

    def _check_fits(self: BatchService, queue: Queue, spec: JobSpec) -> None:
        envs = [self.envs[e] for e in queue.environments if e in self.envs]
        if any(spec.vcpus <= e.max_vcpus + 1e-9 and spec.memory <= e.max_memory for e in envs):
            return
        big = max(envs, key=lambda e: (e.max_vcpus, e.max_memory), default=None)
        where = "no environment"
        if big is not None:
            where = f"the largest available is {big.name} with {big.max_vcpus:g} vCPUs"
            where += f" and {size_text(big.max_memory)}"
        raise JobError(
            f"resources: the job asks for {spec.vcpus:g} vCPUs and {size_text(spec.memory)}, more than any "
            f"compute environment of queue {queue.name} has; {where}",
            "resources_too_large",
        )

    def _queue(self: BatchService, name: Any) -> Queue:
        queue = self.queues.get(str(name or "default"))
        if queue is None:
            raise JobError(
                f"queue: no job queue named {name!r} (known: {', '.join(sorted(self.queues))})",
                "not_found",
                404,
            )
        if queue.state != ENABLED:
            raise JobError(
                f"queue: {queue.name} is DISABLED; enable it or submit to another queue", "queue_disabled"
            )
        return queue

    async def _dependencies(
        self: BatchService, req: Mapping[str, Any], size: int | None
    ) -> list[tuple[str, str]]:
        raw = req.get("depends_on") or []
        if not isinstance(raw, list) or len(raw) > MAX_DEPENDENCIES:
            raise JobError(f"depends_on: a list of at most {MAX_DEPENDENCIES} dependencies")
        deps: list[tuple[str, str]] = []
        for d in raw:
            dep_id, mode = (
                (d.get("job_id"), str(d.get("type", "STANDARD")).upper())
                if isinstance(d, Mapping)
                else (str(d), "STANDARD")
            )
            if mode not in DEP_MODES:
                raise JobError(f"depends_on: type {mode!r} unknown (write one of {', '.join(DEP_MODES)})")
            if mode == "SEQUENTIAL":
                if size is None:
                    raise JobError("depends_on: SEQUENTIAL is for array jobs (give --array-size)")
                deps.append(("", mode))
                continue
            if not isinstance(dep_id, str) or not dep_id:
                raise JobError(f"depends_on: {mode} needs a job_id")
            if any(dep_id == other for other, _ in deps):
                raise JobError(f"depends_on: {dep_id} listed twice")
            dep = self.jobs.get(dep_id)
            if dep is None:
                row = await self.store.read(
                    lambda c, i=dep_id: c.execute(
                        "SELECT array_size, array_index FROM jobs WHERE id=?", (i,)
                    ).fetchone()
                )
                if row is None:
                    raise JobError(f"depends_on: no job {dep_id!r}", "unknown_dependency")
                dep_size = row[0] if row[1] is None else None
            else:
                dep_size = dep.array_size if dep.array_index is None else None
            if mode == "N_TO_N" and (size is None or dep_size != size):
                raise JobError(
                    f"depends_on: N_TO_N needs two array jobs of the same size ({dep_id} has "
                    f"{dep_size or 'no array'}, this job {size or 'no array'})"
                )
            deps.append((dep_id, mode))
        return deps

    async def submit(
        self: BatchService,
        req: Mapping[str, Any],
        *,
        run_step: tuple[str, str] | None = None,
        before_commit: Any = None,
    ) -> dict[str, Any]:
        """Validate, then write the job (and children, dependencies, events) in one transaction."""
        if not isinstance(req, Mapping):
            raise JobError("a job submission must be a JSON object")
        queue = self._queue(req.get("queue"))
        spec = self._resolve_spec(req)
        self._check_fits(queue, spec)
        size = req.get("array_size")
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, int) or not MIN_ARRAY <= size <= MAX_ARRAY
        ):
            raise JobError(f"array_size: an integer {MIN_ARRAY}..{MAX_ARRAY}, got {size!r}", "array_size")
        deps = await self._dependencies(req, size)
        now = time.time()
        job = Job(
            new_job_id(),
            str(req.get("name") or str(req.get("definition") or "job").partition(":")[0]),
            queue.name,
            spec,
            created_at=now,
            array_size=size,
            run_id=run_step[0] if run_step else None,
            step=run_step[1] if run_step else None,
        )
        jobs, dep_rows = expand(job, size, deps)
        new_ids = {j.id for j in jobs}
        status = await self._dependency_states(sorted({d for _, d, _ in dep_rows} - new_ids))
        waiting: dict[str, dict[str, str]] = {}
        for job_id, dep_id, mode in dep_rows:
            waiting.setdefault(job_id, {})[dep_id] = mode
        self._initial_states(jobs, waiting, status, now)
        events = []
        for j in jobs:
            events.append(job_event(replace(j, status=SUBMITTED, status_reason=None), None, now))
            events.append(job_event(replace(j, status=PENDING, status_reason=None), SUBMITTED, now))
            if j.status != PENDING:
                events.append(job_event(j, PENDING, now))
        bus = self.bus

        def tx(conn: sqlite3.Connection) -> list[Any]:
            for j in jobs:
                j.seq = insert_job(conn, j)
            insert_dependencies(conn, dep_rows)
            runs: list[Any] = []
            if before_commit is not None:
                runs.extend(before_commit(conn, job) or [])
            for env in events:
                runs.extend(bus.publish(conn, env, 0))
            return runs

        self.bus.deliver(await self.store.write(tx, heavy=len(jobs) > 10))
        self._admit(jobs, waiting)
        return {"job_id": job.id, "name": job.name, "status": job.status, "array_size": size}

    async def _dependency_states(self: BatchService, ids: list[str]) -> dict[str, tuple[str, str | None]]:
        out = {i: (self.jobs[i].status, self.jobs[i].status_reason) for i in ids if i in self.jobs}
        rest = [i for i in ids if i not in out]

        def read(conn: sqlite3.Connection) -> list[tuple[str, str, str | None]]:
            rows = []
            for at in range(0, len(rest), 500):
                part = rest[at : at + 500]
                sql = f"SELECT id, status, status_reason FROM jobs WHERE id IN ({','.join('?' * len(part))})"
                rows.extend(tuple(r) for r in conn.execute(sql, part))
            return rows

        if rest:
            out.update({r[0]: (r[1], r[2]) for r in await self.store.read(read)})
        return out

    def _initial_states(
        self: BatchService,
        jobs: list[Job],
        waiting: dict[str, dict[str, str]],
        known: dict[str, tuple[str, str | None]],
        now: float,
    ) -> None:
        """Each new job's first state: deps already done are met (or fail it) right away."""
        for j in jobs:
            if j.is_parent:
                j.status, j.status_reason = PENDING, f"array of {j.array_size}; children waiting"
                continue
            deps = waiting.get(j.id, {})
            for dep_id, mode in list(deps.items()):
                status, reason = known.get(dep_id, (None, None))
                if status == FAILED and mode != "ALL_DONE":
                    j.status, j.status_reason, j.stopped_at = (
                        FAILED,
                        f"Dependent job {dep_id} failed: {reason}",
                        now,
                    )
                    break
                if status in DONE:
                    del deps[dep_id]
            if j.status == FAILED:
                continue
            if deps:
                j.status, j.status_reason = (
                    PENDING,
                    f"waiting for {len(deps)} dependencies: {', '.join(list(deps)[:3])}",
                )
            else:
                j.status, j.status_reason, j.runnable_at = RUNNABLE, "waiting for capacity", now

    def _admit(self: BatchService, jobs: list[Job], waiting: dict[str, dict[str, str]]) -> None:
        parent = jobs[0] if jobs[0].is_parent else None
        if parent is not None:
            self.jobs[parent.id] = parent
            self.array_left[parent.id] = len(jobs) - 1
        settled: list[Any] = []
        for j in jobs[1:] if parent is not None else jobs:
            if j.status == FAILED:
                settled.append(j)
                continue
            self.jobs[j.id] = j
            if j.status == RUNNABLE:
                self.index.add(j.queue, slot_of(j))
            elif waiting.get(j.id):
                self.waiting_on[j.id] = waiting[j.id]
                for dep_id in waiting[j.id]:
                    self.dependents.setdefault(dep_id, []).append(j.id)
        if settled:
            changes = [c for j in settled for c in self._settle(j)]
            if changes:
                task = asyncio.ensure_future(self.commit(changes))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        self.wake()

    # -- cancel / terminate -------------------------------------------------------------------

    async def cancel(self: BatchService, job_id: str, reason: str | None = None) -> dict[str, Any]:
        """AWS CancelJob: a job not started yet -> FAILED; STARTING/RUNNING are left (use terminate)."""
        return await self._stop_job(job_id, reason or CANCELLED_REASON, terminate=False)

    async def terminate(self: BatchService, job_id: str, reason: str | None = None) -> dict[str, Any]:
        """AWS TerminateJob: like cancel, and STARTING/RUNNING ones get SIGTERM, grace, SIGKILL."""
        return await self._stop_job(job_id, reason or TERMINATED_REASON, terminate=True)

    async def _stop_job(self: BatchService, job_id: str, reason: str, *, terminate: bool) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None:
            found = await self.describe(job_id)
            if found is None:
                raise JobError(f"no job {job_id!r}", "not_found", 404)
            return {"job_id": job_id, "status": found["status"], "changed": 0}
        targets = [j for j in self.jobs.values() if j.parent_id == job_id] if job.is_parent else [job]
        pending = [j for j in targets if j.status in NOT_STARTED]
        running = [j for j in targets if j.status not in NOT_STARTED]
        if not job.is_parent and running and not terminate:
            raise JobError(
                f"job {job_id} is {job.status}; cancel only stops jobs not started yet (use terminate)",
                "not_cancellable",
                409,
            )
        changes = []
        now = time.time()
        for j in pending:
            if j.status not in NOT_STARTED:  # failed meanwhile: its SEQUENTIAL predecessor was just cancelled
                continue
            old = j.status
            self.index.remove(j.queue, j.id)
            self.waiting_on.pop(j.id, None)
            j.status, j.status_reason, j.stopped_at = FAILED, reason, now
            changes.append((j, old))
            changes.extend(self._settle(j))
        if changes:
            await self.commit(changes)
        if terminate:
            await asyncio.gather(*(self._terminate_attempt(j, reason) for j in running))
        self.wake()
        return {
            "job_id": job_id,
            "status": job.status,
            "changed": len(pending) + (len(running) if terminate else 0),
        }

    async def _terminate_attempt(self: BatchService, job: Job, reason: str) -> None:
        self._terminating[job.id] = reason
        task = self._attempts.get(job.id)
        runner = self._runner_for(job)
        while task is not None and not task.done():
            cid = runner.running.get((job.id, job.attempts))
            if cid is not None:
                await runner.terminate(cid, self.stop_grace_s, reason)
            await asyncio.wait([task], timeout=0.5)

    # -- reading ------------------------------------------------------------------------------

    async def describe(self: BatchService, job_id: str) -> dict[str, Any] | None:
        out = await self.store.read(lambda c: describe_rows(c, job_id))
        if out is not None and out["status"] == RUNNABLE:
            out["status_reason"] = self.waiting_reason(job_id) or out["status_reason"]
        return out

    def waiting_reason(self: BatchService, job_id: str) -> str | None:
        job = self.jobs.get(job_id)
        if job is None or job.status != RUNNABLE:
            return None
        slot = self.index.get(job.queue, job_id)
        queue = self.queues.get(job.queue)
        if slot is None or queue is None:
            return None
        return explain(slot, queue, self.envs, self.reservations)

    async def list_jobs(
        self: BatchService,
        queue: str | None = None,
        status: str | None = None,
        limit: int = 100,
        parent: str | None = None,
    ) -> list[dict[str, Any]]:
        where, args = ["1=1"], []
        for col, val in (("queue", queue), ("status", status), ("parent_id", parent)):
            if val:
                where.append(f"{col}=?")
                args.append(val)
        if parent is None:
            where.append("parent_id IS NULL")
        sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
        rows = await self.store.read(lambda c: [public_row(r) for r in c.execute(sql, (*args, int(limit)))])
        for r in rows:
            if r["status"] == RUNNABLE:
                r["status_reason"] = self.waiting_reason(r["job_id"]) or r["status_reason"]
        return rows


def _create_or_update(kind: str, name: str, old: object | None, create: bool) -> None:
    """POST makes a new one, PATCH changes an existing one: refuse the other case (409 / 404)."""
    if create == (old is not None) or not name:
        raise JobError(
            f"{kind} {name!r} {'already exists' if old else 'does not exist'}",
            "conflict" if old else "not_found",
            409 if old else 404,
        )


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise JobError(f"{where}: a positive number, got {value!r}")
    return float(value)


def _state(value: Any) -> str:
    text = str(value).upper()
    if text not in _STATES:
        raise JobError(f"state: ENABLED or DISABLED, got {value!r}")
    return text


__all__ = ["STARTING", "SubmitMixin"]


def expand(
    job: Job, size: int | None, deps: list[tuple[str, str]]
) -> tuple[list[Job], list[tuple[str, str, str]]]:
    """The job and its array children, and each one's dependency rows (N_TO_N, SEQUENTIAL spelled out)."""
    if size is None:
        return [job], [(job.id, d, "ALL_DONE" if m == "ALL_DONE" else "STANDARD") for d, m in deps]
    jobs, rows = [job], []
    for i in range(size):
        child = replace(
            job, id=f"{job.id}:{i}", name=f"{job.name}:{i}", parent_id=job.id, array_index=i, array_size=None
        )
        jobs.append(child)
        for d, m in deps:
            if m == "SEQUENTIAL":
                if i > 0:
                    rows.append((child.id, f"{job.id}:{i - 1}", "STANDARD"))
            else:
                dep = f"{d}:{i}" if m == "N_TO_N" else d
                rows.append((child.id, dep, "ALL_DONE" if m == "ALL_DONE" else "STANDARD"))
    return jobs, rows
