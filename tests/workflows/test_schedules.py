"""Schedule expressions: exact fire times, DST transitions, catch-up windows, refused input.

No test reads the clock or sleeps: every instant is written out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from croniter import croniter

from workflows.errors import ScheduleError
from workflows.schedules import Fires, Schedule, parse_schedule


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def fires(schedule: Schedule, after: datetime, n: int) -> list[datetime]:
    out: list[datetime] = []
    for _ in range(n):
        after = schedule.next_fire(after)
        out.append(after)
    return out


def z(text: str) -> datetime:
    """'2026-03-29T01:00' read as UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- plain 5-field cron -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "*/5 * * * *",
        "0 12 * * 1-5",
        "15 3 1,15 * *",
        "0 0 1 JAN,JUL *",
        "0 6 * * SUN",
        "0 6 * * 7",
        "30 4 1 * 0",
        "0 */6 * * *",
        "5-10/2 8 * * *",
        "0 0 29 2 *",
        "0 9 13 * 5",
        "59 23 31 * *",
    ],
)
def test_unix_cron_agrees_with_croniter_in_utc(expr: str) -> None:
    start = utc(2026, 1, 1, 0, 0)
    expected = croniter(expr, start).all_next(datetime)
    mine = fires(parse_schedule(expr), start, 40)
    assert mine == [next(expected) for _ in range(40)]


def test_next_fire_is_strictly_after_and_utc_aware() -> None:
    s = parse_schedule("0 * * * *")
    assert s.next_fire(utc(2026, 5, 1, 10, 0)) == utc(2026, 5, 1, 11, 0)
    assert s.next_fire(utc(2026, 5, 1, 9, 59, 59)) == utc(2026, 5, 1, 10, 0)
    assert s.next_fire(utc(2026, 5, 1, 10, 0, 0) + timedelta(microseconds=1)) == utc(2026, 5, 1, 11)
    berlin_after = datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert s.next_fire(berlin_after).tzinfo is UTC
    assert s.next_fire(berlin_after) == utc(2026, 5, 1, 11, 0)


def test_five_field_and_eventbridge_forms_agree() -> None:
    start = utc(2026, 2, 1)
    unix = fires(parse_schedule("0 12 * * MON-FRI"), start, 15)
    assert fires(parse_schedule("cron(0 12 ? * MON-FRI *)"), start, 15) == unix
    assert fires(parse_schedule("cron(0 12 ? * 2-6 *)"), start, 15) == unix
    assert fires(parse_schedule("cron(0/15 * * * ? *)"), start, 10) == fires(
        parse_schedule("*/15 * * * *"), start, 10
    )


def test_unix_day_fields_or_when_both_restricted_and_star_step_counts_as_star() -> None:
    s = parse_schedule("0 0 1 * MON")  # the 1st OR any Monday
    assert fires(s, utc(2026, 5, 30), 4) == [
        utc(2026, 6, 1),
        utc(2026, 6, 8),
        utc(2026, 6, 15),
        utc(2026, 6, 22),
    ]
    s = parse_schedule("0 0 */10 * MON")  # Vixie: a field starting with * is unrestricted -> Mondays
    assert fires(s, utc(2026, 6, 1), 2) == [utc(2026, 6, 8), utc(2026, 6, 15)]


# --- EventBridge cron: ? L W # and year -------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        # L: last day of the month, leap years included
        (
            "cron(0 10 L * ? *)",
            utc(2028, 1, 1),
            [utc(2028, 1, 31, 10), utc(2028, 2, 29, 10), utc(2028, 3, 31, 10)],
        ),
        # LW: last weekday (2026-05-31 is a Sunday, 2026-10-31 a Saturday)
        ("cron(0 10 LW 5,10 ? *)", utc(2026, 1, 1), [utc(2026, 5, 29, 10), utc(2026, 10, 30, 10)]),
        # 15W: 2026-02-15 is a Sunday -> Monday 16th; 2026-03-15 a Sunday too; 2026-08-15 a Saturday -> 14th
        (
            "cron(0 8 15W * ? 2026)",
            utc(2026, 2, 1),
            [utc(2026, 2, 16, 8), utc(2026, 3, 16, 8), utc(2026, 4, 15, 8)],
        ),
        ("cron(0 8 15W 8 ? 2026)", utc(2026, 1, 1), [utc(2026, 8, 14, 8)]),
        # 1W on a Saturday (2026-08-01) stays in the month: Monday the 3rd
        ("cron(0 8 1W 8 ? 2026)", utc(2026, 1, 1), [utc(2026, 8, 3, 8)]),
        # 31W on a Sunday (2026-05-31) stays in the month: Friday the 29th; 31W skips 30-day months
        ("cron(0 8 31W 4,5 ? 2026)", utc(2026, 1, 1), [utc(2026, 5, 29, 8)]),
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
        # year field: a single year, a range, a list, a step (from 1970)
        ("cron(0 0 1 1 ? 2030)", utc(2026, 6, 1), [utc(2030, 1, 1)]),
        ("cron(0 0 1 JAN ? 2027-2028)", utc(2026, 6, 1), [utc(2027, 1, 1), utc(2028, 1, 1)]),
        ("cron(0 0 1 1 ? 2027,2031)", utc(2026, 6, 1), [utc(2027, 1, 1), utc(2031, 1, 1)]),
        ("cron(0 0 1 1 ? 1970/4)", utc(2026, 6, 1), [utc(2030, 1, 1), utc(2034, 1, 1)]),
        ("cron(0 0 1 1 ? */5)", utc(2026, 6, 1), [utc(2030, 1, 1), utc(2035, 1, 1)]),
        # month names, dom lists and ranges
        ("cron(0 0 1-2,L FEB ? 2027)", utc(2026, 6, 1), [utc(2027, 2, 1), utc(2027, 2, 2), utc(2027, 2, 28)]),
    ],
)
def test_eventbridge_cron(expr: str, after: datetime, expected: list[datetime]) -> None:
    assert fires(parse_schedule(expr), after, len(expected)) == expected


def test_year_field_runs_out() -> None:
    s = parse_schedule("cron(0 0 1 1 ? 2027-2028)")
    assert s.next_fire(utc(2027, 6, 1)) == utc(2028, 1, 1)
    with pytest.raises(ScheduleError, match=r"never fires after 2028-01-01T00:00:00\+00:00"):
        s.next_fire(utc(2028, 1, 1))


# --- DST --------------------------------------------------------------------------------------

DST_CASES = [
    # Europe/Berlin springs forward on 2026-03-29 at 01:00Z (02:00 CET -> 03:00 CEST).
    # 02:30 does not exist that day: it fires at 03:00 CEST, the first instant after the gap.
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-27T12:00",
        ["2026-03-28T01:30", "2026-03-29T01:00", "2026-03-30T00:30"],
    ),
    ("cron(30 2 * * ? *)", "Europe/Berlin", "2026-03-28T12:00", ["2026-03-29T01:00", "2026-03-30T00:30"]),
    # Two skipped wall times collapse into the one fire after the gap.
    ("0,30 2 * * *", "Europe/Berlin", "2026-03-28T12:00", ["2026-03-29T01:00", "2026-03-30T00:00"]),
    # An hourly job follows real time: one fire per real hour, none made up for 02:00.
    (
        "0 * * * *",
        "Europe/Berlin",
        "2026-03-28T23:00",
        ["2026-03-29T00:00", "2026-03-29T01:00", "2026-03-29T02:00"],
    ),
    (
        "*/30 * * * *",
        "Europe/Berlin",
        "2026-03-29T00:00",
        ["2026-03-29T00:30", "2026-03-29T01:00", "2026-03-29T01:30"],
    ),
    # Berlin falls back on 2026-10-25 at 01:00Z (03:00 CEST -> 02:00 CET): 02:30 happens twice,
    # a daily job fires at the first one (00:30Z) only.
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-23T12:00",
        ["2026-10-24T00:30", "2026-10-25T00:30", "2026-10-26T01:30"],
    ),
    # ... but an hourly job fires in both copies of the repeated hour: once per real hour.
    (
        "0 * * * *",
        "Europe/Berlin",
        "2026-10-24T23:00",
        ["2026-10-25T00:00", "2026-10-25T01:00", "2026-10-25T02:00"],
    ),
    # America/New_York springs forward on 2026-03-08 at 07:00Z (02:00 EST -> 03:00 EDT).
    (
        "30 2 * * *",
        "America/New_York",
        "2026-03-06T12:00",
        ["2026-03-07T07:30", "2026-03-08T07:00", "2026-03-09T06:30"],
    ),
    (
        "0 * * * *",
        "America/New_York",
        "2026-03-08T05:30",
        ["2026-03-08T06:00", "2026-03-08T07:00", "2026-03-08T08:00"],
    ),
    ("0 2 * * *", "America/New_York", "2026-03-07T12:00", ["2026-03-08T07:00", "2026-03-09T06:00"]),
    # New York falls back on 2026-11-01 at 06:00Z (02:00 EDT -> 01:00 EST): 01:30 happens twice.
    (
        "30 1 * * *",
        "America/New_York",
        "2026-10-30T12:00",
        ["2026-10-31T05:30", "2026-11-01T05:30", "2026-11-02T06:30"],
    ),
    (
        "0 * * * *",
        "America/New_York",
        "2026-11-01T04:30",
        ["2026-11-01T05:00", "2026-11-01T06:00", "2026-11-01T07:00"],
    ),
    (
        "cron(15 1 ? * SUN *)",
        "America/New_York",
        "2026-10-30T00:00",
        ["2026-11-01T05:15", "2026-11-08T06:15"],
    ),
    # Not a transition day, not affected: a zone without DST
    ("0 9 * * *", "Asia/Kolkata", "2026-03-28T12:00", ["2026-03-29T03:30", "2026-03-30T03:30"]),
]


@pytest.mark.parametrize(("expr", "tz", "after", "expected"), DST_CASES)
def test_dst_transitions(expr: str, tz: str, after: str, expected: list[str]) -> None:
    assert fires(parse_schedule(expr, tz), z(after), len(expected)) == [z(t) for t in expected]


def test_hourly_fires_25_times_on_the_long_day_and_23_on_the_short_one() -> None:
    s = parse_schedule("0 * * * *", "Europe/Berlin")
    # Local midnight to midnight: 2026-10-25 00:00 CEST = 10-24 22:00Z .. 10-26 00:00 CET = 10-25 23:00Z
    assert s.fires_between(z("2026-10-24T21:59"), z("2026-10-25T22:59"), 100).total == 25
    assert s.fires_between(z("2026-03-28T22:59"), z("2026-03-29T21:59"), 100).total == 23
    daily = parse_schedule("30 2 * * *", "Europe/Berlin")
    assert daily.fires_between(z("2026-03-28T02:00"), z("2026-10-26T02:00"), 0).total == 212


def test_timezone_is_kept_and_rate_ignores_it() -> None:
    s = parse_schedule("rate(1 hour)", "America/New_York")
    assert (s.expression, s.timezone, s.interval_s) == ("rate(1 hour)", "America/New_York", 3600.0)
    assert fires(s, z("2026-11-01T05:30"), 3) == [
        z("2026-11-01T06:00"),
        z("2026-11-01T07:00"),
        z("2026-11-01T08:00"),
    ]


# --- rate ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "interval_s", "after", "first"),
    [
        ("rate(1 minute)", 60, "2026-01-01T10:00:30", "2026-01-01T10:01"),
        ("rate(5 minutes)", 300, "2026-01-01T10:03", "2026-01-01T10:05"),
        ("rate(5 minutes)", 300, "2026-01-01T10:05", "2026-01-01T10:10"),
        ("rate(1 hour)", 3600, "2026-01-01T10:00", "2026-01-01T11:00"),
        ("rate(2 hours)", 7200, "2026-01-01T11:00", "2026-01-01T12:00"),
        ("rate(1 day)", 86400, "2026-01-01T10:00", "2026-01-02T00:00"),
        ("rate(3 days)", 259200, "2026-01-01T00:00", "2026-01-04T00:00"),  # day 20454 = 3 * 6818 is a fire
        ("rate(7 minutes)", 420, "1970-01-01T00:00", "1970-01-01T00:07"),
        ("rate(1 second)", 1, "2026-01-01T10:00:00.5", "2026-01-01T10:00:01"),
        ("rate(30 seconds)", 30, "2026-01-01T10:00:10", "2026-01-01T10:00:30"),
    ],
)
def test_rate_is_aligned_to_the_epoch(expr: str, interval_s: int, after: str, first: str) -> None:
    s = parse_schedule(expr)
    assert s.interval_s == interval_s
    assert s.next_fire(z(after)) == z(first)
    assert (s.next_fire(z(first)) - z(first)).total_seconds() == interval_s


# --- catch-up windows ------------------------------------------------------------------------


def test_three_day_outage_rate() -> None:
    s = parse_schedule("rate(1 hour)")
    window = (z("2026-04-01T00:00"), z("2026-04-04T00:00"))
    caught = s.fires_between(*window, limit=5)
    assert caught == Fires([z(f"2026-04-01T0{h}:00") for h in range(1, 6)], 72)
    fires_, total = s.fires_between(*window, limit=3, keep="last")
    assert (fires_, total) == ([z("2026-04-03T22:00"), z("2026-04-03T23:00"), z("2026-04-04T00:00")], 72)
    assert s.fires_between(*window, limit=0) == Fires([], 72)
    assert s.fires_between(window[1], window[0], limit=5) == Fires([], 0)


def test_three_day_outage_cron_matches_rate() -> None:
    window = (z("2026-04-01T00:00"), z("2026-04-04T00:00"))
    by_cron = parse_schedule("0 * * * *", "Europe/Berlin").fires_between(*window, limit=5)
    assert by_cron == parse_schedule("rate(1 hour)").fires_between(*window, limit=5)
    last = parse_schedule("cron(0 * * * ? *)").fires_between(*window, limit=2, keep="last")
    assert last == Fires([z("2026-04-03T23:00"), z("2026-04-04T00:00")], 72)
    minutely = parse_schedule("* * * * *").fires_between(*window, limit=1)
    assert minutely == Fires([z("2026-04-01T00:01")], 3 * 24 * 60)


def test_fires_between_is_half_open() -> None:
    s = parse_schedule("0 0 * * *")
    assert s.fires_between(z("2026-04-01T00:00"), z("2026-04-03T00:00"), 10) == Fires(
        [z("2026-04-02T00:00"), z("2026-04-03T00:00")], 2
    )


# --- refused expressions ----------------------------------------------------------------------

INVALID = [
    ("rate(1 minutes)", "rate(1 minutes): write rate(1 minute)"),
    ("rate(5 minute)", "rate(5 minute): write rate(5 minutes)"),
    ("rate(2 hour)", "rate(2 hour): write rate(2 hours)"),
    ("rate(0 minutes)", "rate(0 minutes): the rate must be a positive whole number"),
    ("rate(-5 minutes)", "rate(-5 minutes): the rate must be a positive whole number"),
    ("rate(1.5 hours)", "rate(1.5 hours): the rate must be a positive whole number"),
    ("rate(2 weeks)", "rate(2 weeks): unknown unit 'weeks' (use seconds, minutes, hours or days)"),
    ("rate(5)", "rate(5): write rate(<number> <unit>)"),
    (
        "cron(0 12 * * * *)",
        "cron(0 12 * * * *): exactly one of day-of-month and day-of-week must be ?; write cron(0 12 * * ? *)",
    ),
    (
        "cron(0 12 * * MON *)",
        "cron(0 12 * * MON *): exactly one of day-of-month and day-of-week must be ?; "
        "write cron(0 12 ? * MON *)",
    ),
    (
        "cron(0 12 ? * ? *)",
        "cron(0 12 ? * ? *): only one of day-of-month and day-of-week may be ?; write cron(0 12 * * ? *)",
    ),
    (
        "cron(0 12 1 * MON *)",
        "cron(0 12 1 * MON *): EventBridge cannot combine day-of-month 1 with day-of-week MON",
    ),
    ("cron(? 12 * * ? *)", "cron(? 12 * * ? *): ? is only allowed in day-of-month or day-of-week"),
    ("cron(0 12 * * ?)", "cron(0 12 * * ?): EventBridge cron has 6 fields"),
    ("cron(0 12 * * ? *", "cron(0 12 * * ? *: missing the closing parenthesis"),
    ("cron(60 12 * * ? *)", "cron(60 12 * * ? *): minutes value 60 is out of range 0-59"),
    ("cron(0 24 * * ? *)", "cron(0 24 * * ? *): hours value 24 is out of range 0-23"),
    ("cron(0 12 ? * 0 *)", "cron(0 12 ? * 0 *): day-of-week value 0 is out of range 1-7"),
    ("cron(0 12 ? * FUN *)", "cron(0 12 ? * FUN *): day-of-week value 'FUN' is not a number 1-7 or SUN-SAT"),
    ("cron(0 12 ? FOO * *)", "cron(0 12 ? FOO * *): month value 'FOO' is not a number 1-12 or JAN-DEC"),
    ("cron(0 12 * * ? 1969)", "cron(0 12 * * ? 1969): year value 1969 is out of range 1970-2199"),
    ("cron(0 12 ? * 3#6 *)", "cron(0 12 ? * 3#6 *): day-of-week # value 6 is out of range 1-5"),
    ("cron(0 12 ? * L *)", "cron(0 12 ? * L *): L in day-of-week needs a day, e.g. 6L for the last Friday"),
    ("cron(0 12 32W * ? *)", "cron(0 12 32W * ? *): day-of-month value 32 is out of range 1-31"),
    ("cron(0 12 10-5 * ? *)", "cron(0 12 10-5 * ? *): day-of-month range 10-5 runs backwards; write 5-10"),
    ("cron(*/0 * * * ? *)", "cron(*/0 * * * ? *): minutes step value 0 is out of range 1-60"),
    ("cron(0 0 30 2 ? *)", "cron(0 0 30 2 ? *) never fires (check the day and month fields)"),
    ("0 12 * *", "0 12 * *: expected 5 fields"),
    ("0 12 * * ? *", "0 12 * * ? *: six fields is the EventBridge form; write cron(0 12 * * ? *)"),
    ("0 12 L * *", "0 12 L * *: 'L' is EventBridge syntax; write cron("),
    ("0 12 * * 8", "0 12 * * 8: day-of-week value 8 is out of range 0-7"),
    ("", "empty schedule ''"),
    ("@daily", "@daily: expected 5 fields"),
]


@pytest.mark.parametrize(("expr", "message"), INVALID, ids=[e or "empty" for e, _ in INVALID])
def test_invalid_expressions_are_refused_with_the_fix(expr: str, message: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(expr)
    assert str(info.value).startswith(message)


def test_unknown_timezone_is_named() -> None:
    with pytest.raises(ScheduleError, match=r"unknown time zone 'Mars/Olympus' \(use an IANA name"):
        parse_schedule("rate(1 hour)", "Mars/Olympus")


def test_naive_datetimes_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("rate(1 hour)").next_fire(datetime(2026, 1, 1))
