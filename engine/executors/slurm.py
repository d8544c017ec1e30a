"""Container attempts on a Slurm cluster: ``sbatch`` a batch script that runs the container on a node.

A compute environment of ``type: slurm`` hands each placed job to Slurm instead of a Docker
engine; Sluice keeps its own queues, priorities, dependencies, retries and events, and
``max_vcpus``/``max_memory`` still bound what it submits at once. One :class:`SlurmRunner`
per environment drives many attempts; it implements
:class:`~engine.executors.compute.ComputeRunner`, as the Docker runner does.

How one attempt goes:

1. Its folder in the shared directory (``<shared_dir>/attempts/<job>.<attempt>/``) gets
   ``request.json`` (image, argv, env, limits, labels: final data) and the batch script
   (:mod:`engine.executors.slurm_batch`, stdlib only).
2. ``sbatch --parsable`` with ``--cpus-per-task`` (vCPUs rounded up: Slurm counts whole CPUs;
   the container keeps the exact ``--cpus``), ``--mem``, ``--time`` (the timeout plus the stop
   grace plus a minute: Sluice's own timer, in the script, ends it first and to the second),
   ``--array=<i,j,k>`` for the children of an array job placed together
   (:mod:`engine.executors.slurm_array`: one ``sbatch`` per scheduling decision; each child's
   handle is its task, ``A_i``; the script reads ``SLURM_ARRAY_TASK_ID``),
   ``--no-requeue`` (a node failure ends the attempt; Sluice's retry strategy decides),
   ``--job-name`` and ``--comment`` carrying the ``sluice.job-id``/``sluice.attempt`` labels, so
   a submission that a crash kept from being recorded is still found by :meth:`find_managed`.
   The id Slurm answers is handed to ``on_submitted`` (the Batch service stores it) before
   anything else.
3. One ``squeue --json`` per ``poll_s`` serves every attempt of the environment: PENDING with
   Slurm's reason goes to ``on_waiting`` (``PENDING (Resources)``), RUNNING to ``on_started``;
   meanwhile the job's output file in the shared folder is appended to the attempt's log.
4. The script's ``result.json`` (exit code, OOM flag, times) is the outcome, in the Docker
   runner's words; without one, Slurm's end state is (``TIMEOUT``, ``NODE_FAIL``,
   ``PREEMPTED``: a retryable failure naming the node). ``on_exited`` records it, then the
   folder is removed.

Cancelling :meth:`run` (the engine stopping) leaves the Slurm job alone: the next start adopts it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.executors import slurm_batch
from engine.executors.docker import (
    CANNOT_PULL,
    CANNOT_START,
    EXITED,
    LABEL_ATTEMPT,
    LABEL_JOB,
    OUT_OF_MEMORY,
    TIMED_OUT,
    ContainerRequest,
    ContainerResult,
    _epoch,
)
from engine.executors.slurm_array import INDEX_MARK, ArrayGroups, array_argv, forget, split_child
from engine.executors.slurm_rest import RestCommands, check_url
from engine.executors.slurm_squeue import CliCommands, Commands, SlurmError, SlurmJob, Squeue

log = logging.getLogger(__name__)

RUNTIMES = ("docker", "podman")
#: Slurm states in which the job will not change any more
ENDED = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
     "OUT_OF_MEMORY", "SPECIAL_EXIT", "REVOKED"}
)  # fmt: skip
#: end states that say nothing about the job itself: the node or the cluster took it away
NODE_LOST = frozenset({"NODE_FAIL", "PREEMPTED", "BOOT_FAIL"})
NODE_FAILURE = "Host {node} failed: Slurm job {slurm_id} ended {state}"
SLURM_ENDED = "ContainerLost: Slurm job {slurm_id} ended {state} without a result from its batch script"
SLURM_LOST = "ContainerLost: Slurm job {slurm_id} is gone from the cluster and left no result"
SBATCH_REFUSED = "CannotStartContainerError: sbatch refused the job: {message}"
SIGNALLED = "Slurm stopped the job ({state}); its container was stopped"
#: after Slurm says the job ended, how long its result file may take to show (a shared filesystem)
RESULT_GRACE_S = 10.0
#: a job missing from squeue this many polls in a row (and no result) is lost
MISSING_POLLS = 3
_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")
#: on the containers the batch script starts, instead of ``sluice.managed`` (that one is the Docker
#: environment's: its recovery must not take these for its own)
LABEL_SLURM = "sluice.slurm"
_SETTINGS = ("shared_dir", "partition", "account", "qos", "runtime", "poll_s", "rest_url", "rest_user")
_LABELS = re.compile(r"sluice\.job-id=(\S+) sluice\.attempt=(\d+)")


@dataclass(frozen=True, slots=True)
class SlurmConfig:
    """The ``slurm:`` settings of a compute environment, checked once when it is written."""

    shared_dir: str  #: the same path on this machine and on every node: scripts, output, results
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    runtime: str = "docker"  #: what runs the image on the node: ``docker`` or ``podman``
    poll_s: float = 1.0  #: how often ``squeue`` is asked, for all the environment's jobs at once
    rest_url: str | None = (
        None  #: slurmrestd (``unix:/path`` or ``http://host:port``) instead of the commands
    )
    rest_user: str | None = None  #: the user a JWT is for (default: the engine's user)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> SlurmConfig:
        """Check a ``slurm:`` body; ValueError names the field and what to write."""
        if not isinstance(body, Mapping):
            raise ValueError("slurm: an object with shared_dir and optional partition, account, qos, runtime")
        if "slurmrestd" in body:
            raise ValueError(
                "slurm.slurmrestd: write rest_url: unix:/path/to/slurmrestd.sock or http://HOST:PORT"
            )
        unknown = sorted(set(body) - set(_SETTINGS))
        if unknown:
            raise ValueError(f"slurm.{unknown[0]}: unknown setting (known: {', '.join(_SETTINGS)})")
        rest = None if body.get("rest_url") is None else check_url(body["rest_url"])
        user = body.get("rest_user")
        if user is not None and (not isinstance(user, str) or not user or _UNSAFE.search(user)):
            raise ValueError(f"slurm.rest_user: a user name, got {user!r}")
        shared = body.get("shared_dir")
        if not isinstance(shared, str) or not shared.startswith("/"):
            raise ValueError(
                f"slurm.shared_dir: an absolute path mounted at the same place on every node, got {shared!r}"
            )
        texts: dict[str, str | None] = {}
        for key in ("partition", "account", "qos"):
            value = body.get(key)
            if value is not None and (not isinstance(value, str) or not value or _UNSAFE.search(value)):
                raise ValueError(f"slurm.{key}: a Slurm name (letters, digits, _ . -), got {value!r}")
            texts[key] = value
        runtime = body.get("runtime", "docker")
        if runtime not in RUNTIMES:
            raise ValueError(f"slurm.runtime: one of {', '.join(RUNTIMES)}, got {runtime!r}")
        poll = body.get("poll_s", 1.0)
        if isinstance(poll, bool) or not isinstance(poll, int | float) or not 0.05 <= poll <= 60:
            raise ValueError(f"slurm.poll_s: seconds between 0.05 and 60, got {poll!r}")
        return cls(
            shared, texts["partition"], texts["account"], texts["qos"], runtime, float(poll), rest, user
        )

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class _Refused(Exception):
    """sbatch answered, and not with a job id: its message."""


def attempt_folder(shared_dir: str, job_id: str, attempt: int) -> Path:
    safe = _UNSAFE.sub("-", job_id).strip("-.") or "job"
    return Path(shared_dir) / "attempts" / f"{safe}.{attempt}"


def sbatch_argv(config: SlurmConfig, req: ContainerRequest, folder: Path) -> list[str]:
    """The ``sbatch`` command line for ``req``; every value is one argv element, never shell text."""
    argv = [
        "sbatch", "--parsable", "--no-requeue", "--export=PATH",
        f"--job-name=sluice-{_UNSAFE.sub('-', req.job_id)}-{req.attempt}",
        f"--comment={LABEL_JOB}={req.job_id} {LABEL_ATTEMPT}={req.attempt}",
        f"--output={folder / 'output.log'}", f"--chdir={folder}",
        f"--cpus-per-task={max(1, math.ceil(req.vcpus - 1e-9))}",
        f"--mem={max(1, math.ceil(req.memory_bytes / (1 << 20)))}M",
    ]  # fmt: skip
    for flag, value in (("partition", config.partition), ("account", config.account), ("qos", config.qos)):
        if value:
            argv.append(f"--{flag}={value}")
    if req.timeout_s is not None:
        limit_s = math.ceil(req.timeout_s + req.stop_grace_s + 60)
        argv.append(f"--time={limit_s // 60}:{limit_s % 60:02d}")
    index = req.env.get("SLUICE_ARRAY_INDEX")
    if index is not None:
        argv.append(f"--array={int(index)}")
    argv += [str(folder / "batch.py"), str(folder)]
    return argv


class SlurmRunner:
    """Runs container attempts as Slurm jobs of one compute environment.

    Args:
        config: the environment's ``slurm:`` settings.
        on_submitted: awaited with Slurm's job id the moment ``sbatch`` answers (store it: a
            restart then follows that job and never submits the attempt again).
        on_waiting: called with Slurm's pending reason, e.g. ``PENDING (Resources)``, when it changes.
        on_started / on_exited: as for the Docker runner (on_exited before the folder is removed).
    """

    reports_adopted_start = True

    def __init__(
        self,
        config: SlurmConfig,
        *,
        pull_timeout_s: float = 60.0,
        on_submitted: Callable[[ContainerRequest, str], Awaitable[None]] | None = None,
        on_waiting: Callable[[ContainerRequest, str], None] | None = None,
        on_started: Callable[[ContainerRequest, str], None] | None = None,
        on_exited: Callable[[ContainerRequest, ContainerResult], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.pull_timeout_s = pull_timeout_s
        self.on_submitted, self.on_waiting = on_submitted, on_waiting
        self.on_started, self.on_exited = on_started, on_exited
        self.running: dict[tuple[str, int], str] = {}
        self.commands: Commands = (
            RestCommands(config.rest_url, config.rest_user) if config.rest_url else CliCommands()
        )
        self.squeue = Squeue(config.poll_s, self.commands)
        self.arrays = ArrayGroups(Path(config.shared_dir) / "attempts", self._submit_array)
        self._terminated: dict[str, str] = {}
        self._cancel_sent: set[str] = set()

    def __repr__(self) -> str:
        return f"<SlurmRunner running={len(self.running)} partition={self.config.partition!r}>"

    # -- the ComputeRunner protocol ---------------------------------------------------------

    def expect(self, job_id: str, attempt: int) -> None:
        """The scheduler placed this array child now: it is submitted with its siblings placed alike."""
        self.arrays.expect(job_id, attempt)

    async def run(self, req: ContainerRequest) -> ContainerResult:
        """Submit one attempt and follow it to its end; see the module docstring."""
        folder = attempt_folder(self.config.shared_dir, req.job_id, req.attempt)
        self._prepare(folder, req)
        try:
            if self.arrays.expecting(req):
                slurm_id = await self.arrays.join(req, folder)
            else:
                slurm_id = (await self._sbatch(sbatch_argv(self.config, req, folder), [folder]))[0]
        except _Refused as exc:
            log.warning("job %s#%d: sbatch refused it: %s", req.job_id, req.attempt, exc)
            forget(folder)
            shutil.rmtree(folder, ignore_errors=True)
            return ContainerResult(None, None, SBATCH_REFUSED.format(message=str(exc)[:300]))
        log.info("job %s#%d: submitted as Slurm job %s", req.job_id, req.attempt, slurm_id)
        if self.on_submitted is not None:
            await self.on_submitted(req, slurm_id)
        return await self._follow(slurm_id, req, folder, skip=0)

    async def adopt(self, handle: str, req: ContainerRequest) -> ContainerResult:
        """Follow a Slurm job submitted before a restart (pending, running, or ended meanwhile)."""
        folder = attempt_folder(self.config.shared_dir, req.job_id, req.attempt)
        log.info("job %s#%d: following Slurm job %s again", req.job_id, req.attempt, handle)
        return await self._follow(handle, req, folder, skip=_size(req.log_path))

    async def terminate(self, handle: str, grace_s: float = 10.0, reason: str | None = None) -> None:
        """``scancel``: the batch script stops its container (SIGTERM, grace, SIGKILL) and reports."""
        if reason:
            self._terminated[handle] = reason
        if handle in self._cancel_sent:
            return
        self._cancel_sent.add(handle)
        code, _, err = await self.commands.scancel(handle)
        log.info("Slurm job %s: scancel (%s)%s", handle, reason or "terminate", f": {err}" if code else "")

    async def _sbatch(
        self, argv: list[str], folders: list[Path], tasks: list[int] | None = None
    ) -> list[str]:
        """Submit; the handle of each folder's attempt (``A`` alone, or ``A_i`` per task), written there."""
        code, out, err = await self.commands.sbatch(argv)
        slurm_id = out.strip().split(";")[0]
        if code != 0 or not slurm_id.isdigit():
            raise _Refused((err or out).strip())
        handles = [slurm_id] if tasks is None else [f"{slurm_id}_{i}" for i in tasks]
        for folder, handle in zip(folders, handles, strict=True):
            (folder / "slurm_job_id").write_text(handle)
        return handles

    async def _submit_array(
        self, members: list[tuple[ContainerRequest, Path]], group: Path
    ) -> dict[str, str | Exception]:
        first, folder = members[0]
        argv = array_argv(sbatch_argv(self.config, first, folder), members, group)
        tasks = [(split_child(req.job_id) or ("", -1))[1] for req, _ in members]  # as array_argv has them
        try:
            handles = await self._sbatch(argv, [f for _, f in members], tasks)
        except _Refused as exc:
            # refused as a whole (e.g. an index past MaxArraySize): each child gets its own answer,
            # as before arrays were batched; refused means nothing was submitted
            log.warning("sbatch refused an array of %d (%s); submitting them one by one", len(members), exc)
            out: dict[str, str | Exception] = {}
            for req, folder in members:
                try:
                    out[req.job_id] = (await self._sbatch(sbatch_argv(self.config, req, folder), [folder]))[0]
                except _Refused as one:
                    out[req.job_id] = one
            return out
        log.info("Slurm array job %s: %d children in one sbatch", handles[0].split("_")[0], len(members))
        return {req.job_id: h for (req, _), h in zip(members, handles, strict=True)}

    async def find_managed(self) -> list[dict[str, Any]]:
        """Sluice's jobs in Slurm (by their comment), and attempt folders Slurm has forgotten."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        try:
            listed = await self.squeue.now()
        except SlurmError as exc:
            # the folders still name what was submitted: those are followed (once the cluster
            # answers again), never submitted a second time
            log.warning("cannot list the Slurm jobs (%s); going by the attempt folders alone", exc)
            listed = {}
        for job in listed.values():
            m = _LABELS.fullmatch(job.comment)
            if m is not None and (INDEX_MARK in m[1]) == (job.task is not None and "_" in job.slurm_id):
                child = m[1].replace(INDEX_MARK, str(job.task))
                labels = {LABEL_JOB: child, LABEL_ATTEMPT: m[2]}
                state = job.state.lower()
                found[(child, m[2])] = {
                    "id": job.slurm_id,
                    "name": job.name,
                    "labels": labels,
                    "state": state,
                }
        for key, entry in _forgotten(Path(self.config.shared_dir) / "attempts").items():
            found.setdefault(key, entry)
        return list(found.values())

    async def aclose(self) -> None:
        await self.squeue.aclose()
        await self.arrays.aclose()
        await self.commands.aclose()

    # -- one attempt -------------------------------------------------------------------------

    def _prepare(self, folder: Path, req: ContainerRequest) -> None:
        if folder.exists():  # a submission that never happened (recovery found no Slurm job)
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir(mode=0o700)  # request.json holds the job's environment, secrets included
        body = {
            "job_id": req.job_id, "attempt": req.attempt, "image": req.image,
            "command": list(req.command) if req.command is not None else None,
            "env": dict(req.env), "vcpus": req.vcpus, "memory_bytes": req.memory_bytes,
            "labels": {**req.labels, LABEL_JOB: req.job_id, LABEL_ATTEMPT: str(req.attempt),
                       LABEL_SLURM: "true"},
            "volumes": [list(v) for v in req.volumes], "working_dir": req.working_dir, "user": req.user,
            "network": req.network, "timeout_s": req.timeout_s, "stop_grace_s": req.stop_grace_s,
            "runtime": self.config.runtime, "pull_timeout_s": self.pull_timeout_s,
            "array": "SLUICE_ARRAY_INDEX" in req.env,
            "name": f"sluice-{_UNSAFE.sub('-', req.job_id).strip('-.')[:80]}-{req.attempt}",
        }  # fmt: skip
        fd = os.open(folder / "request.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(body))
        shutil.copyfile(slurm_batch.__file__, folder / "batch.py")

    async def _follow(
        self, slurm_id: str, req: ContainerRequest, folder: Path, *, skip: int
    ) -> ContainerResult:
        key = (req.job_id, req.attempt)
        self.running[key] = slurm_id
        copier = _LogCopier(folder / "output.log", req.log_path, skip)
        try:
            result = await self._watch(slurm_id, req, folder, copier)
            copier.copy()
            if self.on_exited is not None:
                await self.on_exited(req, result)
            forget(folder)
            shutil.rmtree(folder, ignore_errors=True)
            return result
        finally:
            self.running.pop(key, None)
            self._terminated.pop(slurm_id, None)
            self._cancel_sent.discard(slurm_id)

    async def _watch(
        self, slurm_id: str, req: ContainerRequest, folder: Path, copier: _LogCopier
    ) -> ContainerResult:
        said, started, missing, failing = "", False, 0, False
        ended_at: float | None = None
        while True:
            try:
                jobs = await self.squeue.fresh()
            except SlurmError as exc:
                if not failing:  # once per outage, not once per poll
                    log.warning(
                        "job %s#%d: %s; asking again every %gs",
                        req.job_id,
                        req.attempt,
                        exc,
                        self.config.poll_s,
                    )
                failing, jobs = True, None
            else:
                failing = False
            copier.copy()
            facts = _read_result(folder)
            job = None if jobs is None else jobs.get(slurm_id)
            if facts is not None:
                # stopped by a signal that is not ours: Slurm's end state says why (node, preemption)
                settled = job is not None and job.state in ENDED
                if facts.get("signalled") and not settled and slurm_id not in self._terminated:
                    ended_at = ended_at or time.monotonic()
                    if time.monotonic() - ended_at < RESULT_GRACE_S:
                        continue
                if not started and facts.get("created") and self.on_started is not None:
                    self.on_started(req, facts.get("container_id") or f"slurm-{slurm_id}")
                return self._result(slurm_id, facts, job, req.image)
            if jobs is None:
                continue
            if job is None:
                missing += 1
                if missing >= MISSING_POLLS:  # (a waiting array task that scancel took is just gone)
                    why = self._terminated.get(slurm_id) or SLURM_LOST.format(slurm_id=slurm_id)
                    return ContainerResult(None, None, why)
                continue
            missing = 0
            if job.state not in ENDED:
                said, started = self._report(job, req, folder, said, started)
            else:
                ended_at = ended_at or time.monotonic()
                never_ran = job.state == "CANCELLED" and not started and _cid(folder) is None
                if never_ran or time.monotonic() - ended_at >= RESULT_GRACE_S + req.stop_grace_s:
                    return self._result(slurm_id, None, job, req.image)

    def _report(
        self, job: SlurmJob, req: ContainerRequest, folder: Path, said: str, started: bool
    ) -> tuple[str, bool]:
        """A job still in Slurm: its pending reason, or its start; returns (said, started)."""
        if job.state == "PENDING":
            # Slurm shows reason None for a moment at each scheduling pass: keep the last real one
            text = f"PENDING ({job.reason})" if job.reason != "None" else (said or "PENDING")
            if text != said and self.on_waiting is not None:
                self.on_waiting(req, text)
            return text, started
        if job.state in ("RUNNING", "COMPLETING") and not started:
            if self.on_started is not None:
                self.on_started(req, _cid(folder) or f"slurm-{job.slurm_id}")
            return said, True
        return said, started

    def _result(
        self, slurm_id: str, facts: dict[str, Any] | None, job: SlurmJob | None, image: str
    ) -> ContainerResult:
        terminated = self._terminated.get(slurm_id)
        state = job.state if job is not None else "UNKNOWN"
        if facts is None:
            if terminated:
                return ContainerResult(None, None, terminated)
            if state == "TIMEOUT":
                return ContainerResult(None, None, TIMED_OUT, timed_out=True)
            if state in NODE_LOST:
                node = (job.nodes if job is not None else "") or "?"
                why = NODE_FAILURE.format(node=node, slurm_id=slurm_id, state=state)
                return ContainerResult(None, None, why)
            return ContainerResult(None, None, SLURM_ENDED.format(slurm_id=slurm_id, state=state))
        cid = facts.get("container_id")
        if facts.get("pull_failed"):
            return ContainerResult(None, None, CANNOT_PULL.format(image=image))
        if not facts.get("created"):
            why = facts.get("error") or f"{facts.get('exit_code')} from docker run; see the job's log"
            return ContainerResult(None, None, CANNOT_START.format(message=why))
        started, stopped = _epoch(facts.get("started")), _epoch(facts.get("finished"))
        if started is not None and stopped is not None and stopped < started:
            stopped = started
        code = int(facts.get("exit_code", -1))
        oom, timed_out = bool(facts.get("oom_killed")), bool(facts.get("timed_out"))
        if terminated:
            reason = terminated
        elif timed_out or state == "TIMEOUT":
            reason, timed_out = TIMED_OUT, True
        elif oom:
            reason, code = OUT_OF_MEMORY, 137
        elif facts.get("signalled") and state in NODE_LOST:
            node = (job.nodes if job is not None else "") or str(facts.get("node") or "?")
            reason = NODE_FAILURE.format(node=node, slurm_id=slurm_id, state=state)
        elif facts.get("signalled"):
            reason = SIGNALLED.format(state=state)
        else:
            reason = EXITED
        log.info("Slurm job %s ended: exit %s, %s", slurm_id, code, reason)
        return ContainerResult(cid, code, reason, oom, timed_out, started, stopped)


def _size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except FileNotFoundError:
        return 0


def _forgotten(root: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Attempt folders of jobs Slurm accepted (``slurm_job_id`` written): ended, or lost."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            slurm_id = (folder / "slurm_job_id").read_text().strip()
            req = json.loads((folder / "request.json").read_text())
        except (OSError, ValueError):
            continue
        key = (str(req.get("job_id")), str(req.get("attempt")))
        state = "exited" if (folder / "result.json").exists() else "lost"
        labels = {LABEL_JOB: key[0], LABEL_ATTEMPT: key[1]}
        out[key] = {"id": slurm_id, "name": folder.name, "labels": labels, "state": state}
    return out


def _read_result(folder: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((folder / "result.json").read_text()))
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # never half-written (renamed into place); a broken one is re-read


def _cid(folder: Path) -> str | None:
    try:
        return (folder / "cid").read_text().strip() or None
    except FileNotFoundError:
        return None


class _LogCopier:
    """Appends what the job's output file gained to the attempt's log (the shared file is Slurm's)."""

    def __init__(self, source: Path, target: str, skip: int) -> None:
        self.source, self.target, self.offset = source, Path(target), skip

    def copy(self) -> None:
        try:
            with self.source.open("rb") as src:
                src.seek(self.offset)
                chunk = src.read(4 << 20)
        except FileNotFoundError:
            return
        if not chunk:
            return
        self.target.parent.mkdir(parents=True, exist_ok=True)
        with self.target.open("ab") as out:
            out.write(chunk)
        self.offset += len(chunk)
