"""Fair-share scheduling as AWS Batch has it: scheduling policies, share usage, and the order it gives.

A queue with a scheduling policy orders its RUNNABLE jobs by their ``shareIdentifier``'s usage
instead of FIFO: the next job comes from the share whose *weighted load* is lowest, where

    load(share) = weightFactor(share) x (vCPUs it runs now + its decayed vCPU-seconds / shareDecaySeconds)

As in AWS, a **lower** ``weightFactor`` gets **more** capacity: shares weighted 1 and 3 end up
using it 3:1. The decayed usage is an exponential average over ``shareDecaySeconds`` (0: only
what runs now counts), so a share that ran a lot recently waits behind one that did not.
Within a share, a higher ``schedulingPriority`` goes first, then submission order.
``computeReservation`` (percent) keeps ``(computeReservation/100) ** active_shares`` of the
queue's vCPUs free for shares that have not run yet, AWS's formula.

Everything here is pure: usage advances with an explicit ``now``; :func:`engine.batch.queues.decide`
drives :class:`FairOrder`. Nothing is stored but the policies (engine/batch/policies.py): usage
history starts again from the running jobs after a restart.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

MAX_SHARES = 500  #: AWS's limit of share identifiers in a policy
MAX_DECAY_S = 604_800  #: one week, AWS's limit
MIN_WEIGHT, MAX_WEIGHT = 0.0001, 999.9999
_SHARE = re.compile(r"[A-Za-z0-9_]{1,255}\*?")


class PolicyError(ValueError):
    """A policy body that cannot be used; the message names the field and what to write."""


@dataclass(frozen=True, slots=True)
class SchedulingPolicy:
    """A fair-share policy: weight factors per share (exact, or a prefix ending in ``*``)."""

    name: str
    decay_s: float = 0.0
    reservation: int = 0  #: percent, 0..99
    weights: tuple[tuple[str, float], ...] = ()

    def weight(self, share: str | None) -> float:
        """The share's weightFactor: an exact entry, else the longest matching prefix, else 1."""
        if share is None:
            return 1.0
        best, best_len = 1.0, -1
        for ident, factor in self.weights:
            if ident == share:
                return factor
            if ident.endswith("*") and share.startswith(ident[:-1]) and len(ident) > best_len:
                best, best_len = factor, len(ident)
        return best

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "share_decay_s": self.decay_s,
            "compute_reservation": self.reservation,
            "share_distribution": [{"share_identifier": s, "weight_factor": w} for s, w in self.weights],
        }

    @classmethod
    def from_json(cls, name: str, body: Mapping[str, Any]) -> SchedulingPolicy:
        """``{share_decay_s, compute_reservation, share_distribution: [{share_identifier, weight_factor}]}``

        (the AWS members, snake_cased)."""
        unknown = sorted(set(body) - {"name", "share_decay_s", "compute_reservation", "share_distribution"})
        if unknown:
            raise PolicyError(
                f"unknown field(s) {', '.join(unknown)}; known: share_decay_s, compute_reservation, "
                "share_distribution"
            )
        decay = body.get("share_decay_s", 0)
        if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0 <= decay <= MAX_DECAY_S:
            raise PolicyError(f"share_decay_s: seconds from 0 to {MAX_DECAY_S}, got {decay!r}")
        reserve = body.get("compute_reservation", 0)
        if isinstance(reserve, bool) or not isinstance(reserve, int) or not 0 <= reserve <= 99:
            raise PolicyError(f"compute_reservation: a whole percent from 0 to 99, got {reserve!r}")
        raw = body.get("share_distribution") or []
        if not isinstance(raw, list) or len(raw) > MAX_SHARES:
            raise PolicyError(
                f"share_distribution: a list of at most {MAX_SHARES} {{share_identifier, weight_factor}}"
            )
        weights: list[tuple[str, float]] = []
        for i, item in enumerate(raw):
            ident = item.get("share_identifier") if isinstance(item, Mapping) else None
            if not isinstance(ident, str) or not _SHARE.fullmatch(ident):
                raise PolicyError(
                    f"share_distribution[{i}].share_identifier: letters, digits and _ (up to 255), "
                    f"optionally ending in * for a prefix, got {ident!r}"
                )
            factor = item.get("weight_factor", 1.0)
            if (
                isinstance(factor, bool)
                or not isinstance(factor, int | float)
                or not (MIN_WEIGHT <= factor <= MAX_WEIGHT)
            ):
                raise PolicyError(
                    f"share_distribution[{i}].weight_factor: {MIN_WEIGHT} to {MAX_WEIGHT} "
                    f"(lower gets more), got {factor!r}"
                )
            if any(ident == seen for seen, _ in weights):
                raise PolicyError(f"share_distribution[{i}]: {ident} is listed twice")
            weights.append((ident, float(factor)))
        return cls(name, float(decay), reserve, tuple(weights))


class Usage:
    """Each (queue, share)'s decayed vCPU-seconds, advanced by the service at every decision.

    What ran between two decisions is what the first one left running (its placements
    included): jobs only start at a decision, and every end wakes one, so the error is small."""

    def __init__(self) -> None:
        self._seconds: dict[tuple[str, str], float] = {}
        self._running: dict[tuple[str, str], float] = {}
        self._at: float | None = None

    def advance(self, now: float, decay: Mapping[str, float]) -> None:
        """Add what has run since the last call, and decay (``decay``: window per queue)."""
        dt = 0.0 if self._at is None else max(0.0, now - self._at)
        self._at = now
        for key in set(self._seconds) | set(self._running):
            window = decay.get(key[0], 0.0)
            if window <= 0:
                self._seconds.pop(key, None)
                continue
            total = self._seconds.get(key, 0.0) * math.exp(-dt / window) + self._running.get(key, 0.0) * dt
            if total < 1e-6:
                self._seconds.pop(key, None)
            else:
                self._seconds[key] = total

    def running(self, vcpus: Mapping[tuple[str, str], float]) -> None:
        """What runs from now on: vCPUs per (queue, share), after this decision's placements."""
        self._running = dict(vcpus)

    def of(self, queue: str, share: str) -> float:
        return self._seconds.get((queue, share), 0.0)

    def public(self, queue: str) -> dict[str, float]:
        return {s: round(v, 3) for (q, s), v in self._seconds.items() if q == queue}


@dataclass(slots=True)
class FairView:
    """What :func:`~engine.batch.queues.decide` needs of a fair-share queue's snapshot."""

    policy: SchedulingPolicy
    by_share: Mapping[str, Iterable[Any]]  #: share -> its RUNNABLE slots, in submission order
    in_use: Mapping[str, float] = field(default_factory=dict)  #: share -> vCPUs running now
    usage: Mapping[str, float] = field(default_factory=dict)  #: share -> decayed vCPU-seconds
    capacity: float = 0.0  #: the max vCPUs of the queue's enabled environments


class _Shared(Protocol):
    @property
    def share(self) -> str | None: ...

    @property
    def vcpus(self) -> float: ...


class FairOrder:
    """The RUNNABLE slots of a fair-share queue, least-loaded share first; :meth:`charge` each placement."""

    def __init__(self, view: FairView) -> None:
        self.view = view
        policy = view.policy
        window = policy.decay_s
        self._load: dict[str, float] = {}
        self._weight: dict[str, float] = {}
        self._iters: dict[str, Iterator[Any]] = {}
        self._heap: list[tuple[float, str]] = []
        for share, slots in view.by_share.items():
            w = self._weight[share] = policy.weight(share)
            history = view.usage.get(share, 0.0) / window if window > 0 else 0.0
            load = self._load[share] = w * (view.in_use.get(share, 0.0) + history)
            self._iters[share] = iter(slots)
            heapq.heappush(self._heap, (load, share))
        self.in_use = sum(view.in_use.values())
        self.active = {s for s, v in view.in_use.items() if v > 0}

    def __iter__(self) -> Iterator[Any]:
        heap = self._heap
        while heap:
            load, share = heapq.heappop(heap)
            if load != self._load[share]:
                continue  # a stale entry: charged since
            slot = next(self._iters[share], None)
            if slot is None:
                continue
            heapq.heappush(heap, (load, share))
            yield slot

    def allows(self, slot: _Shared) -> bool:
        """False when placing ``slot`` would eat into the compute reservation kept for new shares."""
        percent = self.view.policy.reservation
        if not percent or slot.share not in self.active:
            return True  # a share that has not run yet may use the reserved part
        kept = (percent / 100) ** len(self.active) * self.view.capacity
        return self.in_use + slot.vcpus <= self.view.capacity - kept + 1e-9

    def charge(self, slot: _Shared) -> None:
        """``slot`` was placed: its share's load grows by what it now runs."""
        share = slot.share or ""
        self.in_use += slot.vcpus
        self.active.add(share)
        load = self._load[share] = self._load[share] + self._weight[share] * slot.vcpus
        heapq.heappush(self._heap, (load, share))
