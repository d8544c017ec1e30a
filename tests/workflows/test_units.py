"""Durations and sizes as users write them: parsed once at load, refused with the accepted forms."""

import pytest

from workflows.units import parse_duration, parse_size


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
