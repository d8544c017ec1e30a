"""Function steps (Lambda-like) in a pool of warm worker processes.

Each worker is a separate Python interpreter running ``engine/executors/worker.py``, so a crash, a
hang or a leak in user code costs one worker, never the engine. Workers are started once and kept
warm: a dispatch is one length-prefixed JSON frame each way over the worker's stdin/stdout pipes,
read and written with asyncio's own pipe transports (no thread per call, nothing blocking the
loop). Why ``asyncio.create_subprocess_exec`` rather than ``multiprocessing``: no fork of a
multi-threaded engine process, no pickling, a worker can run under another interpreter
(``python=``), and the parent keeps direct control of the process to SIGKILL it at a deadline.

Scale-out (Lambda's concurrency model): ``workers`` are started up front and kept warm. When a
call has waited ``scale_after_s`` for a worker and no call has finished for at least that long
(every worker is stuck on a long call), the pool starts another, up to ``max_workers``: steps that
sleep or wait on I/O then run side by side instead of queueing, while a burst of short calls (a
fan-out of trivial steps) drains through the warm workers without paying interpreter starts it
would not need. A worker that the kernel shows asleep (``/proc/<pid>/stat``: a ``time.sleep``, a
socket, a child process) at two probes ``probe_s`` apart, still in the same call, counts as stuck
at once: 20 steps that each sleep 1 s get their workers after ~20 ms instead of ~50 ms. A worker
that computes, or waits for a CPU on a loaded machine, is never taken for asleep.
Workers above ``workers`` that sit idle for ``idle_timeout_s`` are retired. Idle workers are
handed out last-used-first, so the extras are the ones that go idle. Calls that wait are served
by turns of their runs, not first come first served (fairness.py), and workers start with a clean
environment (workers.clean_environ): none of the engine's variables reach a handler.

Starting workers: by default every worker is forked by a fork server (forkserver.py: one process
started once, with the worker module already imported) in ~2 ms, instead of a fresh interpreter
(~15-20 ms of CPU plus imports). That is what makes scale-out cheap: 18 extra workers for sleeping
steps used to cost ~0.25 s on 2 cores. If the fork server cannot start or dies, workers start as
fresh interpreters again (``fork=False`` asks for that from the start).

Guarantees per attempt: a timeout kills the worker (it is replaced), a memory limit is enforced
in the worker with ``RLIMIT_AS`` (a worker that ran out of memory is never reused), a crash is an
``Outcome`` and not an exception, and the handler's stdout/stderr/logging go to ``call.log_path``
(written when the attempt ends, and only if it printed anything; see worker.py).
Functions are at-least-once: an attempt interrupted by an engine restart is retried by the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from engine.executors import stopping
from engine.executors.base import (
    ENGINE_RESTARTED,
    OUT_OF_MEMORY,
    TIMEOUT,
    WORKER_CRASHED,
    FunctionCall,
    Outcome,
    StartHook,
)
from engine.executors.fairness import Turns, reserve_for_others
from engine.executors.forked import ForkServer, ForkServerGone
from engine.executors.worker import scratch_path
from engine.executors.workers import (
    HEADER,
    Worker,
    WorkerProcess,
    WorkerStartError,
    clean_environ,
    describe_exit,
    make_scratch,
    read_frame,
    request_body,
    salvage,
)

log = logging.getLogger(__name__)

WORKER_SCRIPT = str(Path(__file__).with_name("worker.py"))
_START_TIMEOUT_S = 30.0  #: a worker that does not say "ready" by then is broken
_RESPAWN_MAX_DELAY_S = 5.0


class FunctionExecutor:
    """Runs :class:`FunctionCall` attempts in warm worker processes; see the module docstring.

    ``workers`` is the pool size (default: the CPU count, at least 2); ``max_calls_per_worker``
    recycles a worker after that many attempts (leak protection); ``python`` is the interpreter
    the workers run under. ``lock_path`` (the engine gives ``<data dir>/workers.lock``) is a file
    every worker and the fork server hold locked while they live: ``start`` first waits until no
    process of an earlier pool on that path is left, so an attempt interrupted by ``kill -9`` of
    the engine has ended before its retry can start (engine/executors/stopping.py).
    """

    def __init__(
        self,
        *,
        workers: int | None = None,
        max_workers: int | None = None,
        idle_timeout_s: float = 60.0,
        scale_after_s: float = 0.05,
        probe_s: float = 0.01,
        max_calls_per_worker: int | None = None,
        python: str = sys.executable,
        fork: bool = True,
        lock_path: str | os.PathLike[str] | None = None,
    ) -> None:
        size = max(2, os.cpu_count() or 2) if workers is None else workers
        if size < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        ceiling = max(size, 32) if max_workers is None else max_workers
        if ceiling < size:
            raise ValueError(f"max_workers ({max_workers}) must be at least workers ({size})")
        if max_calls_per_worker is not None and max_calls_per_worker < 1:
            raise ValueError(f"max_calls_per_worker must be at least 1, not {max_calls_per_worker}")
        self.size = size
        self.max_workers = ceiling
        self.idle_timeout_s = idle_timeout_s
        self.scale_after_s = scale_after_s
        self.probe_s = min(probe_s, scale_after_s)
        self._last_done = 0.0  #: monotonic time the last call's reply arrived
        self._scaler: asyncio.TimerHandle | None = None
        self._scaler_armed = 0.0
        self.max_calls_per_worker = max_calls_per_worker
        self.python = python
        self.fork = fork  #: start workers by forking a pre-imported server (forkserver.py)
        self._forks: ForkServer | None = None
        self.lock_path = None if lock_path is None else os.fspath(lock_path)
        self._lock_fd: int | None = None  #: held by us, the fork server and every worker
        self._workers: set[Worker] = set()
        self._retired: set[Worker] = set()  #: out of the pool, process not yet reaped
        #: idle workers and the calls waiting for one, served by turns of their runs (fairness.py)
        self._turns: Turns[Worker] = Turns(ceiling - reserve_for_others(ceiling))
        self._limits: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._tasks: set[asyncio.Task[Any]] = set()  #: death watchers, owned here
        self._spawning: set[asyncio.Task[Any]] = set()  #: replacements being started
        self._started = False
        self._closed = False
        self._closed_event = asyncio.Event()
        #: counters; ``_generation`` is bumped by ``recycle`` (an older worker retires after its call)
        self._calls = self._failures = self._timeouts = self._replaced = self._generation = 0
        self._live: dict[str, str] = {}  #: an attempt's log_path -> the scratch file of its worker
        self._scratch: str | None = None  #: the workers' HOME and TMPDIR live here (clean_environ)
        self._environ: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker and return once each has said it is ready."""
        if self._closed:
            raise RuntimeError("FunctionExecutor is closed")
        if self._started:
            return
        if self.lock_path is not None:
            self._lock_fd = await stopping.wait_for_earlier_pool(self.lock_path)
        self._make_scratch()
        if self.fork:
            await self._start_fork_server()
        results = await asyncio.gather(*(self._spawn() for _ in range(self.size)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self._stop_all()
            if self._forks is not None:
                await self._forks.aclose()
            self._unlock()
            self._drop_scratch()
            raise errors[0]
        for worker in results:
            assert isinstance(worker, Worker)
            self._release(worker)
        self._own(self._tasks, self._reap_idle())
        self._last_done = time.monotonic()
        self._started = True
        log.info("function executor started: %d workers (%s)", self.size, self.python)

    async def aclose(self) -> None:
        """Stop the pool: close each worker's stdin, wait a little, SIGTERM, wait, SIGKILL."""
        if self._closed:
            return
        self._closed = True
        self._closed_event.set()
        if self._scaler is not None:
            self._scaler.cancel()
        self._turns.close()  # wakes callers waiting for a worker; they get RuntimeError
        # Let replacements being started finish (bounded by _START_TIMEOUT_S): cancelling one inside
        # create_subprocess_exec could lose a process we never got a handle on.
        await asyncio.gather(*self._spawning, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel("function executor closing")
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stop_all()
        if self._forks is not None:
            await self._forks.aclose()
        self._unlock()
        self._drop_scratch()
        log.info("function executor closed: %s", self.stats)

    def _make_scratch(self) -> None:
        """The folder the workers' HOME and TMPDIR point at, and their clean environment."""
        self._scratch = make_scratch(self.lock_path)
        self._environ = clean_environ(self.python, self._scratch)

    def _drop_scratch(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def _held(self) -> tuple[int, ...]:
        """Descriptors every worker process keeps open (see ``lock_path``)."""
        return () if self._lock_fd is None else (self._lock_fd,)

    async def __aenter__(self) -> FunctionExecutor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _stop_all(self) -> None:
        # retired workers that have not exited yet are stopped (and reaped) here too
        workers = list(self._workers | {w for w in self._retired if w.proc.returncode is None})
        self._workers.clear()
        self._retired.clear()
        await stopping.stop(workers)

    async def _start_fork_server(self) -> None:
        """Start the fork server; without one (it failed to start) workers start as interpreters."""
        forks = ForkServer(self.python, keep_fds=self._held, env=self._environ)
        try:
            await forks.start()
        except OSError as exc:
            log.info("no fork server (%s): function workers start as fresh interpreters", exc)
            return
        self._forks = forks

    def live_output(self, log_path: str) -> str | None:
        """Where a running attempt's output is being written now (its worker's scratch file).

        An attempt's log file is written when it ends; until then this lets ``sluice logs
        --follow`` and the API show what it printed so far. None when it does not run here."""
        return self._live.get(log_path)

    @property
    def fork_server_pid(self) -> int | None:
        """The fork server's pid while it serves (None: workers start as fresh interpreters)."""
        forks = self._forks
        return forks.proc.pid if forks is not None and forks.alive and forks.proc is not None else None

    async def _launch(self) -> WorkerProcess:
        """A new worker process: forked by the fork server, or a fresh interpreter without one."""
        if self._forks is not None and self._forks.alive:
            try:
                return await self._forks.spawn()
            except ForkServerGone as exc:
                log.warning("fork server: %s; starting the worker as a fresh interpreter", exc)
        try:
            return await asyncio.create_subprocess_exec(
                self.python,
                WORKER_SCRIPT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C on the engine's terminal must not hit the workers
                pass_fds=self._held,
                env=self._environ,  # clean: none of the engine's variables, its secrets least of all
            )
        except OSError as exc:
            raise WorkerStartError(f"cannot run function worker with python={self.python!r}: {exc}") from exc

    async def _spawn(self) -> Worker:
        """Start one worker and wait for its ready frame (the second phase of a two-phase start)."""
        proc = await self._launch()
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                hello = await read_frame(proc.stdout)
        except BaseException as exc:
            if proc.returncode is None:
                proc.kill()
            code = await proc.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise WorkerStartError(
                f"function worker ({self.python} {WORKER_SCRIPT}) did not start: "
                f"{describe_exit(proc.pid, code)} ({type(exc).__name__})"
            ) from exc
        if hello.get("ready") is not True:
            proc.kill()
            await proc.wait()
            raise WorkerStartError(f"function worker sent {hello!r} instead of a ready frame")
        out = scratch_path(proc.pid, self._environ["TMPDIR"])
        worker = Worker(proc, out=out, generation=self._generation)
        self._workers.add(worker)
        self._own(self._tasks, self._watch(worker))
        return worker

    @staticmethod
    def _own(tasks: set[asyncio.Task[Any]], coro: Any) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _watch(self, worker: Worker) -> None:
        """Reap the worker when it exits; replace it if it died while idle."""
        code = await worker.proc.wait()
        self._retired.discard(worker)
        if not worker.busy:  # a busy worker's attempt salvages its scratch file itself
            with contextlib.suppress(OSError):
                os.unlink(worker.out)
        if not worker.dead and not worker.busy and not self._closed:
            log.warning("function %s while idle; replacing it", describe_exit(worker.pid, code))
            self._retire(worker, kill=False)

    def _retire(self, worker: Worker, *, kill: bool, replace: bool = True) -> None:
        """Take the worker out of the pool for good and (unless scaling in) start its replacement."""
        if worker.dead:
            return
        worker.dead = True
        self._workers.discard(worker)
        if worker.proc.returncode is None:
            self._retired.add(worker)
        if kill:
            stopping.send(worker, signal.SIGKILL)
        stopping.close_stdin(worker)  # a polite retirement: the worker exits on EOF
        if replace and not self._closed:
            self._replaced += 1
            self._own(self._spawning, self._respawn())

    async def _respawn(self) -> None:
        """Start a replacement, retrying with backoff until it comes up or the pool closes."""
        delay = 0.1
        while not self._closed:
            try:
                worker = await self._spawn()
            except WorkerStartError:
                log.exception("could not start a replacement function worker; retrying in %.1fs", delay)
                await self._closing_or(delay)
                delay = min(delay * 2, _RESPAWN_MAX_DELAY_S)
                continue
            self._release(worker)  # if the pool closed meanwhile, _stop_all stops it
            return

    async def _closing_or(self, delay_s: float) -> None:
        """Sleep for delay_s, but wake as soon as the pool starts closing."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._closed_event.wait()

    # -- dispatch --------------------------------------------------------------------------------

    async def execute(self, call: FunctionCall, hook: StartHook | None = None) -> Outcome:
        """Run one attempt. The step's own failure is an ``Outcome(ok=False)``, never an exception.

        Waits (FIFO) for the handler's concurrency slot, then for an idle worker, by turns of the
        runs waiting (fairness.py); ``hook`` hears when the call begins to wait and when a worker
        takes it. If the awaiting task is cancelled, the worker running the attempt is killed
        and replaced.
        """
        if not self._started or self._closed:
            raise RuntimeError(f"FunctionExecutor is {'closed' if self._closed else 'not started'}")
        if call.concurrency is None:
            return await self._dispatch(call, hook, False)
        sem = self._limit(call)
        queued = sem.locked()
        if queued and hook is not None:
            hook.queued(time.time())
        async with sem:
            return await self._dispatch(call, hook, queued)

    def _limit(self, call: FunctionCall) -> asyncio.Semaphore:
        assert call.concurrency is not None
        if call.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {call.concurrency} ({call.attempt_id})")
        key = (call.base_dir, call.handler, call.concurrency)
        sem = self._limits.get(key)
        if sem is None:
            sem = self._limits[key] = asyncio.Semaphore(call.concurrency)
        return sem

    def _release(self, worker: Worker) -> None:
        worker.idle_since = time.monotonic()
        self._turns.put(worker)

    def _arm_scaler(self) -> None:
        if self._scaler is None and not self._closed:
            self._scaler_armed = time.monotonic()
            self._scaler = asyncio.get_running_loop().call_later(self.probe_s, self._scale_out)

    def _scale_out(self) -> None:
        """While calls wait, every ``probe_s``: start workers for them if the pool is stuck.

        "Stuck": every worker busy with its current call, either asleep at two probes or
        computing (not waiting for a CPU) for ``scale_after_s``, and no reply for as long. Short
        calls free their workers faster than an interpreter starts (even when a busy event loop
        reads their replies late), so a burst of them never grows the pool. One timer for the
        pool, not one per waiting call. The pool grows only for the calls of runs under their
        share of it (fairness.py).
        """
        self._scaler = None
        if self._turns.waiting == 0 or self._closed:
            return
        now = time.monotonic()
        if now - self._scaler_armed > self.probe_s + self.scale_after_s / 2:
            # the timer fired late: the event loop itself is the bottleneck (replies may be waiting
            # unread in the pipes), and more processes would only add to it
            self._arm_scaler()
            return
        starting = len(self._spawning)
        # at most double the pool per step: a cold start (the first call importing its module)
        # is over before a herd of interpreters, all importing it too, would be ready
        room = min(
            self._turns.growth() - starting,  # not for a run that holds its share of the pool
            self.max_workers - len(self._workers) - starting,
            len(self._workers) - starting,
        )
        quiet = now - self._last_done
        long_enough = quiet >= self.scale_after_s
        stuck = quiet >= self.probe_s and all(
            [  # a list, not a generator: every busy worker is probed, so each sighting counts
                w.busy
                and (
                    w.asleep_twice()
                    or (long_enough and now - w.busy_since >= self.scale_after_s and w.computing(now))
                )
                for w in self._workers
            ]
        )
        if stuck:
            for _ in range(max(0, room)):
                self._own(self._spawning, self._respawn())
        self._arm_scaler()

    async def _reap_idle(self) -> None:
        """Retire workers above ``workers`` that have been idle for ``idle_timeout_s`` (scale in)."""
        while True:
            await asyncio.sleep(max(1.0, self.idle_timeout_s / 4))
            excess = len(self._workers) - self.size
            free = self._turns.free
            if excess <= 0 or not free:
                continue
            now = time.monotonic()
            stale = [w for w in free if now - w.idle_since > self.idle_timeout_s][:excess]
            free[:] = [w for w in free if w not in stale]  # in one loop step: no waiter sees a gap
            for worker in stale:
                self._retire(worker, kill=False, replace=False)
            if stale:
                log.info(
                    "scaled in: retired %d idle function workers (%d left)", len(stale), len(self._workers)
                )

    def recycle(self) -> None:
        """Replace every worker (idle now, busy after its call): each imported handlers once."""
        self._generation += 1
        while self._turns.free:
            self._retire(self._turns.free.pop(), kill=False)

    async def _acquire(self, share: str, hook: StartHook | None, queued: bool) -> Worker:
        while True:
            worker = self._turns.take(share)
            if worker is None:
                if hook is not None and not queued:
                    hook.queued(time.time())
                    queued = True
                self._arm_scaler()
                worker = await self._turns.wait(share)
            if worker.alive():
                return worker
            self._turns.give_back(share, None)  # dead while idle: its watcher replaces it

    async def _dispatch(self, call: FunctionCall, hook: StartHook | None, queued: bool) -> Outcome:
        share = call.run_id
        worker = await self._acquire(share, hook, queued)
        try:
            if hook is not None:
                hook.taken(time.time())
            data = json.dumps(request_body(call), allow_nan=False).encode()  # its deadline starts now
        except BaseException as exc:
            self._turns.give_back(share, worker)
            if isinstance(exc, TypeError | ValueError):  # the engine rendered a non-JSON event: its bug
                raise ValueError(f"the event or extra of {call.attempt_id} is not JSON: {exc}") from exc
            raise
        worker.busy = True
        worker.busy_since = time.monotonic()
        worker.calls += 1
        self._calls += 1
        started = time.perf_counter()
        live = call.log_path  # as the store has it: the API looks attempts up by it
        if live is not None:
            self._live[live] = worker.out
        try:
            outcome = await self._roundtrip(worker, call, data, started)
        except BaseException:  # cancelled, or a bug: the worker's state is unknown, so kill it
            worker.busy = False  # its watcher then drops the scratch file once it has exited
            self._retire(worker, kill=True)
            raise
        finally:
            if live is not None:
                self._live.pop(live, None)
            worker.idle_since = time.monotonic()
            self._turns.give_back(share, None if worker.dead else worker)
        if not outcome.ok:
            self._failures += 1
        return outcome

    async def _roundtrip(self, worker: Worker, call: FunctionCall, data: bytes, started: float) -> Outcome:
        stdin, stdout = worker.proc.stdin, worker.proc.stdout
        assert stdin is not None and stdout is not None
        try:
            async with asyncio.timeout(call.timeout_s):
                stdin.write(HEADER.pack(len(data)) + data)
                await stdin.drain()
                reply = await read_frame(stdout)
        except TimeoutError:
            self._timeouts += 1
            salvage(worker, call)  # what it printed before it hung is the best clue
            self._retire(worker, kill=True)
            log.info("function attempt %s timed out after %ss", call.attempt_id, call.timeout_s)
            message = f"Task timed out after {call.timeout_s:.2f} seconds"
            return self._failed(call, started, TIMEOUT, message)
        except (asyncio.IncompleteReadError, ConnectionError):
            return await self._crashed(worker, call, started)
        duration = time.perf_counter() - started
        worker.busy = False
        self._last_done = time.monotonic()
        limit, stale = self.max_calls_per_worker, worker.generation < self._generation  # recycled
        if reply.get("retire") or stale or (limit is not None and worker.calls >= limit):
            self._retire(worker, kill=False)  # else the caller gives it back to the pool
        if reply.get("ok"):
            return Outcome(ok=True, output=reply.get("output"), duration_s=duration, log_path=call.log_path)
        return Outcome(ok=False, error=reply.get("error"), duration_s=duration, log_path=call.log_path)

    async def _crashed(self, worker: Worker, call: FunctionCall, started: float) -> Outcome:
        """The worker closed its pipe mid-attempt: find out how it died, then replace it."""
        try:
            async with asyncio.timeout(stopping.EXIT_GRACE_S):
                code: int | None = await worker.proc.wait()
        except TimeoutError:
            code = None
        salvage(worker, call)
        self._retire(worker, kill=True)
        how = describe_exit(worker.pid, code)
        log.warning("function attempt %s: %s", call.attempt_id, how)
        if self._closed:  # aclose stopped it: the step did nothing wrong, so say so (it is retried)
            message = f"the executor shut down during the attempt ({how})"
            return self._failed(call, started, ENGINE_RESTARTED, message)
        if call.memory_bytes and code in (-signal.SIGKILL, -signal.SIGABRT):
            # RLIMIT_AS failures in C code abort, the kernel's OOM killer sends SIGKILL
            limit = call.memory_bytes / (1024 * 1024)
            return self._failed(call, started, OUT_OF_MEMORY, f"{how} while limited to {limit:.0f} MiB")
        return self._failed(call, started, WORKER_CRASHED, f"{how} during the attempt")

    @staticmethod
    def _failed(call: FunctionCall, started: float, error_type: str, message: str) -> Outcome:
        error = {"errorType": error_type, "errorMessage": message, "stackTrace": []}
        return Outcome(
            ok=False, error=error, duration_s=time.perf_counter() - started, log_path=call.log_path
        )

    # -- introspection ---------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """Counters since start: calls, failures (timeouts included), timeouts, workers_replaced."""
        return {
            "calls": self._calls,
            "failures": self._failures,
            "timeouts": self._timeouts,
            "workers_replaced": self._replaced,
        }

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """The live workers' process ids (for operators and tests)."""
        return tuple(sorted(w.pid for w in self._workers if w.alive()))

    def pool(self) -> dict[str, int]:
        """The pool's size and load now (``/metrics``)."""
        busy = sum(1 for w in self._workers if w.busy)
        return {
            "size": self.size,
            "max": self.max_workers,
            "workers": len(self._workers),
            "busy": busy,
            "waiting": self._turns.waiting,
        }

    def __repr__(self) -> str:
        busy = sum(1 for w in self._workers if w.busy)
        state = "closed" if self._closed else "running" if self._started else "new"
        return (
            f"<FunctionExecutor {state} workers={len(self._workers)} ({self.size}..{self.max_workers}) "
            f"busy={busy} calls={self._calls} failures={self._failures} timeouts={self._timeouts} "
            f"replaced={self._replaced}>"
        )
