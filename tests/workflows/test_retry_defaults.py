"""Retry defaults as Step Functions has them: no jitter unless the workflow asks for it."""

from __future__ import annotations

import random
from pathlib import Path

from engine.backoff import retry_delay
from tests.support.engines import write_flow
from workflows.loader import load_file

FLOW = """
name: r
steps:
  a:
    function: json:dumps
    retry: {attempts: 4, interval: 2s, backoff_rate: 3%s}
"""


def _delays(tmp_path: Path, extra: str = "") -> list[float]:
    spec = load_file(write_flow(tmp_path, FLOW % extra)).steps["a"].retry
    assert spec is not None
    rng = random.Random(7)
    return [retry_delay(spec, failures, rng) for failures in (1, 2, 3)]


def test_retry_waits_exactly_interval_times_backoff_by_default(tmp_path: Path) -> None:
    assert _delays(tmp_path) == [2.0, 6.0, 18.0]


def test_full_jitter_is_there_when_asked_for(tmp_path: Path) -> None:
    delays = _delays(tmp_path, ", jitter: full")
    assert delays != [2.0, 6.0, 18.0]
    assert all(0 <= d <= cap for d, cap in zip(delays, (2.0, 6.0, 18.0), strict=True))
