"""Hot reload: ``sluice serve DIR`` watches DIR and serves each workflow file's newest valid version.

A change (debounced: an editor's save is several events) reloads the whole folder with the same
``load_dir`` as at start, so a reload accepts exactly what a restart would. If it loads:

- the catalog is swapped for new runs (engine/catalog.py); runs already made keep the version
  they were made with, and each run records it (``runs.workflow_version``: a hash of the file);
- the bus's rules and destinations are rebuilt, and webhooks follow the catalog (engine/api/app.py);
- only the triggers of workflows added, changed or removed are stopped and started again, as at a
  restart: their durable state (schedule cursors, the files seen) lives in the store and stays;
- a changed handler ``.py`` recycles the function workers, which import a module once each.

If it does not load, nothing changes: the old versions keep serving, and the problems go to the
log, to ``/readyz`` (``reload_errors``: still ready, since the old versions serve) and to the
dashboard's workflows page, until a reload succeeds. Kubernetes' ConfigMap reloaders and Airflow's
DAG processor work the same way round: a broken file never takes down what was running.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from engine.engine import Engine
from triggers.watch import Watch
from workflows import secrets
from workflows.errors import SpecErrors
from workflows.loader import load_dir
from workflows.spec import Workflow

log = logging.getLogger(__name__)

#: quiet time after the last change before reloading: an editor's save is several events
DEBOUNCE_S = 0.4
WATCHED = (".yaml", ".yml", ".py")


class TriggerLike(Protocol):
    """A trigger service of engine/server.py (started, run until cancelled, ``failed`` says why)."""

    name: str
    failed: str | None

    async def start(self) -> None: ...

    async def run(self) -> None: ...


def handler_files(root: Path) -> dict[str, str]:
    """Each ``*.py`` below ``root`` (hidden folders skipped) and a hash of its contents."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        with contextlib.suppress(OSError):
            found[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


class WorkflowReloader:
    """An Engine service: owns the workflows' trigger services and reloads them on a change."""

    name = "workflow-reload"

    def __init__(
        self,
        engine: Engine,
        directory: Path,
        make_triggers: Callable[[Workflow], Sequence[TriggerLike]],
        *,
        volume_roots: Sequence[Path] | None = None,
        debounce_s: float = DEBOUNCE_S,
    ) -> None:
        self.engine = engine
        self.directory = Path(directory).resolve()  # watchdog then reports absolute paths
        self.make_triggers = make_triggers
        self.volume_roots = volume_roots
        self.debounce_s = debounce_s
        self._triggers: dict[str, list[TriggerLike]] = {
            name: list(make_triggers(wf)) for name, wf in engine.catalog.items()
        }
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._watch = Watch(self._queue)
        self._handlers = handler_files(self.directory)
        self.reloads = 0  #: successful reloads that changed something (tests, the log)

    @property
    def children(self) -> tuple[TriggerLike, ...]:
        """The trigger services now (``/readyz`` reads their ``failed``)."""
        return tuple(t for group in self._triggers.values() for t in group)

    async def start(self) -> None:
        for group in self._triggers.values():
            for trigger in group:  # each armed on return, as when they were the engine's services
                await trigger.start()
        await self._watch.arm(self.directory, recursive=True, close_write=None)

    async def run(self) -> None:
        try:
            for name in self._triggers:
                self._run_group(name)
            while True:
                await self._next_change()
                await self.reload()
        finally:
            for name in list(self._tasks):
                await self._stop_group(name)
            await self._watch.stop()

    def _run_group(self, name: str) -> None:
        group = [t for t in self._triggers.get(name, ()) if t.failed is None]
        self._tasks[name] = [asyncio.create_task(t.run(), name=t.name) for t in group]

    async def _stop_group(self, name: str) -> None:
        """Stop a workflow's triggers as the engine's stop would (cancelled; durable state kept)."""
        tasks = self._tasks.pop(name, [])
        for task in tasks:
            task.cancel(msg="workflow reloaded")
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _next_change(self) -> None:
        """Wait for a change to a workflow or handler file, then for ``debounce_s`` of quiet."""
        while not self._relevant(await self._queue.get()):
            pass
        while True:
            try:
                async with asyncio.timeout(self.debounce_s):
                    await self._queue.get()
            except TimeoutError:
                return

    def _relevant(self, item: tuple[str, Any]) -> bool:
        kind, event = item
        if kind != "fs":
            return True  # a re-scan (the inotify queue overflowed): reload to be sure
        paths = [getattr(event, "src_path", ""), getattr(event, "dest_path", "")]
        return any(_watched(self.directory, p) for p in paths if p)

    async def reload(self) -> bool:
        """Load the folder again and serve what changed; False (nothing changed) when it is invalid."""
        catalog = self.engine.catalog
        catalog.reloaded_at = time.time()
        try:
            fresh = await asyncio.to_thread(load_dir, self.directory, volume_roots=self.volume_roots)
        except SpecErrors as errs:
            problems = tuple(str(e) for e in errs.errors)
        except Exception as exc:  # unreadable folder, or a loader bug: the old versions go on
            problems = (f"{self.directory}: {type(exc).__name__}: {exc}",)
        else:
            problems = ()
        if problems:
            catalog.errors = problems
            for problem in problems:
                log.error("workflow reload refused, still serving the previous versions: %s", problem)
            return False
        catalog.errors = ()
        handlers = await asyncio.to_thread(handler_files, self.directory)
        old = dict(catalog)
        touched = frozenset(
            name
            for name in {*old, *fresh}
            if name not in old or name not in fresh or old[name].version != fresh[name].version
        )
        code_changed = handlers != self._handlers
        self._handlers = handlers
        if not touched and not code_changed:
            return True
        secrets.register(name for wf in fresh.values() for name in wf.secrets)
        catalog.swap(fresh, touched)
        self.engine.bus.recompile()
        if self.engine.bus.batched and not any(s.name == "batch-windows" for s in self.engine.services):
            log.warning("a trigger with batch: was added; its events wait for batches from the next restart")
        for name in sorted(touched):
            await self._stop_group(name)
            self._triggers.pop(name, None)
            if name in fresh:
                await self._start_group(name, fresh[name])
        if code_changed:
            recycle = getattr(self.engine.functions, "recycle", None)
            if recycle is not None:
                recycle()  # new attempts import the handlers afresh
        self.reloads += 1
        log.info(
            "workflows reloaded from %s: %s%s",
            self.directory,
            ", ".join(_describe(old, fresh, touched)) or "no workflow changed",
            "; handler files changed, function workers recycled" if code_changed else "",
        )
        return True

    async def _start_group(self, name: str, wf: Workflow) -> None:
        group = self._triggers[name] = list(self.make_triggers(wf))
        for trigger in group:
            try:
                await trigger.start()
            except Exception as exc:  # its folder is missing, say: that trigger alone is disabled
                trigger.failed = f"{type(exc).__name__}: {exc}"
                log.error("%s did not start after the reload: %s", trigger.name, trigger.failed)
        self._run_group(name)


def _watched(root: Path, path: str | bytes) -> bool:
    p = Path(path.decode() if isinstance(path, bytes) else path)
    try:
        rel = p.relative_to(root)
    except ValueError:
        return False
    if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
        return False
    return p.suffix in WATCHED


def _describe(old: dict[str, Workflow], fresh: Any, touched: Iterable[str]) -> list[str]:
    out = []
    for name in sorted(touched):
        if name not in old:
            out.append(f"{name} added ({fresh[name].version})")
        elif name not in fresh:
            out.append(f"{name} removed")
        else:
            out.append(f"{name} {old[name].version} -> {fresh[name].version}")
    return out
