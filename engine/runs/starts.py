"""When a function attempt starts: when a worker takes it, not when the driver hands it over.

The driver gives the function pool an :class:`AttemptStart` with each call (the pool's
:class:`~engine.executors.base.StartHook`; the pool knows nothing of runs). A call that gets a
worker at once is recorded RUNNING from that moment, in the one write it always had. A call that
has to wait (its function's ``concurrency``, or every worker busy) is recorded WAITING first,
with the time it began to wait, and RUNNING when a worker takes it: the attempt's ``started_at``
is then, the step's ``sluice.step`` RUNNING event says how long it waited (``waited_s``), and
the API and the dashboard show the step WAITING meanwhile (records.run_summary).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from engine.runs.changes import RunChanges
from engine.states import Status
from engine.store import records

#: ``(step, status, info)``: the driver's progress for this attempt's step
Progress = Callable[[str, str, dict[str, Any]], None]


class AttemptStart:
    """One attempt's start as the run records it; ``settled()`` once its writes are durable."""

    __slots__ = (
        "_writes",
        "attempt",
        "changes",
        "event",
        "first",
        "idx",
        "log_path",
        "name",
        "progress",
        "queued_at",
        "run_id",
        "taken_at",
    )  # fmt: skip

    def __init__(
        self,
        changes: RunChanges,
        run_id: str,
        name: str,
        idx: int,
        attempt: int,
        log_path: str,
        *,
        first: bool,
        event: Callable[..., dict[str, Any]],
        progress: Progress,
    ) -> None:
        self.changes, self.run_id, self.name, self.idx = changes, run_id, name, idx
        self.attempt, self.log_path, self.first = attempt, log_path, first
        self.event, self.progress = event, progress
        self.queued_at: float | None = None
        self.taken_at: float | None = None
        self._writes: list[asyncio.Future[None]] = []

    def queued(self, at: float) -> None:
        if self.queued_at is not None or self.taken_at is not None:
            return
        self.queued_at = at
        run_id, name, idx, attempt, log_path, first = self._key()
        write = lambda c: records.start_attempt(  # noqa: E731
            c, run_id, name, idx, attempt, at, log_path, first=first, waiting=True
        )
        self._writes.append(self.changes.enqueue([write], []))
        if idx < 0:
            self.progress(name, Status.WAITING, {"attempt": attempt})

    def taken(self, at: float) -> None:
        if self.taken_at is not None:
            return
        self.taken_at = at
        run_id, name, idx, attempt, log_path, first = self._key()
        if self.queued_at is None:
            write = lambda c: records.start_attempt(c, run_id, name, idx, attempt, at, log_path, first=first)  # noqa: E731
        else:
            write = lambda c: records.take_attempt(c, run_id, name, idx, attempt, at)  # noqa: E731
        info: dict[str, Any] = {"attempt": attempt}
        if self.queued_at is not None:
            info["waited_s"] = round(at - self.queued_at, 6)
        events = [self.event(name, Status.RUNNING, Status.PENDING, **info)] if first and idx < 0 else []
        self._writes.append(self.changes.enqueue([write], events))
        if idx < 0:
            self.progress(name, Status.RUNNING, info)

    def ensure_started(self, at: float) -> None:
        """After ``execute`` returned: an executor that never called the hook started it by now."""
        self.taken(at)

    def _key(self) -> tuple[str, str, int, int, str, bool]:
        return self.run_id, self.name, self.idx, self.attempt, self.log_path, self.first

    async def settled(self) -> None:
        """Wait until this attempt's start writes are durable (raising what a write raised)."""
        for fut in self._writes:
            await fut
