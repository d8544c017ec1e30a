"""Schedule expressions: when a schedule trigger fires.

Three forms are accepted:

- plain 5-field cron, ``*/5 * * * *`` (minute hour day-of-month month day-of-week), with
  standard Unix (Vixie) semantics: day-of-week 0-7 (0 and 7 are Sunday) or SUN-SAT, months
  1-12 or JAN-DEC, and when both day fields are restricted a day matching *either* fires (a
  field starting with ``*`` counts as unrestricted, as in Vixie cron);
- EventBridge ``cron(min hour day-of-month month day-of-week year)``: exactly one of the day
  fields is ``?``; day-of-week is 1-7 = SUN-SAT; ``L`` (last day of month), ``LW`` (last
  weekday), ``15W`` (weekday nearest the 15th, never leaving the month), ``6L`` (last Friday),
  ``3#2`` (second Tuesday); year 1970-2199 with ranges, lists and steps;
- ``rate(N unit)`` with unit minute(s), hour(s), day(s) and, beyond EventBridge, second(s);
  singular for 1 and plural otherwise, as EventBridge insists. Rate fires sit on multiples of
  the interval since 1970-01-01T00:00Z, so a restart never shifts them; rate ignores time zones.

Time zones and daylight saving time. Cron times are wall-clock times in ``timezone`` (an IANA
name). Following cronie:

- a wall time skipped by a spring-forward gap fires once, at the first instant after the gap
  (``30 2 * * *`` in Europe/Berlin fires at 03:00 CEST on the last Sunday of March) — the run
  is late, never lost; several skipped times, or a skipped time and 03:00 itself, make one fire;
- a wall time that occurs twice (fall-back) fires once, at its first occurrence;
- except for schedules whose hour field selects every hour (``0 * * * *``, ``*/5 * * * *``):
  they follow real time instead, so they fire in both copies of a repeated hour and skip the
  wall times that do not exist. An hourly job thus fires once per real hour across both
  transitions, never twice in one hour and never with a two-hour hole.

``croniter`` (the engine's cron dependency) is used as an independent cross-check in the
tests; the arithmetic here is our own because croniter neither numbers EventBridge weekdays
nor applies the DST rules above. Everything is pure: no clock reads, all inputs explicit.

Example::

    >>> s = parse_schedule("cron(0 2 ? * MON-FRI *)", "Europe/Berlin")
    >>> s.next_fire(datetime(2026, 1, 2, 12, tzinfo=UTC)).isoformat()
    '2026-01-05T01:00:00+00:00'
"""

from __future__ import annotations

import calendar
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from workflows.errors import ScheduleError

__all__ = ["Fires", "Schedule", "parse_schedule"]

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MONTHS = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_EB_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
_UNIX_DAYS = {name: n - 1 for name, n in _EB_DAYS.items()}
_RATE_UNITS = {"second": 1, "minute": 60, "hour": 3_600, "day": 86_400}
_YEARS = (1970, 2199)
_HORIZON_YEARS = 400  # the Gregorian calendar repeats after 400 years: no fire by then means never


class Fires(NamedTuple):
    """Fires in a window: ``fires`` holds at most ``limit`` of them, ``total`` counts all."""

    fires: list[datetime]
    total: int


# --- day rules --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _DomRule:
    days: frozenset[int] = frozenset()
    last: bool = False  # L
    last_weekday: bool = False  # LW
    nearest_weekday: frozenset[int] = frozenset()  # 15W

    def days_in(self, year: int, month: int) -> set[int]:
        ndays = calendar.monthrange(year, month)[1]
        found = {d for d in self.days if d <= ndays}
        if self.last:
            found.add(ndays)
        if self.last_weekday:
            found.add(_weekday_at_or_before(year, month, ndays))
        found.update(_nearest_weekday(year, month, d, ndays) for d in self.nearest_weekday if d <= ndays)
        return found


@dataclass(frozen=True, slots=True)
class _DowRule:
    weekdays: frozenset[int] = frozenset()  # Python weekdays, Monday = 0
    last: frozenset[int] = frozenset()  # 6L: the last Friday
    nth: frozenset[tuple[int, int]] = frozenset()  # 3#2: (Tuesday, 2)

    def days_in(self, year: int, month: int) -> set[int]:
        first_wd, ndays = calendar.monthrange(year, month)
        found = {d for d in range(1, ndays + 1) if (first_wd + d - 1) % 7 in self.weekdays}
        last_wd = (first_wd + ndays - 1) % 7
        found.update(ndays - (last_wd - wd) % 7 for wd in self.last)
        for wd, n in self.nth:
            day = 1 + (wd - first_wd) % 7 + 7 * (n - 1)
            if day <= ndays:
                found.add(day)
        return found


def _weekday_at_or_before(year: int, month: int, day: int) -> int:
    while calendar.weekday(year, month, day) >= 5:
        day -= 1
    return day


def _nearest_weekday(year: int, month: int, day: int, ndays: int) -> int:
    wd = calendar.weekday(year, month, day)
    if wd == 5:  # Saturday: the Friday before, or Monday the 3rd when the 1st is a Saturday
        return day - 1 if day > 1 else day + 2
    if wd == 6:  # Sunday: the Monday after, or the Friday before when it is the last day
        return day + 1 if day < ndays else day - 2
    return day


# --- the compiled cron ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Cron:
    minutes_of_day: tuple[int, ...]  # sorted wall-clock minutes since midnight
    months: frozenset[int]
    years: frozenset[int] | None  # None: every year
    dom: _DomRule | None  # None: unrestricted
    dow: _DowRule | None
    follows_real_time: bool  # the hour field selects every hour (see the module docstring)

    def days_in(self, year: int, month: int) -> list[int]:
        if month not in self.months or (self.years is not None and year not in self.years):
            return []
        if self.dom is None and self.dow is None:
            return list(range(1, calendar.monthrange(year, month)[1] + 1))
        found: set[int] = set()
        if self.dom is not None:
            found |= self.dom.days_in(year, month)
        if self.dow is not None:
            found |= self.dow.days_in(year, month)
        return sorted(found)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule. Build it with ``parse_schedule``.

    ``interval_s`` is the period of a ``rate(...)`` schedule and ``None`` for cron.
    """

    expression: str
    timezone: str
    interval_s: float | None
    _cron: _Cron | None = field(repr=False, compare=False)
    _zone: ZoneInfo = field(repr=False, compare=False)

    def next_fire(self, after: datetime) -> datetime:
        """The first fire strictly after ``after`` (aware), as an aware UTC datetime.

        Raises ``ScheduleError`` if the schedule never fires again (e.g. its year field has
        passed).
        """
        after_s = _timestamp(after)
        if self.interval_s is not None:
            return _utc((after_s // self.interval_s + 1) * self.interval_s)
        for instant in self._instants_from(after_s):
            return _utc(instant)
        raise ScheduleError(f"{self.expression} never fires after {after.isoformat()}")

    def fires_between(
        self, start: datetime, end: datetime, limit: int, keep: Literal["first", "last"] = "first"
    ) -> Fires:
        """Fires in ``(start, end]``, for catching up after downtime.

        Returns at most ``limit`` of them (the earliest, or the latest with ``keep="last"``), in
        time order, and the total count in the window.
        """
        start_s, end_s = _timestamp(start), _timestamp(end)
        if self.interval_s is not None:
            return self._rate_fires(start_s, end_s, limit, keep)
        limit = max(limit, 0)
        kept: deque[float] = deque(maxlen=limit) if keep == "last" else deque()
        total = 0
        for instant in self._instants_from(start_s):
            if instant > end_s:
                break
            total += 1
            if keep == "last" or len(kept) < limit:
                kept.append(instant)
        return Fires([_utc(s) for s in kept], total)

    def _rate_fires(self, start_s: float, end_s: float, limit: int, keep: str) -> Fires:
        step = self.interval_s
        assert step is not None
        first, last = int(start_s // step) + 1, int(end_s // step)
        total = max(0, last - first + 1)
        count = min(total, max(limit, 0))
        begin = last - count + 1 if keep == "last" else first
        return Fires([_utc((begin + i) * step) for i in range(count)], total)

    def _instants_from(self, after_s: float) -> Iterator[float]:
        """Fire instants (epoch seconds) strictly after ``after_s``, in order, to the horizon."""
        cron = self._cron
        assert cron is not None
        # Start a day early: a fall-back at midnight can put yesterday's last wall times after
        # today's first ones. Hold each day's fires until the next day's are known to be later.
        day = datetime.fromtimestamp(after_s, self._zone).date() - timedelta(days=1)
        last_year = min(day.year + _HORIZON_YEARS, _YEARS[1] + 1)
        pending: list[float] = []
        for current in _matching_days(cron, day, last_year):
            todays = [s for s in _day_instants(cron, self._zone, current) if s > after_s]
            if not todays:
                continue
            merged = sorted(set(pending) | set(todays))
            horizon = min(todays)
            yield from (s for s in merged if s < horizon)
            pending = [s for s in merged if s >= horizon]
        yield from pending


def _matching_days(cron: _Cron, start: date, last_year: int) -> Iterator[date]:
    year, month = start.year, start.month
    while year < last_year:
        if cron.years is not None and year not in cron.years:
            year, month = year + 1, 1
            continue
        for day in cron.days_in(year, month):
            if (year, month, day) >= (start.year, start.month, start.day):
                yield date(year, month, day)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def _day_instants(cron: _Cron, zone: ZoneInfo, day: date) -> list[float]:
    base = (day.toordinal() - _EPOCH_ORDINAL) * 86_400
    before = _offset_s(datetime(day.year, day.month, day.day, tzinfo=zone))
    nxt = day + timedelta(days=1)
    if before == _offset_s(datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone)):
        return [base + m * 60 - before for m in cron.minutes_of_day]
    instants: set[float] = set()
    for minute in cron.minutes_of_day:
        wall = datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=zone)
        instants.update(_resolve(zone, wall, base + minute * 60, cron.follows_real_time))
    return sorted(instants)


def _resolve(zone: ZoneInfo, wall: datetime, wall_s: int, follows_real_time: bool) -> list[float]:
    """The instants a wall-clock time stands for, under the DST rules of the module docstring."""
    early, late = _offset_s(wall), _offset_s(wall.replace(fold=1))
    if early == late:
        return [wall_s - early]
    if early > late:  # fall-back: the wall time happens twice
        return [wall_s - early, wall_s - late] if follows_real_time else [wall_s - early]
    if follows_real_time:  # a gap: every-hour schedules just carry on with the next real hour
        return []
    return [_transition(zone, wall_s - late, wall_s - early, early)]


def _transition(zone: ZoneInfo, lo: int, hi: int, old_offset: int) -> int:
    """The first second in ``(lo, hi]`` whose UTC offset is no longer ``old_offset``."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_s(datetime.fromtimestamp(mid, zone)) == old_offset:
            lo = mid
        else:
            hi = mid
    return hi


def _offset_s(moment: datetime) -> int:
    offset = moment.utcoffset()
    assert offset is not None
    return int(offset.total_seconds())


def _timestamp(moment: datetime) -> float:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"schedule times must be timezone-aware, got naive {moment.isoformat()}")
    return moment.timestamp()


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# --- parsing ---------------------------------------------------------------------------------


def parse_schedule(expr: str, timezone: str = "UTC") -> Schedule:
    """Parse ``expr`` (5-field cron, ``cron(...)`` or ``rate(...)``) for ``timezone``.

    ``rate(N seconds)`` is a Sluice extension; EventBridge's smallest rate unit is the minute.

    Raises ``ScheduleError`` naming the problem and a valid form, e.g.
    ``rate(1 minutes): write rate(1 minute)``.
    """
    if not isinstance(expr, str) or not expr.strip():
        raise ScheduleError(
            f"empty schedule {expr!r} (write cron(0 12 * * ? *), rate(5 minutes) or 0 12 * * *)"
        )
    text = expr.strip()
    zone = _zone(timezone)
    if text.startswith("rate("):
        return Schedule(text, timezone, float(_parse_rate(text)), None, zone)
    if text.startswith("cron("):
        if not text.endswith(")"):
            raise ScheduleError(f"{text}: missing the closing parenthesis")
        cron = _parse_eventbridge(text, text[5:-1].split())
    else:
        cron = _parse_unix(text, text.split())
    schedule = Schedule(text, timezone, None, cron, zone)
    _check_fires_at_all(schedule, cron)
    return schedule


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ScheduleError(
            f"unknown time zone {name!r} (use an IANA name like Europe/Berlin or UTC)"
        ) from exc


def _check_fires_at_all(schedule: Schedule, cron: _Cron) -> None:
    first_year = min(cron.years) if cron.years else 2000
    probe = datetime(first_year, 1, 1, tzinfo=UTC) - timedelta(days=2)
    if next(schedule._instants_from(probe.timestamp()), None) is None:
        raise ScheduleError(f"{schedule.expression} never fires (check the day and month fields)")


_RATE = re.compile(r"rate\(\s*(\S+)\s+(\S+)\s*\)")


def _parse_rate(text: str) -> int:
    found = _RATE.fullmatch(text)
    if not found:
        raise ScheduleError(f"{text}: write rate(<number> <unit>), e.g. rate(5 minutes)")
    number, unit = found.groups()
    if not number.isdigit() or int(number) == 0:
        raise ScheduleError(f"{text}: the rate must be a positive whole number, e.g. rate(5 minutes)")
    value = int(number)
    singular = unit[:-1] if unit.endswith("s") else unit
    if singular not in _RATE_UNITS:
        raise ScheduleError(f"{text}: unknown unit {unit!r} (use seconds, minutes, hours or days)")
    proper = singular if value == 1 else f"{singular}s"
    if unit != proper:
        raise ScheduleError(f"{text}: write rate({value} {proper})")
    return value * _RATE_UNITS[singular]


def _parse_unix(text: str, fields: list[str]) -> _Cron:
    if len(fields) == 6:
        raise ScheduleError(f"{text}: six fields is the EventBridge form; write cron({text})")
    if len(fields) != 5:
        raise ScheduleError(
            f"{text}: expected 5 fields (minute hour day-of-month month day-of-week), e.g. */5 * * * *, "
            "or cron(...) / rate(...)"
        )
    for part in ",".join(fields).split(","):
        if "?" in part or "#" in part or re.fullmatch(r"\d*L|\d+W|LW", part):
            raise ScheduleError(
                f"{text}: {part!r} is EventBridge syntax; write cron(minutes hours day-of-month month "
                "day-of-week year)"
            )
    minute, hour, dom, month, dow = fields
    dow_values = _parse_field(dow, "day-of-week", 0, 7, _UNIX_DAYS, text)
    return _make_cron(
        _parse_field(minute, "minute", 0, 59, None, text),
        _parse_field(hour, "hour", 0, 23, None, text),
        _parse_field(month, "month", 1, 12, _MONTHS, text),
        None,
        None if dom.startswith("*") else _DomRule(days=_parse_field(dom, "day-of-month", 1, 31, None, text)),
        None if dow.startswith("*") else _DowRule(weekdays=frozenset((v + 6) % 7 for v in dow_values)),
    )


def _parse_eventbridge(text: str, fields: list[str]) -> _Cron:
    if len(fields) != 6:
        raise ScheduleError(
            f"{text}: EventBridge cron has 6 fields (minutes hours day-of-month month day-of-week year), "
            "e.g. cron(0 12 * * ? *)"
        )
    minute, hour, dom, month, dow, year = fields
    _check_question_marks(text, fields)
    years = None if year == "*" else _parse_field(year, "year", *_YEARS, None, text)
    return _make_cron(
        _parse_field(minute, "minutes", 0, 59, None, text),
        _parse_field(hour, "hours", 0, 23, None, text),
        _parse_field(month, "month", 1, 12, _MONTHS, text),
        years,
        None if dom in ("?", "*") else _parse_dom(dom, text),
        None if dow in ("?", "*") else _parse_dow(dow, text),
    )


def _check_question_marks(text: str, fields: list[str]) -> None:
    """EventBridge wants ``?`` in exactly one day field; say which one to change."""
    minute, hour, dom, month, dow, year = fields
    if "?" in (minute, hour, month, year):
        raise ScheduleError(f"{text}: ? is only allowed in day-of-month or day-of-week")
    if dom == "?" and dow == "?":
        fix = f"cron({minute} {hour} * {month} ? {year})"
        raise ScheduleError(f"{text}: only one of day-of-month and day-of-week may be ?; write {fix}")
    if dom != "?" and dow != "?":
        if dom != "*" and dow != "*":
            raise ScheduleError(
                f"{text}: EventBridge cannot combine day-of-month {dom} with day-of-week {dow}; "
                "put ? in one of them"
            )
        fixed = [minute, hour, dom, month, "?", year] if dow == "*" else [minute, hour, "?", month, dow, year]
        raise ScheduleError(
            f"{text}: exactly one of day-of-month and day-of-week must be ?; write cron({' '.join(fixed)})"
        )


def _parse_dom(text: str, expr: str) -> _DomRule:
    days: set[int] = set()
    last = last_weekday = False
    nearest: set[int] = set()
    for part in text.split(","):
        if part == "L":
            last = True
        elif part == "LW":
            last_weekday = True
        elif part.endswith("W"):
            nearest.add(_number(part[:-1], "day-of-month", 1, 31, None, expr))
        else:
            days |= _parse_field(part, "day-of-month", 1, 31, None, expr)
    return _DomRule(frozenset(days), last, last_weekday, frozenset(nearest))


def _parse_dow(text: str, expr: str) -> _DowRule:
    weekdays: set[int] = set()
    last: set[int] = set()
    nth: set[tuple[int, int]] = set()
    for part in text.split(","):
        if part == "L":
            raise ScheduleError(f"{expr}: L in day-of-week needs a day, e.g. 6L for the last Friday")
        if part.endswith("L"):
            last.add(_eb_weekday(_number(part[:-1], "day-of-week", 1, 7, _EB_DAYS, expr)))
        elif "#" in part:
            day, _, n = part.partition("#")
            occurrence = _number(n, "day-of-week #", 1, 5, None, expr)
            nth.add((_eb_weekday(_number(day, "day-of-week", 1, 7, _EB_DAYS, expr)), occurrence))
        else:
            weekdays.update(_eb_weekday(v) for v in _parse_field(part, "day-of-week", 1, 7, _EB_DAYS, expr))
    return _DowRule(frozenset(weekdays), frozenset(last), frozenset(nth))


def _eb_weekday(value: int) -> int:
    return (value + 5) % 7  # EventBridge 1 = SUN ... 7 = SAT; Python 0 = Monday


def _make_cron(
    minutes: frozenset[int],
    hours: frozenset[int],
    months: frozenset[int],
    years: frozenset[int] | None,
    dom: _DomRule | None,
    dow: _DowRule | None,
) -> _Cron:
    minutes_of_day = tuple(sorted(h * 60 + m for h in hours for m in minutes))
    return _Cron(minutes_of_day, months, years, dom, dow, follows_real_time=len(hours) == 24)


def _parse_field(
    text: str, name: str, lo: int, hi: int, names: dict[str, int] | None, expr: str
) -> frozenset[int]:
    """A standard cron field: ``*``, ``a``, ``a-b``, each with an optional ``/step``, comma-joined."""
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = _number(step_text, f"{name} step", 1, hi - lo + 1, None, expr) if slash else 1
        if base == "*":
            first, last = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _number(a, name, lo, hi, names, expr), _number(b, name, lo, hi, names, expr)
            if first > last:
                raise ScheduleError(f"{expr}: {name} range {base} runs backwards; write {b}-{a}")
        else:
            first = _number(base, name, lo, hi, names, expr)
            last = hi if slash else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _number(text: str, name: str, lo: int, hi: int, names: dict[str, int] | None, expr: str) -> int:
    if names is not None and text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        accepted = f"{lo}-{hi}" + (f" or {'-'.join([next(iter(names)), list(names)[-1]])}" if names else "")
        raise ScheduleError(f"{expr}: {name} value {text!r} is not a number {accepted}")
    value = int(text)
    if not lo <= value <= hi:
        raise ScheduleError(f"{expr}: {name} value {value} is out of range {lo}-{hi}")
    return value
