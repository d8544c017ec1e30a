"""Schedule trigger: EventBridge-style schedules that survive restarts and downtime.

The pure arithmetic (cron, rate, time zones, DST) lives in ``workflows.schedules``;
this module decides *which* fires to emit and keeps the cursor:

- The cursor (the last scheduled time handled, with the expression and time zone
  it belongs to) is kept in the ``KV`` under ``schedule:<workflow>:<trigger>``.
  Each fire is emitted first and recorded after (arq's ``run_cron`` order), and
  its dedupe key ``schedule:<workflow>:<trigger>:<scheduled time>`` makes a fire
  emitted just before a crash a no-op when it is emitted again: no double fire.
- First start, or a changed expression/time zone: start from now, no backfill,
  so editing a schedule never re-runs the last tick.
- After downtime, fires that are more than ``grace_s`` late are *missed* and
  follow ``catchup``: ``none`` skips them all, ``latest`` fires the latest one,
  ``all`` fires those within ``catchup_window_s`` (oldest first, at most
  ``max_catchup``). Every skipped fire is reported to ``audit`` (the first
  ``AUDIT_LIMIT`` one by one, the rest as one summary entry) and counted in the
  KV state, so a user can see what was missed.
- A schedule with no next fire (an ``at(...)`` that fired or passed, a year field
  that ran out) idles until stopped. The cursor survives restarts with the rest of
  the state, so an ``at(...)`` that fired never fires again; one that was due while
  the engine was down is a missed fire like any other and follows ``catchup``.
- A schedule whose next fire cannot be computed is logged and idles alone: it
  never takes the other triggers or the server down.

The clock and sleep are injected: tests drive ``tick(now)`` directly and exactly.

Example::

    runner = ScheduleTriggerRunner(name="nightly", workflow="report",
                                   schedule=parse_schedule("cron(0 2 * * ? *)", "Europe/Berlin"),
                                   catchup="latest", kv=kv)
    await runner.start()
    task = asyncio.create_task(runner.run(emit))
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from triggers.base import KV, Emit
from workflows.schedules import Schedule, parse_schedule
from workflows.spec import ScheduleTrigger

__all__ = [
    "FireResult",
    "Schedule",
    "ScheduleTriggerRunner",
    "next_fire",
    "parse_schedule",
    "state_key",
    "utcnow",
]

log = logging.getLogger(__name__)

Catchup = Literal["none", "latest", "all"]
Audit = Callable[[str, str, str, datetime, str], Awaitable[None]]
DEFAULT_GRACE_S = 60.0
DEFAULT_MAX_CATCHUP = 10
AUDIT_LIMIT = 100  #: skipped fires reported one by one; more are summarised in one entry
MAX_SLEEP_S = 60.0  #: re-read the wall clock at least this often (suspend, clock steps)
RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)
_TICK = timedelta(microseconds=1)


def utcnow() -> datetime:
    return datetime.now(UTC)


def state_key(workflow: str, name: str) -> str:
    """The KV key of a schedule's durable state (its cursor, last fire, skips)."""
    return f"schedule:{workflow}:{name}"


def next_fire(schedule: Schedule, state: dict[str, Any] | None, now: datetime) -> datetime | None:
    """When the runner fires on time next, from its stored ``state`` (None: not started yet).

    The first fire after the cursor, or after ``now`` when the cursor is behind (the engine was
    down, or the trigger paused): those missed fires follow ``catchup`` instead. Only a state of
    the same expression and zone counts; after an edit the runner starts over from now."""
    after = now
    if state and (state.get("expression"), state.get("timezone")) == (schedule.expression, schedule.timezone):
        after = max(now, datetime.fromisoformat(state["scheduled_time"]))
    return schedule.next_fire_or_none(after)


async def _idle() -> None:
    """Wait until cancelled: a schedule with nothing to fire keeps its service slot quietly."""
    await asyncio.Event().wait()


def iso_z(moment: datetime) -> str:
    """``2026-03-29T01:00:00Z`` (milliseconds only when there are some)."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "Z"


@dataclass(frozen=True, slots=True)
class FireResult:
    scheduled_time: datetime
    event_id: str
    duplicate: bool  #: the bus had this fire already (emitted before a crash)
    late_s: float  #: how long after the scheduled time it was emitted (by the injected clock)
    catchup: bool  #: fired by the catch-up policy rather than on time


@dataclass(frozen=True, slots=True)
class _Plan:
    fires: list[tuple[datetime, bool]]  #: (scheduled time, is catch-up), oldest first
    skipped: list[datetime]  #: listed skipped fires (at most AUDIT_LIMIT)
    skipped_total: int
    cursor: datetime  #: the latest scheduled time this tick handles


class ScheduleTriggerRunner:
    """Emit ``Scheduled Event``s for one schedule; restart-safe, with a missed-run policy.

    :param name: the trigger's name.
    :param workflow: the workflow the events are routed to.
    :param schedule: a parsed ``Schedule`` (``parse_schedule(expr, timezone)``).
    :param kv: where the cursor lives (``schedule:<workflow>:<trigger>``).
    :param catchup: ``none`` | ``latest`` | ``all`` for fires missed during downtime.
    :param catchup_window_s: with ``all``, only missed fires this recent are run (``None``: any).
    :param max_catchup: with ``all``, at most this many missed fires are run (oldest first).
    :param audit: ``await audit("skipped", workflow, trigger, scheduled_time, reason)`` per skipped fire.
    :param clock: returns the aware current time; injected by tests.
    :param sleep: ``asyncio.sleep``-like; injected by tests.
    :param grace_s: a fire at most this late is on time, not missed.
    """

    def __init__(
        self,
        *,
        name: str,
        workflow: str,
        schedule: Schedule,
        kv: KV,
        catchup: Catchup = "none",
        catchup_window_s: float | None = None,
        max_catchup: int = DEFAULT_MAX_CATCHUP,
        audit: Audit | None = None,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        grace_s: float = DEFAULT_GRACE_S,
    ) -> None:
        if catchup not in ("none", "latest", "all"):
            raise ValueError(f"schedule trigger {name!r}: catchup={catchup!r} (use none, latest or all)")
        if max_catchup < 0:
            raise ValueError(f"schedule trigger {name!r}: max_catchup={max_catchup} (use 0 or more)")
        self.name = name
        self.workflow = workflow
        self.schedule = schedule
        self.kv = kv
        self.catchup = catchup
        self.catchup_window_s = catchup_window_s
        self.max_catchup = max_catchup
        self.audit = audit
        self.clock = clock
        self.sleep = sleep
        self.grace_s = grace_s
        self.key = state_key(workflow, name)
        self._state: dict[str, Any] | None = None
        self._emit: Emit | None = None
        self.fired = 0

    @classmethod
    def from_spec(
        cls, workflow_name: str, spec: ScheduleTrigger, *, kv: KV, **overrides: Any
    ) -> ScheduleTriggerRunner:
        """Build from a ``workflows.spec.ScheduleTrigger`` (read by attribute name)."""
        kwargs: dict[str, Any] = {
            "name": spec.name,
            "workflow": workflow_name,
            "schedule": parse_schedule(spec.expression, spec.timezone),
            "kv": kv,
            "catchup": spec.catchup,
            "catchup_window_s": spec.catchup_window_s,
            "max_catchup": spec.max_catchup,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def _names(self) -> tuple[str, str]:
        return self.workflow, self.name

    def __repr__(self) -> str:
        cursor = self._state["scheduled_time"] if self._state else None
        return (
            f"<ScheduleTriggerRunner {self.workflow}/{self.name} {self.schedule.expression!r} "
            f"tz={self.schedule.timezone} catchup={self.catchup} cursor={cursor} fired={self.fired}>"
        )

    # -- state -----------------------------------------------------------------------------------

    @property
    def cursor(self) -> datetime:
        assert self._state is not None, "call start() or tick() first"
        return datetime.fromisoformat(self._state["scheduled_time"])

    async def start(self, now: datetime | None = None) -> None:
        """Load the cursor; on first start or after an edit, anchor it at ``now`` (no backfill)."""
        now = now if now is not None else self.clock()
        state = await self.kv.get(self.key)
        same = (
            state is not None
            and state.get("expression") == self.schedule.expression
            and state.get("timezone") == self.schedule.timezone
        )
        if same:
            self._state = state
            return
        if state is None:
            log.info("schedule %s/%s: first start; first fire after %s", self.workflow, self.name, iso_z(now))
        else:
            log.info(
                "schedule %s/%s: expression changed from %r (%s) to %r (%s); starting from now, no re-run",
                self.workflow,
                self.name,
                state.get("expression"),
                state.get("timezone"),
                self.schedule.expression,
                self.schedule.timezone,
            )
        previous = state or {}
        self._state = {
            "expression": self.schedule.expression,
            "timezone": self.schedule.timezone,
            "scheduled_time": now.astimezone(UTC).isoformat(),
            "last_fired": previous.get("last_fired"),
            "skipped_total": int(previous.get("skipped_total", 0)),
            "last_skip": previous.get("last_skip"),
        }
        await self.kv.set(self.key, self._state)

    async def _record(self, **changes: Any) -> None:
        assert self._state is not None
        self._state = {**self._state, **changes}
        await self.kv.set(self.key, self._state)

    # -- one tick --------------------------------------------------------------------------------

    async def tick(self, now: datetime | None = None, emit: Emit | None = None) -> list[FireResult]:
        """Emit every fire due at ``now`` per the policy; record skips; advance the cursor."""
        now = now if now is not None else self.clock()
        emit = emit if emit is not None else self._emit
        if emit is None:
            raise RuntimeError(f"schedule trigger {self.name!r}: tick() needs emit (or run(emit))")
        if self._state is None:
            await self.start(now)
        # fires decided by an interrupted tick go first, exactly as decided (no re-planning)
        results = await self._run_pending(emit, now)
        plan = self._plan(self.cursor, now)
        if plan is not None:
            await self._commit_plan(plan, now)
            results += await self._run_pending(emit, now)
        return results

    async def _commit_plan(self, plan: _Plan, now: datetime) -> None:
        """Audit the skips, then persist the decision in one write, before any fire is emitted.

        A crash mid-way thus resumes the same fires rather than re-planning from a cursor that
        already moved (which could fire more than ``max_catchup``, or audit skips twice).
        """
        changes: dict[str, Any] = {
            "pending": [[t.isoformat(), is_catchup] for t, is_catchup in plan.fires],
            "target": plan.cursor.isoformat(),
        }
        if plan.skipped_total:
            changes.update(await self._audit_skips(plan, now))
        await self._record(**changes)

    async def _run_pending(self, emit: Emit, now: datetime) -> list[FireResult]:
        assert self._state is not None
        pending = self._state.get("pending") or []
        target = self._state.get("target")
        results = []
        for iso, is_catchup in pending:
            scheduled = datetime.fromisoformat(iso)
            if scheduled > self.cursor:
                results.append(await self._fire(emit, scheduled, now, is_catchup))
        if pending or target:
            cursor = max(self.cursor, datetime.fromisoformat(target)) if target else self.cursor
            await self._record(scheduled_time=cursor.isoformat(), pending=[], target=None)
        return results

    def _plan(self, cursor: datetime, now: datetime) -> _Plan | None:
        latest = self.schedule.fires_between(cursor, now, 1, keep="last")
        if latest.total == 0:
            return None
        newest = latest.fires[0]
        on_time = (now - newest).total_seconds() <= self.grace_s
        missed_end = newest - _TICK if on_time else newest
        missed_total = latest.total - 1 if on_time else latest.total
        catchups = self._catchups(cursor, missed_end, now, missed_total)
        fires = [(t, True) for t in catchups] + ([(newest, False)] if on_time else [])
        fired = set(catchups)
        skipped_total = missed_total - len(catchups)
        skipped: list[datetime] = []
        if skipped_total:
            listed = self.schedule.fires_between(
                cursor, missed_end, AUDIT_LIMIT + len(catchups), keep="first"
            )
            skipped = [t for t in listed.fires if t not in fired][:AUDIT_LIMIT]
        return _Plan(fires, skipped, skipped_total, newest)

    def _catchups(
        self, cursor: datetime, missed_end: datetime, now: datetime, missed_total: int
    ) -> list[datetime]:
        if missed_total == 0 or self.catchup == "none":
            return []
        if self.catchup == "latest":
            return self.schedule.fires_between(cursor, missed_end, 1, keep="last").fires
        start = cursor
        if self.catchup_window_s is not None:
            start = max(cursor, now - timedelta(seconds=self.catchup_window_s) - _TICK)
        return self.schedule.fires_between(start, missed_end, self.max_catchup, keep="first").fires

    async def _audit_skips(self, plan: _Plan, now: datetime) -> dict[str, Any]:
        reason = self._skip_reason()
        log.warning(
            "schedule %s/%s: %d missed fire(s) skipped (catchup=%s), from %s to %s",
            self.workflow,
            self.name,
            plan.skipped_total,
            self.catchup,
            iso_z(plan.skipped[0]),
            iso_z(plan.skipped[-1]),
        )
        for scheduled in plan.skipped:
            await self._audit(scheduled, reason)
        unlisted = plan.skipped_total - len(plan.skipped)
        if unlisted:
            await self._audit(plan.skipped[-1], f"{reason}; {unlisted} more skipped fires not listed")
        assert self._state is not None
        return {
            "skipped_total": int(self._state.get("skipped_total", 0)) + plan.skipped_total,
            "last_skip": {
                "count": plan.skipped_total,
                "first": iso_z(plan.skipped[0]),
                "listed_last": iso_z(plan.skipped[-1]),
                "decided_at": iso_z(now),
                "reason": reason,
            },
        }

    def _skip_reason(self) -> str:
        if self.catchup == "none":
            return "missed while the engine was down (catchup: none)"
        if self.catchup == "latest":
            return "missed while the engine was down; only the latest is run (catchup: latest)"
        window = "any age" if self.catchup_window_s is None else f"{self.catchup_window_s:g}s"
        return (
            f"missed while the engine was down; outside catchup_window ({window})"
            f" or over max_catchup ({self.max_catchup})"
        )

    async def _audit(self, scheduled: datetime, reason: str) -> None:
        if self.audit is None:
            return
        try:
            await self.audit("skipped", self.workflow, self.name, scheduled, reason)
        except Exception:
            log.exception("schedule %s/%s: audit callback failed", self.workflow, self.name)

    async def _fire(self, emit: Emit, scheduled: datetime, now: datetime, is_catchup: bool) -> FireResult:
        when = iso_z(scheduled)
        result = await emit(
            self._event(scheduled),
            dedupe_key=f"schedule:{self.workflow}:{self.name}:{when}",
            workflow=self.workflow,
        )
        # the bus has the event: only now does the fire count as done
        await self._record(scheduled_time=scheduled.isoformat(), last_fired=scheduled.isoformat())
        self.fired += 1
        late_s = (now - scheduled).total_seconds()
        log.info(
            "schedule %s/%s: fired %s%s (%+.3fs) → %s%s",
            self.workflow,
            self.name,
            when,
            " (catch-up)" if is_catchup else "",
            late_s,
            result.event_id,
            " (duplicate)" if result.duplicate else "",
        )
        return FireResult(scheduled, result.event_id, result.duplicate, late_s, is_catchup)

    def _event(self, scheduled: datetime) -> dict[str, Any]:
        when = iso_z(scheduled)
        return {
            "version": "0",
            "source": "sluice.schedule",
            "detail-type": "Scheduled Event",
            "time": when,
            "account": "local",
            "region": "local",
            "resources": [f"schedule/{self.workflow}/{self.name}"],
            "detail": {
                "scheduled_time": when,
                "expression": self.schedule.expression,
                "timezone": self.schedule.timezone,
                "workflow": self.workflow,
                "trigger": self.name,
            },
        }

    # -- the loop --------------------------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        """Tick whenever a fire is due, until cancelled. A failing tick is retried with backoff."""
        self._emit = emit
        if self._state is None:
            await self.start()
        failures = 0
        while True:
            try:
                await self.tick(emit=emit)
                failures = 0
            except Exception:
                delay = RETRY_S[min(failures, len(RETRY_S) - 1)]
                failures += 1
                log.exception("schedule %s/%s: tick failed; retrying in %gs", self.workflow, self.name, delay)
                await self.sleep(delay)
                continue
            try:
                deadline = self.schedule.next_fire_or_none(self.cursor)
            except Exception:  # this schedule stops, not the server
                log.exception(
                    "schedule %s/%s: cannot compute the next fire; idle until stopped", *self._names
                )
                return await _idle()
            if deadline is None:
                log.info(
                    "schedule %s/%s: %s has no fire after %s; idle until stopped",
                    *self._names,
                    self.schedule.expression,
                    iso_z(self.cursor),
                )
                return await _idle()
            await self._sleep_until(deadline)

    async def _sleep_until(self, deadline: datetime) -> None:
        # sleep on the loop's timer to the deadline (ms-precise), re-reading the wall clock at
        # least every MAX_SLEEP_S so a suspend or a clock step is noticed
        while (remaining := (deadline - self.clock()).total_seconds()) > 0:
            await self.sleep(min(remaining, MAX_SLEEP_S))
