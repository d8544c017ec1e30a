"""The compute seam: what the Batch service asks of a backend that runs container attempts.

Docker (:class:`~engine.executors.docker.ContainerRunner`), Podman
(:class:`~engine.executors.podman.PodmanRunner`, the Docker runner on Podman's compat API) and
Slurm (:class:`~engine.executors.slurm.SlurmRunner`) implement it, so the attempts, the
recovery and the scheduler never ask which one they hold. A *handle* is the backend's own
name for a running attempt: a container id for Docker, a Slurm job id for Slurm.

Both keep the same promise after an engine restart: :meth:`ComputeRunner.find_managed`
lists what the backend still holds for Sluice (labelled ``sluice.job-id`` and
``sluice.attempt``), and :meth:`ComputeRunner.adopt` follows one of them to its end without
ever starting it again.
"""

from __future__ import annotations

from typing import Any, Protocol

from engine.executors.docker import ContainerRequest, ContainerResult


class ComputeRunner(Protocol):
    #: (job id, attempt) -> handle, for the attempts this runner drives now
    running: dict[tuple[str, int], str]
    #: True when :meth:`adopt` itself reports the start (Slurm: a pending job is not running yet)
    reports_adopted_start: bool

    async def run(self, req: ContainerRequest) -> ContainerResult: ...  # to its end

    async def adopt(self, handle: str, req: ContainerRequest) -> ContainerResult: ...  # never restarts

    async def terminate(self, handle: str, grace_s: float = 10.0, reason: str | None = None) -> None: ...

    async def find_managed(self) -> list[dict[str, Any]]: ...  # {"id", "name", "labels", "state"}

    async def aclose(self) -> None: ...  # idempotent
