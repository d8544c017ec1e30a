"""The executor seam: one verb (``execute``) plus lifecycle, like httpx's transport.

A step's own failure is an :class:`Outcome` with ``ok=False``; an exception out of
``execute`` means the executor itself is broken (or the call was cancelled).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.errors import (
    BAD_OUTPUT,
    ENGINE_RESTARTED,
    HANDLER_NOT_FOUND,
    OUT_OF_MEMORY,
    TIMEOUT,
    WORKER_CRASHED,
)


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """Everything a worker needs to run one attempt of a function step."""

    attempt_id: str  #: unique per attempt, e.g. ``"r-8f3a/probe[3]#2"``; names the log file
    handler: str  #: ``"module:callable"`` (dotted module allowed)
    base_dir: str  #: import root: the folder of the workflow file
    event: Any  #: the step's rendered ``input``, or the run's trigger event when it has none
    run_id: str
    step: str
    attempt: int  #: 1-based
    timeout_s: float | None = None
    memory_bytes: int | None = None
    concurrency: int | None = None  #: max attempts of this handler running at once
    log_path: str | None = None  #: stdout/stderr/logging of the attempt go here
    index: int | None = None  #: fan-out index, when the step has ``for_each``
    extra: dict[str, Any] = field(default_factory=dict)  #: more context fields for the handler
    #: the step's ``env:`` (secrets resolved): added to the worker's clean environment for this call
    env: dict[str, str] = field(default_factory=dict, repr=False)
    #: ``{"url", "token"}``: the engine's API for ``context.sluice``, with a token for this run only
    api: dict[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended. ``error`` follows Lambda: errorType, errorMessage, stackTrace."""

    ok: bool
    output: Any = None
    error: dict[str, Any] | None = None
    duration_s: float = 0.0
    log_path: str | None = None

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else str(self.error.get("errorType"))


#: errorType values the engine itself produces (engine/errors.py lists them all)
__all__ = [
    "BAD_OUTPUT",
    "ENGINE_RESTARTED",
    "HANDLER_NOT_FOUND",
    "OUT_OF_MEMORY",
    "TIMEOUT",
    "WORKER_CRASHED",
    "Executor",
    "FunctionCall",
    "Outcome",
    "StartHook",
]


class StartHook(Protocol):
    """What the caller of ``execute`` hears of its attempt before it runs (the run driver records it).

    ``queued`` at most once, when the call begins to wait (for its function's concurrency or a
    worker); ``taken`` once, when a worker takes it. A call that needs no wait hears ``taken``
    alone, before ``execute`` first suspends. Times are epoch seconds."""

    def queued(self, at: float) -> None: ...

    def taken(self, at: float) -> None: ...


class Executor(Protocol):
    async def start(self) -> None: ...  # ready when it returns

    async def execute(self, call: FunctionCall, hook: StartHook | None = None) -> Outcome: ...

    def live_output(self, log_path: str) -> str | None: ...  # a running attempt's output so far

    async def aclose(self) -> None: ...  # idempotent
