"""Schedule expressions: when a schedule trigger fires.

Four forms, told apart by how they start:

- plain 5-field cron, ``*/5 * * * *``: croniter's language and answers (``schedule_cron``), so a
  schedule means here what it means in Airflow and Prefect;
- EventBridge ``cron(min hour day-of-month month day-of-week year)``: EventBridge's fields and
  validation, computed by croniter (``schedule_eventbridge``);
- ``rate(N unit)``: a fixed interval from the epoch, ``second(s)`` beyond EventBridge
  (``schedule_rate``);
- ``at(yyyy-mm-ddThh:mm:ss)``: once, as EventBridge Scheduler's one-time schedules
  (``schedule_rate``).

Cron and at times are wall-clock times in ``timezone`` (an IANA name); ``docs/schedules.md``
says what each form does in a DST gap and on fall-back, and where Sluice departs from
EventBridge and croniter, and why. croniter (and through it dateutil) is imported only when a
cron expression is parsed: a workflow with a rate, at or no schedule never pays for it.

Every refusal is a ``ScheduleError`` whose ``hint`` parses (checked here before it is raised),
and every number is bounded, so no input gets another exception. Everything is pure: no clock
reads, all inputs explicit.

Example::

    >>> s = parse_schedule("cron(0 2 ? * MON-FRI *)", "Europe/Berlin")
    >>> s.next_fire(datetime(2026, 1, 2, 12, tzinfo=UTC)).isoformat()
    '2026-01-05T01:00:00+00:00'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from workflows.errors import ScheduleError
from workflows.schedule_base import MAX_EXPRESSION_CHARS, Fires, Keep, Rule, check_aware, show
from workflows.schedule_rate import AT_EXAMPLE, RATE_EXAMPLE, AtRule, RateRule, parse_at, parse_rate

__all__ = ["Fires", "Schedule", "ScheduleError", "parse_schedule"]

MAX_TIMEZONE_CHARS = 64  #: EventBridge Scheduler allows 50; the longest IANA name has 32
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")
_GENERIC = {"cron(": "cron(0 12 * * ? *)", "rate(": RATE_EXAMPLE, "at(": AT_EXAMPLE}


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule. Build it with ``parse_schedule``.

    ``interval_s`` is the period of a ``rate(...)`` schedule and ``None`` for the other forms.
    """

    expression: str
    timezone: str
    interval_s: float | None
    _rule: Rule = field(repr=False, compare=False)

    def next_fire(self, after: datetime) -> datetime:
        """The first fire strictly after ``after`` (aware), as an aware UTC datetime.

        Raises ``ScheduleError`` when there is none (an ``at()`` that has passed, a year field that
        ran out); ``next_fire_or_none`` answers ``None`` instead.
        """
        fire = self.next_fire_or_none(after)
        if fire is None:
            raise ScheduleError(f"{self.expression} never fires after {after.isoformat()}")
        return fire

    def next_fire_or_none(self, after: datetime) -> datetime | None:
        """The first fire strictly after ``after`` (aware) in UTC, or ``None`` if it never fires again."""
        check_aware(after)
        return self._rule.next_after(after)

    def fires_between(self, start: datetime, end: datetime, limit: int, keep: Keep = "first") -> Fires:
        """Fires in ``(start, end]``, for catching up after downtime.

        Returns at most ``limit`` of them (the earliest, or the latest with ``keep="last"``), in
        time order, and the total count in the window.
        """
        check_aware(start)
        check_aware(end)
        if end <= start:
            return Fires([], 0)
        return self._rule.between(start, end, max(limit, 0), keep)


def parse_schedule(expr: str, timezone: str = "UTC") -> Schedule:
    """Parse ``expr`` (5-field cron, ``cron(...)``, ``rate(...)`` or ``at(...)``) for ``timezone``.

    Raises ``ScheduleError`` naming the problem, with a ``hint`` that parses, e.g.
    ``rate(1 minutes): 1 takes the singular unit (write rate(1 minute))``.
    """
    try:
        return _parse(expr, timezone)
    except ScheduleError as exc:
        raise _checked(exc, expr, timezone) from None


def _parse(expr: Any, timezone: Any) -> Schedule:
    text = _expression_text(expr)
    zone = _zone(timezone)
    if text.startswith("rate("):
        step = parse_rate(text)
        return Schedule(text, timezone, float(step), RateRule(step))
    if text.startswith("at("):
        return Schedule(text, timezone, None, AtRule(parse_at(text, zone)))
    if text.startswith("cron("):
        from workflows.schedule_eventbridge import check_fires, parse_eventbridge

        rule = parse_eventbridge(text, zone)
        check_fires(text, rule)
        return Schedule(text, timezone, None, rule)
    from workflows.schedule_cron import parse_plain

    return Schedule(text, timezone, None, parse_plain(text, zone))


def _expression_text(expr: Any) -> str:
    if not isinstance(expr, str) or not expr.strip():
        raise ScheduleError(
            f"empty schedule {show(expr) if isinstance(expr, str) else type(expr).__name__}", RATE_EXAMPLE
        )
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise ScheduleError(
            f"the schedule {show(expr, 40)} is longer than EventBridge's {MAX_EXPRESSION_CHARS} characters",
            RATE_EXAMPLE,
        )
    text = expr.strip()
    if text != expr and text.startswith(tuple(_GENERIC)):
        raise ScheduleError(f"{show(expr)}: no spaces around the expression", text)
    return text


def _zone(name: Any) -> ZoneInfo:
    if not isinstance(name, str):
        raise ScheduleError(f"the time zone must be a name, got {type(name).__name__}", "UTC", "timezone")
    if len(name) > MAX_TIMEZONE_CHARS or not _ZONE_NAME.fullmatch(name):
        raise ScheduleError(
            f"unknown time zone {show(name, 40)}; use an IANA name like Europe/Berlin", "UTC", "timezone"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ScheduleError(
            f"unknown time zone {show(name, 40)}; use an IANA name like Europe/Berlin",
            _zone_hint(name),
            "timezone",
        ) from exc


def _zone_hint(name: str) -> str:
    """The zone meant when only the case is wrong (``europe/berlin``), else UTC."""
    from zoneinfo import available_timezones

    by_case = {zone.lower(): zone for zone in available_timezones()}
    return by_case.get(name.lower(), "UTC")


def _checked(exc: ScheduleError, expr: Any, timezone: Any) -> ScheduleError:
    """``exc`` with a hint that parses: the hint itself if it does, else a plain example."""
    if not exc.hint:
        return exc
    if exc.field == "timezone":
        valid = _zone_ok(exc.hint)
    else:
        zone = timezone if isinstance(timezone, str) and _zone_ok(timezone) else "UTC"
        valid = exc.hint != expr and _parses(exc.hint, zone)
    if valid:
        return exc
    text = expr.strip() if isinstance(expr, str) else ""
    generic = next((v for k, v in _GENERIC.items() if text.startswith(k)), "0 12 * * *")
    hint = "UTC" if exc.field == "timezone" else generic
    return ScheduleError(exc.problem, hint, exc.field)


def _zone_ok(name: str) -> bool:
    try:
        _zone(name)
    except ScheduleError:
        return False
    return True


def _parses(expr: str, timezone: str) -> bool:
    try:
        _parse(expr, timezone)
    except ScheduleError:
        return False
    return True
