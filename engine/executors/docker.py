"""Container attempts on a Docker engine, with AWS Batch's outcomes and wording.

One :class:`ContainerRunner` drives many attempts at once: each ``run()`` is its own chain
of API calls on a shared, unbounded connection pool, so a slow create/start (~300 ms here)
never holds up another job's. Every container carries the labels ``sluice.managed=true``,
``sluice.job-id`` and ``sluice.attempt``, and ``sluice.store`` with the id of the store that
owns the job (several engines may share one daemon); after an engine restart
:meth:`find_managed` lists them and :meth:`adopt` picks each one up where it was (it is never
started again).

Outcomes, as Batch reports them (``status_reason``):

* the image is missing and cannot be pulled: :data:`CANNOT_PULL` (no container is created)
* the attempt outlived ``timeout_s``: SIGTERM, ``stop_grace_s``, SIGKILL, :data:`TIMED_OUT`
* the kernel OOM-killed it: :data:`OUT_OF_MEMORY`, exit code 137
* otherwise it exited by itself: :data:`EXITED` with its exit code (0 is success)

The container is removed in every case, including cancellation of ``run()``, which stops it
politely (SIGTERM, grace, SIGKILL) before removing it and re-raising.

Example::

    async with DockerClient() as client:
        runner = ContainerRunner(client)
        result = await runner.run(ContainerRequest(
            job_id="j-1", attempt=1, image="busybox:1.36", command=["echo", "hi"],
            vcpus=0.5, memory_bytes=64 << 20, log_path="/tmp/j-1.log"))
        assert result.exit_code == 0
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from engine.executors.docker_api import DockerClient, DockerError

log = logging.getLogger(__name__)

CANNOT_PULL = (
    "CannotPullContainerError: Error response from daemon: pull access denied / not found for {image}"
)
CANNOT_CREATE = "CannotCreateContainerError: {message}"
CANNOT_START = "CannotStartContainerError: {message}"
TIMED_OUT = "Job attempt duration exceeded timeout"
OUT_OF_MEMORY = "OutOfMemoryError: Container killed due to memory usage"
EXITED = "Essential container in task exited"
LOST = "ContainerLost: {message}"
NEVER_STARTED = "CannotStartContainerError: the engine stopped between creating and starting the container"

LABEL_MANAGED = "sluice.managed"
LABEL_JOB = "sluice.job-id"
LABEL_ATTEMPT = "sluice.attempt"
#: the id of the store whose job the container runs (engine/store/kv.py); older ones have none
LABEL_STORE = "sluice.store"

#: after the container stops, the log stream ends by itself; this bounds a daemon that doesn't
_LOG_DRAIN_S = 10.0
#: a daemon that stops answering under a running attempt is waited for this long (a restart)
RECONNECT_S = 60.0
RECONNECT_POLL_S = 0.5
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerRequest:
    """One attempt of a container job, already rendered: every value is final data."""

    job_id: str
    attempt: int  #: 1-based
    image: str
    log_path: str  #: stdout and stderr are appended here as they arrive
    command: Sequence[str] | None = None  #: argv, never a shell string; None = the image's CMD
    env: Mapping[str, str] = field(default_factory=dict)
    vcpus: float = 1.0  #: NanoCpus = vcpus * 1e9 (a hard CFS quota, like Batch on EC2)
    memory_bytes: int = 512 << 20  #: hard limit, no swap; past it the kernel OOM-kills
    labels: Mapping[str, str] = field(default_factory=dict)
    #: (host path, container path, read_only); like Batch/ECS, Docker creates a missing host path
    volumes: Sequence[tuple[str, str, bool]] = ()
    working_dir: str | None = None
    user: str | None = None
    network: str | None = None  #: None = Docker's default bridge; "none" = no network
    timeout_s: float | None = None  #: attempt duration limit, from start
    stop_grace_s: float = 10.0  #: between SIGTERM and SIGKILL on timeout or cancel
    store_id: str | None = None  #: the ``sluice.store`` label: whose leftover it is after a crash


@dataclass(frozen=True, slots=True)
class ContainerResult:
    """How one attempt ended, in Batch's terms; ``exit_code`` is None when nothing ran."""

    container_id: str | None
    exit_code: int | None
    status_reason: str
    oom_killed: bool = False
    timed_out: bool = False
    started_at: float | None = None  #: epoch seconds, from Docker's State.StartedAt
    stopped_at: float | None = None  #: epoch seconds, from Docker's State.FinishedAt


def _epoch(stamp: str | None) -> float | None:
    """Docker's RFC 3339 nanosecond stamps -> epoch seconds; None for the zero time."""
    if not stamp or stamp.startswith("0001-"):
        return None
    head, _, frac = stamp.rstrip("Z").partition(".")
    base = datetime.fromisoformat(head + "+00:00").timestamp()
    return base + (float("0." + frac) if frac else 0.0)


def _written(log_path: str) -> int:
    """How much of an adopted container's log is already in our file (resume after that)."""
    try:
        return Path(log_path).stat().st_size
    except FileNotFoundError:
        return 0


def _open_log(log_path: str) -> BinaryIO:
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


def container_config(req: ContainerRequest) -> dict[str, Any]:
    """The Engine API create body for ``req``: limits, labels, argv and mounts, never privileged."""
    labels = {**req.labels, LABEL_MANAGED: "true", LABEL_JOB: req.job_id, LABEL_ATTEMPT: str(req.attempt)}
    if req.store_id is not None:
        labels[LABEL_STORE] = req.store_id
    host: dict[str, Any] = {
        "NanoCpus": int(req.vcpus * 1e9),
        "Memory": req.memory_bytes,
        "MemorySwap": req.memory_bytes,  # equal to Memory: no swap, so a hog is killed, not slowed
        "Privileged": False,
        "Binds": [f"{h}:{c}:{'ro' if ro else 'rw'}" for h, c, ro in req.volumes],
    }
    if req.network is not None:
        host["NetworkMode"] = req.network
    config: dict[str, Any] = {
        "Image": req.image,
        "Env": [f"{k}={v}" for k, v in req.env.items()],
        "Labels": labels,
        "Tty": False,  # the log stream must stay framed so stdout and stderr can be told apart
        "AttachStdin": False,
        "OpenStdin": False,
        "HostConfig": host,
    }
    if req.command is not None:
        config["Cmd"] = [str(arg) for arg in req.command]
    if req.working_dir:
        config["WorkingDir"] = req.working_dir
    if req.user:
        config["User"] = req.user
    return config


def _container_name(req: ContainerRequest) -> str:
    # Names only help a human reading `docker ps`; the labels are the identity. The random
    # tail keeps a retried or replayed attempt from colliding with a leftover container.
    safe = _NAME_UNSAFE.sub("-", req.job_id).strip("-.")[:80] or "job"
    return f"sluice-{safe}-{req.attempt}-{secrets.token_hex(3)}"


class ContainerRunner:
    """Runs container attempts on one Docker engine; safe to share between many jobs.

    Args:
        client: the engine's API client (the runner does not close it).
        pull_timeout_s: how long a missing image may take to pull before the attempt fails
            with :data:`CANNOT_PULL`.
        on_started: called the moment a container has really started (the Batch service
            commits STARTING -> RUNNING then).
        reconnect_s: how long a daemon that stops answering under a running attempt is waited for.
        on_exited: awaited with the result of a container that ended, *before* it is removed:
            whoever records the result there can never lose it to a crash between the exit and
            the removal (after a restart there is either a container or a recorded result).
    """

    reports_adopted_start = False  #: a container found after a restart has started already

    def __init__(
        self,
        client: DockerClient,
        *,
        pull_timeout_s: float = 60.0,
        on_started: Callable[[ContainerRequest, str], None] | None = None,
        on_exited: Callable[[ContainerRequest, ContainerResult], Awaitable[None]] | None = None,
        reconnect_s: float = RECONNECT_S,
    ) -> None:
        self.client = client
        self.pull_timeout_s = pull_timeout_s
        self.on_started = on_started
        self.on_exited = on_exited
        self.reconnect_s = reconnect_s
        #: (job_id, attempt) -> container id, for attempts this runner is driving
        self.running: dict[tuple[str, int], str] = {}
        self._terminated: dict[str, str] = {}
        #: container id -> the task appending its output to the attempt's log file
        self._streams: dict[str, asyncio.Task[None]] = {}
        self._cleanups: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<ContainerRunner running={len(self.running)} host={self.client.host!r}>"

    async def run(self, req: ContainerRequest) -> ContainerResult:
        """Run one attempt to its end and remove its container; see the module docstring."""
        if not await self._ensure_image(req.image):
            return ContainerResult(None, None, CANNOT_PULL.format(image=req.image))
        name = _container_name(req)
        try:
            cid = await self.client.create(name, container_config(req))
        except DockerError as exc:
            if exc.status == 0:  # no daemon: the engine's problem, not this attempt's
                raise
            log.warning("job %s#%d: create failed: %s", req.job_id, req.attempt, exc.message)
            return ContainerResult(None, None, CANNOT_CREATE.format(message=exc.message))
        except asyncio.CancelledError:
            # The daemon may have created it before the cancel arrived; we have no id, but
            # the name is ours alone.
            await self._in_background(self._remove(name))
            raise
        return await self._own(cid, req, start=True)

    async def adopt(self, container_id: str, req: ContainerRequest) -> ContainerResult:
        """Finish an attempt whose container outlived the engine that started it.

        Running: its logs are appended to ``req.log_path`` from the log file's last write
        on (so lines are neither lost nor, usually, repeated), the remaining ``timeout_s``
        (counted from the container's real start) applies, and the result is collected as
        for ``run()``. Already exited: the exit code and OOM flag are collected. Created but
        never started: removed and reported as :data:`NEVER_STARTED`. Never started again.
        """
        try:
            state = (await self.client.inspect(container_id))["State"]
        except DockerError as exc:
            if exc.status != 404:
                raise
            return ContainerResult(container_id, None, LOST.format(message=exc.message))
        if state.get("Status") == "created":
            await self._remove(container_id)
            return ContainerResult(container_id, None, NEVER_STARTED)
        log.info(
            "job %s#%d: adopting container %s (%s)",
            req.job_id,
            req.attempt,
            container_id[:12],
            state.get("Status"),
        )
        return await self._own(container_id, req, start=False)

    async def find_managed(self) -> list[dict[str, Any]]:
        """Every container Sluice created on this engine: ``{"id", "name", "labels", "state"}``."""
        found = await self.client.list({LABEL_MANAGED: "true"}, all=True)
        return [
            {
                "id": c["Id"],
                "name": (c.get("Names") or ["?"])[0].lstrip("/"),
                "labels": c.get("Labels") or {},
                "state": c.get("State"),
            }
            for c in found
        ]

    async def remove(self, container_id: str) -> None:
        """Remove a container no attempt drives any more (a leftover), running or not."""
        await self.client.remove(container_id, force=True)

    async def terminate(self, container_id: str, grace_s: float = 10.0, reason: str | None = None) -> None:
        """Stop a container politely, then firmly; the ``run()``/``adopt()`` driving it removes it.

        ``reason`` (e.g. "Terminated by user") becomes that attempt's ``status_reason``.
        """
        if reason and container_id in self.running.values():
            self._terminated[container_id] = reason
        await self._stop(container_id, grace_s, why=reason or "terminate")

    async def aclose(self) -> None:
        """Wait for the stop-and-remove work that cancelled attempts left running; idempotent."""
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)

    async def _in_background(self, cleanup: Coroutine[Any, Any, None]) -> None:
        # Shielded and owned by the runner: a second cancellation (shutdown right after a
        # terminate) must not leave a container running; aclose() waits for what is left.
        task = asyncio.create_task(cleanup)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        await asyncio.shield(task)

    # -- one attempt -------------------------------------------------------------------

    async def _ensure_image(self, image: str) -> bool:
        if await self.client.image_exists(image):
            return True
        log.info("image %s not present locally; pulling (up to %.0fs)", image, self.pull_timeout_s)
        try:
            await self.client.pull(image, self.pull_timeout_s)
        except DockerError as exc:
            log.warning("cannot pull %s: %s", image, exc.message)
            return False
        return True

    async def _own(self, cid: str, req: ContainerRequest, *, start: bool) -> ContainerResult:
        """Drive ``cid`` to its end, then remove it, whatever happens (cancellation included)."""
        key = (req.job_id, req.attempt)
        self.running[key] = cid
        try:
            while True:
                try:
                    return await self._drive(cid, req, start=start)
                except DockerError as exc:
                    if exc.status != 0 or not await self._daemon_back(req):
                        raise
                    start = False  # follow the container again, from where its log got to
        except asyncio.CancelledError:
            log.info("job %s#%d: cancelled; stopping container %s", req.job_id, req.attempt, cid[:12])
            await self._in_background(self._stop_and_remove(cid, req.stop_grace_s))
            raise
        except DockerError as exc:
            if exc.status != 404:
                await self._remove(cid)
                raise
            # removed behind our back (`docker rm -f`): the attempt failed, the engine is fine
            log.warning("job %s#%d: container %s vanished: %s", req.job_id, req.attempt, cid[:12], exc)
            return ContainerResult(cid, None, LOST.format(message=exc.message))
        except BaseException:
            await self._remove(cid)
            raise
        finally:
            self.running.pop(key, None)
            self._terminated.pop(cid, None)
            self._forget(cid)
            streaming = self._streams.pop(cid, None)
            if streaming is not None and not streaming.done():
                streaming.cancel()

    async def _daemon_back(self, req: ContainerRequest) -> bool:
        """The daemon stopped answering under a running attempt (restarted, upgraded): wait for it.

        A daemon run with ``--live-restore`` keeps its containers across its own restart, so the
        attempt is followed again once it answers; never started a second time. False when it does
        not come back within ``reconnect_s`` (the attempt then fails as lost)."""
        log.warning("job %s#%d: the Docker daemon stopped answering; waiting up to %.0fs for it",
                    req.job_id, req.attempt, self.reconnect_s)  # fmt: skip
        deadline = time.monotonic() + self.reconnect_s
        while time.monotonic() < deadline:
            await asyncio.sleep(RECONNECT_POLL_S)
            try:
                await self.client.ping()
            except DockerError:
                continue
            log.info("job %s#%d: the Docker daemon is back; following the container again",
                     req.job_id, req.attempt)  # fmt: skip
            return True
        return False

    async def _drive(self, cid: str, req: ContainerRequest, *, start: bool) -> ContainerResult:
        skip = 0
        if start:
            try:
                await self._start(cid)
            except DockerError as exc:
                if exc.status == 0:
                    raise
                log.warning("job %s#%d: start failed: %s", req.job_id, req.attempt, exc.message)
                await self._remove(cid)
                return ContainerResult(cid, None, CANNOT_START.format(message=exc.message))
            log.info("job %s#%d: started container %s (%s)", req.job_id, req.attempt, cid[:12], req.image)
            if self.on_started is not None:
                self.on_started(req, cid)
        else:
            skip = await asyncio.to_thread(_written, req.log_path)
            await self._following(cid)
        streaming = self._streams[cid] = asyncio.create_task(self._stream_logs(cid, req.log_path, skip))
        try:
            timed_out = await self._wait_within(cid, req)
        except asyncio.CancelledError:
            raise  # _own stops the container first, then drains this stream
        except BaseException:
            streaming.cancel()
            raise
        await self._finish_streaming(cid)
        state = (await self.client.inspect(cid))["State"]
        result = self._result(cid, req, state, timed_out)
        if self.on_exited is not None:
            await self.on_exited(req, result)
        await self._remove(cid)
        return result

    async def _wait_within(self, cid: str, req: ContainerRequest) -> bool:
        """Wait for the exit; on timeout stop it (TERM, grace, KILL). True if it timed out."""
        remaining: float | None = None
        if req.timeout_s is not None:
            state = (await self.client.inspect(cid))["State"]
            # An adopted container that already exited by itself ran to its own end, even
            # if that took longer than timeout_s while no engine was watching.
            if state.get("Running"):
                started = _epoch(state.get("StartedAt"))
                elapsed = time.time() - started if started else 0.0
                remaining = max(0.0, req.timeout_s - elapsed)
        try:
            async with asyncio.timeout(remaining):
                await self.client.wait(cid)
            return False
        except TimeoutError:
            log.info("job %s#%d: exceeded timeout of %gs", req.job_id, req.attempt, req.timeout_s)
            await self._stop(cid, req.stop_grace_s, why="timeout")
            return True

    def _result(
        self, cid: str, req: ContainerRequest, state: dict[str, Any], timed_out: bool
    ) -> ContainerResult:
        started, stopped = _epoch(state.get("StartedAt")), _epoch(state.get("FinishedAt"))
        if started is not None and stopped is not None and stopped < started:
            # dockerd stamps StartedAt after runc returns; a process that exits at once can
            # finish "before" it started by a few ms. Report a zero duration, not a negative one.
            stopped = started
        code = int(state.get("ExitCode", -1))
        oom = self._oom_killed(cid, state)
        if cid in self._terminated:
            reason = self._terminated[cid]
        elif timed_out:
            reason = TIMED_OUT
        elif oom:
            reason, code = OUT_OF_MEMORY, 137
        else:
            reason = EXITED
        log.info(
            "job %s#%d: container %s ended: exit %s, %s", req.job_id, req.attempt, cid[:12], code, reason
        )
        return ContainerResult(cid, code, reason, oom, timed_out, started, stopped)

    # -- what another engine behind the same API does its own way (Podman) -------------------

    async def _start(self, cid: str) -> None:
        await self.client.start(cid)

    async def _following(self, cid: str) -> None:
        """An adopted container is followed from here on (after a restart, or the daemon's)."""

    def _oom_killed(self, cid: str, state: Mapping[str, Any]) -> bool:
        return bool(state.get("OOMKilled"))

    def _forget(self, cid: str) -> None:
        """The attempt on ``cid`` is over (or no longer ours to follow)."""

    # -- stopping, removing, logs ------------------------------------------------------

    async def _stop(self, cid: str, grace_s: float, *, why: str) -> None:
        """SIGTERM, up to ``grace_s`` for the exit, then SIGKILL; each step logged."""
        if not await self._signal(cid, "SIGTERM"):
            return
        log.info("container %s: SIGTERM sent (%s); waiting up to %gs", cid[:12], why, grace_s)
        try:
            async with asyncio.timeout(grace_s):
                await self._wait_ended(cid)
            return
        except TimeoutError:
            pass
        log.info("container %s: still running after %gs; SIGKILL", cid[:12], grace_s)
        if await self._signal(cid, "SIGKILL"):
            await self._wait_ended(cid)

    async def _wait_ended(self, cid: str) -> None:
        # the attempt that owns the container may remove it the moment it ends: gone is ended
        try:
            await self.client.wait(cid)
        except DockerError as exc:
            if exc.status != 404:
                raise

    async def _signal(self, cid: str, signal: str) -> bool:
        """Send ``signal``; False when the container is already gone or stopped."""
        try:
            await self.client.kill(cid, signal)
        except DockerError as exc:
            if exc.status in (404, 409):  # no such container / is not running
                return False
            raise
        return True

    async def _stop_and_remove(self, cid: str, grace_s: float) -> None:
        try:
            await self._stop(cid, grace_s, why="cancelled")
            await self._finish_streaming(cid)
        finally:
            await self._remove(cid)

    async def _remove(self, cid: str) -> None:
        try:
            await self.client.remove(cid, force=True)
        except DockerError as exc:
            # 404 gone, or 409 "removal already in progress": either way it is going
            if exc.status not in (404, 409):
                log.warning("container %s: remove failed: %s", cid[:12], exc)

    async def _stream_logs(self, cid: str, log_path: str, skip: int = 0) -> None:
        """Append the container's output to ``log_path`` chunk by chunk, as Docker delivers it.

        ``skip``: bytes of the log already in the file (an adopted container): Docker replays the
        log from the start in the order it stored it, and that prefix is dropped. (A ``since``
        time would not do: file times are coarser than Docker's stamps, so lines came twice.)
        Writes go straight to the page cache (no fsync): each is microseconds, cheaper than
        the thread hop that ``asyncio.to_thread`` would cost per chunk. The open is done on the
        loop too: opened in a thread, a cancel arriving during the hop would leak the file.
        """
        with _open_log(log_path) as out:
            try:
                async for _stream, chunk in self.client.logs(cid, follow=True):
                    if skip:
                        dropped = min(skip, len(chunk))
                        chunk, skip = chunk[dropped:], skip - dropped
                        if not chunk:
                            continue
                    out.write(chunk)
                    out.flush()
            except DockerError as exc:
                log.warning("container %s: log stream ended early: %s", cid[:12], exc)

    async def _finish_streaming(self, cid: str) -> None:
        # The follow stream ends by itself once the container has stopped; wait for that so
        # the log file is complete before the result is reported, but not forever.
        streaming = self._streams.get(cid)
        if streaming is None or streaming.done():
            return
        try:
            async with asyncio.timeout(_LOG_DRAIN_S):
                await asyncio.shield(streaming)
        except TimeoutError:
            streaming.cancel()
        except asyncio.CancelledError:
            streaming.cancel()
            raise
