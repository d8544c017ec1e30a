"""Job queues, compute environments, and the capacity scheduler (AWS Batch's, in one process).

The scheduler is a pure function, :func:`decide`, over a snapshot: the enabled queues (each
with its RUNNABLE jobs in submission order) and the environments' free capacity. It returns
which job goes to which environment and which environment is held back for a job that has
waited too long. No I/O and no clock of its own (``now`` is an argument), so tests drive it
directly and a restart, rebuilding the same snapshot from the store, reaches the same
decisions.

Policy, in order:

1. Queues by ``priority`` (higher first, then name); within a queue, submission order.
2. A job is placed in the first of its queue's environments (tried in order, spill-over)
   whose free vCPUs and memory both fit it.
3. Backfilling: a job that does not fit does not block the smaller ones behind it...
4. ...unless it has been RUNNABLE for ``reserve_after_s``: then it *reserves* the first
   environment of its queue that could ever hold it, and no later job (of this or a lower
   priority queue) is placed there until it is. Capacity drains towards it, so it cannot
   starve (Slurm's backfill reservation, without run-time estimates we do not have).

Speed: with 10,000 RUNNABLE jobs the usual case is "everything full", which stops at the
first job that does not fit once no environment can hold even the queue's smallest job
(each :class:`QueueView` carries that minimum). A scan never looks at more than
``max_scan`` jobs per queue, which bounds the worst case (Slurm's ``bf_max_job_test``).
``bench/batch_scheduler.py`` measures both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ENABLED, DISABLED = "ENABLED", "DISABLED"
DEFAULT_QUEUE, DEFAULT_ENVIRONMENT = "default", "local"
#: AWS allows up to 3 compute environments per queue
MAX_QUEUE_ENVIRONMENTS = 3
#: a head job RUNNABLE this long reserves capacity (see the module docstring)
DEFAULT_RESERVE_AFTER_S = 60.0
#: jobs looked at per queue and decision at most
DEFAULT_MAX_SCAN = 1_000
_EPS = 1e-9


@dataclass(slots=True)
class Environment:
    """A compute environment: a Docker endpoint or a Slurm cluster, its capacity, what is in use."""

    name: str
    max_vcpus: float
    max_memory: int
    state: str = ENABLED
    endpoint: str = "local"
    used_vcpus: float = 0.0
    used_memory: int = 0
    type: str = "docker"  #: ``docker`` or ``slurm``
    config: dict[str, Any] = field(default_factory=dict)  #: the type's own settings (``slurm:``)

    @property
    def free_vcpus(self) -> float:
        return self.max_vcpus - self.used_vcpus

    @property
    def free_memory(self) -> int:
        return self.max_memory - self.used_memory

    def take(self, vcpus: float, memory: int) -> None:
        self.used_vcpus += vcpus
        self.used_memory += memory

    def give(self, vcpus: float, memory: int) -> None:
        self.used_vcpus = max(0.0, self.used_vcpus - vcpus)
        self.used_memory = max(0, self.used_memory - memory)

    def public(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.type,
            "endpoint": self.endpoint,
            "max_vcpus": self.max_vcpus,
            "max_memory": self.max_memory,
            "state": self.state,
            "used_vcpus": round(self.used_vcpus, 6),
            "used_memory": self.used_memory,
            **({self.type: dict(self.config)} if self.config else {}),
        }


@dataclass(slots=True)
class Queue:
    """A job queue: priority (higher first), up to 3 environments in order, state."""

    name: str
    priority: int
    environments: tuple[str, ...]
    state: str = ENABLED

    def public(self) -> dict[str, object]:
        return {
            "name": self.name,
            "priority": self.priority,
            "environments": list(self.environments),
            "state": self.state,
        }


@dataclass(frozen=True, slots=True)
class Slot:
    """What the scheduler needs of a RUNNABLE job."""

    job_id: str
    seq: int  #: submission order
    vcpus: float
    memory: int
    runnable_since: float


@dataclass(slots=True)
class QueueView:
    """One queue in a snapshot; ``runnable`` iterates in submission order and is only read."""

    queue: Queue
    runnable: Iterable[Slot]
    min_vcpus: float = 0.0  #: the smallest request among ``runnable`` (0 if unknown)
    min_memory: int = 0


@dataclass(slots=True)
class Decision:
    placements: list[tuple[str, str]] = field(default_factory=list)  #: (job id, environment)
    reservations: dict[str, str] = field(default_factory=dict)  #: environment -> job id
    examined: int = 0


def decide(
    views: Iterable[QueueView],
    environments: Mapping[str, Environment],
    now: float,
    *,
    reserve_after_s: float = DEFAULT_RESERVE_AFTER_S,
    max_scan: int = DEFAULT_MAX_SCAN,
) -> Decision:
    """Which RUNNABLE jobs to start now, and where; see the module docstring for the policy."""
    free = {
        name: [env.free_vcpus, env.free_memory] for name, env in environments.items() if env.state == ENABLED
    }
    out = Decision()
    reserved = out.reservations
    ordered = sorted(views, key=lambda v: (-v.queue.priority, v.queue.name))
    for view in ordered:
        if view.queue.state != ENABLED:
            continue
        names = [e for e in view.queue.environments if e in free]
        if not names:
            continue
        scanned = 0
        for slot in view.runnable:
            # the head is always looked at (it may reserve); then stop once nothing fits
            if scanned >= max_scan or (scanned and not _room_left(names, free, reserved, view)):
                break
            scanned += 1
            placed = _place(slot, names, free, reserved)
            if placed is not None:
                out.placements.append((slot.job_id, placed))
            elif now - slot.runnable_since >= reserve_after_s:
                _reserve(slot, names, environments, reserved)
        out.examined += scanned
    return out


def _room_left(
    names: list[str], free: dict[str, list[float]], reserved: dict[str, str], v: QueueView
) -> bool:
    """False when no environment of the queue can take even its smallest job (stop scanning)."""
    for name in names:
        if name in reserved:
            return True  # the reserving job itself may still come along; keep looking
        fv, fm = free[name]
        if fv + _EPS >= v.min_vcpus and fm >= v.min_memory and fv > _EPS and fm > 0:
            return True
    return False


def _place(
    slot: Slot, names: list[str], free: dict[str, list[float]], reserved: dict[str, str]
) -> str | None:
    for name in names:
        holder = reserved.get(name)
        if holder is not None and holder != slot.job_id:
            continue
        room = free[name]
        if slot.vcpus <= room[0] + _EPS and slot.memory <= room[1]:
            room[0] -= slot.vcpus
            room[1] -= slot.memory
            return name
    return None


def _reserve(
    slot: Slot, names: list[str], environments: Mapping[str, Environment], reserved: dict[str, str]
) -> None:
    if slot.job_id in reserved.values():
        return
    for name in names:
        env = environments[name]
        if name not in reserved and slot.vcpus <= env.max_vcpus + _EPS and slot.memory <= env.max_memory:
            reserved[name] = slot.job_id
            return


def explain(
    slot: Slot, queue: Queue, environments: Mapping[str, Environment], reservations: Mapping[str, str]
) -> str:
    """Why a RUNNABLE job is still waiting, for its ``statusReason``."""
    if queue.state != ENABLED:
        return f"waiting: queue {queue.name} is DISABLED"
    parts = []
    for name in queue.environments:
        env = environments.get(name)
        if env is None or env.state != ENABLED:
            parts.append(f"{name} is disabled")
            continue
        holder = reservations.get(name)
        if holder is not None and holder != slot.job_id:
            parts.append(f"{name} is reserved for {holder}, which has waited longest")
            continue
        if slot.vcpus > env.free_vcpus + _EPS:
            parts.append(f"{_num(env.free_vcpus)} free in {name}")
        elif slot.memory > env.free_memory:
            parts.append(f"{size_text(env.free_memory)} memory free in {name}")
        else:
            parts.append(f"{name} has room; starting at the next decision")
    need = f"waiting for {_num(slot.vcpus)} vCPU{'s' if slot.vcpus != 1 else ''}, {size_text(slot.memory)}"
    return f"{need}; {'; '.join(parts) or 'no environment'}"


def _num(value: float) -> str:
    return f"{value:g}" if value >= 0 else "0"


def size_text(n: int) -> str:
    """Bytes as a human reads them: ``512 MiB``, ``1.5 GiB``."""
    value = float(max(n, 0))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.4g} {unit}"
        value /= 1024
    return f"{value:.4g} GiB"


class RunnableIndex:
    """RUNNABLE jobs per queue in submission order, with each queue's smallest request.

    Kept in memory by the BatchService and changed on every transition, so a decision never
    re-reads or re-sorts 10,000 jobs: insertion in submission order is the common case (a
    retried job coming back early in the order marks the queue for one re-sort).
    """

    def __init__(self) -> None:
        self._jobs: dict[str, dict[str, Slot]] = {}
        self._shapes: dict[str, Counter[tuple[float, int]]] = {}
        self._last_seq: dict[str, int] = {}
        self._unsorted: set[str] = set()

    def __len__(self) -> int:
        return sum(len(d) for d in self._jobs.values())

    def add(self, queue: str, slot: Slot) -> None:
        jobs = self._jobs.setdefault(queue, {})
        jobs[slot.job_id] = slot
        self._shapes.setdefault(queue, Counter())[(slot.vcpus, slot.memory)] += 1
        if slot.seq < self._last_seq.get(queue, -1):
            self._unsorted.add(queue)
        self._last_seq[queue] = max(slot.seq, self._last_seq.get(queue, -1))

    def remove(self, queue: str, job_id: str) -> Slot | None:
        slot = self._jobs.get(queue, {}).pop(job_id, None)
        if slot is not None:
            shapes = self._shapes[queue]
            key = (slot.vcpus, slot.memory)
            shapes[key] -= 1
            if shapes[key] <= 0:
                del shapes[key]
        return slot

    def get(self, queue: str, job_id: str) -> Slot | None:
        return self._jobs.get(queue, {}).get(job_id)

    def view(self, queue: Queue) -> QueueView:
        name = queue.name
        if name in self._unsorted:
            ordered = sorted(self._jobs[name].values(), key=lambda s: s.seq)
            self._jobs[name] = {s.job_id: s for s in ordered}
            self._unsorted.discard(name)
        jobs = self._jobs.get(name, {})
        shapes = self._shapes.get(name)
        min_v = min((v for v, _ in shapes), default=0.0) if shapes else 0.0
        min_m = min((m for _, m in shapes), default=0) if shapes else 0
        return QueueView(queue, jobs.values(), min_v, min_m)
