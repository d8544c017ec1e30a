"""File trigger: S3-style event notifications for a watched folder.

Each complete file that lands in the folder becomes one ``Object Created``
event shaped like an S3 notification (``detail.Records[0].s3...``) and like
S3's EventBridge event (``detail.bucket`` / ``detail.object``), so a handler
written for S3 -> Lambda or for S3 -> EventBridge works unchanged.

How "complete, once" is kept:

- *complete*: ``triggers.readiness`` says when (close-after-write or a rename
  into place, and nobody still writing; a quiet period where there is no close
  event). Temp names (``*.tmp``, ``*.part``, dotfiles, ...) never fire, so
  ``x.tmp`` -> ``x.csv`` fires once, for ``x.csv``.
- *once*: the dedupe key ``files:<workflow>:<trigger>:<key>:<size>:<mtime_ns>:<etag>``
  makes a re-emit after a re-scan or a crash a no-op on the bus, and a small
  index kept in the ``KV`` (one row per file, ``files:<workflow>:<trigger>:seen:<key>``, beside
  ``files:<workflow>:<trigger>:state``; a flush writes only the rows that changed) lets a re-scan
  skip files already processed without hashing them again.
- *nothing missed*: the watch is armed before the start-up scan, and the
  folder is scanned again on inotify overflow, on directory moves, and every
  ``rescan_s`` as a safety net.
- *nothing outside*: names are data, files are reached without following a
  symlink (``triggers.folder``), and keys are URL-encoded (``triggers.s3``).

The source is acknowledged (``after: delete`` / ``move:<dir>``) only after
``emit`` returned. The move target is resolved against the watched folder when
relative, and never fires.

The pieces: ``triggers.watch`` (the observer thread), ``triggers.readiness``
(when a file is complete, and reading it), ``triggers.folder`` (names, walking,
acknowledging), ``triggers.s3`` (the event shapes); this module is the loop that
joins them, one path at a time.

Example::

    runner = FileTriggerRunner(name="inbox", workflow="thumbs", path=Path("inbox"),
                               kv=kv, suffix=".jpg", after="move:done")
    await runner.start()                       # watch armed, start-up scan queued
    task = asyncio.create_task(runner.run(emit))
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent

from triggers import folder
from triggers.base import KV, Emit
from triggers.folder import TEMP_PATTERNS, Filters
from triggers.readiness import Hint, Read, read_file
from triggers.s3 import Bucket, FileFacts, decode_key, encode_key
from triggers.watch import Change, DirChange, Watch, translate

log = logging.getLogger(__name__)

DEFAULT_STABLE_S = 2.0
DEFAULT_CONCURRENCY = 16
DEFAULT_RESCAN_S = 300.0
RETRY_S = 5.0

Audit = Callable[[str, str, dict[str, Any]], Awaitable[None]]

__all__ = ["TEMP_PATTERNS", "FileTriggerRunner", "decode_key", "encode_key"]


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
    :param audit: ``await audit("file-refused", "<workflow>/<trigger>", detail)`` once per file that
        cannot be processed (a symlink, a FIFO, unreadable), ``detail`` naming its encoded key.
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
        audit: Audit | None = None,
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
        self.audit = audit
        self.state_key = f"files:{workflow}:{name}:state"
        #: one KV row per file seen, so a flush writes only what changed (it re-encoded the whole
        #: index, 1.5 MB at 20,000 files, every time: half the loop's work in a flood)
        self.seen_prefix = f"files:{workflow}:{name}:seen:"
        self._index: dict[str, list[Any]] = {}
        self._changed: dict[str, list[Any] | None] = {}  #: entries to write (None: to delete)
        self._last_seq = 0
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._watch = Watch(self._queue)
        self.filters = Filters(self.root, recursive, prefix, suffix, glob, self.ignore, self.move_dir)
        self.bucket = Bucket(self.root.name, str(self.root), name)
        self._busy: dict[str, Hint | None] = {}  #: rel -> a hint queued while it was being processed
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
        if self._watch.armed:
            return
        state = await self.kv.get(self.state_key) or {}
        if "files" in state:  # the first format, the whole index in one value: rewritten as rows
            self._index = dict(state["files"])
            self._changed = dict(self._index)
            self._dirty.set()
        else:
            start = len(self.seen_prefix)
            self._index = {key[start:]: v for key, v in await self.kv.prefixed(self.seen_prefix)}
        self._last_seq = int(state.get("sequencer", 0))
        await asyncio.to_thread(self._prepare_dirs)
        self.close_write = await self._watch.arm(
            self.root, recursive=self.recursive, close_write=self.close_write
        )
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

    def _prepare_dirs(self) -> None:
        if not self.root.is_dir():
            log.info("files %s/%s: creating missing folder %r", self.workflow, self.name, str(self.root))
            self.root.mkdir(parents=True, exist_ok=True)
        if self.move_dir is not None:
            self.move_dir.mkdir(parents=True, exist_ok=True)

    async def run(self, emit: Emit) -> None:
        """Process file events until cancelled; the observer thread is stopped on the way out."""
        if not self._watch.armed:
            await self.start()
        self._emit = emit
        flusher = asyncio.create_task(self._flush_loop(), name=f"files-flush-{self.name}")
        rescans = asyncio.create_task(self._rescan_loop(), name=f"files-rescan-{self.name}")
        try:
            while True:
                kind, item = await self._queue.get()
                try:
                    if kind == "fs":
                        self._on_fs_event(item)
                    elif kind == "scan":
                        self._spawn(self._scan(item))
                    elif kind == "check":
                        self._submit(item, "quiet")
                except Exception:  # one odd event never stops the watch
                    log.exception("files %s/%s: could not handle %r", self.workflow, self.name, item)
        finally:
            await self._shutdown(flusher, rescans)

    async def _shutdown(self, *helpers: asyncio.Task[None]) -> None:
        pending = len(self._tasks)
        for handle in self._timers.values():
            handle.cancel()
        for task in (*helpers, *self._tasks):
            task.cancel()
        await asyncio.gather(*helpers, *self._tasks, return_exceptions=True)
        await self._watch.stop()
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

    def _on_fs_event(self, event: FileSystemEvent) -> None:
        for change in translate(self.root, event):
            if isinstance(change, DirChange):
                if change.root_removed:
                    log.error("files %s/%s: the watched folder was removed", self.workflow, self.name)
                if self.recursive:
                    self._queue.put_nowait(("scan", "directory change"))
            else:
                self._on_change(change)

    def _on_change(self, change: Change) -> None:
        """What each change means: the readiness rule of ``triggers.readiness``."""
        rel = change.rel
        if not self.filters.wanted(rel):
            return
        if change.kind == "gone":
            if encode_key(rel) in self._index:
                self._submit(rel, "gone")
        elif change.kind == "moved-in":
            self._submit(rel, "now")  # a rename into place is the atomic "complete" signal
        elif not self.close_write:
            self._arm(rel, self.stable_s)  # no close event here: only quiet time says "complete"
        elif change.kind == "closed":
            self._submit(rel, "now")
        elif change.kind == "created":
            self._submit(rel, "created")  # read only if nobody writes it (a hard link); never a timer

    def _arm(self, rel: str, delay_s: float) -> None:
        """(Re)start the quiet-period timer of ``rel``."""
        old = self._timers.pop(rel, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[rel] = loop.call_later(delay_s, self._timer_due, rel)

    def _timer_due(self, rel: str) -> None:
        self._timers.pop(rel, None)
        self._queue.put_nowait(("check", rel))

    # -- processing one path (serialized per path) -----------------------------------------------

    def _submit(self, rel: str, hint: Hint) -> None:
        if rel in self._busy:
            queued = self._busy[rel]
            self._busy[rel] = "now" if "now" in (queued, hint) else hint
            return
        self._busy[rel] = None
        self._spawn(self._handle(rel, hint))

    async def _handle(self, rel: str, hint: Hint) -> None:
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

    async def _process(self, rel: str, hint: Hint) -> None:
        key = encode_key(rel)
        known = self._index.get(key)
        read = await asyncio.to_thread(read_file, self.root, rel, known, hint, self.stable_s)
        if read.absent:
            await self._removed(rel, key, seen_by=hint)
        elif read.refused is not None:
            self._refuse(rel, read.refused)
        elif read.facts is not None:
            timer = self._timers.pop(rel, None)  # complete now: a poll still pending has nothing to add
            if timer is not None:
                timer.cancel()
            if read.facts.identity != known:
                await self._created(read.facts)
        elif self._look_again(read, hint):
            self._arm(rel, read.wait_s if read.wait_s is not None else self.stable_s)

    def _look_again(self, read: Read, hint: Hint) -> bool:
        """Not complete yet: whether a timer must look again, or an event to come will say so.

        With close-write, the writer still holding the file (or the one that wrote while we
        hashed) closes it later, and that close is the signal; a timer there would read a file
        that is still being written. A hard link has no close here (it may be written through
        another name), nor has a file a scan found: those are looked at again after
        ``stable_s``, and read only once nobody writes them.
        """
        if read.unchanged:
            return False
        if read.wait_s is not None or not self.close_write or hint == "quiet":
            return True
        return read.writing and read.links > 1

    def _refuse(self, rel: str, reason: str) -> None:
        """Say once why ``rel`` is not processed: a log line, and an audit row an operator can find."""
        if rel in self._refused:
            return
        self._refused.add(rel)
        log.warning("files %s/%s: refused %r: %s", self.workflow, self.name, rel, reason)
        if self.audit is not None:
            detail = {
                "workflow": self.workflow,
                "trigger": self.name,
                "key": encode_key(rel),
                "reason": reason,
            }
            self._spawn(self._audit(detail))

    async def _audit(self, detail: dict[str, Any]) -> None:
        assert self.audit is not None
        try:
            await self.audit("file-refused", f"{self.workflow}/{self.name}", detail)
        except Exception as exc:  # the log line above already said it; the watch goes on
            log.warning("files %s/%s: could not audit %s: %s", self.workflow, self.name, detail["key"], exc)

    async def _created(self, facts: FileFacts) -> None:
        assert self._emit is not None
        if "created" in self.events:
            dedupe = (
                f"files:{self.workflow}:{self.name}:{facts.key}:{facts.size}:{facts.mtime_ns}:{facts.etag}"
            )
            started = time.monotonic()
            event = self.bucket.created(facts, self._next_sequencer())
            result = await self._emit(event, dedupe_key=dedupe, workflow=self.workflow)
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
            self._index[facts.key] = self._changed[facts.key] = facts.identity
            self._dirty.set()

    def _acknowledge(self, facts: FileFacts) -> bool:
        """Delete or move the file we emitted, if it is still that very version (worker thread)."""
        try:
            if self.after == "delete":
                done = folder.delete(self.root, facts.rel, facts.size, facts.mtime_ns)
            else:
                assert self.move_dir is not None
                done = folder.move(
                    self.root, facts.rel, facts.size, facts.mtime_ns, self.move_dir, self._next_sequencer
                )
        except OSError as exc:
            log.error(
                "files %s/%s: could not %s %r: %s", self.workflow, self.name, self.after, facts.rel, exc
            )
            return False
        if not done:
            log.warning(
                "files %s/%s: %r changed after emit; left in place", self.workflow, self.name, facts.rel
            )
        return done

    async def _removed(self, rel: str, key: str, seen_by: Hint) -> None:
        known = self._index.pop(key, None)
        if known is None:
            if seen_by != "gone":
                log.info("files %s/%s: skipped %r: deleted before it was read", self.workflow, self.name, rel)
            return
        self._changed[key] = None
        self._dirty.set()
        if "removed" not in self.events:
            return
        assert self._emit is not None
        size, mtime_ns, etag = known
        dedupe = f"files:{self.workflow}:{self.name}:{key}:{size}:{mtime_ns}:{etag}:removed"
        event = self.bucket.removed(key, self._next_sequencer(), time.time_ns())
        result = await self._emit(event, dedupe_key=dedupe, workflow=self.workflow)
        self.processed += 1
        log.info("files %s/%s: → %s %r removed", self.workflow, self.name, result.event_id, rel)

    # -- scanning --------------------------------------------------------------------------------

    async def _scan(self, reason: str) -> None:
        """Reconcile the index with the folder: new or changed files are processed, lost ones removed."""
        started = time.monotonic()
        refused: list[tuple[str, str]] = []
        found = await asyncio.to_thread(
            lambda: dict(folder.walk(self.root, self.filters, lambda *r: refused.append(r)))
        )
        for rel, reason in refused:
            self._refuse(rel, reason)
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
        changed, self._changed = self._changed, {}
        values: dict[str, Any] = {self.state_key: {"v": 2, "sequencer": self._last_seq}}
        values.update((self.seen_prefix + k, v) for k, v in changed.items() if v is not None)
        deleted = [self.seen_prefix + k for k, v in changed.items() if v is None]
        try:
            await self.kv.update(values, deleted)
        except BaseException:  # written with the next flush; a newer change of an entry wins
            self._changed = {**changed, **self._changed}
            self._dirty.set()
            raise
