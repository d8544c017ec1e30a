"""Durations and sizes as users write them in YAML, parsed once when a workflow loads.

Any input gives a value or a UnitError (a ValueError) naming the accepted forms: digits are
ASCII only, numbers are finite, and both are bounded (a duration at most 100 years, a size at
most 1 EiB), so nothing downstream meets an infinity, a NaN or an integer no clock can hold.

>>> parse_duration("1h30m")
5400.0
>>> parse_size("256MiB")
268435456
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal

from workflows.errors import UnitError

DURATION_FORMS = '"500ms", "30s", "10m", "1h", "1h30m", "2d" or a number of seconds'
SIZE_FORMS = '"512MB", "256MiB", "1GiB", "64KiB" or a number of bytes'
#: the longest duration: 100 years, as for a schedule's rate (timers and datetimes overflow past it)
MAX_DURATION_S = 36_500 * 86_400
#: the largest size: 1 EiB, well inside a signed 64-bit integer (SQLite, Docker)
MAX_SIZE = 1024**6

_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_DURATION_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d)", re.ASCII)
_DURATION_FULL = re.compile(rf"(?:{_NUMBER}(?:ms|s|m|h|d))+", re.ASCII)
_DURATION_UNIT_S = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600),
                    "d": Decimal(86400)}  # fmt: skip

_SIZE = re.compile(rf"({_NUMBER})[ \t]*([KMGTP]i?B|B)?", re.IGNORECASE | re.ASCII)
_SIZE_UNIT = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "pb": 1000**5,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "pib": 1024**5,
}


def parse_duration(value: object) -> float:
    """Return seconds for ``"30s"``, ``"10m"``, ``"1h30m"``, ``"500ms"`` or a plain number.

    Raises UnitError naming the accepted forms; a negative, non-finite, boolean or longer than
    100 years value is refused.
    """
    if isinstance(value, bool):
        raise UnitError(f"expected a duration such as {DURATION_FORMS}")
    if isinstance(value, int | float):
        return _bounded_duration(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if _DURATION_FULL.fullmatch(text):
            total = sum(Decimal(n) * _DURATION_UNIT_S[unit] for n, unit in _DURATION_PART.findall(text))
            return _bounded_duration(total)
        if text.startswith("-"):
            raise UnitError(f"a duration cannot be negative, use e.g. {DURATION_FORMS}")
    raise UnitError(f"expected a duration such as {DURATION_FORMS}")


def _bounded_duration(value: int | float | Decimal) -> float:
    if isinstance(value, float) and not math.isfinite(value):
        raise UnitError(f"a duration must be a finite number, use e.g. {DURATION_FORMS}", form_ok=True)
    if value < 0:
        raise UnitError(f"a duration cannot be negative, use e.g. {DURATION_FORMS}", form_ok=True)
    if value > MAX_DURATION_S:
        raise UnitError(f"a duration can be at most 100 years ({MAX_DURATION_S}s, or 36500d)", form_ok=True)
    return float(value)


def parse_size(value: object) -> int:
    """Return bytes for ``"256MiB"``, ``"1GiB"``, ``"512MB"`` or a plain integer of bytes.

    Binary units (KiB ... PiB) are powers of 1024, decimal ones (KB ... PB) of 1000; a fraction
    of a byte rounds down. Raises UnitError naming the accepted forms, and for more than 1 EiB.
    """
    if isinstance(value, bool):
        raise UnitError(f"expected a size such as {SIZE_FORMS}")
    if isinstance(value, int):
        return _bounded_size(value)
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match:
            number, unit = match.groups()
            return _bounded_size(int(Decimal(number) * _SIZE_UNIT[(unit or "b").lower()]))
    raise UnitError(f"expected a size such as {SIZE_FORMS}")


def _bounded_size(value: int) -> int:
    if value < 0:
        raise UnitError(f"a size cannot be negative, use e.g. {SIZE_FORMS}", form_ok=True)
    if value > MAX_SIZE:
        raise UnitError(f"a size can be at most 1 EiB ({MAX_SIZE} bytes)", form_ok=True)
    return value


INSTANT_FORMS = "an ISO 8601 time with a zone such as 2026-01-31T12:00:00Z, or Unix seconds"
#: the instants a datetime can hold: 0001-01-01 to 9999-12-31 (UTC)
_MIN_INSTANT, _MAX_INSTANT = -62_135_596_800.0, 253_402_300_799.0


def parse_instant(value: object, *, naive_utc: bool = False) -> float:
    """Unix seconds for an ISO 8601 time (``Z`` or an offset) or a number of seconds.

    The one reader of a point in time from outside (a wait's ``until``, replay windows, API
    filters, PutEvents' ``Time``). A time without a zone is refused (which zone would the writer
    have meant?) unless ``naive_utc``, where the caller's protocol says UTC. Raises UnitError for
    anything else, a non-finite number and an instant outside years 1-9999 included.
    """
    if isinstance(value, bool):
        raise UnitError(f"expected {INSTANT_FORMS}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and len(value) <= 64:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                raise UnitError(f"{value!r} is not a time: expected {INSTANT_FORMS}") from None
            if moment.tzinfo is None:
                if not naive_utc:
                    raise UnitError(
                        f"the time {value!r} has no zone: add Z or an offset such as +01:00"
                    ) from None
                moment = moment.replace(tzinfo=dt.UTC)
            return moment.timestamp()
    else:
        raise UnitError(f"expected {INSTANT_FORMS}")
    if not (math.isfinite(seconds) and _MIN_INSTANT <= seconds <= _MAX_INSTANT):
        raise UnitError(f"{value!r} is not a time between the years 1 and 9999", form_ok=True)
    return seconds
