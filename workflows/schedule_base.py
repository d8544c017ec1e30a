"""What every schedule form shares: the rule protocol, fire windows, and the cron day walk.

A rule answers two questions for ``workflows.schedules.Schedule``: the first fire strictly after
an instant (``None`` when there is none), and the fires in a window, counted, of which only a
bounded number are materialised (a catch-up after a long outage must not build a list of a
million datetimes to report how many it skipped).

The cron forms share ``cron_chunks``: it asks the rule for one fire and takes the rest of that
day's fires from the day's minute grid instead of asking again, up to a DST change. A croniter
call is slow next to arithmetic; a minutely schedule that was down for a month would otherwise
keep the event loop busy for seconds just counting what it missed. Fires around a DST change
go one by one through the rule, so their answers are exactly the rule's.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Literal, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from workflows.errors import ScheduleError

Keep = Literal["first", "last"]

#: EventBridge refuses longer schedule expressions; so do we, for every form.
MAX_EXPRESSION_CHARS = 256
#: No schedule fires after this instant: croniter searches decades ahead and datetime ends at 9999.
HORIZON = datetime(9000, 1, 1, tzinfo=UTC)
HORIZON_S = HORIZON.timestamp()

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


class Fires(NamedTuple):
    """Fires in a window: ``fires`` holds at most ``limit`` of them, ``total`` counts all."""

    fires: list[datetime]
    total: int


class Rule(Protocol):
    """One parsed schedule form; instants in and out are aware, results are in UTC."""

    def next_after(self, after: datetime) -> datetime | None: ...

    def between(self, start: datetime, end: datetime, limit: int, keep: Keep) -> Fires: ...


def show(text: str, limit: int = 60) -> str:
    """A refused value as it appears in a message: quoted, and cut short when it is long."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def refuse(problem: str, hint: str) -> ScheduleError:
    return ScheduleError(problem, hint)


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def check_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"schedule times must be timezone-aware, got naive {moment.isoformat()}")


# --- collecting a window's fires --------------------------------------------------------------

Chunk = tuple[float, Sequence[int]]  #: fires at ``base + offset`` for each offset, ascending


def collect(chunks: Iterator[Chunk], limit: int, keep: Keep) -> Fires:
    """Count every fire of ``chunks``; keep the first or the last ``limit`` of them."""
    total = 0
    kept: deque[float] = deque(maxlen=limit) if keep == "last" else deque()
    for base, offsets in chunks:
        total += len(offsets)
        if keep == "last":
            if limit:
                kept.extend(base + o for o in offsets[-limit:])
        elif len(kept) < limit:
            kept.extend(base + o for o in offsets[: limit - len(kept)])
    return Fires([utc(s) for s in kept], total)


# --- the cron day walk ------------------------------------------------------------------------


def day_grid(minutes: Sequence[int], hours: Sequence[int]) -> list[int]:
    """The seconds after local midnight of every minute the hour and minute fields select."""
    return sorted(h * 3600 + m * 60 for h in hours for m in minutes)


def _same_offset_until(zone: ZoneInfo, from_s: int, until_s: int, offset: int) -> int:
    """The end of the stretch from ``from_s`` with this UTC offset, cut at ``until_s``."""
    if _offset(zone, until_s - 1) == offset:
        return until_s
    lo, hi = from_s, until_s - 1  # offset(lo) == offset != offset(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _offset(zone, mid) == offset else (lo, mid)
    return hi


def _offset(zone: ZoneInfo, seconds: int) -> int:
    offset = datetime.fromtimestamp(seconds, zone).utcoffset()
    assert offset is not None
    return int(offset.total_seconds())


def cron_chunks(
    next_after: Callable[[datetime], datetime | None],
    zone: ZoneInfo,
    grid: Sequence[int],
    start: datetime,
    end: datetime,
) -> Iterator[Chunk]:
    """The fires of a cron rule in ``(start, end]``, a stretch of a day at a time.

    A fire proves its day matches (day fields and time fields are independent in cron), so the
    grid's later times that day fire too, as long as the UTC offset stays the fire's: up to the
    next midnight or the next DST change, whichever comes first. Fires at and just after a
    change (moved out of a gap, repeated, skipped) are asked of the rule one by one.
    """
    end_s = min(end, HORIZON).timestamp()
    cursor = start
    while True:
        fire = next_after(cursor)
        if fire is None:
            return
        fire_s = int(fire.timestamp())
        if fire_s > end_s:
            return
        local = fire.astimezone(zone)
        offset = _offset(zone, fire_s)
        base = (local.date().toordinal() - _EPOCH_ORDINAL) * 86_400 - offset
        first = bisect_left(grid, fire_s - base)
        if fire.microsecond or first == len(grid) or grid[first] != fire_s - base:
            yield float(fire_s), (0,)
            cursor = fire
            continue
        stop = _same_offset_until(zone, fire_s, base + 86_400, offset)
        last = min(bisect_left(grid, stop - base), bisect_right(grid, end_s - base))
        yield float(base), grid[first:last]
        cursor = utc(base + grid[last - 1])


def local_midnight(zone: ZoneInfo, year: int, month: int = 1, day: int = 1) -> datetime:
    """The first instant of a local date, in UTC.

    ``fold=0`` is the earlier reading of a repeated wall time and, for a wall time skipped by a
    gap, the one after the gap: either way the first instant whose local date is this one.
    """
    return datetime(year, month, day, tzinfo=zone).astimezone(UTC)
