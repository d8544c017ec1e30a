"""Which triggers an operator paused: kept in the store, so a pause survives a restart.

A paused trigger emits nothing, and keeps its state (a schedule's cursor, a folder's index of
files seen). What happens to what arrives meanwhile is each kind's rule, the one it already has
for downtime, so there is one rule to learn (docs/operator.md):

- schedule: its runner stops; on resume the fires that came due while paused are missed fires
  and follow the trigger's ``catchup`` (``none`` skips them, ``latest`` fires the last one, ``all``
  fires those in the window), as after the engine was down;
- file: its watch stops; files that land meanwhile stay where they are and are picked up by the
  start-up scan on resume, once each (the dedupe key), as after a restart;
- webhook: answers ``503 trigger_paused`` with ``Retry-After`` once the caller authenticated, and
  stores nothing (senders such as GitHub retry later);
- event (a pattern rule): events that arrive while paused do not start it, as EventBridge's
  DISABLED rule; they are in the archive, and ``sluice events replay`` can deliver them later.

One key per paused trigger in the ``kv`` table (``triggers.paused/WORKFLOW/TRIGGER``), written
through ``StoreKV`` like the triggers' own state. The set the bus reads (``paused``) is a frozenset
replaced whole, so the writer thread never sees it half changed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from engine.store.kv import StoreKV

PREFIX = "triggers.paused/"

Key = tuple[str, str]  #: (workflow, trigger)


class TriggerPauses:
    """The paused triggers of one engine; ``load`` after the store opened, before the triggers start."""

    def __init__(self, kv: StoreKV) -> None:
        self.kv = kv
        self.paused: frozenset[Key] = frozenset()
        self._since: dict[Key, float] = {}
        self._changed: dict[Key, asyncio.Event] = {}

    async def load(self) -> None:
        since: dict[Key, float] = {}
        for key, value in await self.kv.prefixed(PREFIX):
            workflow, _, trigger = key.removeprefix(PREFIX).partition("/")
            since[(workflow, trigger)] = float((value or {}).get("paused_at", 0.0))
        self._since = since
        self.paused = frozenset(since)

    def is_paused(self, workflow: str, trigger: str) -> bool:
        return (workflow, trigger) in self.paused

    def since(self, workflow: str, trigger: str) -> float | None:
        """When the trigger was paused (Unix seconds), or None when it is not."""
        return self._since.get((workflow, trigger))

    def changed(self, workflow: str, trigger: str) -> asyncio.Event:
        """Set at the next pause or resume of this trigger (take a new one after it fires)."""
        return self._changed.setdefault((workflow, trigger), asyncio.Event())

    async def pause(self, workflow: str, trigger: str) -> bool:
        """Pause the trigger; False when it was paused already (nothing changes)."""
        key = (workflow, trigger)
        if key in self.paused:
            return False
        at = time.time()
        await self.kv.set(PREFIX + f"{workflow}/{trigger}", {"paused_at": at})
        self._since[key] = at
        self._set(key)
        return True

    async def resume(self, workflow: str, trigger: str) -> bool:
        """Resume the trigger; False when it was not paused."""
        key = (workflow, trigger)
        if key not in self.paused:
            return False
        await self.kv.delete(PREFIX + f"{workflow}/{trigger}")
        self._since.pop(key, None)
        self._set(key)
        return True

    def _set(self, key: Key) -> None:
        self.paused = frozenset(self._since)
        event = self._changed.pop(key, None)
        if event is not None:
            event.set()

    def view(self, workflow: str, trigger: str) -> dict[str, Any]:
        """What the API and the dashboard show of a trigger's pause."""
        at = self.since(workflow, trigger)
        return {"paused": at is not None, "paused_at": at}
