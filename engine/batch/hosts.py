"""The Docker hosts of one compute environment, and which of them should be in service.

An environment may list several Docker daemons (``hosts:``) instead of one ``endpoint``. Unlike
AWS Batch, which launches instances, Sluice brings pre-existing daemons in and out of service:

- the hosts *in service* are the fewest, in list order, whose vCPUs cover the environment's
  desired vCPUs (never below its min); only they take new jobs, and a job fits on ONE host;
- scale out: the next host is health-checked (``/_ping`` and ``/version``) before it takes
  jobs (JOINING, then IN_SERVICE); one that fails is UNHEALTHY with the reason, skipped, and
  checked again after :data:`RECHECK_S` if it is still needed;
- scale in: a host no longer needed is DRAINING (it takes no new job, its jobs run to their
  end) and leaves service (OUT) once it has had no job for the cooldown; demand that comes
  back first returns it to service without a new check.

:func:`plan` is pure (``now`` is an argument); the scaler (engine/batch/scaling.py) applies it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

IN_SERVICE, JOINING, DRAINING, OUT, UNHEALTHY = "IN_SERVICE", "JOINING", "DRAINING", "OUT", "UNHEALTHY"
HOST_STATES = (IN_SERVICE, JOINING, DRAINING, OUT, UNHEALTHY)
#: a host that failed its health check is checked again after this long, if still needed
RECHECK_S = 30.0
#: a draining host leaves service after this long without a job (AWS scales in minutes later)
DEFAULT_COOLDOWN_S = 60.0
_EPS = 1e-9


@dataclass(slots=True)
class Host:
    """One Docker daemon of an environment: its size, its state, what runs there."""

    name: str
    endpoint: str
    vcpus: float
    memory: int
    config: dict[str, Any] = field(default_factory=dict)  #: its TLS or SSH settings
    state: str = OUT
    reason: str | None = None  #: why it is in this state (a failed check's error)
    since: float = 0.0  #: when it entered this state
    idle_since: float | None = None  #: a draining host: when its last job ended
    used_vcpus: float = 0.0
    used_memory: int = 0

    @property
    def takes_jobs(self) -> bool:
        return self.state == IN_SERVICE

    @property
    def serving(self) -> bool:
        """Counted as in service: it runs or may run jobs (IN_SERVICE or DRAINING)."""
        return self.state in (IN_SERVICE, DRAINING)

    def take(self, vcpus: float, memory: int) -> None:
        self.used_vcpus += vcpus
        self.used_memory += memory
        self.idle_since = None

    def give(self, vcpus: float, memory: int, now: float) -> None:
        self.used_vcpus = max(0.0, self.used_vcpus - vcpus)
        self.used_memory = max(0, self.used_memory - memory)
        if self.used_vcpus <= _EPS:
            self.idle_since = now

    def spec(self) -> dict[str, Any]:
        """What the environment's ``config.hosts`` keeps of it (its definition, not its state)."""
        return {"name": self.name, "endpoint": self.endpoint, "vcpus": self.vcpus, "memory": self.memory,
                **self.config}  # fmt: skip

    def state_json(self) -> dict[str, Any]:
        """What survives a restart (``compute_environments.capacity``)."""
        out: dict[str, Any] = {"state": self.state, "since": self.since}
        if self.reason:
            out["reason"] = self.reason
        return out

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "vcpus": self.vcpus,
            "memory": self.memory,
            "state": self.state,
            "reason": self.reason,
            "since": self.since,
            "used_vcpus": round(self.used_vcpus, 6),
            "used_memory": self.used_memory,
        }


def from_config(config: Mapping[str, Any], stored: Mapping[str, Any]) -> list[Host]:
    """The hosts an environment's stored ``config`` lists, in the states ``stored`` kept."""
    hosts = []
    for spec in config.get("hosts") or ():
        extra = {k: v for k, v in spec.items() if k not in ("name", "endpoint", "vcpus", "memory")}
        hosts.append(Host(spec["name"], spec["endpoint"], float(spec["vcpus"]), int(spec["memory"]), extra))
    restore(hosts, stored)
    return hosts


def carry(old: Sequence[Host], new: Sequence[Host]) -> None:
    """An environment rewritten (an update): each host keeps its state and what runs there,
    unless its definition changed (another daemon, other files): that one is checked anew."""
    known = {h.name: h for h in old}
    for host in new:
        was = known.get(host.name)
        if was is not None and was.spec() == host.spec():
            host.state, host.reason, host.since = was.state, was.reason, was.since
            host.idle_since = was.idle_since
            host.used_vcpus, host.used_memory = was.used_vcpus, was.used_memory


def restore(hosts: Sequence[Host], stored: Mapping[str, Any]) -> None:
    """States kept before a restart; a check that was under way is started again (OUT)."""
    for host in hosts:
        saved = stored.get(host.name)
        if not isinstance(saved, Mapping) or saved.get("state") not in HOST_STATES:
            continue
        host.state = OUT if saved["state"] == JOINING else str(saved["state"])
        host.since, host.reason = float(saved.get("since") or 0.0), saved.get("reason")


@dataclass(slots=True)
class Plan:
    """What to change now: hosts to check (then bring in), to return, to drain, to take out."""

    check: list[str] = field(default_factory=list)
    resume: list[str] = field(default_factory=list)  #: DRAINING -> IN_SERVICE, no check needed
    drain: list[str] = field(default_factory=list)
    leave: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.check or self.resume or self.drain or self.leave)


def plan(hosts: Sequence[Host], desired: float, now: float, cooldown_s: float) -> Plan:
    """Follow ``desired`` vCPUs with the fewest hosts in list order (see the module docstring).

    A host under check counts as coming, so one rise in demand starts one check at a time per
    missing host; an unhealthy one is passed over until :data:`RECHECK_S` has gone by. A host
    in service that the wanted ones would make unneeded stays until those serve: an unhealthy
    host due its recheck may still be down, and its replacement must not drain meanwhile."""
    out = Plan()
    covered = ready = 0.0
    wanted: set[str] = set()
    for host in hosts:
        if covered + _EPS >= desired:
            break
        if host.state == UNHEALTHY and now - host.since < RECHECK_S:
            continue
        wanted.add(host.name)
        covered += host.vcpus
        if host.serving:
            ready += host.vcpus
    keep = ready + _EPS < desired  # the hosts to come are not proven yet: no serving one goes
    for host in hosts:
        if host.name in wanted:
            if host.state in (OUT, UNHEALTHY):
                out.check.append(host.name)
            elif host.state == DRAINING:
                out.resume.append(host.name)
        elif keep:
            continue
        elif host.state == IN_SERVICE:
            out.drain.append(host.name)
        elif host.state == DRAINING and host.used_vcpus <= _EPS:
            idle = host.idle_since if host.idle_since is not None else host.since
            if now - idle >= cooldown_s:
                out.leave.append(host.name)
    return out


def place(rooms: dict[str, list[float]], vcpus: float, memory: int) -> str | None:
    """The first host (in list order: ``rooms`` keeps it) whose room fits the job; its room is taken.

    First fit packs the first hosts, so the last ones empty first and can leave service."""
    for name, room in rooms.items():
        if vcpus <= room[0] + _EPS and memory <= room[1]:
            room[0] -= vcpus
            room[1] -= memory
            return name
    return None


def rooms(hosts: Sequence[Host]) -> dict[str, list[float]]:
    """Free vCPUs and memory of each host that takes jobs (the scheduler's per-host snapshot)."""
    return {h.name: [h.vcpus - h.used_vcpus, h.memory - h.used_memory] for h in hosts if h.takes_jobs}
