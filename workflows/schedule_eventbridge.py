"""EventBridge ``cron(minutes hours day-of-month month day-of-week year)``, computed by croniter.

EventBridge's own, kept here: its fields (day-of-week 1-7 = SUN-SAT, ``?`` in exactly one of the
two day fields, a year field 1970-2199) and its validation, which is Quartz's (EventBridge's
cron is Quartz's with the seconds field dropped): ``L``/``LW``/``L-n`` stand alone in
day-of-month and ``nL`` alone in day-of-week, one ``#`` value at most, ``W`` on a single day,
steps within the field, ranges that wrap around except in the year field, names in any case.

Translated to croniter, which does the date arithmetic and the time zone: every field is
expanded here to the explicit values croniter reads (day-of-week renumbered to croniter's 0-6),
``L``, ``nW``, ``nL`` (croniter's ``L<n>``) and ``n#k``.

Written here because croniter lacks it: ``LW`` (the last weekday), ``L-n`` and ``L-nW`` (n days
before the last, and the weekday nearest to it), which croniter is asked for one month at a
time with the day spelled out; the year field (croniter's stops at 2099 and needs a seconds
field), as jumps to the next listed year; EventBridge's refusals, with a fix that parses; and
EventBridge Scheduler's daylight-saving rule, applied to croniter's answers: a wall time a
spring-forward gap skips does not fire (croniter would fire it at the end of the gap), and a
wall time repeated on fall-back fires once, the first time (croniter would fire both).
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from workflows.errors import ScheduleError
from workflows.schedule_base import Fires, Keep, collect, cron_chunks, day_grid, local_midnight, refuse
from workflows.schedule_cron import CroniterRule

YEARS = (1970, 2199)
EXAMPLE = "cron(0 12 * * ? *)"
_MONTHS = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
_FIELDS = ("minutes", "hours", "day-of-month", "month", "day-of-week", "year")
_BOUNDS = {"minutes": (0, 59), "hours": (0, 23), "day-of-month": (1, 31), "month": (1, 12),
           "day-of-week": (1, 7), "year": YEARS}  # fmt: skip
_NAMES: dict[str, dict[str, int]] = {"month": _MONTHS, "day-of-week": _DAYS}
_LAST_DOM = re.compile(r"L(?:-([0-9]+))?(W?)")
_NEAREST = re.compile(r"([0-9]+)W")
_LAST_DOW = re.compile(r"([0-9]+|[A-Z]{3})L")
_NTH = re.compile(r"([0-9]+|[A-Z]{3})#([0-9]+)")
_SPACE = re.compile(r"[ \t]+")
_MAX_STEPS = 2_000  # skipped candidates (DST, years) before giving up on finding a fire


class _Refused(Exception):
    """A field that cannot be read; ``fix`` replaces the field in the hint."""

    def __init__(self, index: int, problem: str, fix: str | None = None) -> None:
        super().__init__(problem)
        self.index, self.problem, self.fix = index, problem, fix


@dataclass(frozen=True, slots=True)
class _Last:
    """``LW``, ``L-n``, ``L-nW``: a day counted back from the month's end."""

    back: int
    weekday: bool

    def day(self, year: int, month: int) -> int | None:
        ndays = calendar.monthrange(year, month)[1]
        day = ndays - self.back
        if day < 1:
            return None
        if not self.weekday:
            return day
        wd = calendar.weekday(year, month, day)
        if wd == 5:  # Saturday: the Friday before, or Monday the 3rd when the 1st is a Saturday
            return day - 1 if day > 1 else day + 2
        if wd == 6:  # Sunday: the Monday after, or the Friday before when it is the last day
            return day + 1 if day < ndays else day - 2
        return day


class EventBridgeRule:
    """croniter's fires, within the year field, on the custom day, by EventBridge's DST rule."""

    def __init__(
        self,
        zone: ZoneInfo,
        minutes: list[int],
        hours: list[int],
        dom: str,
        last: _Last | None,
        months: list[int],
        dow: str,
        years: list[int],
    ) -> None:
        self.zone = zone
        self.years = years
        self._year_set = frozenset(years)
        self.months = months
        self.grid = day_grid(minutes, hours)
        self._grid_set = frozenset(self.grid)
        self._time = f"{_text(minutes, 0, 59)} {_text(hours, 0, 23)}"
        self._last = last
        self._core = CroniterRule(f"{self._time} {dom} {_text(months, 1, 12)} {dow}", zone)
        self._by_month: dict[tuple[int, int], CroniterRule] = {}

    def next_after(self, after: datetime) -> datetime | None:
        cursor = after
        for _ in range(_MAX_STEPS):
            fire = self._candidate(cursor)
            if fire is None:
                return None
            local = fire.astimezone(self.zone)
            if local.year not in self._year_set:
                later = bisect_right(self.years, local.year)
                if later == len(self.years):
                    return None
                cursor = local_midnight(self.zone, self.years[later]) - timedelta(seconds=1)
                continue
            if self._on_the_wall(local):
                return fire
            cursor = fire
        return None

    def between(self, start: datetime, end: datetime, limit: int, keep: Keep) -> Fires:
        return collect(cron_chunks(self.next_after, self.zone, self.grid, start, end), limit, keep)

    def _on_the_wall(self, local: datetime) -> bool:
        """EventBridge Scheduler's DST rule: gap times are skipped, repeated ones fire once."""
        if local.hour * 3600 + local.minute * 60 not in self._grid_set:
            return False  # croniter moved a wall time out of a gap
        return not (local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset())

    def _candidate(self, after: datetime) -> datetime | None:
        if self._last is None:
            return self._core.next_after(after)
        local = after.astimezone(self.zone)
        year, month = local.year, local.month
        while year <= self.years[-1]:
            day = self._last.day(year, month) if month in self.months else None
            if day is not None and year in self._year_set:
                start = max(after, local_midnight(self.zone, year, month) - timedelta(seconds=1))
                fire = self._month_rule(day, month).next_after(start)
                if fire is not None:
                    there = fire.astimezone(self.zone)
                    if (there.year, there.month) == (year, month):
                        return fire
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return None

    def _month_rule(self, day: int, month: int) -> CroniterRule:
        rule = self._by_month.get((day, month))
        if rule is None:
            rule = self._by_month[day, month] = CroniterRule(f"{self._time} {day} {month} *", self.zone)
        return rule


def _text(values: list[int], lo: int, hi: int) -> str:
    return "*" if len(values) == hi - lo + 1 else ",".join(map(str, values))


# --- parsing ----------------------------------------------------------------------------------


def parse_eventbridge(text: str, zone: ZoneInfo) -> EventBridgeRule:
    if not text.endswith(")"):
        raise refuse(f"{text}: missing the closing parenthesis", _hint_text(text + ")", EXAMPLE))
    inner = text[5:-1]
    if inner != inner.strip(" \t"):
        raise refuse(f"{text}: no spaces just inside cron( )", f"cron({inner.strip()})")
    fields = _SPACE.split(inner) if inner else []
    if len(fields) != 6:
        raise refuse(
            f"{text}: EventBridge cron has 6 fields (minutes hours day-of-month month day-of-week year)",
            _six_fields(fields),
        )
    _check_question_marks(text, fields)
    try:
        return _build(fields, zone)
    except _Refused as exc:
        fix = exc.fix if exc.fix is not None else _default_fix(exc.index)
        fixed = [fix if i == exc.index else f for i, f in enumerate(fields)]
        if exc.index in (2, 4) and exc.fix is None:
            fixed[2], fixed[4] = ("*", "?") if exc.index == 2 else ("?", "*")
        raise refuse(f"{text}: {exc.problem}", f"cron({' '.join(fixed)})") from None


def _hint_text(candidate: str, fallback: str) -> str:
    return candidate if candidate.count("(") == 1 else fallback


def _six_fields(fields: list[str]) -> str:
    if len(fields) == 7:
        fields = fields[1:]  # Quartz's seconds first
    elif len(fields) == 5:
        fields = [*fields, "*"]  # a plain cron put in cron( )
    else:
        return EXAMPLE
    if "?" not in (fields[2], fields[4]):
        fields[2 if fields[4] != "*" and fields[2] == "*" else 4] = "?"
    return f"cron({' '.join(fields)})"


def _default_fix(index: int) -> str:
    return ("0", "0", "*", "*", "*", "*")[index]


def _check_question_marks(text: str, fields: list[str]) -> None:
    """EventBridge wants ``?`` in exactly one day field; say which one to change."""
    minute, hour, dom, month, dow, year = fields
    for index, value in enumerate(fields):
        if "?" not in value or (index in (2, 4) and value == "?"):
            continue
        fixed = list(fields)
        if index in (2, 4):
            fixed[index], fixed[6 - index] = "?", "*"
        else:
            fixed[index] = _default_fix(index)
        raise refuse(
            f"{text}: ? stands alone, in day-of-month or day-of-week only (it is in {_FIELDS[index]})",
            f"cron({' '.join(fixed)})",
        )
    if dom == "?" and dow == "?":
        raise refuse(
            f"{text}: only one of day-of-month and day-of-week may be ?",
            f"cron({minute} {hour} * {month} ? {year})",
        )
    if dom != "?" and dow != "?":
        both = dom != "*" and dow != "*"
        fixed = (
            [minute, hour, dom, month, "?", year]
            if dow == "*" or both
            else [minute, hour, "?", month, dow, year]
        )
        problem = (
            f"EventBridge cannot combine day-of-month {dom} with day-of-week {dow}; put ? in one of them"
            if both
            else "exactly one of day-of-month and day-of-week must be ?"
        )
        raise refuse(f"{text}: {problem}", f"cron({' '.join(fixed)})")


def _build(fields: list[str], zone: ZoneInfo) -> EventBridgeRule:
    minute, hour, dom, month, dow, year = fields
    minutes = sorted(_values(0, minute))
    hours = sorted(_values(1, hour))
    months = sorted(_values(3, month))
    years = sorted(_values(5, year))  # "*" too: EventBridge's years end in 2199
    dom_text, last = ("*", None) if dom == "?" else _day_of_month(dom)
    dow_text = "*" if dow == "?" else _day_of_week(dow)
    return EventBridgeRule(zone, minutes, hours, dom_text, last, months, dow_text, years)


def _day_of_month(field: str) -> tuple[str, _Last | None]:
    upper = field.upper()
    special = [p for p in upper.split(",") if "L" in p or "W" in p]
    if special and "," in upper:
        raise _Refused(2, f"day-of-month {special[0]} cannot be combined with other days", special[0])
    last = _LAST_DOM.fullmatch(upper)
    if last is not None:
        offset, weekday = last.group(1), bool(last.group(2))
        if offset is None:
            return ("*", _Last(0, True)) if weekday else ("L", None)
        if len(offset) > 2 or int(offset) > 30:
            raise _Refused(2, f"L-{offset}: the offset from the last day is at most 30", "L")
        return "*", _Last(int(offset), weekday)
    nearest = _NEAREST.fullmatch(upper)
    if nearest is not None:
        day = _number(2, nearest.group(1))
        return f"{day}W", None
    return ",".join(map(str, sorted(_values(2, field)))), None


def _day_of_week(field: str) -> str:
    upper = field.upper()
    parts = upper.split(",")
    nth = [p for p in parts if "#" in p]
    if len(nth) > 1 or (nth and len(parts) > 1):
        raise _Refused(4, "only one day-of-week value is allowed with #", nth[0])
    last = [p for p in parts if "L" in p]
    if last and len(parts) > 1:
        raise _Refused(4, "day-of-week L cannot be combined with other days", last[0])
    if upper == "L":
        return "6"  # Quartz: L alone is the last day of the week, Saturday
    if found := _LAST_DOW.fullmatch(upper):
        return f"L{_number(4, found.group(1)) - 1}"
    if found := _NTH.fullmatch(upper):
        day = _number(4, found.group(1))
        if not (found.group(2).isdigit() and len(found.group(2)) == 1 and 1 <= int(found.group(2)) <= 5):
            raise _Refused(
                4, f"the number after # must be 1-5, got {found.group(2)!r}", f"{found.group(1)}#1"
            )
        return f"{day - 1}#{found.group(2)}"
    return ",".join(str(v - 1) for v in sorted(_values(4, field)))


def _values(index: int, field: str) -> set[int]:
    """A standard field: ``*``, ``a``, ``a-b``, each with an optional ``/step``, comma-joined."""
    name = _FIELDS[index]
    lo, hi = _BOUNDS[name]
    span = hi - lo + 1
    values: set[int] = set()
    for part in field.split(","):
        base, slash, step_text = part.partition("/")
        step = _number(index, step_text, (1, span), "step") if slash else 1
        if base == "*":
            first, last = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _number(index, a), _number(index, b)
            if last < first:
                if name == "year":
                    raise _Refused(index, f"the year range {base} runs backwards", f"{b}-{a}")
                last += span  # Quartz: a range past the end wraps around to the start
        else:
            first = _number(index, base)
            last = hi if slash else first
        values.update((v - lo) % span + lo for v in range(first, last + 1, step))
    return values


def _number(index: int, text: str, bounds: tuple[int, int] | None = None, what: str = "value") -> int:
    name = _FIELDS[index]
    lo, hi = bounds or _BOUNDS[name]
    names = _NAMES.get(name)
    if names is not None and what == "value" and text.upper() in names:
        return names[text.upper()]
    if not (text.isascii() and text.isdigit()):
        accepted = f"{lo}-{hi}" + (f" or {'-'.join([next(iter(names)), list(names)[-1]])}" if names else "")
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise _Refused(index, f"{name} {what} {shown!r} is not a number {accepted}")
    value = int(text) if len(text) <= 6 else hi + 1
    if not lo <= value <= hi:
        shown_value = str(value) if len(text) <= 6 else text[:20] + ("..." if len(text) > 20 else "")
        fix = "1" if name == "day-of-week" and what == "value" and value == 0 else None
        raise _Refused(index, f"{name} {what} {shown_value} is out of range {lo}-{hi}", fix)
    return value


def check_fires(text: str, rule: EventBridgeRule) -> None:
    probe = local_midnight(rule.zone, rule.years[0]) - timedelta(days=1)
    if rule.next_after(probe.astimezone(UTC)) is None:
        raise ScheduleError(f"{text}: never fires (check the day, month and year fields)", EXAMPLE)
