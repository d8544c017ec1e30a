"""Hostile schedules: any expression and any time zone give a Schedule or a ScheduleError.

Never another exception, at validate time or later: an accepted schedule's next fire is an aware
instant strictly after the one asked about (or ``None``: an ``at()`` that has passed, a year field
that ran out, the year 9000), and its windows are bounded and ordered. A refusal's message is
readable and its hint parses. The strategies mix free text with near-valid expressions, so the
examples reach past the first check into every field of every form.

``CI`` set: derandomized (``tests/support/hypothesis_profiles.py``), the same examples each run.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tests.support.hypothesis_profiles import examples
from workflows.errors import ScheduleError
from workflows.schedules import Schedule, parse_schedule

# --- strategies ---------------------------------------------------------------------------------

NUMBERS = st.one_of(
    st.integers(-3, 70).map(str),
    st.integers(0, 10**25).map(str),
    st.sampled_from(
        ["²", "١٢", "\uff15", "1.5", "1e3", "0x10", "", " 5", "007", "9" * 400, "-0", "+1", "½", "∞", "NaN"]
    ),
)
TOKENS = st.one_of(
    NUMBERS,
    st.sampled_from(["*", "?", "L", "W", "LW", "L-2", "L-2W", "L-99", "5L", "FRIL", "3#2", "3#1,6#3",
                     "MON#5", "JAN", "dec", "mon-fri", "FRI-MON", "NOV-MAR", "H", "H/5", "R", "l5", "15W",
                     "W15", "#", "-", "/", ",", "*/0", "*/61", "0/15", "1-5/2", "5-1", "2030-2027", "1969",
                     "2199", "2200"]),
)  # fmt: skip
FIELD = st.lists(TOKENS, min_size=1, max_size=3).map(",".join) | TOKENS
SPACES = st.sampled_from([" ", " ", " ", "  ", "\t", "\u00a0", "\u3000", ""])


@st.composite
def fields(draw: st.DrawFn, low: int, high: int) -> str:
    parts = draw(st.lists(FIELD, min_size=low, max_size=high))
    out = ""
    for i, part in enumerate(parts):
        out += (draw(SPACES) if i else "") + part
    return out


UNITS = st.sampled_from(["minute", "minutes", "hour", "hours", "day", "days", "second", "seconds", "week",
                         "Minutes", "mins", "", "minutes ", "millis", "minuteş"])  # fmt: skip
RATES = st.builds(
    lambda pre, n, sep, unit, post: f"rate({pre}{n}{sep}{unit}{post})",
    st.sampled_from(["", "", " "]),
    NUMBERS,
    SPACES,
    UNITS,
    st.sampled_from(["", "", " ", "  "]),
)
ATS = st.builds(
    lambda y, mo, d, h, mi, s, sep: f"at({y}-{mo}-{d}{sep}{h}:{mi}:{s})",
    st.sampled_from(["2026", "1969", "2199", "2200", "0000", "9999", "26", "\uff12\uff10\uff12\uff16"]),
    st.sampled_from(["01", "02", "12", "13", "00", "1", "3"]),
    st.sampled_from(["01", "28", "29", "30", "31", "32", "00"]),
    st.sampled_from(["00", "02", "23", "24", "2"]),
    st.sampled_from(["00", "30", "59", "60"]),
    st.sampled_from(["00", "59", "60", "5"]),
    st.sampled_from(["T", "T", " ", "t"]),
)
VALID = ["*/5 * * * *", "0 2 * * *", "cron(0 2 ? * MON-FRI *)", "cron(0 10 LW * ? 2030)", "rate(5 minutes)",
         "rate(1 second)", "at(2026-03-29T02:30:00)", "@daily"]  # fmt: skip
VALID_ISH = st.sampled_from(VALID)


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], odds: int) -> st.SearchStrategy[Any]:
    """``good`` ``odds`` times in ``odds + 1``, else ``bad``."""
    return st.integers(0, odds).flatmap(lambda i: bad if i == 0 else good)


def _near(valid: list[str]) -> st.SearchStrategy[str]:
    """One field's valid values, and now and then a hostile one."""
    return _mostly(st.sampled_from(valid), FIELD, 8)


_MIN = _near(["0", "*", "*/5", "0/15", "5,35", "10-20/5", "59", "1/10"])
_HOUR = _near(["0", "*", "9-17", "*/6", "23", "22-2", "2"])
_DOM = _near(["1", "15", "L", "15W", "1-10", "*/3", "31", "29", "L-3", "LW"])
_MONTH = _near(["*", "2", "JAN,JUL", "3-5", "*/4", "NOV-FEB", "dec"])
_UNIX_DOW = _near(["*", "MON-FRI", "0", "7", "L5", "2#2", "sat,sun", "FRI-MON"])
_EB_DOW = _near(["MON-FRI", "1", "7", "6L", "L", "3#2", "sat,sun", "FRI-MON", "2/2"])
_YEAR = _near(["*", "2026", "2027-2030", "2030,2199", "1970/7", "*/3"])
PLAIN_NEAR = st.builds(lambda *f: " ".join(f), _MIN, _HOUR, _DOM, _MONTH, _UNIX_DOW)
EVENTBRIDGE_NEAR = st.one_of(
    st.builds(lambda m, h, d, mo, y: f"cron({m} {h} {d} {mo} ? {y})", _MIN, _HOUR, _DOM, _MONTH, _YEAR),
    st.builds(lambda m, h, mo, w, y: f"cron({m} {h} ? {mo} {w} {y})", _MIN, _HOUR, _MONTH, _EB_DOW, _YEAR),
)
NOISE = st.one_of(
    st.text(max_size=300),
    st.text(alphabet="0123456789 */,-?#LWlw()rateconHR", max_size=40),
    fields(4, 7),
    fields(5, 7).map(lambda f: f"cron({f})"),
    fields(6, 6).map(lambda f: f"cron({f})"),
    RATES,
    ATS,
    VALID_ISH,
    st.builds(lambda pad, e: f"{pad}{e}{pad}", st.sampled_from([" ", "\n", "\u00a0"]), VALID_ISH),
)
RATES_NEAR = st.builds(
    lambda n, unit: f"rate({n} {unit}{'' if n == 1 else 's'})",
    _mostly(st.integers(1, 100), st.integers(0, 10**12), 3),
    st.sampled_from(["second", "minute", "hour", "day"]),
)
ATS_NEAR = st.datetimes(datetime(1970, 1, 1), datetime(2199, 12, 31)).map(
    lambda d: f"at({d.replace(microsecond=0).isoformat()})"
)
EXPRESSIONS = _mostly(st.one_of(PLAIN_NEAR, EVENTBRIDGE_NEAR, RATES_NEAR, ATS_NEAR, RATES, ATS), NOISE, 2)
ZONE_NAMES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu",
              "America/Havana", "Pacific/Chatham", "Africa/Casablanca", "Etc/GMT-14"]  # fmt: skip
HOSTILE_ZONES = ["Z" * 300, "A/" * 150, "../../etc/passwd", "/etc/localtime", "America", "",
                 "Europe/Berlin\x00", " UTC", "UTC ", "utc", "europe/berlin", "Europe/Berlín", "Mars/Olympus",
                 "localtime", "."]  # fmt: skip
ZONES = st.one_of(st.sampled_from(ZONE_NAMES), st.sampled_from(HOSTILE_ZONES), st.text(max_size=300))
MOSTLY_GOOD_ZONES = _mostly(st.sampled_from(ZONE_NAMES), ZONES, 9)  # hostile zones have their own test
INSTANTS = st.datetimes(
    datetime(1900, 1, 1),
    datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, ZoneInfo("Europe/Berlin"), timezone(timedelta(hours=-9, minutes=-30))]),
)
_YEAR_FIELD = re.compile(r"cron\(.*\s(\S+)\)")


# --- the properties -----------------------------------------------------------------------------


def check_refusal(exc: ScheduleError, timezone_name: object) -> None:
    message = str(exc)
    assert message and "Traceback" not in message and len(message) < 700, message
    assert exc.field in ("schedule", "timezone")
    if not exc.hint:
        return
    if exc.field == "timezone":
        parse_schedule("rate(5 minutes)", exc.hint)
    else:
        zone = timezone_name if isinstance(timezone_name, str) and timezone_name in ZONE_NAMES else "UTC"
        parse_schedule(exc.hint, zone)


def may_run_out(schedule: Schedule, after: datetime) -> bool:
    """``None`` is allowed for a one-time schedule, a cron with a year field, or near the horizon.

    EventBridge's year field ends in 2199, ``*`` too.
    """
    year = _YEAR_FIELD.fullmatch(schedule.expression)
    return (
        schedule.expression.startswith("at(")
        or (year is not None and (year.group(1) != "*" or after.astimezone(UTC).year >= 2199))
        or after.astimezone(UTC).year >= 8900
    )


def check_schedule(schedule: Schedule, after: datetime) -> None:
    fire = schedule.next_fire_or_none(after)
    if fire is None:
        assert may_run_out(schedule, after), (schedule.expression, after)
    else:
        assert fire.tzinfo is not None and fire.utcoffset() == timedelta(0)
        assert fire > after
        assert schedule.next_fire(after) == fire
    if schedule.interval_s is not None:
        assert 1 <= schedule.interval_s <= 36_500 * 86_400
    window_end = after + timedelta(days=3)
    window = schedule.fires_between(after, window_end, 3)
    assert len(window.fires) == min(3, window.total)
    assert all(after < f <= window_end for f in window.fires)
    assert window.fires == sorted(window.fires)
    if fire is not None and fire <= window_end:
        assert window.fires[0] == fire
    last = schedule.fires_between(after, window_end, 2, keep="last")
    assert last.total == window.total


@examples(4000)
@given(EXPRESSIONS, MOSTLY_GOOD_ZONES, INSTANTS)
def test_any_expression_and_zone_give_a_schedule_or_a_schedule_error(
    expression: str, zone: str, after: datetime
) -> None:
    try:
        schedule = parse_schedule(expression, zone)
    except ScheduleError as exc:
        event(f"refused: {exc.field}")
        check_refusal(exc, zone)
        return
    event(
        f"accepted: {schedule.expression.partition('(')[0] if '(' in schedule.expression else 'plain cron'}"
    )
    check_schedule(schedule, after)


@examples(1500)
@given(st.one_of(ZONES, st.integers(), st.none(), st.binary(max_size=20)), VALID_ISH)
def test_any_time_zone_gives_a_schedule_or_a_schedule_error(zone: Any, expression: str) -> None:
    try:
        schedule = parse_schedule(expression, zone)
    except ScheduleError as exc:
        check_refusal(exc, zone)
        return
    check_schedule(schedule, datetime(2026, 3, 28, 12, tzinfo=UTC))


@examples(1000)
@given(st.one_of(st.text(max_size=40), st.integers(), st.none(), st.floats(), st.lists(st.text(max_size=5))))
def test_values_that_are_not_strings_are_refused_too(expression: Any) -> None:
    try:
        schedule = parse_schedule(expression, "UTC")
    except ScheduleError as exc:
        check_refusal(exc, "UTC")
        return
    check_schedule(schedule, datetime(2026, 1, 1, tzinfo=UTC))


# --- the inputs the red team used ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "zone", "problem"),
    [
        # validated, then crashed `sluice serve` when the first fire was computed (OverflowError)
        ("rate(99999999999999999999 days)", "UTC", "the rate can be at most 100 years (36500 days)"),
        (
            "rate(99999999999999999999 seconds)",
            "UTC",
            "the rate can be at most 100 years (3153600000 seconds)",
        ),
        # a traceback from `sluice validate` (ValueError from int("²"))
        ("rate(² minutes)", "UTC", "the number '²' must be a positive whole number in the digits 0-9"),
        # OSError (file name too long) and IsADirectoryError from zoneinfo
        ("rate(5 minutes)", "Z" * 300, "unknown time zone"),
        ("rate(5 minutes)", "America", "unknown time zone"),
        (f"0 0 {'9' * 240} * *", "UTC", "day-of-month value"),
    ],
)
def test_the_red_teams_inputs_are_refused_at_validate_time(expression: str, zone: str, problem: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(expression, zone)
    assert problem in str(info.value)
    check_refusal(info.value, zone)
