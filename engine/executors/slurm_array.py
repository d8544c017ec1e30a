"""Array children admitted together go to Slurm as one ``sbatch --array=i,j,k``.

Sluice's scheduler admits capacity per child (``max_vcpus``/``max_memory`` bound each one, and a
child may wait while its siblings run), so the unit of submission cannot be the whole array
up front: that would hand Slurm work that Sluice has not admitted. What is exact is one
submission per *scheduling decision*: the children of one array job (same attempt number)
that one decision placed in the same environment. ``Attempts.launch`` announces each of them
(:meth:`ArrayGroups.expect`) while the decision is being made, synchronously; the group closes
when the loop next runs, and is submitted once every announced child has prepared its
folder (:meth:`ArrayGroups.join`). A child that never joins (its start failed to commit) holds
the group back at most :data:`JOIN_WAIT_S`; one that joins after its group was submitted is
submitted on its own.

How the tasks are told apart: Slurm names task *i* of array job *A* ``A_i`` (``scancel A_i``,
``squeue`` lists it under ``array_job_id``/``array_task_id``, or, while tasks still wait
together, one record with ``array_task_string``). That is each child's handle. The comment is
``sluice.job-id=<parent>:%a sluice.attempt=<n>``: recovery reads the child's id from it and
the task index. Each child keeps its own folder (``request.json``, result, output); the
group's folder holds one symlink per index to them, so ``--output=<group>/%a/output.log`` and
the script's ``<group>/$SLURM_ARRAY_TASK_ID`` land in the child's own folder.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.executors.docker import ContainerRequest

log = logging.getLogger(__name__)

#: how long an announced child that never joins holds its siblings' submission back
JOIN_WAIT_S = 2.0
#: in a comment, where the task index goes in the child's job id
INDEX_MARK = "%a"


def split_child(job_id: str) -> tuple[str, int] | None:
    """``parent:7`` -> ``("parent", 7)``; None for a job that is not an array child."""
    parent, sep, index = job_id.rpartition(":")
    if not sep or not parent or not index.isdigit():
        return None
    return parent, int(index)


def compress(indices: Iterable[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"`` (Slurm's ``--array`` syntax)."""
    runs: list[list[int]] = []
    for i in sorted(set(indices)):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def expand(spec: str) -> list[int]:
    """Slurm's ``array_task_string`` (``"1,3-5"``, maybe with a ``%N`` throttle) -> indices."""
    out: list[int] = []
    for part in spec.split("%", 1)[0].split(","):
        first, _, last = part.partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            out.extend(range(int(first), int(last or first) + 1))
    return out


def task_indices(record: dict[str, Any]) -> list[int]:
    """The array task indices one ``squeue --json`` record stands for (none for a plain job)."""
    if not record.get("array_job_id"):
        return []
    task = record.get("array_task_id")
    if isinstance(task, int) and 0 <= task < 4_000_000:  # NO_VAL shows as a huge number in some versions
        return [task]
    return expand(str(record.get("array_task_string") or ""))


@dataclass
class _Member:
    req: ContainerRequest
    folder: Path
    handle: asyncio.Future[str]


@dataclass
class _Group:
    parent: str
    attempt: int
    expected: set[str] = field(default_factory=set)
    members: dict[str, _Member] = field(default_factory=dict)
    closed: bool = False
    submitted: bool = False
    timer: asyncio.TimerHandle | None = None


Submit = Callable[[list[tuple[ContainerRequest, Path]], Path], Awaitable[dict[str, str | Exception]]]


class ArrayGroups:
    """The open groups of one Slurm environment; ``submit`` is its runner's one ``sbatch`` per group.

    ``submit(members, group_folder)`` answers each member's handle (``A_i``), or what refused
    it, by job id; or raises (every member's ``join`` then raises the same)."""

    def __init__(self, root: Path, submit: Submit) -> None:
        self.root, self.submit = root, submit
        self._open: dict[tuple[str, int], _Group] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.submissions = 0  #: sbatch calls made for groups (tests and metrics)

    def expect(self, job_id: str, attempt: int) -> None:
        """Announce a child the current decision placed; call it synchronously from the decision."""
        found = split_child(job_id)
        if found is None:
            return
        key = (found[0], attempt)
        group = self._open.get(key)
        if group is None or group.closed:
            group = self._open[key] = _Group(found[0], attempt)
            asyncio.get_running_loop().call_soon(self._close, group)
        group.expected.add(job_id)

    def expecting(self, req: ContainerRequest) -> bool:
        group = self._find(req)
        return group is not None and not group.submitted

    async def join(self, req: ContainerRequest, folder: Path) -> str:
        """Wait for the group's one submission; this child's handle (``A_i``)."""
        group = self._find(req)
        assert group is not None and not group.submitted
        member = _Member(req, folder, asyncio.get_running_loop().create_future())
        group.members[req.job_id] = member
        self._maybe_submit(group)
        try:
            return await asyncio.shield(member.handle)
        except asyncio.CancelledError:
            # the engine stops: a group not yet submitted goes without this child
            group.members.pop(req.job_id, None)
            group.expected.discard(req.job_id)
            self._maybe_submit(group)
            raise

    def _find(self, req: ContainerRequest) -> _Group | None:
        found = split_child(req.job_id)
        if found is None:
            return None
        group = self._open.get((found[0], req.attempt))
        return group if group is not None and req.job_id in group.expected else None

    def _close(self, group: _Group) -> None:
        group.closed = True
        group.timer = asyncio.get_running_loop().call_later(JOIN_WAIT_S, self._give_up, group)
        self._maybe_submit(group)

    def _give_up(self, group: _Group) -> None:
        if not group.submitted:
            missing = sorted(group.expected - set(group.members))
            log.warning("Slurm array %s#%d: %s never came; submitting without them",
                        group.parent, group.attempt, ", ".join(missing))  # fmt: skip
            group.expected = set(group.members)
            self._maybe_submit(group)

    def _maybe_submit(self, group: _Group) -> None:
        if group.submitted or not group.closed or set(group.members) != group.expected:
            return
        group.submitted = True
        if group.timer is not None:
            group.timer.cancel()
        if self._open.get((group.parent, group.attempt)) is group:
            del self._open[(group.parent, group.attempt)]
        if not group.members:
            return
        task = asyncio.create_task(self._submit(group), name=f"sbatch array {group.parent}#{group.attempt}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _submit(self, group: _Group) -> None:
        members = sorted(group.members.values(), key=lambda m: split_child(m.req.job_id) or ("", 0))
        folder = self.root / f"array-{_safe(group.parent)}.{group.attempt}-{secrets.token_hex(3)}"
        try:
            folder.mkdir(parents=True, mode=0o700)
            for m in members:
                index = split_child(m.req.job_id)
                assert index is not None
                (folder / str(index[1])).symlink_to(m.folder)
                (m.folder / "array_link").write_text(str(folder / str(index[1])))
            self.submissions += 1
            handles = await self.submit([(m.req, m.folder) for m in members], folder)
        except BaseException as exc:
            for m in members:
                if not m.handle.done():
                    m.handle.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for m in members:
            answer = handles[m.req.job_id]
            if isinstance(answer, Exception):
                m.handle.set_exception(answer)
            else:
                m.handle.set_result(answer)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def forget(folder: Path) -> None:
    """A child's attempt is over: drop its link in its group's folder, and the folder once empty."""
    try:
        link = Path((folder / "array_link").read_text())
        if link.is_symlink() and link.readlink() == folder:
            link.unlink()
        link.parent.rmdir()  # fails while siblings remain: that is the point
    except OSError:
        pass


def array_argv(base: list[str], members: list[tuple[ContainerRequest, Path]], group: Path) -> list[str]:
    """One child's ``sbatch`` command line, turned into the whole group's."""
    parent = split_child(members[0][0].job_id)
    assert parent is not None
    attempt = members[0][0].attempt
    indices = [split_child(req.job_id) or ("", 0) for req, _ in members]
    swap = {
        "--job-name": f"sluice-{_safe(parent[0])}-{attempt}",
        "--comment": f"sluice.job-id={parent[0]}:{INDEX_MARK} sluice.attempt={attempt}",
        "--output": str(group / "%a" / "output.log"),
        "--chdir": str(group),
        "--array": compress(i for _, i in indices),
    }
    argv = [a for a in base[:-2] if a.split("=", 1)[0] not in swap]
    return [*argv, *(f"{k}={v}" for k, v in swap.items()), base[-2], str(group)]


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "-" for c in text).strip("-.")[:80] or "job"
