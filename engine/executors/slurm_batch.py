#!/usr/bin/env python3
"""The batch script Sluice hands to ``sbatch``: run one attempt's container on the node.

``sbatch`` copies this file as it is; its one argument is the attempt's folder in the shared
directory, where Sluice wrote ``request.json``. Nothing of the job is ever spliced into a shell
string: the container's argv comes from the JSON, the environment values reach ``docker run``
through its own environment (``-e NAME`` without a value).

Standard library only, and no import of Sluice: a node needs ``python3`` and the container
runtime (``docker`` or ``podman``), not Sluice.

What it leaves in the folder: ``cid`` (the container id, from ``--cidfile``) once the container
exists, and ``result.json`` (written atomically) once it has ended: the facts of the end, which
Sluice turns into Batch's outcome. SIGTERM (``scancel``, Slurm's time limit, preemption) stops
the container politely (``stop_grace_s``, then SIGKILL) before the result is written; the
container runs under the runtime's daemon, not under this process, so it would outlive a
script that just died. The attempt's own timeout is enforced here, to the second.

With ``runtime: podman`` the container is ``podman create``-d, ``podman init``-ed (its cgroup
exists, its command does not run yet), watched for OOM kills, then ``podman start --attach``-ed:
Podman before 5.0 never sets ``State.OOMKilled``, so the script counts the kernel's OOM events
in the container's memory cgroup itself, as the Podman compute environment does
(``engine/executors/cgroup_oom.py``; this copy is stdlib-only and uses a thread).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

_signalled: list[int] = []
#: variables the runtime's own CLI reads: these go as ``-e NAME=VALUE`` so the job cannot steer it
_CLI_OWN = ("PATH", "HOME", "DOCKER_", "CONTAINER_", "CONTAINERS_", "XDG_", "TMPDIR")


def _on_signal(signum: int, _frame: Any) -> None:
    _signalled.append(signum)


def _docker_args(req: dict[str, Any], name: str, cidfile: Path) -> list[str]:
    runtime = req.get("runtime") or "docker"
    memory = f"{int(req['memory_bytes'])}b"
    argv = [runtime, "run", "--pull=never", "--name", name, "--cidfile", str(cidfile)]
    argv += ["--cpus", f"{float(req['vcpus']):g}", "--memory", memory, "--memory-swap", memory]
    for key, value in req.get("labels", {}).items():
        argv += ["--label", f"{key}={value}"]
    for key, value in req.get("env", {}).items():
        argv += ["-e", f"{key}={value}" if key.startswith(_CLI_OWN) else key]
    for host, container, read_only in req.get("volumes", []):
        argv += ["-v", f"{host}:{container}:{'ro' if read_only else 'rw'}"]
    if req.get("network"):
        argv += ["--network", req["network"]]
    if req.get("working_dir"):
        argv += ["-w", req["working_dir"]]
    if req.get("user"):
        argv += ["-u", req["user"]]
    argv.append(req["image"])
    if req.get("command") is not None:
        argv += [str(a) for a in req["command"]]
    return argv


class _OomWatch:
    """OOM events of one container's memory cgroup, counted by a thread until the cgroup goes."""

    def __init__(self, pid: int, container_id: str) -> None:
        self.events = 0
        self._fd = self._event = -1
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return
        for line in lines:  # v1's memory line comes before a hybrid host's unified "0::" one
            _, controllers, path = line.split(":", 2)
            if container_id[:12] in path and "memory" in controllers.split(","):
                return self._open(Path("/sys/fs/cgroup/memory") / path.lstrip("/"))
            if container_id[:12] in path and controllers == "":
                return self._open(Path("/sys/fs/cgroup") / path.lstrip("/"), v2=True)

    def _open(self, folder: Path, v2: bool = False) -> None:
        try:
            self._fd = os.open(folder / ("memory.events" if v2 else "memory.oom_control"), os.O_RDONLY)
            if not v2:
                self._event = os.eventfd(0)
                (folder / "cgroup.event_control").write_text(f"{self._event} {self._fd}")
        except (OSError, AttributeError):  # no cgroup here, or a Python without os.eventfd
            return
        self._read()
        threading.Thread(target=self._follow, daemon=True).start()

    def _read(self) -> bool:
        try:
            text = os.pread(self._fd, 4096, 0).decode()
        except OSError:
            return False  # the cgroup is gone
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key in ("oom", "oom_kill") and value.strip().isdigit():
                self.events = max(self.events, int(value))
        return True

    def _follow(self) -> None:
        signals = 0
        while True:
            if self._event >= 0:
                select.select([self._event], [], [])
                got = int.from_bytes(os.read(self._event, 8), "little")
                alive = self._read()
                # a signal while the cgroup can be read is an OOM; its removal signals once
                signals += got if alive else got - 1
                self.events = max(self.events, signals)
            else:
                time.sleep(0.1)
                alive = self._read()
            if not alive:
                return

    def seen(self) -> bool:
        if self._fd >= 0:
            self._read()
        return self.events > 0


def _quiet(argv: list[str], timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)


def _pull(runtime: str, image: str, pull_timeout_s: float) -> bool:
    try:
        return _quiet([runtime, "pull", image], pull_timeout_s).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _stop(runtime: str, name: str, grace: str) -> None:
    # quiet: the job's output is the container's (podman warns on stderr when it has to SIGKILL)
    subprocess.Popen(
        [runtime, "stop", "-t", grace, name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _watch(
    proc: subprocess.Popen[bytes], runtime: str, name: str, grace: str, deadline: float | None
) -> tuple[int, bool]:
    """Wait for ``docker run`` to end; past the deadline or on a signal, stop the container."""
    stopping = timed_out = False
    while proc.poll() is None:
        if not stopping and deadline is not None and time.monotonic() >= deadline:
            timed_out = stopping = True
            _stop(runtime, name, grace)
        elif not stopping and _signalled:
            stopping = True
            _stop(runtime, name, grace)
        time.sleep(0.1)
    return proc.returncode, timed_out


def remove(runtime: str, name: str, tries: int = 3) -> bool:
    """Remove the job's container, asking again if a signal killed the runtime's CLI meanwhile.

    The engine takes the result as soon as ``result.json`` is there, while this script is still
    removing the container; an ``scancel`` then (an operator's, a test's teardown) sends SIGTERM to
    every process of the job, and ``docker``/``podman`` (Go programs) die of it, leaving the
    container behind. This script only records the signal, so it can ask again: Slurm sends
    SIGTERM once and SIGKILL only ``KillWait`` later."""
    for _ in range(tries):
        try:
            if _quiet([runtime, "rm", "-f", name]).returncode >= 0:  # ended by itself: done or gone
                return True
        except subprocess.TimeoutExpired:
            continue
    return False


def _write_result(folder: Path, result: dict[str, Any]) -> None:
    tmp = folder / "result.json.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, folder / "result.json")


def _start(
    argv: list[str], env: dict[str, str], runtime: str, name: str, watches: list[_OomWatch]
) -> subprocess.Popen[bytes] | int:
    """The process to follow until the container ends, or the runtime's exit code if none started."""
    if runtime != "podman":
        return subprocess.Popen(argv, env=env)
    made = subprocess.run(["podman", "create", *argv[2:]], env=env, stdout=subprocess.DEVNULL, check=False)
    if made.returncode != 0:
        return made.returncode
    if _quiet(["podman", "init", name]).returncode == 0:
        shown = _quiet(["podman", "inspect", "--format", "{{.State.Pid}} {{.Id}}", name])
        pid, _, cid = shown.stdout.strip().partition(" ")
        if shown.returncode == 0 and pid.isdigit():
            watches.append(_OomWatch(int(pid), cid))
    return subprocess.Popen(["podman", "start", "--attach", name], env=env)


def _follow(
    started: subprocess.Popen[bytes] | int, runtime: str, name: str, grace: str, deadline: float | None
) -> tuple[int, bool]:
    if isinstance(started, int):
        return started, False
    return _watch(started, runtime, name, grace, deadline)


def _run(folder: Path, req: dict[str, Any]) -> dict[str, Any]:
    runtime = req.get("runtime") or "docker"
    slurm_id = os.environ.get("SLURM_JOB_ID", "")
    result: dict[str, Any] = {"slurm_job_id": slurm_id, "node": os.environ.get("SLURMD_NODENAME")}
    env = {**os.environ, **{k: str(v) for k, v in req.get("env", {}).items() if not k.startswith(_CLI_OWN)}}
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    if req.get("array") and task is not None:
        env["SLUICE_ARRAY_INDEX"] = env["AWS_BATCH_JOB_ARRAY_INDEX"] = task
        req["env"] = {**req.get("env", {}), "SLUICE_ARRAY_INDEX": task, "AWS_BATCH_JOB_ARRAY_INDEX": task}
    name = f"{req['name']}-s{slurm_id}"
    cidfile = folder / "cid"
    cidfile.unlink(missing_ok=True)
    grace = str(int(max(1, round(float(req.get("stop_grace_s") or 10)))))
    timeout_s = req.get("timeout_s")
    argv = _docker_args(req, name, cidfile)
    deadline = None if timeout_s is None else time.monotonic() + float(timeout_s)
    watches: list[_OomWatch] = []
    code, timed_out = _follow(_start(argv, env, runtime, name, watches), runtime, name, grace, deadline)
    missing = code == 125 and not cidfile.exists() and not _signalled  # nothing was created
    if missing and _quiet([runtime, "image", "inspect", req["image"]]).returncode != 0:
        if not _pull(runtime, req["image"], float(req.get("pull_timeout_s") or 60)):
            return {**result, "pull_failed": True}
        started = _start(argv, env, runtime, name, watches)
        code, timed_out = _follow(started, runtime, name, grace, deadline)
    state: dict[str, Any] = {}
    shown = _quiet([runtime, "inspect", "--format", "{{json .State}}", name])
    if shown.returncode == 0:
        state = json.loads(shown.stdout)
    result.update(
        container_id=cidfile.read_text().strip() if cidfile.exists() else None,
        created=shown.returncode == 0,
        exit_code=state.get("ExitCode", code),
        oom_killed=bool(state.get("OOMKilled")) or any(w.seen() for w in watches),
        started=state.get("StartedAt"),
        finished=state.get("FinishedAt"),
        error=state.get("Error") or None,
        timed_out=timed_out,
        signalled=bool(_signalled) and not timed_out,
    )
    return result


def main() -> int:
    # slurmrestd passes no arguments: the folder comes in the job's environment then
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ["SLUICE_ATTEMPT_FOLDER"])
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    if task is not None and not (folder / "request.json").exists():
        folder = folder / task  # an array's folder: one link per task to the child's own folder
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, _on_signal)
    req = json.loads((folder / "request.json").read_text())
    result = _run(folder, req)
    _write_result(folder, result)  # before the container goes: the result is never lost
    if result.get("created"):
        remove(req.get("runtime") or "docker", f"{req['name']}-s{result['slurm_job_id']}")
    code = result.get("exit_code")
    return code if isinstance(code, int) and 0 <= code < 256 else 1


if __name__ == "__main__":
    sys.exit(main())
