"""The contract every trigger keeps: emit returns only after the event is committed.

A trigger acknowledges its source (moves the file, records the cron fire,
answers ``202``) only after ``emit`` has returned, so an acknowledged event is
never lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class EmitResult:
    event_id: str
    run_ids: tuple[str, ...]
    duplicate: bool = False  #: the dedupe key was seen before; nothing new was started


class Unavailable(RuntimeError):
    """``emit`` could not take the event now (a full disk): nothing was stored; retry later.

    A trigger answers its source accordingly (a webhook: 503 with Retry-After) and logs one line,
    not a traceback: it is the engine's state, not a bug."""


class Emit(Protocol):
    async def __call__(
        self, event: dict[str, Any], *, dedupe_key: str | None = None, workflow: str | None = None
    ) -> EmitResult:
        """Commit ``event`` (an EventBridge envelope without ``id``), route it, return the ids.

        ``dedupe_key``: an event with a key already committed starts nothing and
        returns the first event's id with ``duplicate=True``.
        ``workflow``: route only to this workflow's rules (a trigger's own event).
        Raises :class:`Unavailable` when the event cannot be stored now.
        """
        ...


class KV(Protocol):
    """Small durable state a trigger keeps across restarts (last cron fire, files seen)."""

    async def get(self, key: str) -> Any | None: ...

    async def set(self, key: str, value: Any) -> None: ...

    async def update(self, values: Mapping[str, Any], deleted: Iterable[str] = ()) -> None:
        """Set ``values`` and delete ``deleted``, all in one commit."""
        ...

    async def prefixed(self, prefix: str) -> list[tuple[str, Any]]:
        """Every ``(key, value)`` whose key starts with ``prefix``, in key order."""
        ...


class Trigger(Protocol):
    name: str

    async def start(self) -> None:
        """Arm the source (watch added, socket bound); return once ready."""
        ...

    async def run(self, emit: Emit) -> None:
        """Run until cancelled; acknowledge the source only after ``emit`` returns."""
        ...


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
