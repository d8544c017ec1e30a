"""What Slurm answers: ``squeue --json`` read into :class:`SlurmJob` records, one listing per poll
for every attempt of an environment, and the client commands (:class:`CliCommands`; the same three
over slurmrestd are :class:`~engine.executors.slurm_rest.RestCommands`).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, replace
from typing import Protocol

from engine.executors.slurm_array import task_indices

_TOOL_TIMEOUT_S = 30.0


class SlurmError(RuntimeError):
    """A Slurm client command did not answer (the cluster, not the job, is at fault)."""


@dataclass(frozen=True, slots=True)
class SlurmJob:
    """One job as ``squeue`` shows it."""

    slurm_id: str
    state: str
    reason: str
    nodes: str
    name: str
    comment: str
    task: int | None = None  #: the array task index, for a task of an array job


async def tool(*argv: str, timeout_s: float = _TOOL_TIMEOUT_S) -> tuple[int, str, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except OSError as exc:
        raise SlurmError(f"{argv[0]}: {exc} (is the Slurm client installed on this machine?)") from exc
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except (TimeoutError, asyncio.CancelledError) as exc:
        # reaped either way; a killed sbatch either submitted (found again by its comment) or not
        if proc.returncode is None:
            proc.kill()
        await asyncio.shield(proc.wait())
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise SlurmError(f"{argv[0]} did not answer within {timeout_s:g}s") from None
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace").strip()


def parse_squeue_json(text: str) -> dict[str, SlurmJob]:
    """``squeue --json`` -> jobs by id, and each array task also as ``A_i`` (tasks that still wait
    together are one record; a one-task array's task is also under the id sbatch gave it)."""
    out: dict[str, SlurmJob] = {}
    for j in json.loads(text).get("jobs", []):
        state = j.get("job_state")
        state = state[0] if isinstance(state, list) and state else state  # newer Slurm: a list of flags
        job = SlurmJob(
            str(j.get("job_id")), str(state or "UNKNOWN"), str(j.get("state_reason") or "None"),
            str(j.get("nodes") or ""), str(j.get("name") or ""), str(j.get("comment") or ""),
        )  # fmt: skip
        out.setdefault(job.slurm_id, job)
        for i in task_indices(j):
            task = replace(job, slurm_id=f"{j['array_job_id']}_{i}", task=i)
            out[task.slurm_id] = task
    return out


class Commands(Protocol):
    """The three things Sluice asks of Slurm; each answers ``(exit code, stdout, stderr)``."""

    async def sbatch(self, argv: list[str]) -> tuple[int, str, str]: ...

    async def squeue(self) -> tuple[int, str, str]: ...  # ``squeue --json`` of the engine's jobs

    async def scancel(self, handle: str) -> tuple[int, str, str]: ...

    async def aclose(self) -> None: ...


class CliCommands:
    """The client commands of a submit host (``sbatch``, ``squeue``, ``scancel``)."""

    async def sbatch(self, argv: list[str]) -> tuple[int, str, str]:
        return await tool(*argv)

    async def squeue(self) -> tuple[int, str, str]:
        return await tool("squeue", "--json", "--me", "--states=all")

    async def scancel(self, handle: str) -> tuple[int, str, str]:
        return await tool("scancel", handle)

    async def aclose(self) -> None:
        pass


class Squeue:
    """One ``squeue`` per ``poll_s`` for everyone who asks, however many attempts follow jobs."""

    def __init__(self, poll_s: float, commands: Commands | None = None) -> None:
        self.poll_s = poll_s
        self.commands = commands or CliCommands()
        self._fetch: asyncio.Future[dict[str, SlurmJob]] | None = None
        self._last = 0.0
        self.calls = 0

    async def fresh(self) -> dict[str, SlurmJob]:
        """A listing taken after this call began (waiting out the poll interval first)."""
        if self._fetch is None or self._fetch.done():
            self._fetch = asyncio.ensure_future(self._after_interval())
        return await asyncio.shield(self._fetch)

    async def _after_interval(self) -> dict[str, SlurmJob]:
        wait = self._last + self.poll_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            return await self.now()
        finally:
            self._last = time.monotonic()

    async def now(self) -> dict[str, SlurmJob]:
        self.calls += 1
        code, out, err = await self.commands.squeue()
        if code != 0:
            raise SlurmError(f"squeue failed (exit {code}): {err or out[:300]}")
        return parse_squeue_json(out)

    async def aclose(self) -> None:
        """Cancel a listing under way and wait for it (its slurmrestd connection goes back first)."""
        if self._fetch is not None and not self._fetch.done():
            self._fetch.cancel()
            await asyncio.gather(self._fetch, return_exceptions=True)
