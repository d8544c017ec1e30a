"""Step Functions' retry policy: which errors retry, and the backoff between attempts.

Shared by function steps (engine/runs/driver.py) and Batch jobs (engine/batch/attempts.py).
"""

from __future__ import annotations

import random
from typing import Protocol

from workflows.spec import RetrySpec


class Backoff(Protocol):
    """What the delay needs of a policy: a workflow's ``RetrySpec`` or a job's ``RetryStrategy``."""

    @property
    def interval_s(self) -> float: ...

    @property
    def backoff_rate(self) -> float: ...

    @property
    def max_delay_s(self) -> float | None: ...

    @property
    def jitter(self) -> str: ...


def retry_delay(spec: Backoff, failures: int, rng: random.Random) -> float:
    """``interval_s * backoff_rate^(failures-1)``, capped at ``max_delay_s``, full jitter optional."""
    delay = spec.interval_s * spec.backoff_rate ** max(0, failures - 1)
    if spec.max_delay_s is not None:
        delay = min(delay, spec.max_delay_s)
    if spec.jitter == "full":
        delay = rng.uniform(0, delay)
    return max(0.0, delay)


def is_retryable(spec: RetrySpec, error_type: str | None) -> bool:
    """Step Functions' ``ErrorEquals``: ``*`` and ``States.ALL`` match every error."""
    return "*" in spec.errors or "States.ALL" in spec.errors or (error_type in spec.errors)
