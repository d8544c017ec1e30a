"""Statuses of runs and steps, and the one table of legal moves between them.

Every state change in the engine goes through :func:`check`, so an illegal move
(a bug) fails loudly with both states and the id instead of corrupting history.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "PENDING"  #: created, not started
    RUNNING = "RUNNING"  #: started (a step also stays RUNNING while it waits to retry)
    WAITING = "WAITING"  #: a function attempt waiting for a worker (its step shows WAITING, stays RUNNING)
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"  #: a step whose `when` was false or whose upstream failed
    CANCELLED = "CANCELLED"


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.SKIPPED, Status.CANCELLED})

NEXT: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.RUNNING, Status.SKIPPED, Status.CANCELLED, Status.FAILED}),
    Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}),
    Status.WAITING: frozenset({Status.RUNNING, Status.CANCELLED}),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.SKIPPED: frozenset(),
    Status.CANCELLED: frozenset(),
}


class IllegalTransition(RuntimeError):
    def __init__(self, kind: str, ident: str, old: str, new: str) -> None:
        super().__init__(f"{kind} {ident}: illegal transition {old} -> {new}")
        self.kind, self.ident, self.old, self.new = kind, ident, old, new


def check(kind: str, ident: str, old: str, new: str) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is in the table."""
    if Status(new) not in NEXT[Status(old)]:
        raise IllegalTransition(kind, ident, old, new)
