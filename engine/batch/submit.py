"""Submitting, cancelling and terminating jobs; registering definitions, queues, environments.

Every input is checked against the book (the in-memory state) *before* anything is written, so
bad input gets a :class:`~engine.batch.jobs.JobError` naming the field and leaves no row, event
or container.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.batch import arrays, config_rows, environments, rows, settings
from engine.batch import hosts as hosting
from engine.batch.attempts import Attempts
from engine.batch.book import Book
from engine.batch.detail import job_event
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
    SUBMITTED,
    TERMINATED_REASON,
    Job,
    JobError,
    JobSpec,
    RetryStrategy,
    check_command,
    new_job_id,
    parse_spec,
)
from engine.batch.ledger import Ledger
from engine.batch.queues import ENABLED, MAX_QUEUE_ENVIRONMENTS, Environment, Queue, size_text
from engine.store.store import Store

#: runs in a job's transaction (the runs it starts are delivered with it); raising writes nothing
BeforeCommit = Callable[[sqlite3.Connection, Job], "list[Any] | None"]

_STATES = (ENABLED, "DISABLED")
_NO_SECRETS = (
    "secrets: only a workflow's container step passes ${env:...} values to a job "
    "(put the value in environment, or run the job from a workflow)"
)


class Submitter:
    def __init__(
        self,
        store: Store,
        book: Book,
        ledger: Ledger,
        attempts: Attempts,
        allowed_roots: Sequence[Path],
        wake: Callable[[], None],
    ) -> None:
        self.store, self.book, self.ledger, self.attempts = store, book, ledger, attempts
        self.allowed_roots, self.wake = allowed_roots, wake
        self._background: set[asyncio.Future[Any]] = set()

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()

    # -- definitions --------------------------------------------------------------------------

    async def register_definition(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Register ``body`` as the next revision of its name (AWS RegisterJobDefinition)."""
        name = body.get("name") if isinstance(body, Mapping) else None
        if not isinstance(name, str) or not name.strip() or ":" in name:
            raise JobError("name: required, letters, digits, - and _ (no colon)")
        if "secrets" in body:
            raise JobError(_NO_SECRETS)
        check_command(parse_spec(body, self.allowed_roots))
        clean = {k: v for k, v in body.items() if k != "name"}
        revision = max(self.book.definitions.get(name, {0: None}), default=0) + 1
        now = time.time()
        await self.store.write(lambda c: config_rows.insert_definition(c, name, revision, clean, now))
        self.book.definitions.setdefault(name, {})[revision] = ("ACTIVE", clean)
        return {"name": name, "revision": revision, "arn": f"{name}:{revision}"}

    def list_definitions(self) -> list[dict[str, Any]]:
        return [
            {"name": name, "revision": rev, "status": status, **body}
            for name, revs in sorted(self.book.definitions.items())
            for rev, (status, body) in sorted(revs.items())
        ]

    def resolve_definition(self, ref: str, *, for_submit: bool = True) -> tuple[str, int, dict[str, Any]]:
        """``name`` (the latest ACTIVE revision) or ``name:revision`` -> (name, revision, body).

        As in AWS Batch, a name alone never picks an INACTIVE (deregistered) revision, and a job is
        not submitted to one named explicitly either; DescribeJobDefinitions still shows them."""
        name, _, rev = ref.partition(":")
        revs = self.book.definitions.get(name)
        if not revs:
            known = ", ".join(sorted(self.book.definitions)) or "none registered"
            raise JobError(f"definition: no job definition named {name!r} (known: {known})", "not_found", 404)
        if rev:
            if not rev.isdigit() or int(rev) not in revs:
                raise JobError(
                    f"definition: {name} has no revision {rev} (latest is {max(revs)})", "not_found", 404
                )
            number = int(rev)
            if for_submit and revs[number][0] != "ACTIVE":
                raise JobError(
                    f"definition: {name}:{number} is INACTIVE (deregistered); submit with {name} "
                    "for its latest ACTIVE revision, or register it again",
                    "inactive_definition",
                )
            return name, number, revs[number][1]
        active = [r for r, (status, _) in revs.items() if status == "ACTIVE"]
        if not active:
            raise JobError(
                f"definition: every revision of {name} is INACTIVE (deregistered); register it again",
                "inactive_definition",
            )
        return name, max(active), revs[max(active)][1]

    async def deregister_definition(self, ref: str) -> dict[str, Any]:
        """AWS DeregisterJobDefinition: the revision becomes INACTIVE (kept, never deleted).

        ``name`` alone deregisters its latest ACTIVE revision. Jobs already submitted with it
        are not touched. Deregistering an INACTIVE revision again changes nothing."""
        name, rev, _ = self.resolve_definition(ref, for_submit=False)
        status, body = self.book.definitions[name][rev]
        if status != "INACTIVE":
            await self.store.write(lambda c: config_rows.set_definition_status(c, name, rev, "INACTIVE"))
            self.book.definitions[name][rev] = ("INACTIVE", body)
        return {"name": name, "revision": rev, "status": "INACTIVE"}

    # -- queues and environments --------------------------------------------------------------

    async def put_environment(self, body: Mapping[str, Any], *, create: bool) -> dict[str, Any]:
        name = str(body.get("name") or "")
        old = self.book.envs.get(name)
        _create_or_update("environment", name, old, create)
        kind, endpoint, config = environments.settle(body, old)
        body = environments.bounds(body, old, config)
        env = Environment(
            name,
            _positive(body.get("max_vcpus", old.max_vcpus if old else None), "max_vcpus"),
            int(_positive(body.get("max_memory", old.max_memory if old else None), "max_memory")),
            _state(body.get("state", old.state if old else ENABLED)),
            endpoint,
            type=kind,
            config=config,
            hosts=hosting.from_config(config, old.capacity().get("hosts", {}) if old is not None else {}),
        )
        settings.environment_capacity(body, old, env)
        now = time.time()
        await self.store.write(lambda c: config_rows.save_environment(c, env, now))
        if old is not None:
            env.used_vcpus, env.used_memory = old.used_vcpus, old.used_memory
            hosting.carry(old.hosts, env.hosts)
        self.book.envs[name] = env
        self.wake()
        return env.public()

    async def put_queue(self, body: Mapping[str, Any], *, create: bool) -> dict[str, Any]:
        name = str(body.get("name") or "")
        old = self.book.queues.get(name)
        _create_or_update("queue", name, old, create)
        envs = body.get("environments", list(old.environments) if old else None)
        if (
            not isinstance(envs, list)
            or not 1 <= len(envs) <= MAX_QUEUE_ENVIRONMENTS
            or not all(isinstance(e, str) for e in envs)
        ):
            raise JobError(f"environments: a list of 1..{MAX_QUEUE_ENVIRONMENTS} compute environment names")
        missing = [e for e in envs if e not in self.book.envs]
        if missing:
            raise JobError(
                f"environments: no compute environment {missing[0]!r} (known: {', '.join(self.book.envs)})"
            )
        priority = body.get("priority", old.priority if old else 1)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise JobError(f"priority: an integer (higher runs first), got {priority!r}")
        queue = Queue(
            name,
            priority,
            tuple(envs),
            _state(body.get("state", old.state if old else ENABLED)),
            settings.preemption(body, old),
            settings.policy_name(body, old, self.book.policies),
        )
        now = time.time()
        await self.store.write(lambda c: config_rows.save_queue(c, queue, now))
        self.book.queues[name] = queue
        self.wake()
        return queue.public()

    async def delete_environment(self, name: str) -> None:
        """AWS DeleteComputeEnvironment: only a DISABLED one that no queue uses."""
        env = self.book.envs.get(name)
        if env is None:
            raise JobError(f"compute environment {name!r} does not exist", "not_found", 404)
        if env.state != "DISABLED":
            raise JobError(f"compute environment {name} is ENABLED; disable it before deleting it")
        users = sorted(q.name for q in self.book.queues.values() if name in q.environments)
        if users:
            raise JobError(f"compute environment {name} is used by job queue(s) {', '.join(users)}")
        if env.used_vcpus > 0:
            raise JobError(f"compute environment {name} still runs jobs; wait for them to end")
        await self.store.write(lambda c: config_rows.delete_environment(c, name))
        del self.book.envs[name]

    async def delete_queue(self, name: str) -> None:
        """AWS DeleteJobQueue: only a DISABLED one; unlike AWS, one holding unfinished jobs is kept."""
        queue = self.book.queues.get(name)
        if queue is None:
            raise JobError(f"job queue {name!r} does not exist", "not_found", 404)
        if queue.state != "DISABLED":
            raise JobError(f"job queue {name} is ENABLED; disable it before deleting it")
        left = await self.store.read(lambda c: rows.unfinished_in_queue(c, name))
        if left:
            raise JobError(
                f"job queue {name} still holds {left} unfinished job(s); cancel or terminate them first"
            )
        await self.store.write(lambda c: config_rows.delete_queue(c, name))
        del self.book.queues[name]

    # -- submit -------------------------------------------------------------------------------

    def _resolve_spec(self, req: Mapping[str, Any]) -> JobSpec:
        if "container" in req:
            if not isinstance(req["container"], Mapping):
                raise JobError("container: an object (image, command, vcpus, memory, ...)")
            base = dict(req["container"])
        elif isinstance(req.get("definition"), str):
            name, rev, body = self.resolve_definition(req["definition"])
            base = {k: v for k, v in body.items() if k != "tags"}  # a definition's tags stay its own
            base["definition"] = f"{name}:{rev}"
        else:
            raise JobError(
                "definition: give a registered definition name[:revision] (or an inline container)"
            )
        overrides = req.get("container_overrides") or {}
        if not isinstance(overrides, Mapping):
            raise JobError("container_overrides: an object of command, vcpus, memory, environment")
        base.update({k: overrides[k] for k in ("command", "vcpus", "memory") if k in overrides})
        if "environment" in overrides:
            if not isinstance(overrides["environment"], Mapping):
                raise JobError("container_overrides.environment: an object of NAME: value")
            base["environment"] = {**(base.get("environment") or {}), **overrides["environment"]}
        params = req.get("parameters") or {}
        if not isinstance(params, Mapping):
            raise JobError("parameters: an object of name: value")
        base["parameters"] = {**(base.get("parameters") or {}), **params}
        if req.get("timeout") is not None:
            base["timeout"] = req["timeout"]
        for key in ("retry_strategy", "tags", "scheduling_priority", "preemptible", "share_identifier"):
            if req.get(key) is not None:
                base[key] = req[key]
        spec = parse_spec(base, self.allowed_roots)
        check_command(spec)
        if req.get("attempts") is not None:
            rs = RetryStrategy.from_json({"attempts": req["attempts"]})
            spec = replace(spec, retry=replace(spec.retry, attempts=rs.attempts))
        return spec

    def _check_fits(self, queue: Queue, spec: JobSpec) -> None:
        envs = [self.book.envs[e] for e in queue.environments if e in self.book.envs]
        if any(e.holds(spec.vcpus, spec.memory) for e in envs):
            return
        big = max(envs, key=lambda e: (e.max_vcpus, e.max_memory), default=None)
        where = "no environment"
        if big is not None:
            where = f"the largest available is {big.name} with {big.max_vcpus:g} vCPUs"
            where += f" and {size_text(big.max_memory)}"
            if big.hosts:
                most = max(big.hosts, key=lambda h: (h.vcpus, h.memory))
                where += f"; a job runs on one host, the largest {most.name} with {most.vcpus:g} vCPUs"
        raise JobError(
            f"resources: the job asks for {spec.vcpus:g} vCPUs and {size_text(spec.memory)}, more than any "
            f"compute environment of queue {queue.name} has; {where}",
            "resources_too_large",
        )

    def _queue(self, name: Any) -> Queue:
        queue = self.book.queues.get(str(name or "default"))
        if queue is None:
            raise JobError(
                f"queue: no job queue named {name!r} (known: {', '.join(sorted(self.book.queues))})",
                "not_found",
                404,
            )
        if queue.state != ENABLED:
            raise JobError(
                f"queue: {queue.name} is DISABLED; enable it or submit to another queue", "queue_disabled"
            )
        return queue

    async def _dependencies(self, req: Mapping[str, Any], size: int | None) -> list[tuple[str, str]]:
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
            dep = self.book.jobs.get(dep_id)
            if dep is None:
                shape = await self.store.read(functools.partial(rows.array_shape, job_id=dep_id))
                if shape is None:
                    raise JobError(f"depends_on: no job {dep_id!r}", "unknown_dependency")
                dep_size = shape[0] if shape[1] is None else None
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
        self,
        req: Mapping[str, Any],
        *,
        run_step: tuple[str, str] | None = None,
        before_commit: BeforeCommit | None = None,
        per_child: Callable[[JobSpec, int], JobSpec] | None = None,
    ) -> dict[str, Any]:
        """Validate, then write the job (and children, dependencies, events) in one transaction.

        ``per_child(spec, i)`` gives array child *i* its own spec (a container step's
        ``for_each``, whose array may have a single child); a ChildError from it fails that child
        alone, at once, as a failed dependency would."""
        if not isinstance(req, Mapping):
            raise JobError("a job submission must be a JSON object")
        if run_step is None and isinstance(req.get("container"), Mapping) and "secrets" in req["container"]:
            raise JobError(_NO_SECRETS)
        queue = self._queue(req.get("queue"))
        spec = self._resolve_spec(req)
        self._check_fits(queue, spec)
        settings.check_share(queue, spec.share)
        size = req.get("array_size")
        low = 1 if per_child is not None else MIN_ARRAY
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, int) or not low <= size <= MAX_ARRAY
        ):
            raise JobError(
                f"array_size: an integer {low}..{MAX_ARRAY} (as on AWS Batch), got {size!r}; "
                "leave it out for a single job",
                "array_size",
            )
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
        jobs, dep_rows = await arrays.expand(job, size, deps, per_child)
        new_ids = {j.id for j in jobs}
        status = await self._dependency_states(sorted({d for _, d, _ in dep_rows} - new_ids))
        waiting: dict[str, dict[str, str]] = {}
        for job_id, dep_id, mode in dep_rows:
            waiting.setdefault(job_id, {})[dep_id] = mode
        self._initial_states(jobs, waiting, status, now)
        events = []
        deps_of: dict[str, list[tuple[str, str]]] = {}
        for job_id, dep_id, mode in dep_rows:
            deps_of.setdefault(job_id, []).append((dep_id, mode))
        if len(jobs) > arrays.ARRAY_CHUNK + 1:
            await self._submit_in_chunks(jobs, deps_of, waiting, now, before_commit)
            return {"job_id": job.id, "name": job.name, "status": job.status, "array_size": size}
        counts = Counter(j.status for j in jobs[1:]) if job.is_parent else None
        for j in jobs:
            deps, summary = deps_of.get(j.id, []), counts if j.is_parent else None
            for early in (SUBMITTED, PENDING):
                events.append(job_event(replace(j, status=early, status_reason=None), now, (), deps, summary))
            if j.status != PENDING:
                events.append(job_event(j, now, (), deps, summary))
        bus = self.ledger.bus

        def tx(conn: sqlite3.Connection) -> list[Any]:
            for j in jobs:
                j.seq = rows.insert_job(conn, j)
            rows.insert_dependencies(conn, dep_rows)
            runs: list[Any] = []
            if before_commit is not None:
                runs.extend(before_commit(conn, job) or [])
            for env in events:
                runs.extend(bus.publish(conn, env, 0))
            return runs

        bus.deliver(await self.store.write(tx, heavy=len(jobs) > 10))
        self._admit(jobs, waiting)
        return {"job_id": job.id, "name": job.name, "status": job.status, "array_size": size}

    async def _submit_in_chunks(
        self,
        jobs: list[Job],
        deps_of: dict[str, list[tuple[str, str]]],
        waiting: dict[str, dict[str, str]],
        now: float,
        before_commit: Any,
    ) -> None:
        """A big array: the parent (and its events) in one commit, then its children in chunks.

        One transaction of 10,000 children and their 30,000 events held the store for over a
        second; in chunks of ``ARRAY_CHUNK`` every other write gets in between. Until a child's
        row is written the parent's ``statusSummary`` counts it SUBMITTED (rows.array_summary), so
        the counts always add up to the array's size. The children are in the book from the
        start (a cancel reaches them all), but out of the scheduler's index until their chunk is
        committed, and a change to one before that lands with its chunk (``Book.unwritten``).
        """
        parent, children = jobs[0], jobs[1:]
        bus = self.ledger.bus
        # children failed at once (an item that does not fit) go with the parent: a crash before
        # their chunk would otherwise end them INTERRUPTED, their own reason lost. Only the first
        # chunk's worth: a template that fits no item of 10,000 must not bring back the one
        # transaction the chunks exist to avoid (the others keep their place in the chunks)
        failed = [j for j in children if j.status == FAILED][: arrays.ARRAY_CHUNK]
        with_parent = {j.id for j in failed}
        children = [j for j in children if j.id not in with_parent]
        write_failed = arrays.chunk_tx(bus, failed, deps_of, now)
        # what the store says until the children are written
        summary = {SUBMITTED: len(children), **({FAILED: len(failed)} if failed else {})}
        events = [
            job_event(replace(parent, status=early, status_reason=None), now, (), (), summary)
            for early in (SUBMITTED, PENDING)
        ]

        def first(conn: sqlite3.Connection) -> list[Any]:
            parent.seq = rows.insert_job(conn, parent)
            runs: list[Any] = list(before_commit(conn, parent) or []) if before_commit is not None else []
            for env in events:
                runs.extend(bus.publish(conn, env, 0))
            runs.extend(write_failed(conn))
            return runs

        bus.deliver(await self.store.write(first))
        self.book.unwritten.update(j.id for j in children)
        self._admit(jobs, waiting)
        # the caller may go (an HTTP client hangs up): the children are written all the same
        task = asyncio.ensure_future(
            arrays.write_children(self.store, self.book, bus, children, deps_of, now, self.wake)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        await asyncio.shield(task)

    async def _dependency_states(self, ids: list[str]) -> dict[str, tuple[str, str | None]]:
        jobs = self.book.jobs
        out = {i: (jobs[i].status, jobs[i].status_reason) for i in ids if i in jobs}
        rest = [i for i in ids if i not in out]
        if rest:
            out.update({r[0]: (r[1], r[2]) for r in await self.store.read(lambda c: rows.statuses(c, rest))})
        return out

    def _initial_states(
        self,
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
            if j.status == FAILED:  # its own spec could not be made (arrays.expand): it never runs
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

    def _admit(self, jobs: list[Job], waiting: dict[str, dict[str, str]]) -> None:
        changes = self.book.admit(jobs, waiting)
        if changes:  # children failed at once (a failed dependency): commit what that settled
            task = asyncio.ensure_future(self.ledger.commit(changes))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self.wake()

    # -- cancel / terminate -------------------------------------------------------------------

    async def cancel(self, job_id: str, reason: str | None = None) -> dict[str, Any]:
        """AWS CancelJob: a job not started yet -> FAILED; STARTING/RUNNING are left (use terminate)."""
        return await self._stop_job(job_id, reason or CANCELLED_REASON, terminate=False)

    async def terminate(self, job_id: str, reason: str | None = None) -> dict[str, Any]:
        """AWS TerminateJob: like cancel, and STARTING/RUNNING ones get SIGTERM, grace, SIGKILL."""
        return await self._stop_job(job_id, reason or TERMINATED_REASON, terminate=True)

    async def _stop_job(self, job_id: str, reason: str, *, terminate: bool) -> dict[str, Any]:
        job = self.book.jobs.get(job_id)
        if job is None:
            status = await self.store.read(lambda c: rows.status_of(c, job_id))
            if status is None:
                raise JobError(f"no job {job_id!r}", "not_found", 404)
            return {"job_id": job_id, "status": status, "changed": 0}
        targets = [j for j in self.book.jobs.values() if j.parent_id == job_id] if job.is_parent else [job]
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
            changes.extend(self.book.withdraw(j, reason, now))
        if changes:
            await self.ledger.commit(changes)
        if terminate:
            await asyncio.gather(*(self.attempts.terminate(j, reason) for j in running))
        self.wake()
        return {
            "job_id": job_id,
            "status": job.status,
            "changed": len(pending) + (len(running) if terminate else 0),
        }


def _create_or_update(kind: str, name: str, old: object | None, create: bool) -> None:
    """POST makes a new one, PATCH changes an existing one: refuse the other case (409 / 404)."""
    if not name:  # not "'' does not exist" (a 404 for a create): the request lacks a field
        raise JobError(f"name: required, the {kind}'s name (letters, digits, - and _)")
    if create == (old is not None):
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
