"""Keyed concurrency of a function step: at most ``limit`` attempts per key value, the rest in order.

A step's ``concurrency: {key, limit}`` (workflows/concurrency.py) renders its key from the
step's own context (event, params, upstream outputs, a for_each item), so one fan-out spreads
over several keys. The slots are per (workflow, step, key value), across every run of the
workflow. An attempt over its key's limit waits here, before it asks the function pool for a
worker, and shows WAITING (runs/starts.py) with a reason naming its key; it holds its slot from
the grant until the attempt ends. A retry asks again, at the back: a step that fails for one
customer over and over does not keep that customer's slot through its backoff.

The order is the ticket's: when the attempt first asked. Nothing of the gate is stored, but the
ticket is: a waiting attempt's row has it as ``queued_at`` (a running one's as ``queued_at`` or
``started_at``), and the attempt that replaces it after a restart carries it on as its own
``queued_at``. Recovery hands the gate the tickets of the attempts a restart cut short
(:func:`interrupted_ticket`, :meth:`StepKeys.seed`) before any driver resumes; until each of them
is back (or its run ended, or :data:`ROSTER_WAIT_S` passed) no attempt of that step with a later
ticket is let through, so the order does not depend on which run's driver happens to come back
first. Those attempts count as retried after a restart (functions are at-least-once), as any
function attempt a restart interrupts does.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ENGINE_RESTARTED, ENGINE_SHUTDOWN
from engine.executors.base import Executor, FunctionCall, Outcome
from engine.runs.starts import AttemptStart, Calls
from engine.states import Status
from workflows.spec import StepSpec

#: how long the gate keeps an interrupted attempt's place for it after a restart. Resumed runs
#: come back within milliseconds; a run that never does (its workflow removed, admission holding
#: it through a flood) must not hold its step's other keys for longer than this
ROSTER_WAIT_S = 30.0

Bucket = tuple[str, str, str]  #: (workflow, step, key value: the rendered string, else its JSON)
Ident = tuple[str, str, int]  #: (run id, step, fan-out index or -1)


@dataclass(eq=False, slots=True)
class _Waiter:
    ident: Ident
    bucket: Bucket
    limit: int
    ticket: float
    seq: int
    granted: asyncio.Future[None]
    back: bool  #: it came back from before a restart (its ticket is the interrupted attempt's)
    holding: bool = False
    order: tuple[float, int] = field(init=False)

    def __post_init__(self) -> None:
        self.order = (self.ticket, self.seq)


class StepKeys:
    """Slots per (workflow, step, key value) and the attempts waiting for them, by ticket."""

    def __init__(self, roster_wait_s: float = ROSTER_WAIT_S) -> None:
        self.roster_wait_s = roster_wait_s
        self._running: dict[Bucket, int] = {}
        self._queues: dict[Bucket, list[_Waiter]] = {}  #: sorted by (ticket, seq)
        self._of_step: dict[tuple[str, str], list[_Waiter]] = {}  #: (run id, step): its waiters
        #: (workflow, step): the interrupted attempts not back yet, and their tickets
        self._roster: dict[tuple[str, str], dict[Ident, float]] = {}
        self._seq = itertools.count()

    def __repr__(self) -> str:
        return f"<StepKeys running={sum(self._running.values())} waiting={self.waiting}>"

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def calls(self, functions: Executor, workflow: str, spec: StepSpec, ctx: Mapping[str, Any]) -> Calls:
        """Where this step's attempts go: the pool, or (a keyed step) the pool behind its key's slots.

        Renders the key now, from the context the step's input saw; a key that does not render is
        a ``SluiceError`` (the driver fails the step with it, as for an input that does not)."""
        if spec.keyed is None or spec.keyed.key is None:
            return functions
        value = spec.keyed.key.render(ctx)
        key = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        return _Keyed(self, functions, (workflow, spec.name, key), spec.keyed.limit)

    # -- recovery ---------------------------------------------------------------------------------

    def seed(self, entries: list[tuple[str, Ident, float]]) -> None:
        """Before the resumed runs start: ``(workflow, (run, step, idx), ticket)`` of each attempt
        of a keyed step that a restart cut short; each keeps its place until it is back."""
        for workflow, ident, ticket in entries:
            self._roster.setdefault((workflow, ident[1]), {})[ident] = ticket
        if entries:
            asyncio.get_running_loop().call_later(self.roster_wait_s, self._expire, entries)

    def _expire(self, entries: list[tuple[str, Ident, float]]) -> None:
        for workflow, ident, _ in entries:
            self._unroster((workflow, ident[1]), ident)

    def forget(self, run_id: str) -> None:
        """The run's driver ended: none of its interrupted attempts will come back any more."""
        for group, roster in list(self._roster.items()):
            for ident in [i for i in roster if i[0] == run_id]:
                self._unroster(group, ident)

    def _unroster(self, group: tuple[str, str], ident: Ident) -> None:
        roster = self._roster.get(group)
        if roster is None or roster.pop(ident, None) is None:
            return
        if not roster:
            del self._roster[group]
        for bucket in [b for b in self._queues if b[:2] == group]:
            self._pump(bucket)

    # -- slots ------------------------------------------------------------------------------------

    def _enter(self, ident: Ident, bucket: Bucket, limit: int) -> _Waiter:
        group = bucket[:2]
        roster = self._roster.get(group)
        ticket = None if roster is None else roster.get(ident)
        fut = asyncio.get_running_loop().create_future()
        back = ticket is not None
        waiter = _Waiter(ident, bucket, limit, ticket or time.time(), next(self._seq), fut, back)
        queue = self._queues.setdefault(bucket, [])
        bisect.insort(queue, waiter, key=lambda w: w.order)
        self._of_step.setdefault(ident[:2], []).append(waiter)
        if back:
            self._unroster(group, ident)  # pumps the step's buckets, this one too
        else:
            self._pump(bucket)
        return waiter

    def _pump(self, bucket: Bucket) -> None:
        """Grant the head of the bucket's queue while there is room and nothing interrupted is ahead."""
        queue = self._queues.get(bucket)
        roster = self._roster.get(bucket[:2], {})
        while queue:
            head = queue[0]
            if self._running.get(bucket, 0) >= head.limit or any(t < head.ticket for t in roster.values()):
                return
            queue.pop(0)
            self._running[bucket] = self._running.get(bucket, 0) + 1
            head.holding = True
            head.granted.set_result(None)
        self._queues.pop(bucket, None)

    def _leave(self, waiter: _Waiter) -> None:
        mine = self._of_step.get(waiter.ident[:2], [])
        mine.remove(waiter)
        if not mine:
            self._of_step.pop(waiter.ident[:2], None)
        bucket = waiter.bucket
        if waiter.holding:
            left = self._running[bucket] - 1
            if left:
                self._running[bucket] = left
            else:
                del self._running[bucket]
        else:
            queue = self._queues.get(bucket, [])
            queue.remove(waiter)
            if not queue:
                self._queues.pop(bucket, None)
        self._pump(bucket)

    # -- what users see ---------------------------------------------------------------------------

    def reason(self, run_id: str, step: str) -> str | None:
        """Why the run's step (or its items) waits for a key, or None when none of it does."""
        waiting = [w for w in self._of_step.get((run_id, step), ()) if not w.holding]
        if not waiting:
            return None
        first = min(waiting, key=lambda w: w.order)
        text = self._why(first)
        if len(waiting) > 1:
            keys = len({w.bucket for w in waiting})
            text += f"; {len(waiting)} of its items wait for {keys} key{'s' if keys > 1 else ''}"
        return text

    def _why(self, waiter: _Waiter) -> str:
        queue = self._queues.get(waiter.bucket, [])
        ahead = queue.index(waiter) if waiter in queue else 0
        running = self._running.get(waiter.bucket, 0)
        text = (
            f"waiting for concurrency key {waiter.bucket[2]!r}: {running} of {waiter.limit} attempts "
            f"running, {ahead} waiting ahead of it"
        )
        if running < waiter.limit and not ahead:
            text += " (and for attempts made before the engine restarted to come back first)"
        return text


class _Keyed:
    """The function pool behind one key's slots (what :meth:`StepKeys.calls` gives a keyed step)."""

    def __init__(self, keys: StepKeys, functions: Executor, bucket: Bucket, limit: int) -> None:
        self.keys, self.functions, self.bucket, self.limit = keys, functions, bucket, limit

    async def execute(self, call: FunctionCall, hook: AttemptStart) -> Outcome:
        ident = (call.run_id, call.step, -1 if call.index is None else call.index)
        waiter = self.keys._enter(ident, self.bucket, self.limit)
        try:
            if waiter.back or not waiter.holding:  # a came-back attempt keeps its ticket as queued_at
                hook.why = lambda: None if waiter.holding else self.keys._why(waiter)
                hook.queued(waiter.ticket)
            await waiter.granted
            return await self.functions.execute(call, hook)
        finally:
            self.keys._leave(waiter)


def interrupted_ticket(conn: sqlite3.Connection, run_id: str, step: str, idx: int) -> float | None:
    """The ticket of the step's attempt a restart cut short (None when its last attempt ended on its
    own): while it waits it is its ``queued_at``, once it ran its ``queued_at`` or ``started_at``.

    Asked before recovery closes the attempts left open by a ``kill -9``; after a clean stop (or a
    second restart before the attempt came back) they are closed already, with the error saying so."""
    row = conn.execute(
        "SELECT status, error, COALESCE(queued_at, started_at) FROM attempts "
        "WHERE run_id=? AND step=? AND idx=? ORDER BY attempt DESC LIMIT 1",
        (run_id, step, idx),
    ).fetchone()
    if row is None:
        return None
    status, error, ticket = row[0], json.loads(row[1] or "null") or {}, row[2]
    cut = status in (Status.RUNNING, Status.WAITING) or (
        status == Status.CANCELLED and error.get("errorType") in (ENGINE_RESTARTED, ENGINE_SHUTDOWN)
    )
    return float(ticket) if cut and ticket is not None else None
