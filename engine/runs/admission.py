"""Admission: intake first. Decides whether a committed run starts now or waits, held, in order.

The engine has one core, and a run costs it about as much as taking in its event did. Without a
gate a burst of webhooks halves its own intake rate by starting every run at once. So a new run
starts at once only while fewer than ``admit_at`` units of engine-side run work are in flight:
runs not yet at their first commit, plus run commits waiting for the store. Past that it is
*held* in arrival order (it is already durable, ``PENDING`` in the store) and a pump starts held
runs as that work drains. Runs waiting on a worker, a timer or a container do not count, so
1,000 sleeping runs hold nothing back. It is Little's law: when the core saturates, commits
take longer and the count rises; on an engine that keeps up it stays near zero and nothing is
ever held.

The gate is that tight only while a burst is arriving (``Bus.in_burst``). Once intake is quiet
it opens ``quiet_factor``-fold: more run work in flight makes bigger group commits, and held runs
drain about twice as fast. During a flood (``Bus.flooding``: faster than runs drain beside
intake) it shuts: every new run is held until the flood ebbs, since runs started mid-flood cost
intake more than they gain; a flood that lasts holds no run back longer than ``max_hold_s``,
then the gate is at ``admit_at`` again. The measurements behind each number are in
bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from engine.bus.bus import Bus
from engine.store.records import RunRecord


@dataclass(slots=True)
class AdmissionSettings:
    #: engine-side run work in flight (runs starting + run commits) before new runs are held
    admit_at: int = 8
    #: while no burst of events is arriving, ``admit_at`` times this: held runs drain at full speed
    quiet_factor: int = 8
    #: while runs are held, the pump looks again this often (seconds)
    pump_s: float = 0.002
    #: during a flood of events no run waits longer than this (seconds) before the gate lets runs in
    max_hold_s: float = 5.0


class Admission:
    """The gate: ``offer`` committed runs; it calls ``start(run)`` now or once work has drained."""

    def __init__(self, bus: Bus, start: Callable[[RunRecord], None], settings: AdmissionSettings) -> None:
        self.bus, self._start, self.settings = bus, start, settings
        self.held: dict[str, RunRecord] = {}  #: admitted later, in this (arrival) order
        #: runs not yet at their first commit + run commits in flight (the run driver counts them)
        self.in_engine = 0
        self._pump: asyncio.TimerHandle | None = None
        self._stopped = False

    def __repr__(self) -> str:
        return f"<Admission held={len(self.held)} in_engine={self.in_engine}>"

    def offer(self, run: RunRecord) -> None:
        if self.held or self.in_engine >= self.limit():
            self.held[run.id] = run
            self._arm()
        else:
            self._start(run)

    def withdraw(self, run_id: str) -> RunRecord | None:
        """Take a held run back (a user cancelled it before it started)."""
        return self.held.pop(run_id, None)

    def work_started(self) -> None:
        self.in_engine += 1

    def work_done(self) -> None:
        self.in_engine -= 1

    def limit(self) -> int:
        """0 in a flood, ``admit_at`` in a burst (intake first); far more once it has passed."""
        settings = self.settings
        if self.bus.flooding() and not self._held_too_long():
            return 0
        return settings.admit_at if self.bus.in_burst() else settings.admit_at * settings.quiet_factor

    def _held_too_long(self) -> bool:
        if not self.held:
            return False
        oldest = next(iter(self.held.values()))
        return self.bus.clock() - oldest.created_at > self.settings.max_hold_s

    def _arm(self) -> None:
        if self._pump is None and not self._stopped:
            self._pump = asyncio.get_running_loop().call_later(self.settings.pump_s, self._drain)

    def _drain(self) -> None:
        self._pump = None
        if self._stopped:  # held runs stay PENDING in the store; the next start resumes them
            return
        for _ in range(min(self.limit() - self.in_engine, len(self.held))):
            self._start(self.held.pop(next(iter(self.held))))
        if self.held:
            self._arm()

    def stop(self, *, forget: bool = False) -> None:
        """Start nothing more (a drain); ``forget`` drops the held runs too (they stay in the store)."""
        self._stopped = True
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        if forget:
            self.held.clear()
