"""The store's own errors: what a caller may catch and what its message tells the user to do."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from triggers.base import Unavailable


class StoreFull(Unavailable):
    """The disk under the store is full: nothing was written; retry once space is back."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"the disk holding {path.parent} is full; free some space (the engine retries by itself)"
        )


def is_full(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)


class StoreUnavailable(RuntimeError):
    """The store cannot be opened here; the message says why and what to do."""

    def __init__(self, message: str, *, held_by: str | None = None) -> None:
        super().__init__(message)
        self.held_by = held_by  #: the pid of the engine that holds the data dir, if that is why
