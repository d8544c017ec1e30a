"""Plain 5-field cron: croniter's language, and croniter's answers.

Airflow and Prefect read cron with croniter, so a plain cron schedule here means what it means
there: ``L``, ``W``, ``#``, ``?``, ``@hourly``/``@daily``/``@weekly``/``@monthly``/``@yearly``
(and ``@midnight``, ``@annually``), month and weekday names, ranges that wrap around
(``NOV-MAR``, ``FRI-MON``), and when both day fields are restricted a day matching either fires,
as croniter applies it. Time zones and DST come from croniter too: it is handed aware local
times (``docs/schedules.md`` says what that does in a gap and on fall-back).

Written here, not in croniter: the readable refusals (croniter's own messages name neither the
field nor a fix), and three refusals croniter does not make: ``H`` and ``R`` fields (croniter
hashes ``H`` from an id we do not have, and ``R`` draws a new random value each time a schedule
is loaded, so the fire time would move on every restart), croniter's 6- and 7-field forms (six
fields is EventBridge's form here), and an expression that never fires.

``CroniterRule`` is also the engine under EventBridge's ``cron(...)`` (``schedule_eventbridge``).
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from workflows.errors import ScheduleError
from workflows.schedule_base import (
    HORIZON,
    Fires,
    Keep,
    collect,
    cron_chunks,
    day_grid,
    refuse,
    show,
)

FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
_ALLOWED = {
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31, L or nW",
    "month": "1-12 or JAN-DEC",
    "day-of-week": "0-7 or SUN-SAT, Ln for the last, n#k for the k-th",
}
_RANGES = {
    "minute": (0, 59),
    "hour": (0, 23),
    "day-of-month": (1, 31),
    "month": (1, 12),
    "day-of-week": (0, 7),
}
ALIASES = ("@midnight", "@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually")
_HASHED = re.compile(r"[hr](\([0-9]+-[0-9]+\))?(/[0-9]+)?", re.IGNORECASE)
_FIELDS = re.compile(r"[^ \t\n\r\f\v]+")  # croniter splits on ASCII whitespace only
_QUARTZ_LAST = re.compile(r"([0-7]|sun|mon|tue|wed|thu|fri|sat)l", re.IGNORECASE)
_DAY_NUMBERS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_CRONITER_FAILURES = (ValueError, TypeError, KeyError, IndexError, OverflowError)
_PROBE = datetime(1999, 12, 31, tzinfo=UTC)
PLAIN_EXAMPLE = "0 12 * * *"


class CroniterRule:
    """One croniter expression evaluated in one zone: the first fire strictly after an instant.

    croniter keeps its position in the object, so each call sets it and a lock keeps two threads
    from interleaving; the expansion of the fields is done once, here.
    """

    def __init__(self, expression: str, zone: ZoneInfo) -> None:
        self.zone = zone
        self._cron = croniter(expression, _PROBE.astimezone(zone), ret_type=datetime)
        self._lock = threading.Lock()
        minutes, hours = self._cron.expanded[0], self._cron.expanded[1]
        self.grid = day_grid(  # croniter reads a field holding "*" anywhere ("*,5") as "*"
            range(60) if "*" in minutes else [int(m) for m in minutes],
            range(24) if "*" in hours else [int(h) for h in hours],
        )

    def next_after(self, after: datetime) -> datetime | None:
        start = after.astimezone(self.zone)
        for _ in range(3):
            with self._lock:
                try:
                    fire = self._cron.get_next(datetime, start_time=start)
                except (CroniterBadDateError, OverflowError):
                    return None  # nothing within croniter's 50-year search, or past datetime's range
            if fire > after:
                return fire.astimezone(UTC) if fire < HORIZON else None
            start = (start + timedelta(minutes=1)).astimezone(self.zone)  # never seen: belt and braces
        return None

    def between(self, start: datetime, end: datetime, limit: int, keep: Keep) -> Fires:
        return collect(cron_chunks(self.next_after, self.zone, self.grid, start, end), limit, keep)


def parse_plain(text: str, zone: ZoneInfo) -> CroniterRule:
    """Parse a 5-field cron (or an ``@`` alias) as croniter does; refuse it readably otherwise."""
    fields = _FIELDS.findall(text)
    word = text.strip().lower()
    if word.startswith("@"):
        if word not in ALIASES:
            raise refuse(f"{text}: unknown alias (the aliases are {', '.join(ALIASES)})", "@daily")
    elif len(fields) == 6:
        raise refuse(
            f"{text}: six fields is the EventBridge form (minutes hours day-of-month month "
            "day-of-week year); write it inside cron( )",
            f"cron({' '.join(fields)})",
        )
    elif len(fields) != 5:
        raise refuse(
            f"{text}: expected 5 fields (minute hour day-of-month month day-of-week), or cron(...), "
            "rate(...) or at(...)",
            PLAIN_EXAMPLE,
        )
    for name, value in zip(FIELD_NAMES, fields, strict=False):
        if _HASHED.fullmatch(value):
            raise refuse(
                f"{text}: {name} {value!r} is croniter's hashed or random form, which Sluice does not "
                "accept (a random fire time would move on every restart); write the value",
                _replace(fields, FIELD_NAMES.index(name), "0" if name in ("minute", "hour") else "*"),
            )
    try:
        rule = CroniterRule(text, zone)
    except _CRONITER_FAILURES as exc:
        raise _diagnose(text, fields, exc) from None
    if rule.next_after(_PROBE) is None:
        raise refuse(f"{text}: never fires (no date matches the day and month fields)", PLAIN_EXAMPLE)
    return rule


def _replace(fields: list[str], index: int, value: str) -> str:
    return " ".join(value if i == index else f for i, f in enumerate(fields))


def _valid(expression: str) -> bool:
    try:
        croniter(expression, _PROBE)
    except _CRONITER_FAILURES:
        return False
    return True


def _diagnose(text: str, fields: list[str], exc: Exception) -> ScheduleError:
    """Name the field and the value croniter refused, and a fix: that field as ``*``."""
    if len(fields) != 5:
        return refuse(f"{text}: {_croniter_says(exc)}", PLAIN_EXAMPLE)
    for index, name in enumerate(FIELD_NAMES):
        alone = ["*"] * 5
        alone[index] = fields[index]
        if _valid(" ".join(alone)):
            continue
        hint = _replace(fields, index, "0" if index < 2 else "*")
        for item in fields[index].split(","):
            alone[index] = item
            if item and _valid(" ".join(alone)):
                continue
            last = _QUARTZ_LAST.fullmatch(item)
            if name == "day-of-week" and last:
                number = _DAY_NUMBERS.get(last.group(1).lower())
                day = int(last.group(1)) % 7 if number is None else number
                return refuse(
                    f"{text}: croniter writes the last such weekday as L{day}", _replace(fields, 4, f"L{day}")
                )
            return refuse(f"{text}: {_item_problem(name, item)}", hint)
        return refuse(f"{text}: the {name} field {show(fields[index])}: {_croniter_says(exc)}", hint)
    return refuse(f"{text}: {_croniter_says(exc)}", PLAIN_EXAMPLE)


def _item_problem(name: str, item: str) -> str:
    if not item:
        return f"an empty value in the {name} field"
    lo, hi = _RANGES[name]
    if item.isascii() and item.isdigit() and not lo <= int(item) <= hi:
        return f"{name} value {int(item)} is out of range {lo}-{hi}"
    return f"{name} value {show(item)} is not valid; the field takes {_ALLOWED[name]}, with , - and /"


def _croniter_says(exc: Exception) -> str:
    text = str(exc)
    if "Traceback" in text or not text:
        return "croniter cannot read it"
    text = re.sub(r"^\[[^\]]*\]\s*(is not acceptable[.,]?\s*)?", "", text).strip()
    return text[:160] or "croniter cannot read it"
