"""Recovery after a restart: finish what a crash interrupted, re-adopt containers, report strangers.

Containers carry ``sluice.job-id`` and ``sluice.attempt`` labels, so the store and Docker
together say where each job was:

- RUNNING (or STARTING) and its container still exists: re-adopted, never started again;
- RUNNING and its container is gone: the result the attempt recorded before its container was
  removed finishes it; with no recorded result (the container was removed behind our back) it
  ended ``ContainerLost`` and its retry strategy decides;
- STARTING and no container: put back to RUNNABLE and started again (nothing ran);
- a managed container no unfinished job claims: reported (log and audit row), never killed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from engine.batch import rows
from engine.batch.attempts import Attempts
from engine.batch.book import Book
from engine.batch.jobs import RUNNABLE, RUNNING, STARTING, Job, slot_of
from engine.batch.ledger import Ledger
from engine.executors.docker import ContainerResult
from engine.executors.docker_api import DockerError
from engine.store import audit
from engine.store.store import Store

log = logging.getLogger(__name__)

LOST = "ContainerLost: the container was gone after an engine restart"


class Recovery:
    def __init__(self, store: Store, book: Book, ledger: Ledger, attempts: Attempts) -> None:
        self.store, self.book, self.ledger, self.attempts = store, book, ledger, attempts

    async def run(self) -> None:
        await self._settle_loaded_dependencies()
        await self._recover_containers()

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
        try:
            managed = await self.attempts.runner.find_managed()
        except DockerError as exc:
            log.warning("cannot list managed containers: %s", exc)
            managed = []
        by_job = {(c["labels"].get("sluice.job-id"), c["labels"].get("sluice.attempt")): c for c in managed}
        open_jobs = [j for j in self.book.jobs.values() if j.status in (STARTING, RUNNING)]
        recorded = await self.store.read(
            lambda c: rows.recorded_results(c, [(j.id, j.attempts) for j in open_jobs])
        )
        for job in open_jobs:
            found = by_job.pop((job.id, str(job.attempts)), None)
            if found is not None and found["state"] != "created":
                self.attempts.adopt(job, found["id"])
            elif job.status == STARTING and (job.id, job.attempts) not in recorded:
                if found is not None:
                    await self.attempts.remove_unstarted(job, found["id"])
                await self._restart_attempt(job)
            else:
                result = recorded.get((job.id, job.attempts)) or ContainerResult(None, None, LOST)
                if result.status_reason != LOST:
                    log.info("job %s: its container ended before the restart; recording its result", job.id)
                self.attempts.finish_lost(job, result)
        await self._report_unknown(list(by_job.values()))

    async def _restart_attempt(self, job: Job) -> None:
        self.book.release(job)
        job.status, job.runnable_at = RUNNABLE, time.time()
        job.attempts -= 1
        job.status_reason = "the engine restarted before the container was created; starting it again"
        self.book.index.add(job.queue, slot_of(job))
        await self.ledger.commit([(job, STARTING)])

    async def _report_unknown(self, containers: list[dict[str, Any]]) -> None:
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
        entries = [
            (
                "unknown-container",
                c["id"],
                {"name": c["name"], "labels": c["labels"], "state": c["state"]},
                now,
            )
            for c in containers
        ]
        await self.store.write(lambda conn: audit.insert_many(conn, entries))
