"""Managed scaling: environments with several Docker hosts follow their desired vCPUs.

After each decision the service calls :meth:`Scaler.follow`, which applies the pure
:func:`~engine.batch.hosts.plan` to every environment that lists hosts: a host to bring in is
health-checked first (``/_ping``, then ``/version``, in a task of its own, so a slow daemon
never holds the scheduler up); draining, resuming and leaving happen at once. Every change is
committed with one ``aws.batch`` / :data:`SCALING_DETAIL_TYPE` event per host that changed, in
the same transaction as the environment's new state (``compute_environments.capacity``), so a
restart comes back with the same hosts in service and a rule on the bus sees every step.

A host in service is also watched while nothing starts there: every :data:`HEALTH_EVERY_S` the
same check runs on it (in its own task as well), so a daemon that went away while the host was
idle is taken out (UNHEALTHY) and replaced before a job is placed there, as AWS Batch replaces an
unhealthy instance; a job starting on a host checks it already, so that host is not watched then.

A host that passes its check to come into service (a new one, or one that was unhealthy and came
back) is first cleared of this engine's leftover containers (:mod:`engine.batch.leftovers`):
attempts that ended while it could not be reached leave theirs behind.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Coroutine
from typing import Any

from engine.batch import config_rows
from engine.batch import hosts as hosting
from engine.batch.attempts import Attempts
from engine.batch.book import Book
from engine.batch.detail import names
from engine.batch.hosts import DRAINING, IN_SERVICE, JOINING, OUT, UNHEALTHY, Host
from engine.batch.jobs import STARTING
from engine.batch.leftovers import Leftovers
from engine.batch.queues import Environment
from engine.bus.bus import Bus
from engine.events import JOB_SOURCE, envelope
from engine.executors.docker_api import DockerError
from engine.store.records import RunRecord
from engine.store.store import Store

log = logging.getLogger(__name__)

#: the detail-type of a host's change of state (docs/batch.md); AWS Batch has no such event
SCALING_DETAIL_TYPE = "Batch Compute Environment Scaling"
#: a health check that takes longer has failed
CHECK_TIMEOUT_S = 5.0
#: a host in service (or draining) with no job starting is health-checked this often
HEALTH_EVERY_S = 15.0
#: clearing a host's leftover containers before it takes jobs gives up after this long
SWEEP_TIMEOUT_S = 30.0


def scaling_event(env: Environment, host: Host, previous: str, now: float) -> dict[str, Any]:
    """One host's change of state, with the environment's min, desired and max vCPUs."""
    arn = names().environment(env.name)
    detail = {
        "computeEnvironmentName": env.name,
        "computeEnvironmentArn": arn,
        "host": host.name,
        "endpoint": host.endpoint,
        "state": host.state,
        "previousState": previous,
        "reason": host.reason,
        "minvCpus": env.min_vcpus,
        "desiredvCpus": round(env.desired_vcpus, 6),
        "maxvCpus": env.max_vcpus,
        "inServicevCpus": sum(h.vcpus for h in env.hosts if h.serving),
    }
    event = envelope(JOB_SOURCE, SCALING_DETAIL_TYPE, detail, resources=[arn], at=now)
    event["account"], event["region"] = names().account, names().region
    return event


class Scaler:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        book: Book,
        attempts: Attempts,
        wake: Callable[[], None],
        *,
        cooldown_s: float = hosting.DEFAULT_COOLDOWN_S,
    ) -> None:
        self.store, self.bus, self.book, self.attempts, self.wake = store, bus, book, attempts, wake
        self.cooldown_s = cooldown_s  #: a draining host leaves after this long without a job
        self.check_timeout_s = CHECK_TIMEOUT_S
        self.leftovers = Leftovers(store, book, attempts)
        self._checks: dict[tuple[str, str], asyncio.Task[None]] = {}  #: (environment, host) -> check
        self._watches: dict[tuple[str, str], asyncio.Task[None]] = {}  #: the same, hosts in service
        self._watched: dict[tuple[str, str], float] = {}  #: when each host's last watch started
        self._writes: set[asyncio.Task[None]] = set()
        self.closing = False

    def __repr__(self) -> str:
        return f"<Scaler checking={len(self._checks)} watching={len(self._watches)}>"

    def follow(self, now: float) -> None:
        """Bring each environment's hosts in line with its desired vCPUs (the service set them)."""
        if self.closing:
            return
        self._watch(now)
        for env in self.book.envs.values():
            if not env.hosts:
                continue
            cooldown = self.cooldown_s if env.scale_in_cooldown_s is None else env.scale_in_cooldown_s
            plan = hosting.plan(env.hosts, env.desired_vcpus, now, cooldown)
            if not plan:
                continue
            changed: list[tuple[Host, str]] = []
            for host in env.hosts:
                if host.name in plan.resume:
                    changed.append(self._move(host, IN_SERVICE, "demand came back while it drained", now))
                elif host.name in plan.drain:
                    why = f"desired {env.desired_vcpus:g} vCPUs are covered without it; takes no new job"
                    changed.append(self._move(host, DRAINING, why, now))
                    if host.used_vcpus <= 0:
                        host.idle_since = now
                elif host.name in plan.leave:
                    changed.append(self._move(host, OUT, f"drained; no job for {cooldown:g}s", now))
                elif host.name in plan.check and (env.name, host.name) not in self._checks:
                    changed.append(self._move(host, JOINING, "health check (docker _ping, version)", now))
                    self._start_check(env, host)
            self._record(env, changed, now)

    def _watch(self, now: float) -> None:
        """Start the checks of the serving hosts that are due one (none of their jobs starting)."""
        due: list[tuple[Environment, Host]] = []
        for env in self.book.envs.values():
            for host in env.hosts:
                key = (env.name, host.name)
                if not host.serving or key in self._watches:
                    continue
                if now - max(host.since, self._watched.get(key, 0.0)) >= HEALTH_EVERY_S:
                    due.append((env, host))
        if not due:
            return
        starting = {
            (job.environment, job.host)
            for job in (self.book.jobs.get(job_id) for job_id in self.book.started)
            if job is not None and job.status == STARTING and job.host is not None
        }
        for env, host in due:
            key = (env.name, host.name)
            if key in starting:
                continue
            self._watched[key] = now
            self._start_watch(env.name, host)

    def _start_watch(self, env_name: str, host: Host) -> None:
        key = (env_name, host.name)
        task = asyncio.create_task(self._recheck(env_name, host), name=f"watch {env_name}/{host.name}")
        self._watches[key] = task
        task.add_done_callback(lambda t: self._watches.pop(key, None))

    async def _recheck(self, env_name: str, watched: Host) -> None:
        """One watch: a host in service that fails it is taken out, as one lost under a job."""
        spec = watched.spec()
        ok, text = await self._health(watched)
        if ok or self.closing:
            return
        # the environment may have been rewritten meanwhile: only the same daemon is taken out
        env = self.book.envs.get(env_name)
        host = env.host(watched.name) if env is not None else None
        if host is None or host.spec() != spec:
            return
        self.host_down(env_name, host.name, f"health check failed while in service: {text}")

    async def _health(self, host: Host) -> tuple[bool, str]:
        """``/_ping`` then ``/version`` within the timeout: (passed, the version or the error)."""
        client = self.attempts.docker_runner(host.endpoint, host.config).client
        try:
            async with asyncio.timeout(self.check_timeout_s):
                await client.ping()
                version = await client.version()
        except (DockerError, OSError, TimeoutError) as exc:
            return False, str(exc) or f"no answer within {self.check_timeout_s:g}s"
        return True, f"Docker {version.get('Version', '?')}"

    async def _sweep(self, host: Host) -> None:
        """Remove this engine's leftovers on a host before it takes jobs; failing that, it serves."""
        runner = self.attempts.docker_runner(host.endpoint, host.config)
        try:
            async with asyncio.timeout(SWEEP_TIMEOUT_S):
                await self.leftovers.sweep(runner)
        except (DockerError, OSError, TimeoutError) as exc:
            why = str(exc) or f"no answer within {SWEEP_TIMEOUT_S:g}s"
            log.warning("host %s: cannot clear this engine's leftover containers (%s); they stay "
                        "until it comes into service again", host.name, why)  # fmt: skip

    def host_down(self, env_name: str, host_name: str, reason: str) -> None:
        """A host in service stopped answering (under an attempt, or to its watch): UNHEALTHY, so
        it takes no more jobs and the next host comes in instead; it is checked again after the
        recheck wait."""
        env = self.book.envs.get(env_name)
        host = env.host(host_name) if env is not None else None
        if self.closing or env is None or host is None or host.state not in (IN_SERVICE, DRAINING):
            return
        now = time.time()
        log.warning("host %s of %s taken out of service: %s", host_name, env_name, reason)
        self._record(env, [self._move(host, UNHEALTHY, reason, now)], now)
        self.wake()

    def _move(self, host: Host, state: str, reason: str, now: float) -> tuple[Host, str]:
        previous = host.state
        host.state, host.reason, host.since = state, reason, now
        log.info("host %s: %s -> %s (%s)", host.name, previous, state, reason)
        return host, previous

    def _start_check(self, env: Environment, host: Host) -> None:
        key = (env.name, host.name)
        task = asyncio.create_task(self._check(env.name, host.name), name=f"check {env.name}/{host.name}")
        self._checks[key] = task
        task.add_done_callback(lambda t: self._checks.pop(key, None))

    async def _check(self, env_name: str, host_name: str) -> None:
        env = self.book.envs.get(env_name)
        host = env.host(host_name) if env is not None else None
        if host is None:
            return
        ok, text = await self._health(host)
        if ok and not self.closing:
            await self._sweep(host)
        why = f"health check passed ({text})" if ok else f"health check failed: {text}"
        if self.closing:
            return
        # the environment may have been rewritten meanwhile: act on its host of that name now
        env = self.book.envs.get(env_name)
        host = env.host(host_name) if env is not None else None
        if env is None or host is None or host.state != JOINING:
            return
        now = time.time()
        if not ok:
            log.warning("host %s of %s skipped: %s", host_name, env_name, why)
        self._record(env, [self._move(host, IN_SERVICE if ok else UNHEALTHY, why, now)], now)
        self.wake()  # a new host takes jobs; or the next one is to be checked

    def _record(self, env: Environment, changed: list[tuple[Host, str]], now: float) -> None:
        if not changed:
            return
        name, capacity = env.name, env.capacity()
        events = [scaling_event(env, host, previous, now) for host, previous in changed]
        bus = self.bus

        def tx(conn: sqlite3.Connection) -> list[RunRecord]:
            config_rows.save_capacity(conn, name, capacity)
            started: list[RunRecord] = []
            for event in events:
                started.extend(bus.publish(conn, event, 0))
            return started

        self._spawn(self._commit(self.store.write_nowait(tx)))

    async def _commit(self, write: asyncio.Future[list[RunRecord]]) -> None:
        try:
            self.bus.deliver(await write)
        except Exception:
            log.exception("recording a scaling change failed")

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def aclose(self) -> None:
        """Stop checking (a check under way is redone after a restart); let queued writes land."""
        self.closing = True
        checks = [*self._checks.values(), *self._watches.values()]
        for task in checks:
            task.cancel(msg="engine stopping")
        await asyncio.gather(*checks, *self._writes, return_exceptions=True)
