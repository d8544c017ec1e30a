"""Container attempts on Podman, through the Docker-compatible API of ``podman system service``.

For sites that allow no Docker daemon. A compute environment of ``type: podman`` talks to the
service's socket (``/run/podman/podman.sock`` as root, ``$XDG_RUNTIME_DIR/podman/podman.sock``
rootless) with the same :class:`~engine.executors.docker_api.DockerClient`, and a
:class:`PodmanRunner` keeps every promise of the Docker runner (labels, limits, logs, exit code,
OOM, timeout, terminate, re-adoption by labels after a restart). Where Podman's compat API
differs (measured against Podman 4.3, Debian 12):

* ``State.OOMKilled`` is always false in Podman before 5.0 (podman#13102), so the runner counts
  the kernel's OOM kills in the container's memory cgroup itself
  (:mod:`engine.executors.cgroup_oom`). To miss none, the container is set up with Podman's
  ``init`` first (the cgroup exists, the command does not run yet), watched, then started.
  That needs the engine on the Podman machine; for a remote service only the flag is read.
* ``NanoCpus`` is kept as given and shown by ``inspect`` as Docker does; Podman turns it into a
  CFS quota (``CpuQuota``/``CpuPeriod``), the same limit.
* The label filter of ``GET /containers/json`` and the framed log stream behave as Docker's.
* A short image name (``busybox:1.36``) finds a local image (``localhost/busybox:1.36``); a
  pull of a short name needs ``unqualified-search-registries`` in ``registries.conf``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from engine.executors.cgroup_oom import OomWatch
from engine.executors.docker import ContainerRunner
from engine.executors.docker_api import DockerError

log = logging.getLogger(__name__)

ROOT_SOCKET = "/run/podman/podman.sock"


def default_host() -> str:
    """The socket ``podman system service`` listens on by default, for this user."""
    if os.geteuid() == 0 or not os.environ.get("XDG_RUNTIME_DIR"):
        return f"unix://{ROOT_SOCKET}"
    return f"unix://{os.environ['XDG_RUNTIME_DIR']}/podman/podman.sock"


class PodmanRunner(ContainerRunner):
    """A :class:`ContainerRunner` for a Podman service; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: container id -> its OOM watch, while the attempt runs
        self._watches: dict[str, OomWatch] = {}
        self._local = self.client.host.startswith("unix://")

    def __repr__(self) -> str:
        return f"<PodmanRunner running={len(self.running)} host={self.client.host!r}>"

    async def _start(self, cid: str) -> None:
        if self._local:
            await self.client.init(cid)
            await self._watch(cid)
        await self.client.start(cid)

    async def _following(self, cid: str) -> None:
        if self._local:
            await self._watch(cid)

    def _oom_killed(self, cid: str, state: Mapping[str, Any]) -> bool:
        watch = self._watches.get(cid)
        return bool(state.get("OOMKilled")) or (watch is not None and watch.read() > 0)

    def _forget(self, cid: str) -> None:
        watch = self._watches.pop(cid, None)
        if watch is not None:
            watch.close()

    async def _watch(self, cid: str) -> None:
        self._forget(cid)
        try:
            pid = int((await self.client.inspect(cid))["State"].get("Pid") or 0)
        except DockerError as exc:
            if exc.status == 0:
                raise
            return  # gone already: the attempt's own calls say so
        watch = OomWatch.open(pid, cid)
        if watch is None:
            log.info(
                "container %s: its cgroup is not visible here; OOM kills are Podman's to report", cid[:12]
            )
            return
        self._watches[cid] = watch
