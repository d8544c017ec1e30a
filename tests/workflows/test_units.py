"""Durations and sizes as users write them: parsed once at load, refused with the accepted forms."""

import pytest

from workflows.errors import UnitError
from workflows.units import parse_duration, parse_instant, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("2d", 172800.0),
        ("1.5h", 5400.0),
        (45, 45.0),
        (0.25, 0.25),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["30 sec", "soon", "", "-5s", "10x", True, -1, None, "m"])
def test_bad_durations_name_the_accepted_forms(bad: object) -> None:
    with pytest.raises(ValueError, match='"30s"'):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256MiB", 256 * 1024**2),
        ("1GiB", 1024**3),
        ("512MB", 512_000_000),
        ("64KiB", 65536),
        ("1kb", 1000),
        (4096, 4096),
        ("100", 100),
        ("1.5GiB", int(1.5 * 1024**3)),
    ],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["256 megs", "1XB", "", -1, False, 1.5, None])
def test_bad_sizes_name_the_accepted_forms(bad: object) -> None:
    with pytest.raises(ValueError, match='"256MiB"'):
        parse_size(bad)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2026-01-31T12:00:00Z", 1769860800.0),
        ("2026-01-31T13:00:00+01:00", 1769860800.0),
        ("1769860800", 1769860800.0),
        (1769860800, 1769860800.0),
        (" 2026-01-31T12:00:00z ", 1769860800.0),
    ],
)
def test_an_instant_is_an_iso_time_with_a_zone_or_unix_seconds(text: object, seconds: float) -> None:
    assert parse_instant(text) == seconds


@pytest.mark.parametrize(
    "text", ["nan", "inf", "-inf", "1e400", float("nan"), 1e20, True, None, "x" * 65, "2026-01-31", "soon"]
)
def test_what_is_not_an_instant_is_refused_with_the_forms(text: object) -> None:
    with pytest.raises(UnitError) as refused:
        parse_instant(text)
    assert (
        "ISO 8601" in str(refused.value)
        or "between the years" in str(refused.value)
        or "zone" in str(refused.value)
    )


def test_a_time_without_a_zone_is_utc_only_where_the_protocol_says_so() -> None:
    with pytest.raises(UnitError, match="no zone"):
        parse_instant("2026-01-31T12:00:00")
    assert parse_instant("2026-01-31T12:00:00", naive_utc=True) == 1769860800.0
