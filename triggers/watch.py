"""The watchdog side of the file trigger: the observer thread, and what its events mean.

watchdog calls back in its own thread; everything here only turns a callback into a
:class:`Change` put on the runner's asyncio queue (``call_soon_threadsafe``), so the runner's
state is touched by the loop alone. Paths are made relative to the watched folder here; a path
outside it (the folder itself, ``..``) is dropped, never handed on.

On Linux the inotify observer reports close-after-write (``IN_CLOSE_WRITE``), the signal that a
writer is done; elsewhere the observer gives only create/modify, and the runner falls back to a
quiet period (see ``triggers.readiness``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

#: what happened to one path: ``closed`` (a writer closed it), ``moved-in`` (renamed into place),
#: ``gone`` (deleted or renamed away), ``created`` (a new name: a create or a hard link),
#: ``changed`` (modified or attributes, asked for only without close-write)
ChangeKind = Literal["closed", "moved-in", "gone", "created", "changed"]
_INOTIFY_LOGGER = "watchdog.observers.inotify_c"


@dataclass(frozen=True, slots=True)
class Change:
    rel: str
    kind: ChangeKind


@dataclass(frozen=True, slots=True)
class DirChange:
    """A folder appeared, moved or vanished: names below it changed without file events."""

    root_removed: bool


def relative(root: Path, path: str | bytes) -> str | None:
    """``path`` relative to ``root``, ``/``-separated; ``None`` for the folder itself or outside it."""
    if not path:
        return None
    rel = os.path.relpath(os.fsdecode(path), root)
    if rel == "." or rel == ".." or rel.startswith(".." + os.sep):
        return None
    return PurePosixPath(*Path(rel).parts).as_posix()


def translate(root: Path, event: FileSystemEvent) -> list[Change | DirChange]:
    """What one watchdog event means for the paths below ``root``."""
    if isinstance(event, (DirCreatedEvent, DirMovedEvent, DirDeletedEvent)):
        removed = isinstance(event, DirDeletedEvent) and relative(root, event.src_path) is None
        return [DirChange(root_removed=removed)]
    src = relative(root, event.src_path)
    out: list[Change | DirChange] = []
    if isinstance(event, FileMovedEvent):
        dest = relative(root, event.dest_path)
        if src is not None:
            out.append(Change(src, "gone"))
        if dest is not None:
            out.append(Change(dest, "moved-in"))
    elif src is None:
        pass
    elif isinstance(event, FileDeletedEvent):
        out.append(Change(src, "gone"))
    elif isinstance(event, FileClosedEvent):
        out.append(Change(src, "closed"))
    elif isinstance(event, FileCreatedEvent):
        out.append(Change(src, "created"))
    elif isinstance(event, (FileModifiedEvent, FileAttribEvent)):
        out.append(Change(src, "changed"))
    return out


def event_filter(close_write: bool) -> list[type[FileSystemEvent]]:
    """Only what the runner acts on: every write(2) and our own reads would otherwise cross threads."""
    wanted: list[type[FileSystemEvent]] = [
        FileCreatedEvent,
        FileMovedEvent,
        FileDeletedEvent,
        FileClosedEvent,
        DirCreatedEvent,
        DirMovedEvent,
        DirDeletedEvent,
    ]
    if not close_write:
        wanted += [FileModifiedEvent, FileAttribEvent]
    return wanted


class _Handoff(FileSystemEventHandler):
    """Runs in watchdog's observer thread: only hands each event to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[tuple[str, Any]]) -> None:
        self._loop = loop
        self._queue = queue

    def dispatch(self, event: FileSystemEvent) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed while shutting down
            self._loop.call_soon_threadsafe(self._queue.put_nowait, ("fs", event))


class _OverflowHook(logging.Handler):
    """watchdog 7 reports an inotify queue overflow only as a log line; turn it into a re-scan."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[tuple[str, Any]]) -> None:
        super().__init__(logging.WARNING)
        self._loop = loop
        self._queue = queue

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._queue.put_nowait, ("scan", "inotify overflow"))


def _make_observer() -> tuple[BaseObserver, bool]:
    """The platform observer, and whether it reports close-after-write (Linux inotify)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(ImportError, OSError):
            from watchdog.observers.inotify import InotifyObserver

            # full events: a file moved in from outside is a move (complete), not a create
            return InotifyObserver(generate_full_events=True), True
    return Observer(), False


class Watch:
    """One armed observer on a folder; puts ``("fs", event)`` and ``("scan", reason)`` on ``queue``."""

    def __init__(self, queue: asyncio.Queue[tuple[str, Any]]) -> None:
        self._queue = queue
        self._observer: BaseObserver | None = None
        self._hook: _OverflowHook | None = None

    @property
    def armed(self) -> bool:
        return self._observer is not None

    async def arm(self, root: Path, *, recursive: bool, close_write: bool | None) -> bool:
        """Start the observer thread; return whether close-after-write is the completion signal."""
        loop = asyncio.get_running_loop()
        observer, has_close = _make_observer()
        use_close = has_close if close_write is None else (close_write and has_close)
        observer.schedule(
            _Handoff(loop, self._queue),
            str(root),
            recursive=recursive,
            event_filter=event_filter(use_close),
        )
        await asyncio.to_thread(observer.start)  # adds the inotify watches (walks sub-folders)
        self._observer = observer
        self._hook = _OverflowHook(loop, self._queue)
        logging.getLogger(_INOTIFY_LOGGER).addHandler(self._hook)
        return use_close

    async def stop(self) -> None:
        if self._hook is not None:
            logging.getLogger(_INOTIFY_LOGGER).removeHandler(self._hook)
            self._hook = None
        if self._observer is not None:
            observer, self._observer = self._observer, None
            observer.stop()
            await asyncio.to_thread(observer.join)
