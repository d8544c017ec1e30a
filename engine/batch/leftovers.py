"""Managed containers no unfinished job claims: this store's are removed, another's left alone.

Every container the engine starts carries ``sluice.store`` with its store's id, so on a daemon
several engines share (two data dirs, a test run beside a server) each knows its own. One that
no unfinished job of this store claims is a leftover of a finished attempt: the engine was
killed after the container ended but before it was removed, its host was unreachable when the
job ended (the attempt ended ``ContainerLost``) and came back, or its removal failed. As AWS
Batch does for its jobs, it is removed (``docker rm -f``, even if it still runs: its attempt is
over and nothing will follow it again), once its attempt's log file is found where the store
says it is; without that file it is left, with a warning that says what to do.

A container of another store is left alone without a word (that engine answers for it). One
with no ``sluice.store`` label was made by an older Sluice and cannot be told apart: it is
reported (log and ``unknown-container`` audit row), never removed.

This runs at start (:mod:`engine.batch.recovery`) and when a host of an environment with several
comes into service after its health check (:mod:`engine.batch.scaling`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from engine.batch import rows
from engine.batch.attempts import Attempts
from engine.batch.book import Book
from engine.batch.jobs import RUNNING, STARTING
from engine.executors.compute import ComputeRunner
from engine.executors.docker import LABEL_ATTEMPT, LABEL_JOB, LABEL_STORE, ContainerRunner
from engine.executors.docker_api import DockerError
from engine.store import audit
from engine.store.store import Store

log = logging.getLogger(__name__)

Found = tuple[ComputeRunner, dict[str, Any]]  #: a container and the runner of the daemon it is on


def claimed(book: Book) -> set[tuple[str, str]]:
    """The (job id, attempt) label pairs the unfinished jobs' current attempts own."""
    return {
        (j.id, str(j.attempts))
        for j in book.jobs.values()
        if j.status in (STARTING, RUNNING) and not j.is_parent
    }


def _attempt_of(c: dict[str, Any]) -> tuple[str, int] | None:
    labels = c["labels"]
    try:
        return str(labels[LABEL_JOB]), int(labels[LABEL_ATTEMPT])
    except (KeyError, ValueError):
        return None


class Leftovers:
    def __init__(self, store: Store, book: Book, attempts: Attempts) -> None:
        self.store, self.book, self.attempts = store, book, attempts

    async def sweep(self, runner: ComputeRunner) -> None:
        """Settle the unclaimed managed containers on one daemon (a host that came back)."""
        managed = await runner.find_managed()
        owned = claimed(self.book)
        driving = set(runner.running.values())
        await self.settle(
            [
                (runner, c)
                for c in managed
                if c["id"] not in driving
                and (c["labels"].get(LABEL_JOB), c["labels"].get(LABEL_ATTEMPT)) not in owned
            ]
        )

    async def settle(self, found: list[Found]) -> None:
        """Remove this store's leftovers among ``found`` (no unfinished job claims any of them)."""
        ours: list[tuple[ContainerRunner, dict[str, Any], tuple[str, int]]] = []
        unknown: list[dict[str, Any]] = []
        for runner, c in found:
            owner = c["labels"].get(LABEL_STORE)
            attempt = _attempt_of(c)
            if owner is None:
                log.warning(
                    "container %s (%s) is labelled sluice.managed but belongs to no unfinished job; "
                    "leaving it alone (remove it with `docker rm -f %s` if it is not needed)",
                    c["id"][:12], c["name"], c["id"][:12],
                )  # fmt: skip
                unknown.append(c)
            elif owner != self.attempts.store_id:
                log.debug("container %s (%s) belongs to store %s; not ours", c["id"][:12], c["name"], owner)
            elif attempt is None or not isinstance(runner, ContainerRunner):
                log.warning(
                    "container %s (%s) is this store's but its labels name no attempt; leaving it "
                    "(remove it with `docker rm -f %s`)", c["id"][:12], c["name"], c["id"][:12],
                )  # fmt: skip
                unknown.append(c)
            else:
                ours.append((runner, c, attempt))
        paths = await self.store.read(lambda conn: rows.attempt_log_paths(conn, [a for _, _, a in ours]))
        removed: list[dict[str, Any]] = []
        for runner, c, attempt in ours:
            path = paths.get(attempt)
            if path is None or not await asyncio.to_thread(Path(path).is_file):
                where = f"its log file {path} is missing" if path else "the store has no such attempt"
                log.warning(
                    "container %s (%s) of job %s attempt %d is this engine's and its job is over, but %s; "
                    "leaving it: keep its output with `docker logs %s > FILE`, then `docker rm -f %s`",
                    c["id"][:12], c["name"], attempt[0], attempt[1], where, c["id"][:12], c["id"][:12],
                )  # fmt: skip
                unknown.append(c)
                continue
            try:
                await runner.remove(c["id"])
            except DockerError as exc:
                if exc.status not in (404, 409):  # gone, or its removal is already in progress
                    log.warning("container %s: cannot remove this engine's leftover: %s", c["id"][:12], exc)
                    continue
            log.info("container %s (%s): removed; its job %s is over and attempt %d's log is in %s",
                     c["id"][:12], c["name"], attempt[0], attempt[1], path)  # fmt: skip
            removed.append({**c, "log_path": path})
        await self._record(unknown, removed)

    async def _record(self, unknown: list[dict[str, Any]], removed: list[dict[str, Any]]) -> None:
        if not unknown and not removed:
            return
        now = time.time()

        def detail(c: dict[str, Any]) -> dict[str, Any]:
            return {k: c[k] for k in ("name", "labels", "state", "log_path") if k in c}

        entries = [("unknown-container", c["id"], detail(c), now) for c in unknown]
        entries.extend(("leftover-removed", c["id"], detail(c), now) for c in removed)
        await self.store.write(lambda conn: audit.insert_many(conn, entries))
