"""The kernel's OOM events in one container's memory cgroup, counted while the container lives.

Why Sluice counts them itself: Podman 4.x never sets ``State.OOMKilled`` (conmon notices the
kill, but Podman before 5.0 does not read what conmon wrote; podman#13102), and the cgroup,
which keeps the count, is deleted when the container is cleaned up, so it cannot be read
afterwards. Docker's shim does what this module does: it watches the cgroup while the
container runs.

* cgroup v1: an eventfd registered on ``memory.oom_control`` (``cgroup.event_control``). The
  kernel signals it when the cgroup hits its limit and the OOM killer runs, and once more when
  the cgroup is removed; a signal while ``memory.oom_control`` can still be read is an OOM, as
  containerd counts it for Docker. The ``oom_kill`` counter alone is not enough: a process
  that the kernel kills while it is already taking its fatal signal (``dd`` faulting in its
  buffer) is killed uncounted, about one time in two here. Opening the watch before the
  container's process runs (Podman's ``init``) misses nothing.
* cgroup v2: ``memory.events`` (``oom`` and ``oom_kill``) read every :data:`V2_POLL_S`;
  Podman 5 on v2 reports the flag itself, this covers 4.x there.

Only where the container's process is visible in this machine's ``/proc`` (the engine runs
beside the Podman service, as root or as the same rootless user): :meth:`OomWatch.open`
answers None otherwise, and the runtime's own flag is all there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: how often a cgroup v2 ``memory.events`` is read (v1 is told by the kernel, no polling)
V2_POLL_S = 0.1


def _count(text: str) -> int:
    """The most of the ``oom`` and ``oom_kill`` counts in a ``memory.oom_control``/``memory.events``."""
    found = [0]
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key in ("oom", "oom_kill") and value.strip().isdigit():
            found.append(int(value))
    return max(found)


def memory_cgroup(pid: int, container_id: str) -> tuple[Path, int] | None:
    """(the counter file, cgroup version) of ``pid``'s memory cgroup, if it is ``container_id``'s."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if container_id[:12] not in path:
            continue  # another pid namespace's process, or a runtime that names cgroups otherwise
        if "memory" in controllers.split(","):
            return CGROUP_ROOT / "memory" / path.lstrip("/") / "memory.oom_control", 1
        if controllers == "" and (CGROUP_ROOT / path.lstrip("/") / "memory.events").exists():
            return CGROUP_ROOT / path.lstrip("/") / "memory.events", 2
    return None


class OomWatch:
    """The OOM events of one container, kept up to date until :meth:`close`."""

    def __init__(self, counter: Path, version: int) -> None:
        self.counter, self.version = counter, version
        self.events = 0  #: the most the counter said, or the eventfd's signals with the cgroup there
        self._signals = 0
        self._loop = asyncio.get_running_loop()
        self._fd = os.open(counter, os.O_RDONLY | os.O_CLOEXEC)
        self._event: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        try:
            if version == 1:
                self._event = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
                control = counter.parent / "cgroup.event_control"
                control.write_text(f"{self._event} {self._fd}")
                self._loop.add_reader(self._event, self._on_event)
            else:
                self._timer = self._loop.call_later(V2_POLL_S, self._on_tick)
        except BaseException:
            self.close()
            raise
        self.read()

    @classmethod
    def open(cls, pid: int, container_id: str) -> OomWatch | None:
        """A watch on the container whose process is ``pid``; None when it cannot be seen from here."""
        found = memory_cgroup(pid, container_id) if pid > 0 else None
        if found is None:
            return None
        try:
            return cls(*found)
        except OSError as exc:
            log.warning(
                "container %s: cannot watch its memory cgroup for OOM kills: %s", container_id[:12], exc
            )
            return None

    def read(self) -> int:
        """Read the counter now (if the cgroup is still there); the OOM events seen so far."""
        if self._fd >= 0:
            try:
                count = _count(os.pread(self._fd, 4096, 0).decode())
            except OSError:  # ENODEV: the cgroup is gone, and with it nothing more can happen
                self.close()
            else:
                self.events = max(self.events, count, self._signals)
        return self.events

    def close(self) -> None:
        """Stop watching; idempotent. The count seen so far stays."""
        if self._event is not None:
            self._loop.remove_reader(self._event)
            os.close(self._event)
            self._event = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _on_event(self) -> None:
        # an OOM, or the cgroup's removal: whether the cgroup can still be read tells which
        signals = 0
        if self._event is not None:
            with contextlib.suppress(BlockingIOError):
                signals = int.from_bytes(os.read(self._event, 8), "little")
        if self._fd < 0:
            return
        try:
            count = _count(os.pread(self._fd, 4096, 0).decode())
        except OSError:
            # removed; the kernel signals a removal once, so more signals read together were OOMs
            self._signals += max(0, signals - 1)
            self.events = max(self.events, self._signals)
            self.close()
            return
        self._signals += signals
        self.events = max(self.events, count, self._signals)

    def _on_tick(self) -> None:
        self.read()
        if self._fd >= 0:
            self._timer = self._loop.call_later(V2_POLL_S, self._on_tick)
