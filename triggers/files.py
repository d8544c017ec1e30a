"""File trigger: S3-style event notifications for a watched folder.

Each complete file that lands in the folder becomes one ``Object Created``
event shaped like an S3 notification (``detail.Records[0].s3...``) and like
S3's EventBridge event (``detail.bucket`` / ``detail.object``), so a handler
written for S3 -> Lambda or for S3 -> EventBridge works unchanged.

How "complete, once" is kept:

- *complete*: on Linux the inotify close-after-write (watchdog ``FileClosedEvent``)
  and a rename into the folder are the signals; elsewhere (``close_write=False``)
  a quiet period of ``stable_s`` with no change of size or mtime. Temp names
  (``*.tmp``, ``*.part``, dotfiles, ...) never fire, so ``x.tmp`` -> ``x.csv``
  fires once, for ``x.csv``.
- *once*: the dedupe key ``files:<workflow>:<trigger>:<key>:<size>:<mtime_ns>:<etag>``
  makes a re-emit after a re-scan or a crash a no-op on the bus, and a small
  index kept in the ``KV`` (``files:<workflow>:<trigger>:state``) lets a re-scan
  skip files already processed without hashing them again.
- *nothing missed*: the watch is armed before the start-up scan, and the
  folder is scanned again on inotify overflow, on directory moves, and every
  ``rescan_s`` as a safety net.

The source is acknowledged (``after: delete`` / ``move:<dir>``) only after
``emit`` returned. The move target is resolved against the watched folder when
relative, and never fires.

Example::

    runner = FileTriggerRunner(name="inbox", workflow="thumbs", path=Path("inbox"),
                               kv=kv, suffix=".jpg", after="move:done")
    await runner.start()                       # watch armed, start-up scan queued
    task = asyncio.create_task(runner.run(emit))
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import os
import shutil
import stat
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote_plus, unquote_to_bytes

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

from triggers.base import KV, Emit

log = logging.getLogger(__name__)

DEFAULT_STABLE_S = 2.0
DEFAULT_CONCURRENCY = 16
DEFAULT_RESCAN_S = 300.0
RETRY_S = 5.0
#: Names writers use while a file is incomplete; they never fire (matched on every path part).
TEMP_PATTERNS: tuple[str, ...] = (
    ".*",
    "~*",
    "*~",
    "*.tmp",
    "*.temp",
    "*.part",
    "*.partial",
    "*.crdownload",
    "*.download",
    "*.swp",
    "*.swx",
)
_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What identifies one version of a file: the fields of its S3 record."""

    rel: str  #: path relative to the folder, ``/``-separated
    key: str  #: ``rel`` URL-encoded as S3 encodes keys
    size: int
    mtime_ns: int
    etag: str  #: MD5 hex of the content

    @property
    def identity(self) -> list[Any]:
        return [self.size, self.mtime_ns, self.etag]


@dataclass(frozen=True, slots=True)
class _Read:
    facts: FileFacts | None = None
    refused: str | None = None  #: a reason to log; the file is not processed
    absent: bool = False
    wait_s: float | None = None  #: still being written: look again after this long
    unchanged: bool = False  #: size and mtime match what was already processed


def encode_key(rel: str) -> str:
    """URL-encode a relative path the way S3 notifications encode object keys (``red+flower.jpg``)."""
    return quote_plus(os.fsencode(rel), safe="/")


def decode_key(key: str) -> str:
    return os.fsdecode(unquote_to_bytes(key.replace("+", " ")))


def _read_file(path: str, rel: str, known: list[Any] | None, min_age_ns: int) -> _Read:
    """Stat, then hash, one file without following symlinks (runs in a worker thread)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return _Read(absent=True)
    if stat.S_ISLNK(st.st_mode):
        return _Read(refused="symlink (not followed)")
    if not stat.S_ISREG(st.st_mode):
        return _Read(refused="not a regular file")
    if known is not None and [st.st_size, st.st_mtime_ns] == known[:2]:
        return _Read(unchanged=True)
    age_ns = time.time_ns() - st.st_mtime_ns
    if age_ns < min_age_ns:
        return _Read(wait_s=(min_age_ns - age_ns) / 1e9)
    try:
        return _hash_open(path, rel)
    except FileNotFoundError:
        return _Read(absent=True)
    except OSError as exc:
        return _Read(refused=f"cannot be read: {exc.strerror or exc}")


def _hash_open(path: str, rel: str) -> _Read:
    fd = os.open(path, _OPEN_FLAGS)
    with os.fdopen(fd, "rb", buffering=0) as f:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return _Read(refused="not a regular file")
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        after = os.fstat(fd)
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or size != after.st_size:
        return _Read(wait_s=0.05)  # written to while we hashed: the next close or quiet check settles it
    return _Read(FileFacts(rel, encode_key(rel), size, after.st_mtime_ns, digest.hexdigest()))


def _iso(ns: int) -> str:
    stamp = datetime.fromtimestamp(ns / 1e9, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


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


class FileTriggerRunner:
    """Watch ``path`` and emit one S3-shaped event per complete file (and per removal).

    :param name: the trigger's name (unique within the workflow).
    :param workflow: the workflow the events are routed to.
    :param path: the folder to watch; created when missing. Its name is the bucket name.
    :param kv: durable state (processed-files index, sequencer) kept across restarts.
    :param recursive: watch sub-folders too; keys then contain ``/``.
    :param prefix: S3 filter rule: the key (relative path) must start with this.
    :param suffix: S3 filter rule: the key must end with this.
    :param glob: ``fnmatch`` pattern on the relative path (``*`` also crosses ``/``).
    :param events: ``created`` and/or ``removed``.
    :param after: ``keep``, ``delete`` or ``move:<dir>`` (relative to ``path`` unless absolute).
    :param stable_s: quiet period that marks a file complete where close-after-write is not used.
    :param close_write: use inotify close-after-write; ``None`` detects it (Linux).
    :param concurrency: files hashed and emitted at once.
    :param rescan_s: safety-net re-scan interval; ``None`` disables it.
    :param ignore: name patterns that never fire (temp files); matched on every path part.
    """

    def __init__(
        self,
        *,
        name: str,
        workflow: str,
        path: Path | str,
        kv: KV,
        recursive: bool = False,
        prefix: str | None = None,
        suffix: str | None = None,
        glob: str | None = None,
        events: Iterable[str] = ("created",),
        after: str = "keep",
        stable_s: float = DEFAULT_STABLE_S,
        close_write: bool | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        rescan_s: float | None = DEFAULT_RESCAN_S,
        ignore: Iterable[str] = TEMP_PATTERNS,
    ) -> None:
        self.name = name
        self.workflow = workflow
        self.root = Path(os.path.abspath(path))
        self.kv = kv
        self.recursive = recursive
        self.prefix, self.suffix, self.glob = prefix, suffix, glob
        self.events = frozenset(events)
        unknown = self.events - {"created", "removed"}
        if unknown:
            raise ValueError(
                f"file trigger {name!r}: unknown events {sorted(unknown)} (use created, removed)"
            )
        self.after, self.move_dir = self._parse_after(after)
        self.stable_s = stable_s
        self.close_write = close_write
        self.concurrency = concurrency
        self.rescan_s = rescan_s
        self.ignore = tuple(ignore)
        self.state_key = f"files:{workflow}:{name}:state"
        self._index: dict[str, list[Any]] = {}
        self._last_seq = 0
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._observer: BaseObserver | None = None
        self._hook: _OverflowHook | None = None
        self._busy: dict[str, str | None] = {}  #: rel -> a hint queued while it was being processed
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._refused: set[str] = set()
        self._dirty = asyncio.Event()
        self._sem = asyncio.Semaphore(concurrency)
        self._emit: Emit | None = None
        self.processed = 0  #: events emitted (new or duplicate), for tests and the shutdown log

    @classmethod
    def from_spec(cls, workflow_name: str, spec: Any, *, kv: KV, **overrides: Any) -> FileTriggerRunner:
        """Build from a ``workflows.spec.FileTrigger`` (read by attribute name; spec is not imported)."""
        kwargs: dict[str, Any] = {
            "name": spec.name,
            "workflow": workflow_name,
            "path": spec.path,
            "kv": kv,
            "recursive": spec.recursive,
            "prefix": spec.prefix,
            "suffix": spec.suffix,
            "glob": spec.glob,
            "events": tuple(spec.events),
            "after": spec.after,
            "stable_s": spec.stable_s or DEFAULT_STABLE_S,  # 0 means "not given" in the spec
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    def _parse_after(self, after: str) -> tuple[str, Path | None]:
        if after in ("keep", "delete"):
            return after, None
        if after.startswith("move:") and after[5:].strip():
            target = Path(after[5:].strip())
            return "move", Path(os.path.abspath(self.root / target))
        raise ValueError(f"file trigger {self.name!r}: after={after!r} (use keep, delete or move:<dir>)")

    def __repr__(self) -> str:
        return (
            f"<FileTriggerRunner {self.workflow}/{self.name} path={str(self.root)!r} "
            f"indexed={len(self._index)} busy={len(self._busy)} processed={self.processed}>"
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the index, arm the watch, queue the start-up scan; return once the watch is armed."""
        if self._observer is not None:
            return
        loop = asyncio.get_running_loop()
        state = await self.kv.get(self.state_key) or {}
        self._index = dict(state.get("files", {}))
        self._last_seq = int(state.get("sequencer", 0))
        await asyncio.to_thread(self._prepare_dirs)
        observer, has_close = _make_observer()
        if self.close_write is None:
            self.close_write = has_close
        observer.schedule(
            _Handoff(loop, self._queue),
            str(self.root),
            recursive=self.recursive,
            event_filter=self._event_filter(),
        )
        await asyncio.to_thread(observer.start)  # adds the inotify watches (walks sub-folders)
        self._observer = observer
        self._hook = _OverflowHook(loop, self._queue)
        logging.getLogger("watchdog.observers.inotify_c").addHandler(self._hook)
        # armed before the scan: a file written during the scan still reports its close
        self._queue.put_nowait(("scan", "start-up"))
        log.info(
            "files %s/%s: watching %r (recursive=%s, complete on %s, after=%s, %d known files)",
            self.workflow,
            self.name,
            str(self.root),
            self.recursive,
            "close-write" if self.close_write else f"{self.stable_s:g}s quiet",
            self.after if self.move_dir is None else f"move to {str(self.move_dir)!r}",
            len(self._index),
        )

    def _event_filter(self) -> list[type[FileSystemEvent]]:
        # only what we act on: every write(2) and our own reads would otherwise cross threads too
        wanted: list[type[FileSystemEvent]] = [
            FileCreatedEvent,
            FileMovedEvent,
            FileDeletedEvent,
            FileClosedEvent,
            DirCreatedEvent,
            DirMovedEvent,
            DirDeletedEvent,
        ]
        if not self.close_write:
            wanted += [FileModifiedEvent, FileAttribEvent]
        return wanted

    def _prepare_dirs(self) -> None:
        if not self.root.is_dir():
            log.info("files %s/%s: creating missing folder %r", self.workflow, self.name, str(self.root))
            self.root.mkdir(parents=True, exist_ok=True)
        if self.move_dir is not None:
            self.move_dir.mkdir(parents=True, exist_ok=True)

    async def run(self, emit: Emit) -> None:
        """Process file events until cancelled; the observer thread is stopped on the way out."""
        if self._observer is None:
            await self.start()
        self._emit = emit
        flusher = asyncio.create_task(self._flush_loop(), name=f"files-flush-{self.name}")
        rescans = asyncio.create_task(self._rescan_loop(), name=f"files-rescan-{self.name}")
        try:
            while True:
                kind, item = await self._queue.get()
                if kind == "fs":
                    self._on_fs_event(item)
                elif kind == "scan":
                    self._spawn(self._scan(item))
                elif kind == "check":
                    self._submit(item, "quiet")
        finally:
            await self._shutdown(flusher, rescans)

    async def _shutdown(self, *helpers: asyncio.Task[None]) -> None:
        pending = len(self._tasks)
        for handle in self._timers.values():
            handle.cancel()
        for task in (*helpers, *self._tasks):
            task.cancel()
        await asyncio.gather(*helpers, *self._tasks, return_exceptions=True)
        if self._hook is not None:
            logging.getLogger("watchdog.observers.inotify_c").removeHandler(self._hook)
        if self._observer is not None:
            observer, self._observer = self._observer, None
            observer.stop()
            await asyncio.to_thread(observer.join)
        await self._flush()
        log.info(
            "files %s/%s: stopped ◆ %d emitted ◆ %d in flight cancelled",
            self.workflow,
            self.name,
            self.processed,
            pending,
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- watchdog events -------------------------------------------------------------------------

    def _rel(self, path: str | bytes) -> str | None:
        if not path:
            return None
        rel = os.path.relpath(os.fsdecode(path), self.root)
        if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
            return None
        return PurePosixPath(*Path(rel).parts).as_posix()

    def _on_fs_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, (DirCreatedEvent, DirMovedEvent, DirDeletedEvent)):
            if self._rel(event.src_path) is None and isinstance(event, DirDeletedEvent):
                log.error("files %s/%s: the watched folder was removed", self.workflow, self.name)
            if self.recursive:
                self._queue.put_nowait(("scan", "directory change"))
            return
        src = self._rel(event.src_path)
        if isinstance(event, FileMovedEvent):
            dest = self._rel(event.dest_path)
            if src is not None:
                self._note(src, "gone")
            if dest is not None:
                self._note(dest, "now")  # a rename into place is the atomic "complete" signal
        elif isinstance(event, FileDeletedEvent) and src is not None:
            self._note(src, "gone")
        elif isinstance(event, FileClosedEvent) and src is not None:
            self._note(src, "now" if self.close_write else "quiet")
        elif isinstance(event, (FileCreatedEvent, FileModifiedEvent, FileAttribEvent)) and src is not None:
            self._arm(src, self.stable_s)  # only subscribed to without close-write (see _event_filter)

    def _note(self, rel: str, hint: str) -> None:
        if not self._wanted(rel):
            return
        if hint == "gone" and encode_key(rel) not in self._index:
            return
        if hint == "quiet":
            self._arm(rel, self.stable_s)
        else:
            self._submit(rel, hint)

    def _arm(self, rel: str, delay_s: float) -> None:
        """(Re)start the quiet-period timer of ``rel``."""
        if not self._wanted(rel):
            return
        old = self._timers.pop(rel, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[rel] = loop.call_later(delay_s, self._timer_due, rel)

    def _timer_due(self, rel: str) -> None:
        self._timers.pop(rel, None)
        self._queue.put_nowait(("check", rel))

    def _wanted(self, rel: str) -> bool:
        """S3 filter rules, glob, temp names, the move target and (non-recursive) sub-folders."""
        parts = rel.split("/")
        if not self.recursive and len(parts) > 1:
            return False
        if any(fnmatch.fnmatchcase(part, pattern) for part in parts for pattern in self.ignore):
            return False
        if self.move_dir is not None and self._in_move_dir(rel):
            return False
        if self.prefix and not rel.startswith(self.prefix):
            return False
        if self.suffix and not rel.endswith(self.suffix):
            return False
        return not (self.glob and not fnmatch.fnmatchcase(rel, self.glob))

    def _in_move_dir(self, rel: str) -> bool:
        assert self.move_dir is not None
        full = self.root / rel
        return full == self.move_dir or self.move_dir in full.parents

    # -- processing one path (serialized per path) -----------------------------------------------

    def _submit(self, rel: str, hint: str) -> None:
        if rel in self._busy:
            queued = self._busy[rel]
            self._busy[rel] = "now" if "now" in (queued, hint) else hint
            return
        self._busy[rel] = None
        self._spawn(self._handle(rel, hint))

    async def _handle(self, rel: str, hint: str) -> None:
        try:
            async with self._sem:
                await self._process(rel, hint)
        except Exception:
            log.exception(
                "files %s/%s: failed on %r; retrying in %gs", self.workflow, self.name, rel, RETRY_S
            )
            self._arm(rel, RETRY_S)
        finally:
            again = self._busy.pop(rel, None)
            if again is not None:
                self._submit(rel, again)

    async def _process(self, rel: str, hint: str) -> None:
        key = encode_key(rel)
        known = self._index.get(key)
        min_age_ns = 0 if hint == "now" else int(self.stable_s * 1e9)
        read = await asyncio.to_thread(_read_file, str(self.root / rel), rel, known, min_age_ns)
        if read.absent:
            await self._removed(rel, key, seen_by=hint)
        elif read.refused is not None:
            self._refuse(rel, read.refused)
        elif read.wait_s is not None:
            self._arm(rel, max(read.wait_s, 0.01) if hint != "now" else self.stable_s)
        elif read.facts is not None and read.facts.identity != known:
            await self._created(read.facts)

    def _refuse(self, rel: str, reason: str) -> None:
        if rel not in self._refused:
            self._refused.add(rel)
            log.warning("files %s/%s: refused %r: %s", self.workflow, self.name, rel, reason)

    async def _created(self, facts: FileFacts) -> None:
        assert self._emit is not None
        if "created" in self.events:
            dedupe = (
                f"files:{self.workflow}:{self.name}:{facts.key}:{facts.size}:{facts.mtime_ns}:{facts.etag}"
            )
            started = time.monotonic()
            result = await self._emit(self._created_event(facts), dedupe_key=dedupe, workflow=self.workflow)
            self.processed += 1
            log.info(
                "files %s/%s: %6.3fs → %s %r (%d bytes)%s",
                self.workflow,
                self.name,
                time.monotonic() - started,
                result.event_id,
                facts.rel,
                facts.size,
                " (duplicate)" if result.duplicate else "",
            )
            # acknowledge only now that the bus committed the event
            if self.after != "keep" and not await asyncio.to_thread(self._acknowledge, facts):
                return
        if self.after == "keep" or "created" not in self.events:
            self._index[facts.key] = facts.identity
            self._dirty.set()

    def _acknowledge(self, facts: FileFacts) -> bool:
        """Delete or move the file we emitted, if it is still that very version (worker thread)."""
        src = self.root / facts.rel
        try:
            st = os.lstat(src)
            if (st.st_size, st.st_mtime_ns) != (facts.size, facts.mtime_ns):
                log.warning(
                    "files %s/%s: %r changed after emit; left in place", self.workflow, self.name, facts.rel
                )
                return False
            if self.after == "delete":
                os.unlink(src)
                return True
            assert self.move_dir is not None
            target = self.move_dir / facts.rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                target = target.with_name(f"{target.stem}.{self._next_sequencer()}{target.suffix}")
            shutil.move(src, target)
            return True
        except OSError as exc:
            log.error(
                "files %s/%s: could not %s %r: %s", self.workflow, self.name, self.after, facts.rel, exc
            )
            return False

    async def _removed(self, rel: str, key: str, seen_by: str) -> None:
        known = self._index.pop(key, None)
        if known is None:
            if seen_by != "gone":
                log.info("files %s/%s: skipped %r: deleted before it was read", self.workflow, self.name, rel)
            return
        self._dirty.set()
        if "removed" not in self.events:
            return
        assert self._emit is not None
        size, mtime_ns, etag = known
        dedupe = f"files:{self.workflow}:{self.name}:{key}:{size}:{mtime_ns}:{etag}:removed"
        result = await self._emit(self._removed_event(key), dedupe_key=dedupe, workflow=self.workflow)
        self.processed += 1
        log.info("files %s/%s: → %s %r removed", self.workflow, self.name, result.event_id, rel)

    # -- scanning --------------------------------------------------------------------------------

    async def _scan(self, reason: str) -> None:
        """Reconcile the index with the folder: new or changed files are processed, lost ones removed."""
        started = time.monotonic()
        found = await asyncio.to_thread(lambda: dict(self._walk()))
        fresh = 0
        for rel, (size, mtime_ns) in found.items():
            if rel in self._busy or rel in self._timers:
                continue
            known = self._index.get(encode_key(rel))
            if known is None or known[:2] != [size, mtime_ns]:
                fresh += 1
                self._submit(rel, "quiet")
        gone = [decode_key(key) for key in list(self._index) if decode_key(key) not in found]
        for rel in gone:
            self._submit(rel, "gone")
        log.info(
            "files %s/%s: scan (%s) in %.3fs: %d files, %d to process, %d gone",
            self.workflow,
            self.name,
            reason,
            time.monotonic() - started,
            len(found),
            fresh,
            len(gone),
        )

    def _walk(self, sub: str = "") -> Iterator[tuple[str, tuple[int, int]]]:
        try:
            entries = list(os.scandir(self.root / sub))
        except OSError as exc:
            log.warning("files %s/%s: cannot list %r: %s", self.workflow, self.name, sub or ".", exc)
            return
        for entry in entries:
            rel = f"{sub}/{entry.name}" if sub else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if self.recursive and not self._skip_dir(rel):
                    yield from self._walk(rel)
            elif self._wanted(rel):
                if stat.S_ISREG(st.st_mode):
                    yield rel, (st.st_size, st.st_mtime_ns)
                else:
                    self._refuse(
                        rel, "symlink (not followed)" if entry.is_symlink() else "not a regular file"
                    )

    def _skip_dir(self, rel: str) -> bool:
        parts = rel.split("/")
        if any(fnmatch.fnmatchcase(part, pattern) for part in parts for pattern in self.ignore):
            return True
        return self.move_dir is not None and self._in_move_dir(rel)

    async def _rescan_loop(self) -> None:
        if self.rescan_s is None:
            return
        while True:
            await asyncio.sleep(self.rescan_s)
            self._queue.put_nowait(("scan", "periodic"))

    # -- state -----------------------------------------------------------------------------------

    def _next_sequencer(self) -> str:
        """Increasing across restarts: wall-clock ns, but never below the last one handed out."""
        self._last_seq = max(self._last_seq + 1, time.time_ns())
        self._dirty.set()
        return f"{self._last_seq:018X}"

    async def _flush_loop(self) -> None:
        # one writer, coalescing: a burst of 2,000 files becomes a handful of KV writes
        while True:
            await self._dirty.wait()
            await self._flush()

    async def _flush(self) -> None:
        if not self._dirty.is_set():
            return
        self._dirty.clear()
        await self.kv.set(self.state_key, {"v": 1, "sequencer": self._last_seq, "files": dict(self._index)})

    # -- event shapes ----------------------------------------------------------------------------

    def _envelope(self, detail_type: str, time_iso: str, detail: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": "0",
            "source": "sluice.files",
            "detail-type": detail_type,
            "time": time_iso,
            "account": "local",
            "region": "local",
            "resources": [str(self.root)],
            "detail": detail,
        }

    def _record(self, event_name: str, time_iso: str, obj: dict[str, Any]) -> dict[str, Any]:
        bucket = self.root.name
        return {
            "eventVersion": "2.1",
            "eventSource": "sluice:files",
            "awsRegion": "local",
            "eventTime": time_iso,
            "eventName": event_name,
            "userIdentity": {"principalId": "local"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": obj["sequencer"], "x-amz-id-2": "local"},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": self.name,
                "bucket": {
                    "name": bucket,
                    "ownerIdentity": {"principalId": "local"},
                    "arn": f"arn:aws:s3:::{bucket}",
                },
                "object": obj,
            },
        }

    def _created_event(self, facts: FileFacts) -> dict[str, Any]:
        when = _iso(facts.mtime_ns)
        seq = self._next_sequencer()
        obj = {"key": facts.key, "size": facts.size, "eTag": facts.etag, "sequencer": seq}
        flat = {"key": facts.key, "size": facts.size, "etag": facts.etag, "sequencer": seq}
        detail = {
            "version": "0",
            "Records": [self._record("ObjectCreated:Put", when, obj)],
            "bucket": {"name": self.root.name},
            "object": flat,
            "reason": "PutObject",
            "request-id": seq,
            "requester": "local",
        }
        return self._envelope("Object Created", when, detail)

    def _removed_event(self, key: str) -> dict[str, Any]:
        when = _iso(time.time_ns())
        seq = self._next_sequencer()
        obj = {"key": key, "sequencer": seq}
        detail = {
            "version": "0",
            "Records": [self._record("ObjectRemoved:Delete", when, obj)],
            "bucket": {"name": self.root.name},
            "object": dict(obj),
            "reason": "DeleteObject",
            "deletion-type": "Permanently Deleted",
            "request-id": seq,
            "requester": "local",
        }
        return self._envelope("Object Deleted", when, detail)
