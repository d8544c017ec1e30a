"""Recovery after a restart: finish what a crash interrupted, re-adopt containers, report strangers.

Containers carry ``sluice.job-id`` and ``sluice.attempt`` labels, so the store and Docker
together say where each job was:

- RUNNING (or STARTING) and its container still exists: re-adopted, never started again;
- RUNNING and its container is gone: the result the attempt recorded before its container was
  removed finishes it; with no recorded result (the container was removed behind our back) it
  ended ``ContainerLost`` and its retry strategy decides;
- STARTING and no container: put back to RUNNABLE and started again (nothing ran);
- a managed container no unfinished job claims: this store's own (its ``sluice.store`` label) is
  removed once its log file is found, another store's is left alone, one made by an older Sluice
  (no store label) is reported (log and audit row), never killed (:mod:`engine.batch.leftovers`).

Before that, the book is made whole: an array's children never stored end FAILED, an array whose
children have all ended ends by the array rule, and a job whose dependencies ended is freed (or
failed), each with the events it would have had, once.

A Slurm environment answers the same questions with its jobs (found by their comment, or by the
Slurm job id stored when ``sbatch`` answered): an attempt Slurm accepted is followed again,
whatever state it is in, and never submitted a second time.
"""

from __future__ import annotations

import logging
import time

from engine.batch import arrays, interrupts, rows
from engine.batch.attempts import Attempts
from engine.batch.book import Book
from engine.batch.jobs import RUNNABLE, STARTING, Job, slot_of
from engine.batch.ledger import Ledger
from engine.batch.leftovers import Found, Leftovers, claimed
from engine.executors.compute import ComputeRunner
from engine.executors.docker import LABEL_ATTEMPT, LABEL_JOB, LABEL_STORE, ContainerResult
from engine.executors.docker_api import DockerError
from engine.executors.slurm import SlurmError
from engine.store.store import Store

log = logging.getLogger(__name__)

LOST = "ContainerLost: the container was gone after an engine restart"


class Recovery:
    def __init__(self, store: Store, book: Book, ledger: Ledger, attempts: Attempts) -> None:
        self.store, self.book, self.ledger, self.attempts = store, book, ledger, attempts

    async def run(self) -> None:
        await self._finish_interrupted_arrays()
        await self._settle_ended_arrays()
        await self._settle_loaded_dependencies()
        await self._recover_containers()

    async def _finish_interrupted_arrays(self) -> None:
        """A crash while a big array was being written: the children never stored end FAILED."""
        missing = await self.store.read(rows.unwritten_children)
        if not missing:
            return
        for parent_id, indexes in missing.items():
            log.warning("array %s: %d children were never stored (the engine stopped while it was "
                        "submitted); they end FAILED", parent_id, len(indexes))  # fmt: skip
        changes, write = arrays.finish_interrupted(self.book, missing, time.time())
        await self.ledger.commit(changes, extra=write)

    async def _settle_ended_arrays(self) -> None:
        """A crash after a submission whose children all ended at once, before the parent's end."""
        changes = self.book.settle_ended_arrays()
        for job, _ in changes:
            if job.is_parent:
                log.warning("array %s: its children had all ended, its own end was not stored; it ends %s",
                            job.id, job.status)  # fmt: skip
        if changes:
            await self.ledger.commit(changes)

    async def _settle_loaded_dependencies(self) -> None:
        """After a crash between a job's end and its dependents' update: finish that work now."""
        ids = [d for d in self.book.dependents if d not in self.book.jobs]
        if not ids:
            return
        stored = await self.store.read(lambda c: rows.statuses(c, ids))
        changes = self.book.settle_stored(stored)
        if changes:
            await self.ledger.commit(changes)

    async def _recover_containers(self) -> None:
        # an array parent is RUNNING while a child runs, but it never has an attempt of its own
        owned = claimed(self.book)
        open_jobs = [j for j in self.book.jobs.values() if (j.id, str(j.attempts)) in owned]
        pairs = [(j.id, j.attempts) for j in open_jobs]
        recorded = await self.store.read(lambda c: rows.recorded_results(c, pairs))
        submitted = await self.store.read(lambda c: rows.slurm_ids(c, pairs))
        # attempts a preemption was ending: they end requeued, and nothing is preempted again
        self.book.preempting.update(await self.store.read(lambda c: interrupts.preempt_marks(c, pairs)))
        # each backend answers for its own jobs; the local engine is asked even with none
        local = self.attempts.runner
        groups: dict[int, tuple[ComputeRunner, list[Job]]] = {id(local): (local, [])}
        for job in open_jobs:
            runner = self.attempts.runner_for(job)
            groups.setdefault(id(runner), (runner, []))[1].append(job)
        strangers: dict[str, Found] = {}
        for runner, jobs in groups.values():
            try:
                managed = await runner.find_managed()
            except (DockerError, SlurmError) as exc:
                log.warning("cannot list what %r holds: %s", runner, exc)
                managed = []
            # another store's container is never adopted, whatever its job id
            mine = (None, self.attempts.store_id)
            by_job = {
                (c["labels"].get(LABEL_JOB), c["labels"].get(LABEL_ATTEMPT)): c
                for c in managed
                if c["labels"].get(LABEL_STORE) in mine
            }
            others = [c for c in managed if c["labels"].get(LABEL_STORE) not in mine]
            strangers.update((c["id"], (runner, c)) for c in others)
            for job in jobs:
                key = (job.id, job.attempts)
                found = by_job.pop((job.id, str(job.attempts)), None)
                if found is None and key in submitted and key not in recorded:
                    # handed to Slurm before the crash: follow that job, never submit it again
                    found = {"id": submitted[key], "state": "submitted"}
                if found is not None and found["state"] != "created":
                    self.attempts.adopt(job, found["id"])
                elif job.status == STARTING and key not in recorded:
                    if found is not None:
                        await self.attempts.remove_unstarted(job, found["id"])
                    await self._restart_attempt(job)
                else:
                    result = recorded.get(key) or ContainerResult(None, None, LOST)
                    if result.status_reason != LOST:
                        log.info("job %s: its attempt ended before the restart; recording its result", job.id)
                    self.attempts.finish_lost(job, result)
            # two runners may reach one daemon (local and its socket): report each container once
            for labels, c in by_job.items():
                if labels not in owned:
                    strangers[c["id"]] = (runner, c)
        await Leftovers(self.store, self.book, self.attempts).settle(list(strangers.values()))

    async def _restart_attempt(self, job: Job) -> None:
        self.book.release(job)
        job.status, job.runnable_at = RUNNABLE, time.time()
        job.attempts -= 1
        job.status_reason = "the engine restarted before the container was created; starting it again"
        self.book.index.add(job.queue, slot_of(job))
        await self.ledger.commit([(job, STARTING)])
