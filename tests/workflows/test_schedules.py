"""Schedule expressions: exact fire times, DST transitions, catch-up windows, refused input.

No test reads the clock or sleeps: every instant is written out. EventBridge's ``cron(...)``
has its own file (``test_schedules_eventbridge.py``), and croniter's answers are held against
ours over many expressions in ``test_schedules_croniter.py``.
"""

from __future__ import annotations

import time
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


def test_a_step_in_day_of_month_fires_every_nth_day_not_every_day() -> None:
    """The bug: ``0 0 */3 * *`` fired on four days in a row (a field starting with * was dropped)."""
    s = parse_schedule("0 0 */3 * *")
    assert fires(s, utc(2026, 1, 1), 5) == [utc(2026, 1, d) for d in (4, 7, 10, 13, 16)]
    # croniter counts from the 1st of each month: the 31st, then the 1st of the next one
    assert fires(s, utc(2026, 1, 28), 3) == [utc(2026, 1, 31), utc(2026, 2, 1), utc(2026, 2, 4)]
    assert fires(parse_schedule("0 12 */10 * *"), utc(2026, 2, 1), 4) == [
        utc(2026, 2, 1, 12),
        utc(2026, 2, 11, 12),
        utc(2026, 2, 21, 12),
        utc(2026, 3, 1, 12),  # February has no 31st
    ]


def test_unix_day_fields_or_when_both_restricted() -> None:
    s = parse_schedule("0 0 1 * MON")  # the 1st OR any Monday
    assert fires(s, utc(2026, 5, 30), 4) == [
        utc(2026, 6, 1),
        utc(2026, 6, 8),
        utc(2026, 6, 15),
        utc(2026, 6, 22),
    ]
    # A field starting with * used to count as unrestricted here (Vixie cron's rule, which gave
    # Mondays only). croniter applies the "or" to every restricted field, */10 included, as
    # Airflow and Prefect do: the 1st, 11th, 21st and 31st, or a Monday.
    s = parse_schedule("0 0 */10 * MON")
    assert fires(s, utc(2026, 6, 1), 4) == [
        utc(2026, 6, 8),
        utc(2026, 6, 11),
        utc(2026, 6, 15),
        utc(2026, 6, 21),
    ]


# --- DST --------------------------------------------------------------------------------------
# Plain cron follows croniter (docs/schedules.md): a fixed time a spring-forward gap skips fires
# at the end of the gap; every-hour schedules skip the missing times; a time repeated on fall-back
# fires in both copies. EventBridge's cron(...) follows EventBridge Scheduler instead: the gap
# time does not fire, the repeated one fires once (test_schedules_eventbridge.py).

DST_CASES = [
    # Europe/Berlin springs forward on 2026-03-29 at 01:00Z (02:00 CET -> 03:00 CEST).
    # 02:30 does not exist that day: it fires at 03:00 CEST, the first instant after the gap.
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-27T12:00",
        ["2026-03-28T01:30", "2026-03-29T01:00", "2026-03-30T00:30"],
    ),
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
    # Berlin falls back on 2026-10-25 at 01:00Z (03:00 CEST -> 02:00 CET): 02:30 happens twice.
    # Before croniter this fired at the first 02:30 only (cronie's rule); croniter fires both,
    # 00:30Z and 01:30Z, and Airflow and Prefect with it.
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-23T12:00",
        ["2026-10-24T00:30", "2026-10-25T00:30", "2026-10-25T01:30", "2026-10-26T01:30"],
    ),
    # ... and an hourly job fires in both copies of the repeated hour: once per real hour.
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
    # New York falls back on 2026-11-01 at 06:00Z (02:00 EDT -> 01:00 EST): 01:30 happens twice,
    # and fires twice (croniter; it fired once, at 05:30Z, before croniter).
    (
        "30 1 * * *",
        "America/New_York",
        "2026-10-30T12:00",
        ["2026-10-31T05:30", "2026-11-01T05:30", "2026-11-01T06:30", "2026-11-02T06:30"],
    ),
    (
        "0 * * * *",
        "America/New_York",
        "2026-11-01T04:30",
        ["2026-11-01T05:00", "2026-11-01T06:00", "2026-11-01T07:00"],
    ),
    # A fall-back at midnight (Havana, 2026-11-01 05:00Z: 01:00 CDT -> 00:00 CST): 00:30 twice.
    (
        "30 0 * * *",
        "America/Havana",
        "2026-10-31T00:00",
        ["2026-10-31T04:30", "2026-11-01T04:30", "2026-11-01T05:30", "2026-11-02T05:30"],
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
    # 212 days from 03-28 02:00Z to 10-26 02:00Z; a daily 02:30 fires on 213 of them with croniter
    # (twice on the fall-back day; 212 before croniter, which fired the repeated 02:30 once)
    daily = parse_schedule("30 2 * * *", "Europe/Berlin")
    assert daily.fires_between(z("2026-03-28T02:00"), z("2026-10-26T02:00"), 0).total == 213


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


def test_rate_bounds_are_readable() -> None:
    assert parse_schedule("rate(36500 days)").interval_s == 36500 * 86400
    assert parse_schedule("rate(36500 days)").next_fire(z("2026-01-01T00:00")) == z("2069-12-07T00:00")
    with pytest.raises(ScheduleError, match=r"at most 100 years \(36500 days\) \(write rate\(36500 days\)\)"):
        parse_schedule("rate(36501 days)")
    with pytest.raises(ScheduleError, match=r"at most 100 years \(52560000 minutes\)"):
        parse_schedule("rate(99999999999999999999 minutes)")


# --- at(...) ---------------------------------------------------------------------------------


def test_at_fires_once_in_the_trigger_time_zone() -> None:
    s = parse_schedule("at(2026-07-01T09:30:00)", "Europe/Berlin")
    assert (s.expression, s.timezone, s.interval_s) == ("at(2026-07-01T09:30:00)", "Europe/Berlin", None)
    assert s.next_fire(z("2026-01-01T00:00")) == z("2026-07-01T07:30")  # CEST is UTC+2
    assert s.next_fire_or_none(z("2026-07-01T07:29:59")) == z("2026-07-01T07:30")
    # strictly after: at the instant itself, and from then on, there is no next fire
    assert s.next_fire_or_none(z("2026-07-01T07:30")) is None
    assert s.next_fire_or_none(z("2030-01-01T00:00")) is None
    with pytest.raises(ScheduleError, match=r"never fires after 2026-07-01T07:30:00\+00:00"):
        s.next_fire(z("2026-07-01T07:30"))
    assert s.fires_between(z("2026-06-30T00:00"), z("2026-07-02T00:00"), 5) == Fires(
        [z("2026-07-01T07:30")], 1
    )
    assert s.fires_between(z("2026-07-01T07:30"), z("2026-07-02T00:00"), 5) == Fires([], 0)
    assert s.fires_between(z("2026-06-30T00:00"), z("2026-07-02T00:00"), 0) == Fires([], 1)
    assert parse_schedule("at(2026-07-01T09:30:00)").next_fire(z("2026-01-01T00:00")) == z("2026-07-01T09:30")


def test_at_in_a_dst_gap_fires_at_the_end_of_the_gap_and_a_repeated_time_at_its_first() -> None:
    gap = parse_schedule("at(2026-03-29T02:30:00)", "Europe/Berlin")  # 02:00 CET -> 03:00 CEST
    assert gap.next_fire(z("2026-03-01T00:00")) == z("2026-03-29T01:00")
    repeated = parse_schedule("at(2026-10-25T02:30:00)", "Europe/Berlin")  # 02:30 CEST, then CET
    assert repeated.next_fire(z("2026-10-01T00:00")) == z("2026-10-25T00:30")
    assert repeated.next_fire_or_none(z("2026-10-25T00:30")) is None


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


def test_a_year_long_outage_of_a_minutely_cron_is_counted_exactly_and_quickly() -> None:
    """525,600 minutes, two DST changes: counted from a day's grid, not fire by fire."""
    s = parse_schedule("* * * * *", "Europe/Berlin")
    started = time.perf_counter()
    caught = s.fires_between(z("2026-01-01T00:00"), z("2027-01-01T00:00"), 2, keep="last")
    elapsed = time.perf_counter() - started
    assert caught == Fires([z("2026-12-31T23:59"), z("2027-01-01T00:00")], 365 * 24 * 60)
    assert elapsed < 2.0  # far above the day-at-a-time cost, far below croniter fire by fire


def test_fires_between_is_half_open() -> None:
    s = parse_schedule("0 0 * * *")
    assert s.fires_between(z("2026-04-01T00:00"), z("2026-04-03T00:00"), 10) == Fires(
        [z("2026-04-02T00:00"), z("2026-04-03T00:00")], 2
    )


# --- refused expressions ----------------------------------------------------------------------
# (expression, the whole message: what is wrong, then "(write <a fix that parses>)")

INVALID = [
    ("rate(1 minutes)", "rate(1 minutes): 1 takes the singular unit (write rate(1 minute))"),
    ("rate(5 minute)", "rate(5 minute): 5 takes the plural unit (write rate(5 minutes))"),
    ("rate(2 hour)", "rate(2 hour): 2 takes the plural unit (write rate(2 hours))"),
    ("rate(0 minutes)", "rate(0 minutes): the rate must be a positive whole number (write rate(1 minute))"),
    (
        "rate(-5 minutes)",
        "rate(-5 minutes): the number '-5' must be a positive whole number in the digits 0-9 "
        "(write rate(5 minutes))",
    ),
    (
        "rate(1.5 hours)",
        "rate(1.5 hours): the number '1.5' must be a positive whole number in the digits 0-9 "
        "(write rate(90 minutes))",
    ),
    (
        "rate(² minutes)",
        "rate(² minutes): the number '²' must be a positive whole number in the digits 0-9 "
        "(write rate(5 minutes))",
    ),
    (
        "rate(2 weeks)",
        "rate(2 weeks): unknown unit 'weeks' (the units are seconds, minutes, hours and days) "
        "(write rate(14 days))",
    ),
    ("rate(5)", "rate(5): write rate(<number> <unit>), a whole number and a unit (write rate(5 minutes))"),
    # EventBridge refuses padding and inner spaces
    (
        "rate( 5 minutes )",
        "rate( 5 minutes ): no spaces inside rate( ) except the one between the number and the unit "
        "(write rate(5 minutes))",
    ),
    (
        "rate(5  minutes)",
        "rate(5  minutes): no spaces inside rate( ) except the one between the number and the unit "
        "(write rate(5 minutes))",
    ),
    (" rate(5 minutes)", "' rate(5 minutes)': no spaces around the expression (write rate(5 minutes))"),
    (
        "rate(99999999999999999999 days)",
        "rate(99999999999999999999 days): the rate can be at most 100 years (36500 days) "
        "(write rate(36500 days))",
    ),
    (
        "at(2026-3-5T10:00)",
        "at(2026-3-5T10:00): the time must be at(yyyy-mm-ddThh:mm:ss), zero-padded, with no spaces "
        "(write at(2026-03-05T10:00:00))",
    ),
    (
        "at(2026-02-30T10:00:00)",
        "at(2026-02-30T10:00:00): not a date and time (day is out of range for month) "
        "(write at(2030-01-01T00:00:00))",
    ),
    (
        "at(1969-12-31T23:59:59)",
        "at(1969-12-31T23:59:59): the year must be within 1970-2199 (write at(2030-01-01T00:00:00))",
    ),
    # plain cron: croniter's language, refused with the field and the value named
    ("0 12 * *", "0 12 * *: expected 5 fields (minute hour day-of-month month day-of-week), or cron(...), "
     "rate(...) or at(...) (write 0 12 * * *)"),
    (
        "0 12 * * ? *",
        "0 12 * * ? *: six fields is the EventBridge form (minutes hours day-of-month month day-of-week "
        "year); write it inside cron( ) (write cron(0 12 * * ? *))",
    ),
    ("0 12 * * 8", "0 12 * * 8: day-of-week value 8 is out of range 0-7 (write 0 12 * * *)"),
    ("0 12 * * 5L", "0 12 * * 5L: croniter writes the last such weekday as L5 (write 0 12 * * L5)"),
    (
        "0 12 * jan-foo *",
        "0 12 * jan-foo *: month value 'jan-foo' is not valid; the field takes 1-12 or JAN-DEC, "
        "with , - and / (write 0 12 * * *)",
    ),
    (
        "0 0 1,15W * *",
        "0 0 1,15W * *: the day-of-month field '1,15W': 'W' can only be used with a single day value, "
        "not in a list or range (write 0 0 * * *)",
    ),
    (
        "R 2 * * *",
        "R 2 * * *: minute 'R' is croniter's hashed or random form, which Sluice does not accept "
        "(a random fire time would move on every restart); write the value (write 0 2 * * *)",
    ),
    ("@reboot", "@reboot: unknown alias (the aliases are @midnight, @hourly, @daily, @weekly, @monthly, "
     "@yearly, @annually) (write @daily)"),
    ("0 0 31 2 *", "0 0 31 2 *: never fires (no date matches the day and month fields) (write 0 12 * * *)"),
    ("", "empty schedule '' (write rate(5 minutes))"),
    ("x" * 300, "the schedule 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... (300 characters) is longer than "
     "EventBridge's 256 characters (write rate(5 minutes))"),
]  # fmt: skip
# EventBridge's cron(...) refusals are in test_schedules_eventbridge.py.


@pytest.mark.parametrize(("expr", "message"), INVALID, ids=[e[:30] or "empty" for e, _ in INVALID])
def test_invalid_expressions_are_refused_with_the_fix(expr: str, message: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(expr)
    assert str(info.value) == message
    parse_schedule(info.value.hint)  # the fix is itself valid


# Refused before croniter, accepted now: they are croniter's language.
NOW_VALID = [
    ("0 12 L * *", utc(2026, 2, 1), [utc(2026, 2, 28, 12), utc(2026, 3, 31, 12)]),  # the last day
    ("@daily", utc(2026, 2, 1, 5), [utc(2026, 2, 2), utc(2026, 2, 3)]),
    ("@hourly", utc(2026, 2, 1, 5, 30), [utc(2026, 2, 1, 6), utc(2026, 2, 1, 7)]),
    ("@weekly", utc(2026, 2, 2), [utc(2026, 2, 8), utc(2026, 2, 15)]),  # Sundays
    ("@monthly", utc(2026, 2, 2), [utc(2026, 3, 1), utc(2026, 4, 1)]),
    ("@yearly", utc(2026, 2, 2), [utc(2027, 1, 1), utc(2028, 1, 1)]),
    ("@midnight", utc(2026, 2, 2, 1), [utc(2026, 2, 3)]),
    ("@annually", utc(2026, 2, 2), [utc(2027, 1, 1)]),
    ("0 9 15W * *", utc(2026, 2, 1), [utc(2026, 2, 16, 9), utc(2026, 3, 16, 9), utc(2026, 4, 15, 9)]),
    ("0 9 * * 2#2", utc(2026, 1, 1), [utc(2026, 1, 13, 9), utc(2026, 2, 10, 9)]),  # second Tuesday
    ("0 9 * * L5", utc(2026, 1, 1), [utc(2026, 1, 30, 9), utc(2026, 2, 27, 9)]),  # last Friday
    ("0 9 ? * MON", utc(2026, 1, 1), [utc(2026, 1, 5, 9)]),  # ? is *
    (
        "0 0 1 NOV-FEB *",
        utc(2026, 1, 15),
        [utc(2026, 2, 1), utc(2026, 11, 1), utc(2026, 12, 1), utc(2027, 1, 1)],
    ),
    ("0 0 * * FRI-MON", utc(2026, 1, 1), [utc(2026, 1, d) for d in (2, 3, 4, 5, 9)]),
    ("0 22-2 * * *", utc(2026, 1, 1), [utc(2026, 1, 1, h) for h in (1, 2, 22, 23)]),
]


@pytest.mark.parametrize(("expr", "after", "expected"), NOW_VALID, ids=[e for e, _, _ in NOW_VALID])
def test_croniter_forms_are_accepted(expr: str, after: datetime, expected: list[datetime]) -> None:
    assert fires(parse_schedule(expr), after, len(expected)) == expected


def test_time_zones_are_refused_readably_with_a_zone_that_loads() -> None:
    for name, shown, hint in [
        ("Mars/Olympus", "'Mars/Olympus'", "UTC"),
        ("europe/berlin", "'europe/berlin'", "Europe/Berlin"),  # only the case was wrong
        ("Z" * 300, "'ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ'... (300 characters)", "UTC"),
        ("../../etc/passwd", "'../../etc/passwd'", "UTC"),
        ("America", "'America'", "UTC"),  # a directory of tzdata, not a zone
        ("", "''", "UTC"),
        ("Europe/Berlin\x00", "'Europe/Berlin\\x00'", "UTC"),
    ]:
        with pytest.raises(ScheduleError) as info:
            parse_schedule("rate(1 hour)", name)
        assert str(info.value) == (
            f"unknown time zone {shown}; use an IANA name like Europe/Berlin (write {hint})"
        ), name
        assert (info.value.field, info.value.hint) == ("timezone", hint)
        parse_schedule("rate(1 hour)", info.value.hint)


def test_naive_datetimes_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("rate(1 hour)").next_fire(datetime(2026, 1, 1))
