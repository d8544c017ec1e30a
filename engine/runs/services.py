"""What a run driver is given: the engine's parts a run uses, and nothing of its owner's.

The orchestrator builds one and hands it to every driver; a test can build its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.bus.bus import Bus
from engine.executors.base import Executor
from engine.runs.admission import Admission
from engine.runs.step_keys import StepKeys
from engine.store.records import RunRecord
from engine.store.store import Store
from engine.types import StepRunner


async def _no_api(run_id: str) -> dict[str, str] | None:
    return None


@dataclass(frozen=True, slots=True)
class RunServices:
    """What a run driver is given (by the orchestrator); it never sees its owner."""

    store: Store
    bus: Bus
    functions: Executor
    admission: Admission  #: counts the engine-side work a run's commits put in flight
    logs_dir: Path
    drain: asyncio.Event  #: set when the engine stops: sleeping steps give way, nothing new starts
    progress: Callable[[str, RunRecord, str | None, str, dict[str, Any]], None]
    containers: Callable[[], Awaitable[StepRunner | None]]  #: the container runtime, once attached
    cancel_reason: Callable[[str], str | None]  #: why the user cancelled a run (None: not cancelled)
    #: the engine's API for a function of this run (``context.sluice``): its URL and the run's token
    api: Callable[[str], Awaitable[dict[str, str] | None]] = _no_api
    #: the slots of function steps with a keyed ``concurrency``, shared by every run's driver
    keys: StepKeys = field(default_factory=StepKeys)

    @property
    def draining(self) -> bool:
        return self.drain.is_set()
