"""The engine's seams on one screen: what each component offers the others.

Components talk through these small interfaces, not through each other's classes, so each can
be read, tested and replaced alone (the contract suites in tests/contracts/ hold every
implementation to them). Imports here point only downwards.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from engine.executors.base import Outcome
from engine.store.records import RunRecord
from workflows.spec import StepSpec, Workflow

T = TypeVar("T")

#: a write: a plain function of the connection, run inside one store transaction (engine/store)
WriteFn = Callable[[sqlite3.Connection], T]

#: run inside an event's transaction on the bus, for every committed event: ``(conn, event, depth)``
#: (the notification outbox is one)
TxHook = Callable[[sqlite3.Connection, dict[str, Any], int], None]

#: ``(kind, run, step, status, info)`` after a committed change: kind is "run", "step" or "retry"
Progress = Callable[[str, RunRecord, str | None, str, dict[str, Any]], None]


class Service(Protocol):
    """A long-lived part of the engine (a trigger, HTTP, notifications, the Batch scheduler).

    Ready when ``start`` returns (socket bound, watch armed); ``run`` works until cancelled.
    """

    name: str

    async def start(self) -> None: ...

    async def run(self) -> None: ...


class StepHost(Protocol):
    """What a step runner may use of the run that hands it a step (the run driver offers it)."""

    @property
    def run(self) -> RunRecord: ...

    @property
    def wf(self) -> Workflow: ...

    @property
    def ctx(self) -> dict[str, Any]: ...

    @property
    def draining(self) -> bool:
        """The engine is shutting down: the run resumes on restart, its steps must not be stopped."""
        ...

    def cancel_reason(self) -> str | None:
        """Why the user cancelled this run, or None (not cancelled, or a shutdown)."""
        ...

    def step_event(self, step: str, status: str, previous: str, **extra: Any) -> dict[str, Any]: ...

    async def commit(self, writes: list[WriteFn[Any]], events: list[dict[str, Any]]) -> None:
        """Commit the writes and publish the events in one transaction; returns once durable."""
        ...

    def progress(self, kind: str, step: str | None, status: str, info: dict[str, Any]) -> None: ...


class StepRunner(Protocol):
    """Runs one kind of step to its end (the Batch service runs ``container:`` steps)."""

    async def run_step(
        self, host: StepHost, name: str, spec: StepSpec, resume: dict[str, Any] | None
    ) -> Outcome: ...
