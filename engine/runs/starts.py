"""When a function attempt starts: when a worker takes it, not when the driver hands it over.

The driver gives the function pool an :class:`AttemptStart` with each call (the pool's
:class:`~engine.executors.base.StartHook`; the pool knows nothing of runs). A call that gets a
worker at once is recorded RUNNING from that moment, in the one write it always had. A call that
has to wait (its function's ``concurrency``, its step's concurrency key (step_keys.py), or every
worker busy) is recorded WAITING first,
with the time it began to wait, and RUNNING when a worker takes it: the attempt's ``started_at``
is then, the step's ``sluice.step`` RUNNING event says how long it waited (``waited_s``), and
the API and the dashboard show the step WAITING meanwhile (queries.run_summary).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from engine.executors.base import FunctionCall, Outcome
from engine.runs.changes import RunChanges
from engine.states import Status
from engine.store import records

#: ``(step, status, info)``: the driver's progress for this attempt's step
Progress = Callable[[str, str, dict[str, Any]], None]


#: a call still waiting after this is recorded WAITING; a shorter wait shows only in the attempt's
#: ``queued_at`` and ``waited_s``. Items of a fan-out of trivial steps wait a few ms each, and a
#: write per wait made W2 (1,000 items) ~50 % slower
RECORD_WAIT_AFTER_S = 0.05


class WaitWatch:
    """A run's attempts waiting for a worker, oldest first, under one timer for the oldest.

    One timer per run, not one per call: most waits of a fan-out end in a few ms, and a timer
    armed and cancelled per item cost more than the wait it watched."""

    def __init__(self) -> None:
        self._queue: deque[tuple[float, AttemptStart]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, start: AttemptStart) -> None:
        self._queue.append((time.monotonic() + RECORD_WAIT_AFTER_S, start))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(RECORD_WAIT_AFTER_S, self._due)

    def _due(self) -> None:
        self._timer = None
        now, queue = time.monotonic(), self._queue
        while queue and queue[0][0] <= now:
            queue.popleft()[1].record_waiting()
        if queue:
            self._timer = asyncio.get_running_loop().call_later(queue[0][0] - now, self._due)


class AttemptStart:
    """One attempt's start as the run records it; ``settled()`` once its writes are durable."""

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
        watch: WaitWatch,
    ) -> None:
        self.changes, self.run_id, self.name, self.idx = changes, run_id, name, idx
        self.attempt, self.log_path, self.first = attempt, log_path, first
        self.event, self.progress, self.watch = event, progress, watch
        self.queued_at: float | None = None
        self.taken_at: float | None = None
        self.recorded = False  #: its WAITING row was written
        self.gave_up = False  #: the call ended without a worker (cancelled, the pool closed)
        #: why it waits, when something other than the pool holds it (a step's concurrency key)
        self.why: Callable[[], str | None] | None = None
        self._writes: list[asyncio.Future[None]] = []

    def queued(self, at: float) -> None:
        if self.queued_at is not None or self.taken_at is not None:
            return
        self.queued_at = at
        self.changes.parked()  # else, before its first commit, admission would hold new runs behind it
        self.watch.add(self)

    def record_waiting(self) -> None:
        """Still waiting after :data:`RECORD_WAIT_AFTER_S`: write the WAITING row."""
        if self.taken_at is not None or self.queued_at is None or self.gave_up:
            return
        self.recorded = True
        run_id, name, idx, attempt, log_path, first = self._key()
        at = self.queued_at
        write = lambda c: records.start_attempt(  # noqa: E731
            c, run_id, name, idx, attempt, at, log_path, first=first, waiting=True
        )
        self._writes.append(self.changes.enqueue([write], []))
        reason = None if self.why is None else self.why()
        if idx < 0:
            self.progress(name, Status.WAITING, {"attempt": attempt, "reason": reason})

    def taken(self, at: float) -> None:
        if self.taken_at is not None:
            return
        self.taken_at = at
        run_id, name, idx, attempt, log_path, first = self._key()
        queued = self.queued_at
        if self.recorded:
            write = lambda c: records.take_attempt(c, run_id, name, idx, attempt, at)  # noqa: E731
        else:
            write = lambda c: records.start_attempt(  # noqa: E731
                c, run_id, name, idx, attempt, at, log_path, first=first, queued_at=queued
            )
        info: dict[str, Any] = {"attempt": attempt}
        if queued is not None:
            info["waited_s"] = round(at - queued, 6)
        events = [self.event(name, Status.RUNNING, Status.PENDING, **info)] if first and idx < 0 else []
        self._writes.append(self.changes.enqueue([write], events))
        if idx < 0:
            self.progress(name, Status.RUNNING, info)

    def abandon(self) -> None:
        """The call ended without a worker: no WAITING row is to be written any more."""
        self.gave_up = True

    def ensure_started(self, at: float) -> None:
        """After ``execute`` returned: an executor that never called the hook started it by now."""
        self.taken(at)

    def _key(self) -> tuple[str, str, int, int, str, bool]:
        return self.run_id, self.name, self.idx, self.attempt, self.log_path, self.first

    async def settled(self) -> None:
        """Wait until this attempt's start writes are durable (raising what a write raised)."""
        for fut in self._writes:
            await fut


class Calls(Protocol):
    """What the driver hands an attempt to: the function pool, or the pool behind a step's key
    (step_keys.py); either tells the attempt's :class:`AttemptStart` when it waits and starts."""

    async def execute(self, call: FunctionCall, hook: AttemptStart) -> Outcome: ...
