"""Boundary fakes for trigger tests: a recording ``Emit`` and an in-memory ``KV``.

The bus is the boundary here: triggers are tested against the ``Emit``/``KV``
contract of ``triggers.base``; the engine wiring is tested elsewhere.
``RecordingEmit`` keeps the one promise the contract makes that triggers lean
on: a ``dedupe_key`` seen before starts nothing and answers ``duplicate=True``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from triggers.base import EmitResult


@dataclass
class Emitted:
    event: dict[str, Any]
    dedupe_key: str | None
    workflow: str | None
    at: float  #: ``time.monotonic()`` when emit returned


@dataclass
class RecordingEmit:
    """Records committed events; ``delay_s`` makes each emit slow (to test acknowledge-after-emit)."""

    delay_s: float = 0.0
    fail: bool = False
    events: list[Emitted] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    calls: int = 0
    in_flight: int = 0
    _ids: dict[str, str] = field(default_factory=dict)
    _changed: asyncio.Event | None = None
    on_call: Callable[[dict[str, Any]], None] | None = None

    async def __call__(
        self, event: dict[str, Any], *, dedupe_key: str | None = None, workflow: str | None = None
    ) -> EmitResult:
        self.calls += 1
        self.in_flight += 1
        try:
            if self.on_call is not None:
                self.on_call(event)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.fail:
                raise RuntimeError("bus unavailable (test)")
            json.dumps(event)  # an event must be JSON, as the store will require
            if dedupe_key is not None and dedupe_key in self._ids:
                self.duplicates.append(dedupe_key)
                return EmitResult(self._ids[dedupe_key], (), duplicate=True)
            event_id = str(uuid.uuid4())
            if dedupe_key is not None:
                self._ids[dedupe_key] = event_id
            self.events.append(Emitted({**event, "id": event_id}, dedupe_key, workflow, time.monotonic()))
            self._notify()
            return EmitResult(event_id, ())
        finally:
            self.in_flight -= 1

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Emitted]:
        """Wait until at least ``count`` events were committed; fail the test at the deadline."""
        async with asyncio.timeout(timeout_s):
            while len(self.events) < count:
                self._changed = asyncio.Event()
                await self._changed.wait()
        return self.events


class MemoryKV:
    """The ``KV`` protocol in memory; values round-trip through JSON like a real store's would."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.sets = 0
        self.written: list[str] = []  #: every key set or deleted, in order

    async def get(self, key: str) -> Any | None:
        raw = self.data.get(key)
        return None if raw is None else json.loads(raw)

    async def set(self, key: str, value: Any) -> None:
        self.sets += 1
        self.data[key] = json.dumps(value)
        self.written.append(key)

    async def update(self, values: Mapping[str, Any], deleted: Iterable[str] = ()) -> None:
        self.sets += 1
        self.data.update({key: json.dumps(value) for key, value in values.items()})
        self.written.extend(values)
        for key in deleted:
            self.data.pop(key, None)
            self.written.append(key)

    async def prefixed(self, prefix: str) -> list[tuple[str, Any]]:
        return [(k, json.loads(v)) for k, v in sorted(self.data.items()) if k.startswith(prefix)]
