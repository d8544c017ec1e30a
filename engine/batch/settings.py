"""The scheduling settings of queues and environments, checked when they are written.

A queue's ``preemption`` and ``scheduling_policy``; an environment's ``interruptible``,
``min_vcpus`` and ``scale_in_cooldown``. A change names only what changes; what it leaves out
stays as it was. Nothing here does I/O: the submitter writes what these return.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.batch.jobs import JobError
from engine.batch.queues import ENABLED, NO_PREEMPTION, Environment, Preemption, Queue
from workflows.units import UnitError, parse_duration

MAX_GRACE_S = 3600.0


def preemption(body: Mapping[str, Any], old: Queue | None) -> Preemption:
    """``preemption: {enabled: true, grace: 10s}`` (or ``grace_s: 10``); ``false`` turns it off."""
    raw = body.get("preemption", None)
    if raw is None:
        return old.preemption if old is not None else NO_PREEMPTION
    if isinstance(raw, bool):
        raw = {"enabled": raw}
    if not isinstance(raw, Mapping):
        raise JobError(f"preemption: an object {{enabled: true, grace: 10s}}, got {raw!r}")
    unknown = sorted(set(raw) - {"enabled", "grace", "grace_s"})
    if unknown:
        raise JobError(f"preemption: unknown field(s) {', '.join(unknown)}; known: enabled, grace")
    base = old.preemption if old is not None else NO_PREEMPTION
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise JobError(f"preemption.enabled: true or false, got {enabled!r}")
    grace = raw.get("grace", raw.get("grace_s", base.grace_s))
    if isinstance(grace, str):
        try:
            grace = parse_duration(grace)
        except UnitError as exc:
            raise JobError(f"preemption.grace: {exc}") from None
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace <= MAX_GRACE_S:
        raise JobError(f"preemption.grace: seconds from 0 to {MAX_GRACE_S:g} (or 10s, 2m), got {grace!r}")
    return Preemption(enabled, float(grace))


def policy_name(body: Mapping[str, Any], old: Queue | None, known: Mapping[str, Any]) -> str | None:
    """``scheduling_policy``: a registered fair-share policy's name, or null for FIFO."""
    if "scheduling_policy" not in body:
        return old.policy if old is not None else None
    name = body["scheduling_policy"]
    if name is None or name == "":
        return None
    if not isinstance(name, str) or name not in known:
        listed = ", ".join(sorted(known)) or "none yet"
        raise JobError(
            f"scheduling_policy: no scheduling policy {name!r} (known: {listed}); create it first",
            "not_found",
            404,
        )
    return name


def environment_capacity(body: Mapping[str, Any], old: Environment | None, env: Environment) -> None:
    """Fill ``env`` (being written) with ``interruptible``, ``min_vcpus`` and the reclaim state."""
    interruptible = body.get("interruptible", old.interruptible if old is not None else False)
    if not isinstance(interruptible, bool):
        raise JobError(f"interruptible: true or false, got {interruptible!r}")
    if old is not None and old.interruptible != interruptible and old.used_vcpus > 0:
        raise JobError(f"interruptible: environment {old.name} runs jobs; change it once they have ended")
    low = body.get("min_vcpus", old.min_vcpus if old is not None else 0.0)
    if isinstance(low, bool) or not isinstance(low, int | float) or not 0 <= low <= env.max_vcpus:
        raise JobError(f"min_vcpus: a number from 0 to max_vcpus ({env.max_vcpus:g}), got {low!r}")
    env.interruptible, env.min_vcpus = interruptible, float(low)
    env.scale_in_cooldown_s = _cooldown(body, old)
    # what the scheduler will say at its next decision; until then, the old figure within bounds
    env.desired_vcpus = min(env.max_vcpus, max(env.min_vcpus, old.desired_vcpus if old is not None else 0.0))
    # a reclaimed environment stays reclaimed (DISABLED) until someone enables it again
    if old is not None and old.reclaimed_at is not None and env.state != ENABLED:
        env.reclaimed_at = old.reclaimed_at


def _cooldown(body: Mapping[str, Any], old: Environment | None) -> float | None:
    """``scale_in_cooldown: 5m`` (or seconds): how long a draining host waits idle before it leaves."""
    if "scale_in_cooldown" not in body:
        return old.scale_in_cooldown_s if old is not None else None
    raw = body["scale_in_cooldown"]
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            raw = parse_duration(raw)
        except UnitError as exc:
            raise JobError(f"scale_in_cooldown: {exc}") from None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw <= MAX_GRACE_S:
        raise JobError(f"scale_in_cooldown: seconds from 0 to {MAX_GRACE_S:g} (or 30s, 5m), got {raw!r}")
    return float(raw)


def check_share(queue: Queue, share: str | None) -> None:
    """A fair-share queue needs each job's ``share_identifier``; a FIFO queue takes none (as AWS)."""
    if queue.policy is not None and share is None:
        raise JobError(
            f"share_identifier: queue {queue.name} has the fair-share scheduling policy {queue.policy}; "
            "give each job a share_identifier (AWS: shareIdentifier)"
        )
    if queue.policy is None and share is not None:
        raise JobError(
            f"share_identifier: queue {queue.name} is FIFO (no scheduling policy); "
            "leave share_identifier out, or submit to a fair-share queue"
        )
