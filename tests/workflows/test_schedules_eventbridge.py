"""EventBridge ``cron(...)``: its fields, its validation, its DST rule; computed by croniter.

No test reads the clock: every instant is written out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.hypothesis_profiles import examples
from workflows.errors import ScheduleError
from workflows.schedules import Schedule, parse_schedule


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def z(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(schedule: Schedule, after: datetime, n: int) -> list[datetime]:
    out: list[datetime] = []
    for _ in range(n):
        after = schedule.next_fire(after)
        out.append(after)
    return out


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        # L: last day of the month, leap years included
        (
            "cron(0 10 L * ? *)",
            utc(2028, 1, 1),
            [utc(2028, 1, 31, 10), utc(2028, 2, 29, 10), utc(2028, 3, 31, 10)],
        ),
        # LW: last weekday (2026-05-31 is a Sunday, 2026-10-31 a Saturday) - croniter has no LW
        ("cron(0 10 LW 5,10 ? *)", utc(2026, 1, 1), [utc(2026, 5, 29, 10), utc(2026, 10, 30, 10)]),
        # L-n: n days before the last; L-nW: the weekday nearest to it - croniter has neither
        ("cron(0 10 L-2 * ? 2026)", utc(2026, 1, 1), [utc(2026, 1, 29, 10), utc(2026, 2, 26, 10)]),
        ("cron(0 10 L-0 2 ? 2028)", utc(2026, 1, 1), [utc(2028, 2, 29, 10)]),
        ("cron(0 10 L-30 * ? 2026)", utc(2026, 1, 1), [utc(2026, 1, 1, 10), utc(2026, 3, 1, 10)]),
        # 2026-01-29 (L-2) is a Thursday; 2026-02-22 (L-6) a Sunday -> Monday the 23rd
        ("cron(0 10 L-2W 1 ? 2026)", utc(2026, 1, 1), [utc(2026, 1, 29, 10)]),
        ("cron(0 10 L-6W 2 ? 2026)", utc(2026, 1, 1), [utc(2026, 2, 23, 10)]),
        # 15W: 2026-02-15 is a Sunday -> Monday 16th; 2026-03-15 a Sunday too; 2026-08-15 a Saturday -> 14th
        (
            "cron(0 8 15W * ? 2026)",
            utc(2026, 2, 1),
            [utc(2026, 2, 16, 8), utc(2026, 3, 16, 8), utc(2026, 4, 15, 8)],
        ),
        ("cron(0 8 15W 8 ? 2026)", utc(2026, 1, 1), [utc(2026, 8, 14, 8)]),
        # 1W on a Saturday (2026-08-01) stays in the month: Monday the 3rd
        ("cron(0 8 1W 8 ? 2026)", utc(2026, 1, 1), [utc(2026, 8, 3, 8)]),
        # 31W on a Sunday (2026-05-31) stays in the month: Friday the 29th. In a 30-day month
        # croniter takes the weekday nearest the 30th (Thursday 2026-04-30); before croniter, 31W
        # skipped 30-day months.
        ("cron(0 8 31W 4,5 ? 2026)", utc(2026, 1, 1), [utc(2026, 4, 30, 8), utc(2026, 5, 29, 8)]),
        # 6L: last Friday (EventBridge 1=SUN, so 6=FRI); FRIL is the same
        (
            "cron(0 9 ? * 6L *)",
            utc(2026, 1, 1),
            [utc(2026, 1, 30, 9), utc(2026, 2, 27, 9), utc(2026, 3, 27, 9)],
        ),
        (
            "cron(0 9 ? * FRIL *)",
            utc(2026, 1, 1),
            [utc(2026, 1, 30, 9), utc(2026, 2, 27, 9), utc(2026, 3, 27, 9)],
        ),
        # L alone in day-of-week is its last day, Saturday (Quartz)
        ("cron(0 9 ? * L *)", utc(2026, 1, 1), [utc(2026, 1, 3, 9), utc(2026, 1, 10, 9)]),
        # 3#2: second Tuesday; 2#5 (fifth Monday) only in months that have one
        (
            "cron(0 9 ? * 3#2 *)",
            utc(2026, 1, 1),
            [utc(2026, 1, 13, 9), utc(2026, 2, 10, 9), utc(2026, 3, 10, 9)],
        ),
        (
            "cron(0 9 ? * MON#5 *)",
            utc(2026, 1, 1),
            [utc(2026, 3, 30, 9), utc(2026, 6, 29, 9), utc(2026, 8, 31, 9)],
        ),
        # SUN is 1, SAT is 7
        ("cron(0 0 ? * 1 *)", utc(2026, 6, 1), [utc(2026, 6, 7), utc(2026, 6, 14)]),
        ("cron(0 0 ? * 7 *)", utc(2026, 6, 1), [utc(2026, 6, 6), utc(2026, 6, 13)]),
        ("cron(0 0 ? * mon-fri *)", utc(2026, 6, 5), [utc(2026, 6, 8)]),  # names in any case
        # year field: a single year, a range, a list, a step (from 1970) - croniter's stops at 2099
        ("cron(0 0 1 1 ? 2030)", utc(2026, 6, 1), [utc(2030, 1, 1)]),
        ("cron(0 0 1 JAN ? 2027-2028)", utc(2026, 6, 1), [utc(2027, 1, 1), utc(2028, 1, 1)]),
        ("cron(0 0 1 1 ? 2027,2031)", utc(2026, 6, 1), [utc(2027, 1, 1), utc(2031, 1, 1)]),
        ("cron(0 0 1 1 ? 1970/4)", utc(2026, 6, 1), [utc(2030, 1, 1), utc(2034, 1, 1)]),
        ("cron(0 0 1 1 ? */5)", utc(2026, 6, 1), [utc(2030, 1, 1), utc(2035, 1, 1)]),
        ("cron(0 0 1 1 ? 2150,2199)", utc(2026, 6, 1), [utc(2150, 1, 1), utc(2199, 1, 1)]),
        ("cron(0 12 LW 2 ? 2100-2101)", utc(2026, 1, 1), [utc(2100, 2, 26, 12), utc(2101, 2, 28, 12)]),
        # ranges wrap around, as in Quartz (and croniter)
        ("cron(0 0 30-2 * ? 2026)", utc(2026, 4, 1), [utc(2026, 4, 2), utc(2026, 4, 30), utc(2026, 5, 1)]),
        (
            "cron(0 22-1/2 * * ? *)",
            utc(2026, 4, 1),
            [utc(2026, 4, 1, 22), utc(2026, 4, 2, 0), utc(2026, 4, 2, 22)],
        ),
        ("cron(0 0 ? * FRI-MON *)", utc(2026, 6, 1), [utc(2026, 6, d) for d in (5, 6, 7, 8, 12)]),
        ("cron(0 0 1 NOV-FEB ? *)", utc(2026, 3, 1), [utc(2026, 11, 1), utc(2026, 12, 1), utc(2027, 1, 1)]),
        # start/step, as EventBridge writes "every 10 minutes from the first"
        ("cron(1/10 8 * * ? *)", utc(2026, 4, 1), [utc(2026, 4, 1, 8, m) for m in (1, 11, 21, 31, 41, 51)]),
    ],
)
def test_eventbridge_cron(expr: str, after: datetime, expected: list[datetime]) -> None:
    assert fires(parse_schedule(expr), after, len(expected)) == expected


def test_year_field_runs_out() -> None:
    s = parse_schedule("cron(0 0 1 1 ? 2027-2028)")
    assert s.next_fire(utc(2027, 6, 1)) == utc(2028, 1, 1)
    assert s.next_fire_or_none(utc(2028, 1, 1)) is None
    with pytest.raises(ScheduleError, match=r"never fires after 2028-01-01T00:00:00\+00:00"):
        s.next_fire(utc(2028, 1, 1))
    assert parse_schedule("cron(59 23 31 12 ? 2199)").next_fire_or_none(utc(2199, 12, 31, 23, 59)) is None


# --- DST: EventBridge Scheduler's rule, not croniter's ----------------------------------------
# EventBridge Scheduler documents that a cron time skipped by spring-forward does not run and a
# time repeated on fall-back runs once. croniter (and so plain cron here) fires the skipped time
# at the end of the gap and the repeated time twice. Before croniter, cron(...) fired the skipped
# time at the end of the gap as plain cron did.

DST_CASES = [
    # Berlin springs forward on 2026-03-29 at 01:00Z: 02:30 does not exist and does not fire
    ("cron(30 2 * * ? *)", "Europe/Berlin", "2026-03-28T12:00", ["2026-03-30T00:30", "2026-03-31T00:30"]),
    ("cron(0,30 2 * * ? *)", "Europe/Berlin", "2026-03-28T12:00", ["2026-03-30T00:00", "2026-03-30T00:30"]),
    # every-hour schedules skip the missing hour (croniter does too)
    (
        "cron(0 * * * ? *)",
        "Europe/Berlin",
        "2026-03-28T23:00",
        ["2026-03-29T00:00", "2026-03-29T01:00", "2026-03-29T02:00"],
    ),
    # Berlin falls back on 2026-10-25 at 01:00Z: 02:30 CEST (00:30Z) fires, 02:30 CET does not
    (
        "cron(30 2 * * ? *)",
        "Europe/Berlin",
        "2026-10-23T12:00",
        ["2026-10-24T00:30", "2026-10-25T00:30", "2026-10-26T01:30"],
    ),
    # ... and an hourly job fires each wall hour once: 02:00 CEST, then 03:00 CET two hours later
    (
        "cron(0 * * * ? *)",
        "Europe/Berlin",
        "2026-10-24T23:00",
        ["2026-10-25T00:00", "2026-10-25T02:00", "2026-10-25T03:00"],
    ),
    # from between the two copies, the second copy is not a fire either
    ("cron(30 2 * * ? *)", "Europe/Berlin", "2026-10-25T00:45", ["2026-10-26T01:30"]),
    # New York falls back on 2026-11-01 at 06:00Z (02:00 EDT -> 01:00 EST)
    (
        "cron(15 1 ? * SUN *)",
        "America/New_York",
        "2026-10-30T00:00",
        ["2026-11-01T05:15", "2026-11-08T06:15"],
    ),
    ("cron(30 2 * * ? *)", "America/New_York", "2026-03-07T12:00", ["2026-03-09T06:30"]),
]


@pytest.mark.parametrize(("expr", "tz", "after", "expected"), DST_CASES)
def test_dst_follows_eventbridge_scheduler(expr: str, tz: str, after: str, expected: list[str]) -> None:
    assert fires(parse_schedule(expr, tz), z(after), len(expected)) == [z(t) for t in expected]


def test_hourly_on_the_long_and_the_short_day() -> None:
    s = parse_schedule("cron(0 * * * ? *)", "Europe/Berlin")
    assert s.fires_between(z("2026-10-24T21:59"), z("2026-10-25T22:59"), 100).total == 24  # 25 real hours
    assert s.fires_between(z("2026-03-28T22:59"), z("2026-03-29T21:59"), 100).total == 23
    daily = parse_schedule("cron(30 2 * * ? *)", "Europe/Berlin")  # 212 days, one of them without 02:30
    assert daily.fires_between(z("2026-03-28T02:00"), z("2026-10-26T02:00"), 0).total == 211


# --- refused as EventBridge refuses them --------------------------------------------------------

INVALID = [
    ("cron(0 12 * * * *)", "exactly one of day-of-month and day-of-week must be ?", "cron(0 12 * * ? *)"),
    ("cron(0 12 * * MON *)", "exactly one of day-of-month and day-of-week must be ?", "cron(0 12 ? * MON *)"),
    ("cron(0 12 ? * ? *)", "only one of day-of-month and day-of-week may be ?", "cron(0 12 * * ? *)"),
    (
        "cron(0 12 1 * MON *)",
        "EventBridge cannot combine day-of-month 1 with day-of-week MON; put ? in one of them",
        "cron(0 12 1 * ? *)",
    ),
    (
        "cron(? 12 * * ? *)",
        "? stands alone, in day-of-month or day-of-week only (it is in minutes)",
        "cron(0 12 * * ? *)",
    ),
    (
        "cron(0 12 ?5 * ? *)",
        "? stands alone, in day-of-month or day-of-week only (it is in day-of-month)",
        "cron(0 12 ? * * *)",
    ),
    (
        "cron(0 12 * * ?)",
        "EventBridge cron has 6 fields (minutes hours day-of-month month day-of-week year)",
        "cron(0 12 * * ? *)",
    ),
    (
        "cron(0 0 12 ? * MON *)",  # Quartz's seconds field first
        "EventBridge cron has 6 fields (minutes hours day-of-month month day-of-week year)",
        "cron(0 12 ? * MON *)",
    ),
    ("cron(0 12 * * ? *", "missing the closing parenthesis", "cron(0 12 * * ? *)"),
    ("cron( 0 12 * * ? * )", "no spaces just inside cron( )", "cron(0 12 * * ? *)"),
    ("cron(60 12 * * ? *)", "minutes value 60 is out of range 0-59", "cron(0 12 * * ? *)"),
    ("cron(0 24 * * ? *)", "hours value 24 is out of range 0-23", "cron(0 0 * * ? *)"),
    ("cron(0 12 ? * 0 *)", "day-of-week value 0 is out of range 1-7", "cron(0 12 ? * 1 *)"),
    ("cron(0 12 ? * FUN *)", "day-of-week value 'FUN' is not a number 1-7 or SUN-SAT", "cron(0 12 ? * * *)"),
    ("cron(0 12 ? FOO * *)", "month value 'FOO' is not a number 1-12 or JAN-DEC", "cron(0 12 ? * * *)"),
    ("cron(0 12 * * ? 1969)", "year value 1969 is out of range 1970-2199", "cron(0 12 * * ? *)"),
    ("cron(0 12 * * ? 2200)", "year value 2200 is out of range 1970-2199", "cron(0 12 * * ? *)"),
    ("cron(0 0 1 1 ? 2030-2027)", "the year range 2030-2027 runs backwards", "cron(0 0 1 1 ? 2027-2030)"),
    ("cron(0 12 ? * 3#6 *)", "the number after # must be 1-5, got '6'", "cron(0 12 ? * 3#1 *)"),
    # lists of # values, and L or W with other days (Quartz refuses them, EventBridge says one #)
    ("cron(0 12 ? * 3#1,6#3 *)", "only one day-of-week value is allowed with #", "cron(0 12 ? * 3#1 *)"),
    ("cron(0 12 ? * 2,6#3 *)", "only one day-of-week value is allowed with #", "cron(0 12 ? * 6#3 *)"),
    # accepted before croniter, when L in a list was read as one more day
    (
        "cron(0 0 1-2,L FEB ? 2027)",
        "day-of-month L cannot be combined with other days",
        "cron(0 0 L FEB ? 2027)",
    ),
    ("cron(0 12 ? * 5L,2 *)", "day-of-week L cannot be combined with other days", "cron(0 12 ? * 5L *)"),
    ("cron(0 12 1W,15 * ? *)", "day-of-month 1W cannot be combined with other days", "cron(0 12 1W * ? *)"),
    ("cron(0 12 L-31 * ? *)", "L-31: the offset from the last day is at most 30", "cron(0 12 L * ? *)"),
    ("cron(0 12 32W * ? *)", "day-of-month value 32 is out of range 1-31", "cron(0 12 * * ? *)"),
    ("cron(*/0 * * * ? *)", "minutes step 0 is out of range 1-60", "cron(0 * * * ? *)"),
    ("cron(0 0 30 2 ? *)", "never fires (check the day, month and year fields)", "cron(0 12 * * ? *)"),
    ("cron(0 0 29 2 ? 2027)", "never fires (check the day, month and year fields)", "cron(0 12 * * ? *)"),
    ("cron(0 0 L-30 2 ? *)", "never fires (check the day, month and year fields)", "cron(0 12 * * ? *)"),
    ("cron(1,,2 * * * ? *)", "minutes value '' is not a number 0-59", "cron(0 * * * ? *)"),
    ("cron(0 12 ? * MON-FRI/0 *)", "day-of-week step 0 is out of range 1-7", "cron(0 12 ? * * *)"),
]


@pytest.mark.parametrize(("expr", "problem", "hint"), INVALID, ids=[e for e, _, _ in INVALID])
def test_refused_with_a_fix_that_parses(expr: str, problem: str, hint: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(expr)
    assert str(info.value) == f"{expr}: {problem} (write {hint})"
    assert info.value.hint == hint
    parse_schedule(hint)


# --- the same answers as croniter where the two forms mean the same -----------------------------

_minute = st.sampled_from(["0", "*/15", "5,35", "10-20/5", "59"])
_hour = st.sampled_from(["*", "0", "9-17", "*/6", "23"])
_dom = st.sampled_from(["1", "15", "L", "15W", "1-10", "*/3", "31"])
_month = st.sampled_from(["*", "2", "JAN,JUL", "3-5", "*/4"])
_dow = st.sampled_from([("MON-FRI", "1-5"), ("1", "0"), ("SAT,SUN", "6,0"), ("6L", "L5"), ("3#2", "2#2")])


@examples(300)
@given(_minute, _hour, _dom, _month, _dow, st.datetimes(datetime(1990, 1, 1), datetime(2150, 1, 1)))
def test_translation_matches_plain_cron_in_utc(
    minute: str, hour: str, dom: str, month: str, dow: tuple[str, str], after: datetime
) -> None:
    """cron(m h d M ? *) is plain ``m h d M *``; cron(m h ? M w *) is ``m h * M w-1``."""
    start = after.replace(tzinfo=UTC)
    eventbridge, unix = dow
    by_day = (f"cron({minute} {hour} {dom} {month} ? *)", f"{minute} {hour} {dom} {month} *")
    by_weekday = (f"cron({minute} {hour} ? {month} {eventbridge} *)", f"{minute} {hour} * {month} {unix}")
    for ours, theirs in (by_day, by_weekday):
        try:
            expected = fires(parse_schedule(theirs), start, 3)
        except ScheduleError:
            with pytest.raises(ScheduleError):
                parse_schedule(ours)
            continue
        assert fires(parse_schedule(ours), start, 3) == expected, (ours, theirs)
        window = parse_schedule(ours).fires_between(start, start + timedelta(days=40), 5, keep="last")
        assert window == parse_schedule(theirs).fires_between(
            start, start + timedelta(days=40), 5, keep="last"
        )
