"""The pool's handle on one worker process: what it knows of it and what the kernel says of it.

A worker is either an ``asyncio.subprocess.Process`` (a fresh interpreter) or a
``ForkedProcess`` (forked by the fork server); the pool uses only :class:`WorkerProcess` of
either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import struct
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Protocol

from engine.executors.base import FunctionCall
from engine.executors.worker import copy_output

log = logging.getLogger(__name__)

#: every frame on a worker's pipes: a 4-byte big-endian length, then that much JSON
HEADER = struct.Struct(">I")


#: the kernel's clock ticks per second, the unit of utime and stime in /proc/<pid>/stat
TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :]  # what follows the command name, which may hold ") "


#: engine variables a worker keeps (when the engine has them): locale and zone, and the import
#: path the loader resolved installed handler modules with. Nothing else of the engine's
#: environment reaches a handler: its secrets, tokens and settings stay in the engine process.
KEPT = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


def clean_environ(python: str, scratch: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every function worker starts with (the fork server's too).

    A safe ``PATH`` (the worker's interpreter folder first, as Lambda puts its runtime's),
    ``HOME`` and ``TMPDIR`` in the pool's ``scratch`` folder, ``LANG`` (``C.UTF-8`` unless the
    engine has one) and the :data:`KEPT` variables. A step's ``env:`` and the Lambda-like
    variables are added per call by the worker (worker.py), as the pool is shared by every step.
    """
    env = os.environ if environ is None else environ
    kept = {name: env[name] for name in KEPT if env.get(name)}
    bin_dir = os.path.dirname(os.path.abspath(python))
    return {
        "PATH": f"{bin_dir}:{SAFE_PATH}" if bin_dir not in SAFE_PATH.split(":") else SAFE_PATH,
        "LANG": "C.UTF-8",
        **kept,
        "HOME": os.path.join(scratch, "home"),
        "TMPDIR": os.path.join(scratch, "tmp"),
    }


def make_scratch(lock_path: str | None) -> str:
    """The pool's scratch folder (``home`` and ``tmp`` for its workers' HOME and TMPDIR).

    Beside ``lock_path`` (``<data dir>/functions``) when there is one: an earlier pool's workers
    are gone by then (the pool waited for them), so what a killed engine left there is removed;
    else a temporary folder."""
    if lock_path is None:
        folder = tempfile.mkdtemp(prefix="sluice-functions-")
    else:
        folder = os.path.join(os.path.dirname(os.path.abspath(lock_path)), "functions")
        shutil.rmtree(folder, ignore_errors=True)
        os.mkdir(folder, 0o700)
    for sub in ("home", "tmp"):
        os.mkdir(os.path.join(folder, sub), 0o700)
    return folder


class WorkerStartError(RuntimeError):
    """A worker process did not come up; the message says what it printed or how it exited."""


def asleep(pid: int) -> bool:
    """The process sleeps in the kernel (state S or D), i.e. it neither runs nor waits for a CPU.

    False where ``/proc`` is missing (not Linux): the pool then scales out on time alone.
    """
    stat = _stat(pid)
    return stat is not None and stat[:1] in (b"S", b"D")


def cpu_seconds(pid: int) -> float | None:
    """CPU time the process has used (user + system), or None where ``/proc`` cannot tell."""
    stat = _stat(pid)
    if stat is None:
        return None
    fields = stat.split()
    try:  # after the state: ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        return (int(fields[11]) + int(fields[12])) / TICKS_PER_S
    except (IndexError, ValueError):
        return None


def describe_exit(pid: int, returncode: int | None) -> str:
    if returncode is None:
        return f"worker {pid} stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"worker {pid} was killed by signal {name}"
    return f"worker {pid} exited with code {returncode}"


class WorkerProcess(Protocol):
    """What the pool uses of a worker process: ``asyncio.subprocess.Process`` or ``ForkedProcess``."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    @property
    def stdin(self) -> asyncio.StreamWriter | None: ...

    @property
    def stdout(self) -> asyncio.StreamReader | None: ...

    async def wait(self) -> int: ...

    def kill(self) -> None: ...

    def send_signal(self, sig: int) -> None: ...


@dataclass(eq=False, slots=True)
class Worker:
    """One worker process and what the pool knows about it."""

    proc: WorkerProcess
    out: str = ""  #: its scratch file: the output of the attempt it runs (worker.scratch_path)
    calls: int = 0
    busy: bool = False
    idle_since: float = 0.0  #: monotonic time it was last put back idle
    busy_since: float = 0.0  #: monotonic time its current call started
    asleep_in: float | None = None  #: the busy_since of the call the last probe saw it asleep in
    #: (busy_since, monotonic time, CPU seconds) at the first probe that saw the current call
    cpu_mark: tuple[float, float, float] | None = None
    dead: bool = False  #: retired by the pool: never handed out again
    generation: int = 0  #: the pool's generation it was started in (FunctionExecutor.recycle)

    def asleep_twice(self) -> bool:
        """Asleep in the kernel now and at the previous probe, in the same call.

        Two sightings, not one: a worker that has just replied is asleep too (reading its next
        request) until the loop reads that reply, which takes at most a loop turn, not a probe.
        """
        if not asleep(self.pid) or self.replied():
            self.asleep_in = None
            return False
        seen, self.asleep_in = self.asleep_in, self.busy_since
        return seen == self.busy_since

    def computing(self, now: float) -> bool:
        """Used a CPU for at least a quarter of the time the probes have watched its current call.

        A call that runs past ``scale_after_s`` earns the waiting calls a new worker only if it
        computes: a worker that waits for a CPU on a loaded machine is not stuck, and another
        interpreter would only lengthen the queue for the CPU. Where ``/proc`` cannot tell, time
        alone decides (True).
        """
        used = cpu_seconds(self.pid)
        if used is None:
            return True
        mark = self.cpu_mark
        if mark is None or mark[0] != self.busy_since:
            self.cpu_mark = (self.busy_since, now, used)
            return False
        watched = now - mark[1]
        return watched > 0 and (used - mark[2]) >= watched / 4

    def replied(self) -> bool:
        """Its reply has reached us and waits in the reader for the loop to take it.

        On a loaded machine the loop can run a probe in the very iteration in which the reply
        arrived (I/O callbacks run before due timers, the reading task only on the next turn):
        the worker then sleeps reading its next request and looks stuck although it is done.
        """
        buffered = getattr(self.proc.stdout, "_buffer", None)  # StreamReader's own; no public view
        return bool(buffered)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return not self.dead and self.proc.returncode is None


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    header = await reader.readexactly(HEADER.size)
    return json.loads(await reader.readexactly(HEADER.unpack(header)[0]))


def request_body(call: FunctionCall) -> dict[str, Any]:
    """The request frame's body. Paths are made absolute here: the worker's cwd is not ours."""
    return {
        "attempt_id": call.attempt_id,
        "handler": call.handler,
        "base_dir": os.path.abspath(call.base_dir),
        "event": call.event,
        "run_id": call.run_id,
        "step": call.step,
        "attempt": call.attempt,
        "index": call.index,
        "deadline": None if call.timeout_s is None else time.time() + call.timeout_s,
        "memory_bytes": call.memory_bytes,
        "log_path": None if call.log_path is None else os.path.abspath(call.log_path),
        "extra": call.extra,
        "env": call.env,
        "api": call.api,
    }


def salvage(worker: Worker, call: FunctionCall) -> None:
    """Copy a killed or crashed attempt's output from the worker's scratch file, then drop it."""
    try:
        if call.log_path:
            fd = os.open(worker.out, os.O_RDONLY)
            try:
                copy_output(fd, os.path.abspath(call.log_path))
            finally:
                os.close(fd)
        os.unlink(worker.out)
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError):
            log.warning("could not keep the output of %s: %s", call.attempt_id, exc)
