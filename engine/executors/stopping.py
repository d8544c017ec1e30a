"""How a pool's worker processes end, and why a new pool waits for the last one's.

The staged stop (EOF on stdin, then SIGTERM, then SIGKILL to the worker's process group, so a
handler's children go too) and the barrier: a lock on a file every worker inherits, released
only when the last process of a pool has exited however its engine ended, so a step whose
engine was killed is never retried beside the attempt that still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import time

from engine.executors.workers import Worker, WorkerStartError

log = logging.getLogger("engine.executors.function")

EXIT_GRACE_S = 2.0  #: after closing its stdin, how long a worker gets to exit on its own
TERM_GRACE_S = 1.0  #: after SIGTERM, before SIGKILL
BARRIER_TIMEOUT_S = 10.0  #: how long a new pool waits for the workers of a killed one to be gone


async def wait_for_earlier_pool(path: str) -> int:
    """Lock ``path`` once no process of an earlier pool holds it; answer the descriptor.

    The lock belongs to the open file, which the fork server and every worker inherit, so it
    is released only when the last of them has exited, however the engine ended. Workers
    kill themselves when the engine goes (worker.py), so the wait is normally over at once;
    one that cannot be killed (stuck in the kernel) stops the start rather than be overlapped.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise WorkerStartError(
                    f"function workers of an earlier engine still run (they hold {path}); "
                    f"list them with `fuser -v {path}`, stop them, then start again"
                ) from None
            if not waited:
                log.info("waiting for the function workers of an earlier engine to exit")
                waited = True
            await asyncio.sleep(0.02)
    return fd


async def stop(workers: list[Worker]) -> None:
    """Stop ``workers``: close each one's stdin, wait a little, SIGTERM, wait, SIGKILL."""
    for worker in workers:
        worker.dead = True
        close_stdin(worker)
    pending = await wait_exit(workers, EXIT_GRACE_S)
    if pending:
        log.info("sending SIGTERM to %d function workers", len(pending))
        for worker in pending:
            send(worker, signal.SIGTERM)
        pending = await wait_exit(pending, TERM_GRACE_S)
    if pending:
        log.warning("sending SIGKILL to %d function workers", len(pending))
        for worker in pending:
            send(worker, signal.SIGKILL)
        await wait_exit(pending, None)
    for worker in workers:
        with contextlib.suppress(OSError):
            os.unlink(worker.out)


async def wait_exit(workers: list[Worker], timeout_s: float | None) -> list[Worker]:
    """Wait up to timeout_s for the workers to exit; answer those still running."""
    if not workers:
        return []
    waits = {asyncio.ensure_future(w.proc.wait()): w for w in workers}
    _done, pending = await asyncio.wait(waits, timeout=timeout_s)
    for fut in pending:
        fut.cancel()
    return [waits[fut] for fut in pending]


def send(worker: Worker, sig: signal.Signals) -> None:
    if worker.proc.returncode is None:  # not reaped: the pid (and its group) is still the worker's
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGKILL:  # a worker leads its own group: its handler's children go too
                os.killpg(worker.pid, sig)
            worker.proc.send_signal(sig)


def close_stdin(worker: Worker) -> None:
    stdin = worker.proc.stdin
    if stdin is not None and not stdin.is_closing():
        stdin.close()
