"""``rate(N unit)`` and one-time ``at(yyyy-mm-ddThh:mm:ss)`` schedules, as EventBridge writes them.

Rate: ``N`` is a positive whole number in the digits 0-9, one space, a unit (``minute(s)``,
``hour(s)``, ``day(s)``, and ``second(s)``, Sluice's extension: EventBridge's smallest unit is the
minute); singular for 1 and plural otherwise, no padding inside the parentheses, as EventBridge
insists. Fires sit on multiples of the interval since 1970-01-01T00:00Z, so a restart never
shifts them and time zones do not matter. The interval is bounded (``MAX_RATE_S``, 100 years):
EventBridge states no bound, but a rate beyond it has no fire a calendar can show.

At: a wall-clock time in the trigger's time zone, fired once. A time skipped by a DST gap
fires at the end of the gap; a repeated one at its first occurrence. Once passed (or fired,
which the trigger records in its cursor), the schedule has no next fire: ``next_after`` answers
``None``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from workflows.schedule_base import HORIZON_S, Fires, Keep, refuse, show, utc

RATE_UNITS = {"second": 1, "minute": 60, "hour": 3_600, "day": 86_400}
MAX_RATE_S = 36_500 * 86_400  #: 100 years of 365 days
AT_YEARS = (1970, 2199)  #: the years an EventBridge cron year field accepts
_UNIT_ALIASES = {
    "s": "second", "sec": "second", "secs": "second", "m": "minute", "min": "minute", "mins": "minute",
    "h": "hour", "hr": "hour", "hrs": "hour", "d": "day", "week": "day", "weeks": "day", "w": "day",
}  # fmt: skip
_RATE = re.compile(r"rate\(([0-9]+) ([a-z]+)\)")
_AT = re.compile(r"at\(([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\)")
RATE_EXAMPLE = "rate(5 minutes)"
AT_EXAMPLE = "at(2030-01-01T00:00:00)"


@dataclass(frozen=True, slots=True)
class RateRule:
    step: int  #: seconds

    def next_after(self, after: datetime) -> datetime | None:
        index = int(after.timestamp() // self.step) + 1
        fire = index * self.step
        return utc(fire) if fire <= HORIZON_S else None

    def between(self, start: datetime, end: datetime, limit: int, keep: Keep) -> Fires:
        step = self.step
        first = int(start.timestamp() // step) + 1
        last = int(min(end.timestamp(), HORIZON_S) // step)
        total = max(0, last - first + 1)
        count = min(total, limit)
        begin = last - count + 1 if keep == "last" else first
        return Fires([utc((begin + i) * step) for i in range(count)], total)


@dataclass(frozen=True, slots=True)
class AtRule:
    instant: datetime  #: UTC

    def next_after(self, after: datetime) -> datetime | None:
        return self.instant if self.instant > after else None

    def between(self, start: datetime, end: datetime, limit: int, keep: Keep) -> Fires:
        if start < self.instant <= end:
            return Fires([self.instant][:limit], 1)
        return Fires([], 0)


# --- parsing ----------------------------------------------------------------------------------


def parse_rate(text: str) -> int:
    """The interval in seconds of ``rate(...)``; refuses what EventBridge refuses, and huge rates."""
    found = _RATE.fullmatch(text)
    if found is None:
        raise refuse(f"{text}: {_rate_shape_problem(text)}", _rate_hint(text))
    number, unit = found.groups()
    value = int(number) if len(number.lstrip("0")) <= 12 else MAX_RATE_S + 1
    singular = unit[:-1] if unit.endswith("s") else unit
    if singular not in RATE_UNITS:
        raise refuse(
            f"{text}: unknown unit {unit!r} (the units are seconds, minutes, hours and days)",
            _rate_hint(text),
        )
    if value == 0:
        raise refuse(f"{text}: the rate must be a positive whole number", f"rate(1 {singular})")
    seconds = value * RATE_UNITS[singular]
    if seconds > MAX_RATE_S:
        largest = MAX_RATE_S // RATE_UNITS[singular]
        raise refuse(
            f"{text}: the rate can be at most 100 years ({largest} {singular}s)", _rate(largest, singular)
        )
    proper = singular if value == 1 else f"{singular}s"
    if unit != proper:
        raise refuse(
            f"{text}: {value} takes the {'singular' if value == 1 else 'plural'} unit", _rate(value, singular)
        )
    return seconds


def _rate(value: int, singular: str) -> str:
    return f"rate({value} {singular if value == 1 else singular + 's'})"


def _rate_shape_problem(text: str) -> str:
    inner = text[5:-1] if text.endswith(")") else text[5:]
    if not text.endswith(")"):
        return "missing the closing parenthesis"
    if inner != inner.strip() or "  " in inner:
        return "no spaces inside rate( ) except the one between the number and the unit"
    parts = inner.split(" ")
    if len(parts) != 2:
        return "write rate(<number> <unit>), a whole number and a unit"
    number, unit = parts
    if not re.fullmatch(r"[0-9]+", number):
        return f"the number {show(number)} must be a positive whole number in the digits 0-9"
    return f"the unit {show(unit)} must be one of seconds, minutes, hours, days (lower case)"


def _rate_hint(text: str) -> str:
    """A valid rate close to what was written: spaces dropped, a known unit alias or fraction fixed."""
    inner = text[5:].rstrip(")").strip()
    found = re.fullmatch(r"([0-9]*\.?[0-9]*)\s*([A-Za-z]+)", inner)
    if found is None or not found.group(1).strip("."):
        return RATE_EXAMPLE
    number, unit = found.group(1), found.group(2).lower()
    singular = unit[:-1] if unit.endswith("s") and unit[:-1] in RATE_UNITS else unit
    singular = _UNIT_ALIASES.get(unit, singular)
    if singular not in RATE_UNITS:
        return RATE_EXAMPLE
    scale = 7 if unit.startswith("w") else 1
    try:
        seconds = float(number) * scale * RATE_UNITS[singular]
    except ValueError:
        return RATE_EXAMPLE
    if not 1 <= seconds <= MAX_RATE_S:
        return RATE_EXAMPLE
    for name in ("day", "hour", "minute", "second"):
        if seconds % RATE_UNITS[name] == 0:
            return _rate(int(seconds // RATE_UNITS[name]), name)
    return RATE_EXAMPLE


def parse_at(text: str, zone: ZoneInfo) -> datetime:
    """The UTC instant of ``at(yyyy-mm-ddThh:mm:ss)`` read in ``zone``."""
    found = _AT.fullmatch(text)
    if found is None:
        raise refuse(
            f"{text}: the time must be at(yyyy-mm-ddThh:mm:ss), zero-padded, with no spaces", _at_hint(text)
        )
    year, month, day, hour, minute, second = (int(g) for g in found.groups())
    if not AT_YEARS[0] <= year <= AT_YEARS[1]:
        raise refuse(f"{text}: the year must be within {AT_YEARS[0]}-{AT_YEARS[1]}", AT_EXAMPLE)
    try:
        wall = datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise refuse(f"{text}: not a date and time ({exc})", AT_EXAMPLE) from None
    return resolve_wall(wall, zone)


def _at_hint(text: str) -> str:
    """``at(...)`` with the date and time zero-padded, when that is all that was wrong."""
    found = re.fullmatch(
        r"at\(\s*([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})[T ]([0-9]{1,2}):([0-9]{1,2})(?::([0-9]{1,2}))?\s*\)?",
        text,
    )
    if found is None:
        return AT_EXAMPLE
    year, month, day, hour, minute = (int(g) for g in found.groups()[:5])
    second = int(found.group(6) or 0)
    return f"at({year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d})"


def resolve_wall(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant of a naive wall time: its first occurrence, or the end of the gap it falls in."""
    early = wall.replace(tzinfo=zone)
    back = early.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    if back == wall:
        return early.astimezone(UTC)
    # in a gap: fold=0 reads it with the offset before the change, which lands after the gap;
    # the first instant after the gap is the change itself, between the two readings
    lo = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    hi = int(early.timestamp())
    lo, hi = min(lo, hi), max(lo, hi)
    before = datetime.fromtimestamp(lo, zone).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return utc(hi)
