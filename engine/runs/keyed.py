"""Keyed concurrency: at most ``limit`` runs of a workflow at once per key value, the rest in order.

A workflow's ``concurrency`` (workflows/concurrency.py) names a key rendered from the run's
event and params, so a run's key is the same whenever it is asked: at commit, and after a
restart from the stored event. Nothing about the gate is stored. A run waiting for its key is
``PENDING`` in the store like any run not started, and recovery hands the orchestrator the
started (``RUNNING``) runs first and then the ``PENDING`` ones oldest first, which rebuilds
the same slots and the same queue order. A run counts against its key from the moment the gate
lets it through (even while admission still holds it) until its driver ends.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

from engine.states import Status
from engine.store.records import RunRecord
from workflows.spec import Workflow

log = logging.getLogger(__name__)

Bucket = tuple[str, str | None]  #: (workflow, key value as JSON); None: the key did not render


class KeyedGate:
    """Slots per (workflow, key); ``enter`` a run or queue it, ``leave`` to let the next one in."""

    def __init__(self, catalog: Mapping[str, Workflow]) -> None:
        self.catalog = catalog
        self._running: dict[Bucket, set[str]] = {}
        self._waiting: dict[Bucket, deque[RunRecord]] = {}
        self._bucket_of: dict[str, Bucket] = {}  #: every run in a slot or in a queue

    def __repr__(self) -> str:
        return f"<KeyedGate running={sum(map(len, self._running.values()))} waiting={self.waiting}>"

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def is_waiting(self, run_id: str) -> bool:
        bucket = self._bucket_of.get(run_id)
        return bucket is not None and run_id not in self._running.get(bucket, ())

    def reason(self, run_id: str) -> str | None:
        """Why a waiting run has not started (the API shows it), or None when it is not waiting."""
        if not self.is_waiting(run_id):
            return None
        workflow, key = self._bucket_of[run_id]
        ahead = next(i for i, r in enumerate(self._waiting[(workflow, key)]) if r.id == run_id)
        running = len(self._running.get((workflow, key), ()))
        what = "its concurrency" if key == "" else f"concurrency key {key!r}" if key else "its unrendered key"
        return f"waiting for {what}: {running} runs running, {ahead} waiting ahead of it"

    def bucket(self, run: RunRecord) -> Bucket | None:
        """The run's (workflow, key), or None when its workflow has no ``concurrency``."""
        wf = run.spec or self.catalog.get(run.workflow)  # the run's own version (a hot reload)
        spec = None if wf is None else wf.concurrency
        if spec is None:
            return None
        if spec.key is None:
            return (run.workflow, "")
        try:
            value: Any = spec.key.render({"event": run.event, "params": run.params})
        except Exception as exc:  # a field the event lacks: one shared bucket, said once per run
            log.warning("run %s: its concurrency key did not render (%s); it shares the bucket of "
                        "runs without a key", run.id, exc)  # fmt: skip
            return (run.workflow, None)
        return (run.workflow, value if isinstance(value, str) else json.dumps(value, sort_keys=True))

    def enter(self, run: RunRecord) -> bool:
        """True: the run may start (its slot is taken). False: it waits, after those before it."""
        if run.id in self._bucket_of:  # offered again (a second commit callback): as before
            return not self.is_waiting(run.id)
        bucket = self.bucket(run)
        if bucket is None:
            return True
        wf = run.spec or self.catalog[run.workflow]
        assert wf.concurrency is not None
        running = self._running.setdefault(bucket, set())
        self._bucket_of[run.id] = bucket
        # a run recovered mid-way keeps going (even over a limit lowered since): it had its slot
        started = run.status == Status.RUNNING
        if started or (len(running) < wf.concurrency.limit and not self._waiting.get(bucket)):
            running.add(run.id)
            return True
        self._waiting.setdefault(bucket, deque()).append(run)
        log.info("run %s waits: %d runs of %s key %s are running (limit %d)", run.id, len(running),
                 run.workflow, bucket[1], wf.concurrency.limit)  # fmt: skip
        return False

    def leave(self, run_id: str) -> list[RunRecord]:
        """The run ended (or was withdrawn): free its slot; answers the runs that may start now."""
        bucket = self._bucket_of.pop(run_id, None)
        if bucket is None:
            return []
        queue = self._waiting.get(bucket)
        if queue is not None and run_id not in self._running.get(bucket, ()):
            self._waiting[bucket] = deque(r for r in queue if r.id != run_id)  # a waiting run left
            return []
        running = self._running.get(bucket, set())
        running.discard(run_id)
        freed: list[RunRecord] = []
        wf = self.catalog.get(bucket[0])
        limit = 0 if wf is None or wf.concurrency is None else wf.concurrency.limit
        while queue and len(running) < limit:
            nxt = queue.popleft()
            running.add(nxt.id)
            freed.append(nxt)
        if not running:
            self._running.pop(bucket, None)
        if queue is not None and not queue:
            self._waiting.pop(bucket, None)
        return freed

    def withdraw(self, run_id: str) -> RunRecord | None:
        """Take a waiting run out of its queue (a user cancelled it); None if it is not waiting."""
        bucket = self._bucket_of.get(run_id)
        if bucket is None or not self.is_waiting(run_id):
            return None
        found = next(r for r in self._waiting[bucket] if r.id == run_id)
        self.leave(run_id)
        return found
