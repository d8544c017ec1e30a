"""Plain cron answers what croniter answers: a table of expressions and zones, then a property.

croniter is asked directly here, with an aware local start time, exactly as Airflow and Prefect
ask it; ``parse_schedule`` must give the same fires, in DST gaps and on fall-back too. Windows
(``fires_between``, counted a day at a time) must hold the same fires as asking one by one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.support.hypothesis_profiles import examples
from workflows.errors import ScheduleError
from workflows.schedules import Schedule, parse_schedule

EXPRESSIONS = [
    "* * * * *",
    "*/5 * * * *",
    "0 * * * *",
    "30 2 * * *",
    "0,30 1-3 * * *",
    "15 3 1,15 * *",
    "0 0 */3 * *",
    "0 12 */10 * *",
    "5-10/2 8 * * *",
    "0 0 29 2 *",
    "59 23 31 * *",
    "0 9 13 * 5",
    "0 0 1 * MON",
    "0 0 */10 * MON",
    "0 6 * * SUN",
    "0 6 * * 7",
    "0 6 * * 0-7",
    "30 4 1 * 0",
    "0 */6 * * *",
    "0 22-2 * * *",
    "0 0 25-5 * *",
    "0 0 1 NOV-MAR *",
    "0 0 * * FRI-MON",
    "0 0 1 jan,jul *",
    "0 12 * * mon-fri",
    "0 0 L * *",
    "0 0 L 2 *",
    "0 8 15W * *",
    "0 8 1W * *",
    "0 8 31W * *",
    "0 9 * * 2#2",
    "0 9 * * 1#5",
    "0 9 * * L5",
    "0 9 * * L0",
    "0 9 ? * MON",
    "0 9 1 * ?",
    "0 0 * jan-jan *",
    "0 0 * */2 *",
    "@hourly",
    "@daily",
    "@midnight",
    "@weekly",
    "@monthly",
    "@yearly",
    "@annually",
]
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Havana",
    "Asia/Kathmandu",
]
STARTS = [datetime(2026, 3, 7, 23, 17, tzinfo=UTC), datetime(2026, 10, 24, 22, 0, 30, tzinfo=UTC)]


def croniter_fires(expr: str, zone: str, after: datetime, count: int) -> list[datetime]:
    it = croniter(expr, after.astimezone(ZoneInfo(zone)))
    return [it.get_next(datetime).astimezone(UTC) for _ in range(count)]


def chain(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    out: list[datetime] = []
    for _ in range(count):
        after = schedule.next_fire(after)
        out.append(after)
    return out


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_plain_cron_is_croniter(expr: str, zone: str) -> None:
    schedule = parse_schedule(expr, zone)
    for start in STARTS:
        expected = croniter_fires(expr, zone, start, 12)
        assert chain(schedule, start, 12) == expected
        window = schedule.fires_between(start, expected[-1], 100)
        assert window.fires == expected and window.total == 12


# --- the property -------------------------------------------------------------------------------


def _field(lo: int, hi: int, names: list[str] | None = None) -> st.SearchStrategy[str]:
    value = st.integers(lo, hi).map(str)
    if names:
        value = value | st.sampled_from(names)
    single = st.one_of(
        st.just("*"),
        value,
        st.builds(lambda a, b: f"{a}-{b}", value, value),
        st.builds(lambda s: f"*/{s}", st.integers(1, hi - lo + 1)),
        st.builds(lambda a, s: f"{a}/{s}", value, st.integers(1, hi - lo + 1)),
        st.builds(lambda a, b, s: f"{a}-{b}/{s}", value, value, st.integers(1, hi - lo + 1)),
    )
    return st.lists(single, min_size=1, max_size=3).map(",".join)


_MONTHS = ["jan", "FEB", "Mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "DEC"]
_DAYS = ["sun", "MON", "Tue", "wed", "thu", "fri", "SAT"]
_DOM_SPECIAL = st.sampled_from(["L", "?", "1W", "15W", "31W"])
_DOW_SPECIAL = st.sampled_from(["?", "L5", "L0", "1#1", "5#3", "2#5", "mon#2"])
PLAIN = st.one_of(
    st.builds(
        lambda *fields: " ".join(fields),
        _field(0, 59),
        _field(0, 23),
        _field(1, 31) | _DOM_SPECIAL,
        _field(1, 12, _MONTHS),
        _field(0, 7, _DAYS) | _DOW_SPECIAL,
    ),
    st.sampled_from(EXPRESSIONS),
)
DST_ZONES = st.sampled_from(
    ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "Pacific/Chatham",
     "America/Havana", "Africa/Casablanca", "Asia/Tehran", "America/St_Johns", "UTC"]
)  # fmt: skip
INSTANTS = st.datetimes(datetime(1995, 1, 1), datetime(2040, 1, 1)).map(lambda d: d.replace(tzinfo=UTC))


@examples(500)
@given(PLAIN, DST_ZONES, INSTANTS)
def test_next_fire_is_croniters_next(expr: str, zone: str, after: datetime) -> None:
    try:
        schedule = parse_schedule(expr, zone)
    except ScheduleError:
        # refused: croniter refuses it too, or it never fires (croniter finds no date either)
        try:
            croniter_fires(expr, zone, datetime(1999, 12, 31, tzinfo=UTC), 1)
        except (ValueError, KeyError, TypeError):
            return
        raise
    assert schedule.next_fire(after) == croniter_fires(expr, zone, after, 1)[0]


def _near_a_change(zone: str, after: datetime) -> datetime:
    """``after`` moved to a few hours before the zone's next UTC-offset change, if one comes within a year."""
    tz = ZoneInfo(zone)
    offset = after.astimezone(tz).utcoffset()
    probe = after
    for _ in range(400):
        probe += timedelta(days=1)
        if probe.astimezone(tz).utcoffset() != offset:
            return probe - timedelta(hours=30)
    return after


@examples(250)
@given(PLAIN, DST_ZONES, INSTANTS, st.integers(1, 72))
def test_a_window_holds_the_fires_one_by_one(expr: str, zone: str, after: datetime, hours: int) -> None:
    """``fires_between`` takes whole days from the grid; around DST changes it must still agree."""
    try:
        schedule = parse_schedule(expr, zone)
    except ScheduleError:
        assume(False)
        return
    start = _near_a_change(zone, after)
    end = start + timedelta(hours=hours)
    one_by_one: list[datetime] = []
    cursor = start
    while (fire := schedule.next_fire_or_none(cursor)) is not None and fire <= end and len(one_by_one) < 5000:
        one_by_one.append(fire)
        cursor = fire
    assume(len(one_by_one) < 5000)
    window = schedule.fires_between(start, end, 5000)
    assert window.fires == one_by_one and window.total == len(one_by_one)
    last = schedule.fires_between(start, end, 2, keep="last")
    assert last.fires == one_by_one[-2:] and last.total == len(one_by_one)
