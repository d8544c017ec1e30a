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
   whose free vCPUs and memory both fit it; in one with several hosts, on one host in service
   (the first in list order with the room: the snapshot carries each host's room).
3. Backfilling: a job that does not fit does not block the smaller ones behind it...
4. ...unless it has been RUNNABLE for ``reserve_after_s``: then it *reserves* the first
   environment of its queue that could ever hold it, and no later job (of this or a lower
   priority queue) is placed there until it is. Capacity drains towards it, so it cannot
   starve (Slurm's backfill reservation, without run-time estimates we do not have).
5. Preemption (a queue's opt-in, :func:`preempt`): a preempting queue whose head job fits
   nowhere names RUNNING jobs of lower-priority queues to stop (lowest priority first, then
   the most recently started) and reserves the environment they leave.

Speed: with 10,000 RUNNABLE jobs the usual case is "everything full", which stops at the
first job that does not fit once no environment can hold even the queue's smallest job
(each :class:`QueueView` carries that minimum). A scan never looks at more than
``max_scan`` jobs per queue, which bounds the worst case (Slurm's ``bf_max_job_test``).
``bench/batch_scheduler.py`` measures both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.batch import hosts as hosting
from engine.batch.fairshare import FairOrder, FairView
from engine.batch.hosts import Host

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
    #: its capacity can be taken back at any time (Spot-like); see engine/batch/reclaim.py
    interruptible: bool = False
    reclaimed_at: float | None = None  #: when it was last reclaimed (it is DISABLED since)
    min_vcpus: float = 0.0
    desired_vcpus: float = (
        0.0  #: what the RUNNABLE demand asks for, between min and max (the service sets it)
    )
    #: several Docker daemons instead of one endpoint (engine/batch/hosts.py); a job fits on one
    hosts: list[Host] = field(default_factory=list)
    scale_in_cooldown_s: float | None = None  #: a draining host leaves after this idle (None: default)

    @property
    def free_vcpus(self) -> float:
        free = self.max_vcpus - self.used_vcpus
        if self.hosts:
            free = min(free, sum(h.vcpus - h.used_vcpus for h in self.hosts if h.takes_jobs))
        return free

    @property
    def free_memory(self) -> int:
        free = self.max_memory - self.used_memory
        if self.hosts:
            free = min(free, sum(h.memory - h.used_memory for h in self.hosts if h.takes_jobs))
        return free

    def holds(self, vcpus: float, memory: int) -> bool:
        """Could it ever run a job this size (on one of its hosts, within its max)?"""
        if vcpus > self.max_vcpus + _EPS or memory > self.max_memory:
            return False
        return not self.hosts or any(vcpus <= h.vcpus + _EPS and memory <= h.memory for h in self.hosts)

    def host(self, name: str | None) -> Host | None:
        return next((h for h in self.hosts if h.name == name), None)

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
            "min_vcpus": self.min_vcpus,
            "desired_vcpus": round(self.desired_vcpus, 6),
            "interruptible": self.interruptible,
            "reclaimed_at": self.reclaimed_at,
            **({"hosts": [h.public() for h in self.hosts]} if self.hosts else {}),
            **(
                {"scale_in_cooldown_s": self.scale_in_cooldown_s}
                if self.scale_in_cooldown_s is not None
                else {}
            ),
            **({self.type: own} if (own := {k: v for k, v in self.config.items() if k != "hosts"}) else {}),
        }

    def capacity(self) -> dict[str, Any]:
        """What the store keeps beyond the original columns (``compute_environments.capacity``)."""
        out: dict[str, Any] = {"interruptible": self.interruptible, "min_vcpus": self.min_vcpus}
        if self.reclaimed_at is not None:
            out["reclaimed_at"] = self.reclaimed_at
        if self.hosts:
            out["hosts"] = {h.name: h.state_json() for h in self.hosts}
        if self.scale_in_cooldown_s is not None:
            out["scale_in_cooldown_s"] = self.scale_in_cooldown_s
        return out


@dataclass(frozen=True, slots=True)
class Preemption:
    """A queue's opt-in: its head job may take capacity from lower-priority queues' RUNNING jobs."""

    enabled: bool = False
    grace_s: float = 10.0  #: SIGTERM, then this long, then SIGKILL

    def to_json(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "grace_s": self.grace_s}


NO_PREEMPTION = Preemption()


@dataclass(slots=True)
class Queue:
    """A job queue: priority (higher first), up to 3 environments in order, state."""

    name: str
    priority: int
    environments: tuple[str, ...]
    state: str = ENABLED
    preemption: Preemption = NO_PREEMPTION
    policy: str | None = None  #: a fair-share scheduling policy's name (FIFO without one)

    def public(self) -> dict[str, object]:
        return {
            "name": self.name,
            "priority": self.priority,
            "environments": list(self.environments),
            "state": self.state,
            "preemption": self.preemption.to_json(),
            "scheduling_policy": self.policy,
        }

    def config(self) -> dict[str, Any]:
        """What the store keeps beyond the original columns (``job_queues.config``)."""
        out: dict[str, Any] = {}
        if self.preemption.enabled:
            out["preemption"] = self.preemption.to_json()
        if self.policy is not None:
            out["scheduling_policy"] = self.policy
        return out


@dataclass(frozen=True, slots=True)
class Slot:
    """What the scheduler needs of a RUNNABLE job."""

    job_id: str
    seq: int  #: submission order
    vcpus: float
    memory: int
    runnable_since: float
    share: str | None = None  #: its ``shareIdentifier`` (fair-share queues order by it)
    priority: int = 0  #: ``schedulingPriority``: higher first within its share (fair-share queues)


@dataclass(frozen=True, slots=True)
class Running:
    """What preemption needs of a RUNNING job that may be preempted (``preemptible``)."""

    job_id: str
    environment: str
    priority: int  #: its queue's priority
    started_at: float  #: when this attempt was placed
    vcpus: float
    memory: int
    host: str | None = None  #: its host, in an environment with several


@dataclass(slots=True)
class QueueView:
    """One queue in a snapshot; ``runnable`` iterates in submission order and is only read."""

    queue: Queue
    runnable: Iterable[Slot]
    min_vcpus: float = 0.0  #: the smallest request among ``runnable`` (0 if unknown)
    min_memory: int = 0
    fair: FairView | None = None  #: set for a queue with a scheduling policy: share order, not FIFO


@dataclass(slots=True)
class Decision:
    placements: list[tuple[str, str]] = field(default_factory=list)  #: (job id, environment)
    hosts: dict[str, str] = field(default_factory=dict)  #: job id -> host, in environments with hosts
    reservations: dict[str, str] = field(default_factory=dict)  #: environment -> job id
    preemptions: list[tuple[str, str]] = field(default_factory=list)  #: (victim, preemptor)
    examined: int = 0


def decide(
    views: Iterable[QueueView],
    environments: Mapping[str, Environment],
    now: float,
    *,
    reserve_after_s: float = DEFAULT_RESERVE_AFTER_S,
    max_scan: int = DEFAULT_MAX_SCAN,
    running: Sequence[Running] = (),
    preempting: Mapping[str, str] | None = None,
) -> Decision:
    """Which RUNNABLE jobs to start now, and where; see the module docstring for the policy.

    ``running`` lists the preemptible RUNNING jobs and ``preempting`` the ones already being
    preempted (victim -> preemptor); both matter only to queues with preemption enabled."""
    free = {
        name: [env.free_vcpus, env.free_memory] for name, env in environments.items() if env.state == ENABLED
    }
    rooms = {
        name: hosting.rooms(env.hosts) for name, env in environments.items() if env.hosts and name in free
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
        head: Slot | None = None
        fair = FairOrder(view.fair) if view.fair is not None else None
        for slot in view.runnable if fair is None else fair:
            # the head is always looked at (it may reserve); then stop once nothing fits
            if scanned >= max_scan or (scanned and not _room_left(names, free, reserved, view, rooms)):
                break
            scanned += 1
            if fair is not None and not fair.allows(slot):
                continue
            placed = _place(slot, names, free, reserved, rooms, out.hosts)
            if placed is not None:
                out.placements.append((slot.job_id, placed))
                if fair is not None:
                    fair.charge(slot)
            else:
                if scanned == 1:
                    head = slot
                if now - slot.runnable_since >= reserve_after_s:
                    _reserve(slot, names, environments, reserved)
        out.examined += scanned
        if head is not None and view.queue.preemption.enabled:
            preempt(
                head, view.queue, names, free, reserved, running, preempting or {}, out.preemptions, rooms
            )
    return out


def preempt(
    head: Slot,
    queue: Queue,
    names: list[str],
    free: dict[str, list[float]],
    reserved: dict[str, str],
    running: Sequence[Running],
    preempting: Mapping[str, str],
    out: list[tuple[str, str]],
    rooms: Mapping[str, dict[str, list[float]]] | None = None,
) -> None:
    """Make room for a preempting queue's head job, which did not fit anywhere.

    Victims are RUNNING, preemptible jobs of queues of *lower* priority in one of the queue's
    environments: the lowest priority first, then the most recently started (the least work
    lost), until the head fits; any taken then found unneeded is spared. Capacity already
    being freed for this head (victims still in their grace period, also after a restart)
    counts first, so a job is never preempted twice for the same need. The environment is
    reserved for the head, so the freed capacity is not backfilled by anyone else. In an
    environment with several hosts (``rooms``: the free room of each host in service) the head
    must fit on one, so each host is a candidate of its own, with the victims running there.
    """
    rooms = rooms or {}
    pending: dict[tuple[str, str | None], list[float]] = {}
    for r in running:
        if preempting.get(r.job_id) == head.job_id:
            room = pending.setdefault((r.environment, r.host if r.environment in rooms else None), [0.0, 0])
            room[0] += r.vcpus
            room[1] += r.memory
    units = [(n, h) for n in names for h in (list(rooms[n]) if n in rooms else [None])]
    for name, host in sorted(units, key=lambda u: u not in pending):
        if reserved.get(name, head.job_id) != head.job_id:
            continue
        fv, fm = free[name] if host is None else rooms[name][host]
        pv, pm = pending.get((name, host), (0.0, 0))
        have = [fv + pv, fm + pm]
        if _fits(head, have):
            if (name, host) in pending:
                reserved[name] = head.job_id
                return
            continue  # fits without anyone leaving: an ordinary wait (a reservation elsewhere)
        victims = sorted(
            (
                r
                for r in running
                if r.environment == name
                and (host is None or r.host == host)
                and r.priority < queue.priority
                and r.job_id not in preempting
            ),
            key=lambda r: (r.priority, -r.started_at),
        )
        taken: list[Running] = []
        for r in victims:
            taken.append(r)
            have[0] += r.vcpus
            have[1] += r.memory
            if _fits(head, have):
                break
        if not _fits(head, have):
            continue
        for r in list(taken):  # spare those the later, bigger ones made unnecessary
            if _fits(head, [have[0] - r.vcpus, have[1] - r.memory]):
                taken.remove(r)
                have[0] -= r.vcpus
                have[1] -= r.memory
        out.extend((r.job_id, head.job_id) for r in taken)
        reserved[name] = head.job_id
        return


def _fits(slot: Slot, room: list[float]) -> bool:
    return slot.vcpus <= room[0] + _EPS and slot.memory <= room[1]


def _room_left(
    names: list[str],
    free: dict[str, list[float]],
    reserved: dict[str, str],
    v: QueueView,
    rooms: Mapping[str, dict[str, list[float]]],
) -> bool:
    """False when no environment of the queue can take even its smallest job (stop scanning);
    in one with several hosts, when no one host can (room in the sum alone places nothing)."""
    for name in names:
        if name in reserved:
            return True  # the reserving job itself may still come along; keep looking
        fv, fm = free[name]
        if (
            fv + _EPS >= v.min_vcpus
            and fm >= v.min_memory
            and fv > _EPS
            and fm > 0
            and _a_host_fits(name, v, rooms)
        ):
            return True
    return False


def _a_host_fits(name: str, v: QueueView, rooms: Mapping[str, dict[str, list[float]]]) -> bool:
    return name not in rooms or any(
        r[0] + _EPS >= v.min_vcpus and r[1] >= v.min_memory and r[0] > _EPS for r in rooms[name].values()
    )


def _place(
    slot: Slot,
    names: list[str],
    free: dict[str, list[float]],
    reserved: dict[str, str],
    rooms: Mapping[str, dict[str, list[float]]],
    placed_on: dict[str, str],
) -> str | None:
    for name in names:
        holder = reserved.get(name)
        if holder is not None and holder != slot.job_id:
            continue
        room = free[name]
        if slot.vcpus <= room[0] + _EPS and slot.memory <= room[1]:
            if name in rooms:  # the sum is not enough: one host must have the room
                host = hosting.place(rooms[name], slot.vcpus, slot.memory)
                if host is None:
                    continue
                placed_on[slot.job_id] = host
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
        if name not in reserved and env.holds(slot.vcpus, slot.memory):
            reserved[name] = slot.job_id
            return


def desired_vcpus(
    environments: Mapping[str, Environment], demand: Iterable[tuple[Queue, float]]
) -> dict[str, float]:
    """Each environment's desired vCPUs (Batch's ``desiredvCpus``), between its min and max.

    What runs there now, plus the RUNNABLE vCPUs of the enabled queues that list it: each
    queue's demand (in priority order) fills its enabled environments in the queue's order up to
    their max, the rest goes to the last one. A disabled environment wants only what it still runs.
    """
    want = {name: env.used_vcpus for name, env in environments.items()}
    for queue, vcpus in sorted(demand, key=lambda d: (-d[0].priority, d[0].name)):
        names = [e for e in queue.environments if e in want and environments[e].state == ENABLED]
        if queue.state != ENABLED or not names:
            continue
        for i, name in enumerate(names):
            if vcpus <= _EPS:
                break
            room = max(0.0, environments[name].max_vcpus - want[name])
            take = vcpus if i == len(names) - 1 else min(vcpus, room)
            want[name] += take
            vcpus -= take
    return {n: min(env.max_vcpus, max(env.min_vcpus, want[n])) for n, env in environments.items()}


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
            parts.append(f"{_num(env.free_vcpus)} free in {name}" + _coming(env))
        elif slot.memory > env.free_memory:
            parts.append(f"{size_text(env.free_memory)} memory free in {name}")
        elif env.hosts and hosting.place(hosting.rooms(env.hosts), slot.vcpus, slot.memory) is None:
            parts.append(f"no host of {name} in service has room for it alone")
        else:
            parts.append(f"{name} has room; starting at the next decision")
    need = f"waiting for {_num(slot.vcpus)} vCPU{'s' if slot.vcpus != 1 else ''}, {size_text(slot.memory)}"
    return f"{need}; {'; '.join(parts) or 'no environment'}"


def _coming(env: Environment) -> str:
    """What the hosts not taking jobs are doing about it (joining, or skipped as unhealthy)."""
    notes = [
        f"host {h.name} {h.state.lower()}"
        for h in env.hosts
        if h.state in (hosting.JOINING, hosting.UNHEALTHY)
    ]
    return f" ({'; '.join(notes)})" if notes else ""


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
        self._shares: dict[str, dict[str, dict[str, Slot]]] = {}  #: queue -> share -> its slots
        self._shapes: dict[str, Counter[tuple[float, int]]] = {}
        self._last_seq: dict[str, int] = {}
        self._unsorted: set[str] = set()
        self._share_last: dict[tuple[str, str], tuple[int, int]] = {}  #: (queue, share) -> last key
        self._share_unsorted: set[tuple[str, str]] = set()

    def __len__(self) -> int:
        return sum(len(d) for d in self._jobs.values())

    def add(self, queue: str, slot: Slot) -> None:
        jobs = self._jobs.setdefault(queue, {})
        jobs[slot.job_id] = slot
        if slot.share is not None:
            self._shares.setdefault(queue, {}).setdefault(slot.share, {})[slot.job_id] = slot
            key, order = (queue, slot.share), (-slot.priority, slot.seq)
            if order < self._share_last.get(key, order):
                self._share_unsorted.add(key)
            self._share_last[key] = max(order, self._share_last.get(key, order))
        self._shapes.setdefault(queue, Counter())[(slot.vcpus, slot.memory)] += 1
        if slot.seq < self._last_seq.get(queue, -1):
            self._unsorted.add(queue)
        self._last_seq[queue] = max(slot.seq, self._last_seq.get(queue, -1))

    def remove(self, queue: str, job_id: str) -> Slot | None:
        slot = self._jobs.get(queue, {}).pop(job_id, None)
        if slot is not None:
            if slot.share is not None:
                share = self._shares[queue][slot.share]
                share.pop(job_id, None)
                if not share:
                    del self._shares[queue][slot.share]
                    self._share_last.pop((queue, slot.share), None)
            shapes = self._shapes[queue]
            key = (slot.vcpus, slot.memory)
            shapes[key] -= 1
            if shapes[key] <= 0:
                del shapes[key]
        return slot

    def count(self, queue: str) -> int:
        return len(self._jobs.get(queue, ()))

    def demand(self, queue: str) -> float:
        """The vCPUs its RUNNABLE jobs ask for, together (from the shapes: no scan of the jobs)."""
        return sum(v * n for (v, _), n in self._shapes.get(queue, Counter()).items())

    def get(self, queue: str, job_id: str) -> Slot | None:
        return self._jobs.get(queue, {}).get(job_id)

    def view(self, queue: Queue) -> QueueView:
        name = queue.name
        if name in self._unsorted:
            ordered = sorted(self._jobs[name].values(), key=lambda s: s.seq)
            self._jobs[name] = {s.job_id: s for s in ordered}
            shares: dict[str, dict[str, Slot]] = {}
            for s in ordered:
                if s.share is not None:
                    shares.setdefault(s.share, {})[s.job_id] = s
            self._shares[name] = shares
            self._share_unsorted.update((name, share) for share in shares)
            self._unsorted.discard(name)
        jobs = self._jobs.get(name, {})
        shapes = self._shapes.get(name)
        min_v = min((v for v, _ in shapes), default=0.0) if shapes else 0.0
        min_m = min((m for _, m in shapes), default=0) if shapes else 0
        return QueueView(queue, jobs.values(), min_v, min_m)

    def shares(self, queue: str) -> dict[str, Iterable[Slot]]:
        """Each share's RUNNABLE slots: higher ``schedulingPriority`` first, then submission order."""
        shares = self._shares.get(queue, {})
        for key in [k for k in self._share_unsorted if k[0] == queue]:
            self._share_unsorted.discard(key)
            slots = shares.get(key[1])
            if slots is not None:
                ordered = sorted(slots.values(), key=lambda s: (-s.priority, s.seq))
                shares[key[1]] = {s.job_id: s for s in ordered}
        return {share: slots.values() for share, slots in shares.items()}
