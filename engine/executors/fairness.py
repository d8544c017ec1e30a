"""Who gets the next free function worker: the runs that wait take turns.

A first-come queue let one run's fan-out (hundreds of items waiting) sit in front of every other
run: a 2 ms step of another run waited for a long item to end. Here the calls that wait are kept
per *share* (the pool uses the run id) and a free worker goes to the share whose turn it is, one
call per turn, in the order the shares began waiting (round-robin, every run with the same
weight); inside a share calls keep their order.

Turns alone do not help when every worker is busy with one run's long items: nothing frees up.
So one run may hold at most ``cap`` workers before the others are served (``max_workers`` less a
reserve, see :func:`reserve_for_others`): the pool grows for a share only while it holds fewer,
and a share at its cap is served only when no share under it waits. A run alone still uses every
warm worker; it only cannot grow the pool into the reserve. This is Lambda's unreserved
concurrency (an account keeps 100 of its concurrency for functions without a reservation) for
runs sharing one pool.

Free workers are handed out last-used-first, so the workers above the pool's size are the ones
that go idle and are retired.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

W = TypeVar("W")


def reserve_for_others(max_workers: int) -> int:
    """Workers of a full pool one run may not hold: a quarter (none in a pool of fewer than 4)."""
    return max_workers // 4


class Turns(Generic[W]):
    """Free workers, and the calls waiting for one, served by turns of their shares."""

    def __init__(self, cap: int) -> None:
        self.cap = cap  #: workers one share may hold before the others come first
        self.free: list[W] = []  #: idle workers; the last one is the most recently used
        self.held: dict[str, int] = {}  #: share -> workers its calls hold now
        self._shares: dict[str, deque[asyncio.Future[W | None]]] = {}  #: in turn order
        self.waiting = 0  #: calls waiting for a worker
        self.closed = False

    def take(self, share: str) -> W | None:
        """A free worker for a call of ``share`` now, if one is free (None: wait with :meth:`wait`)."""
        if not self.free:
            return None
        worker = self.free.pop()
        self.held[share] = self.held.get(share, 0) + 1
        return worker

    async def wait(self, share: str) -> W:
        """Wait for this call's turn. RuntimeError once the pool closes."""
        if self.closed:
            raise RuntimeError("FunctionExecutor closed while the call waited for a worker")
        fut: asyncio.Future[W | None] = asyncio.get_running_loop().create_future()
        self._shares.setdefault(share, deque()).append(fut)
        self.waiting += 1
        try:
            worker = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result() is not None:
                self.give_back(share, fut.result())  # handed over just as we were cancelled
            else:
                self._forget(share, fut)
            raise
        if worker is None:
            raise RuntimeError("FunctionExecutor closed while the call waited for a worker")
        return worker

    def _forget(self, share: str, fut: asyncio.Future[W | None]) -> None:
        queue = self._shares.get(share)
        if queue is not None and fut in queue:
            queue.remove(fut)
            self.waiting -= 1
            if not queue:
                del self._shares[share]

    def give_back(self, share: str, worker: W | None) -> None:
        """A call of ``share`` is done with ``worker`` (None: it is gone, not to be reused)."""
        count = self.held.get(share, 0) - 1
        if count > 0:
            self.held[share] = count
        else:
            self.held.pop(share, None)
        if worker is not None:
            self.put(worker)

    def put(self, worker: W) -> None:
        """A worker is free: to the call whose turn it is, or to the free list."""
        while not self.closed:
            share = self._next_share()
            if share is None:
                break
            queue = self._shares.pop(share)
            fut = queue.popleft()
            self.waiting -= 1
            if queue:
                self._shares[share] = queue  # to the back of the line
            if fut.done():  # cancelled; its task has not run its handler yet
                continue
            self.held[share] = self.held.get(share, 0) + 1
            fut.set_result(worker)
            return
        self.free.append(worker)

    def _next_share(self) -> str | None:
        """The first share in turn order under its cap, else the first one (None: nobody waits)."""
        first = None
        for share in self._shares:
            if self.held.get(share, 0) < self.cap:
                return share
            first = first or share
        return first

    def growth(self) -> int:
        """Waiting calls the pool may start new workers for: those of shares under their cap."""
        return sum(
            min(len(queue), max(0, self.cap - self.held.get(share, 0)))
            for share, queue in self._shares.items()
        )

    def close(self) -> None:
        """Every waiting call gets RuntimeError; later calls too."""
        self.closed = True
        for queue in self._shares.values():
            for fut in queue:
                if not fut.done():
                    fut.set_result(None)
        self._shares.clear()
        self.waiting = 0
