"""Durations and sizes as users write them in YAML, parsed once when a workflow loads.

>>> parse_duration("1h30m")
5400.0
>>> parse_size("256MiB")
268435456
"""

from __future__ import annotations

import re

DURATION_FORMS = '"500ms", "30s", "10m", "1h", "1h30m", "2d" or a number of seconds'
SIZE_FORMS = '"512MB", "256MiB", "1GiB", "64KiB" or a number of bytes'

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_FULL = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_DURATION_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?", re.IGNORECASE)
_SIZE_UNIT = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_duration(value: object) -> float:
    """Return seconds for ``"30s"``, ``"10m"``, ``"1h30m"``, ``"500ms"`` or a plain number.

    Raises ValueError naming the accepted forms; a negative or boolean value is refused.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as {DURATION_FORMS}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, use e.g. {DURATION_FORMS}")
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if _DURATION_FULL.fullmatch(text):
            return sum(float(n) * _DURATION_UNIT_S[unit] for n, unit in _DURATION_PART.findall(text))
    raise ValueError(f"expected a duration such as {DURATION_FORMS}")


def parse_size(value: object) -> int:
    """Return bytes for ``"256MiB"``, ``"1GiB"``, ``"512MB"`` or a plain integer of bytes.

    Binary units (KiB, MiB, GiB, TiB) are powers of 1024, decimal ones (KB, MB, GB, TB) of 1000.
    Raises ValueError naming the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as {SIZE_FORMS}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, use e.g. {SIZE_FORMS}")
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match:
            number, unit = match.groups()
            return int(float(number) * _SIZE_UNIT[(unit or "b").lower()])
    raise ValueError(f"expected a size such as {SIZE_FORMS}")
