"""The sender: delivers the outbox (engine/notify/outbox.py) to subscribers, signed and retried.

Delivery is at least once. Each subscriber has its own lane (an asyncio task)
with its own concurrency and optional rate limit; a lane reads its due rows in
outbox order, POSTs them, and records the outcome: delivered, retry later
(exponential backoff with full jitter, or the receiver's ``Retry-After``), or
dead-lettered (a 4xx other than 408/429, too many attempts, too old).

Ordering: rows *start* in outbox order. With ``concurrency > 1`` they may
finish out of order, and a row waiting for its retry does not hold back later
rows — unless the subscriber sets ``ordered: true``, which makes the lane send
one row at a time, head of line first (strict order; a failing head blocks the
queue until it is delivered or dead-lettered).

Signing (Stripe style): ``Sluice-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>``;
see docs/events.md for the receiver's side. Secrets live only in memory: never
in rows, logs, events or API answers (the dataclasses hide them from ``repr``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from engine.events import NOTIFY_SOURCE, SUBSCRIBER_DETAIL_TYPE, envelope
from engine.notify import outbox
from engine.notify.outbox import Outbox
from engine.notify.subscribers import BACKOFF_BASE_S, BACKOFF_CAP_S, Subscriber, safe_url, sign
from engine.store.store import Store

log = logging.getLogger(__name__)

POLL_S = 5.0  #: an idle lane re-reads its queue this often (a safety net; wakes are pushed)
RECOUNT_S = 5.0  #: the backlog per subscriber is recounted from the table this often

#: puts an event on the bus (``Bus.put``)
Publish = Callable[[dict[str, Any]], Awaitable[Any]]


def backoff_s(
    attempts: int, rng: random.Random, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S
) -> float:
    """Exponential backoff with full jitter (AWS Architecture Blog): uniform(0, min(cap, base * 2^n))."""
    return rng.uniform(0.0, min(cap_s, base_s * 2 ** max(0, attempts - 1)))


def retry_after_s(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


# --- the sender -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Result:
    status: int | None
    error: str | None
    retry_after_s: float | None = None


class _Bucket:
    """A token bucket: at most ``rate`` sends per second, bursts of one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = max(1.0, rate)
        self.at = time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self.tokens) / self.rate)


class Lane:
    """One subscriber's queue: reads due rows in order, sends up to ``concurrency`` at once."""

    def __init__(self, service: NotifyService, sub: Subscriber) -> None:
        self.s = service
        self.sub = sub
        self.known = 0  #: highest outbox seq this lane has seen in the store
        self.wake = asyncio.Event()
        self.inflight: dict[int, asyncio.Task[None]] = {}
        self.slots = asyncio.Semaphore(1 if sub.ordered else max(1, sub.concurrency))
        self.bucket = _Bucket(sub.rate_per_s) if sub.rate_per_s else None
        self.rng = random.Random()

    async def run(self) -> None:
        try:
            while True:
                self.wake.clear()
                # The in-flight set is taken here, on the loop, *before* the read's snapshot: a delivery
                # that finishes after this point is still excluded (and wakes us again), while one that
                # finished before it has already committed its outcome, so the snapshot shows it. Taken
                # inside the read, a delivery finishing between snapshot and check was sent twice.
                busy = tuple(self.inflight)
                rows, known, next_at = await self.s.store.read(functools.partial(self._fetch, busy=busy))
                self.known = max(self.known, known)
                for row in rows:
                    await self.slots.acquire()
                    if self.bucket is not None:
                        await self.bucket.take()
                    task = asyncio.create_task(
                        self._deliver(row), name=f"notify {self.sub.key} #{row['seq']}"
                    )
                    self.inflight[row["seq"]] = task
                    task.add_done_callback(functools.partial(self._done, row["seq"]))
                if rows and not self.sub.ordered:
                    continue
                delay = POLL_S if next_at is None else max(0.0, min(POLL_S, next_at - self.s.clock()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.wake.wait()
        finally:
            for task in self.inflight.values():
                task.cancel(msg="notification sender stopping")
            if self.inflight:
                await asyncio.gather(*self.inflight.values(), return_exceptions=True)

    def _done(self, seq: int, _task: asyncio.Task[None] | None = None) -> None:
        self.inflight.pop(seq, None)
        self.slots.release()
        self.wake.set()

    def _fetch(
        self, conn: sqlite3.Connection, busy: tuple[int, ...]
    ) -> tuple[list[sqlite3.Row], int, float | None]:
        return outbox.due(conn, self.sub, self.s.clock(), busy)

    async def _deliver(self, row: sqlite3.Row) -> None:
        try:
            result = await self.s.post(self.sub, row["event_id"], row["body"].encode())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one delivery's failure is recorded, never the lane's end
            text = f"{type(exc).__name__}: {exc}".replace(self.sub.url, safe_url(self.sub.url))
            result = _Result(None, text)
        await self.s.record(self.sub, row, result, self.rng)


class NotifyService:
    """The Engine service that drains the outbox. ``start`` opens the HTTP client; ``run`` the lanes."""

    name = "notifications"

    def __init__(
        self,
        store: Store,
        outbox: Outbox,
        *,
        publish: Publish | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.publish = publish  #: puts the sender's own events (a subscriber paused or resumed) on the bus
        self.clock = clock
        self._published: set[asyncio.Task[Any]] = set()
        self.lanes: dict[str, Lane] = {}
        #: each lane's task while running (a TaskGroup ignores a child cancelled on its own)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False
        self.session: aiohttp.ClientSession | None = None
        self.delivered = 0
        self.dead = 0

    @property
    def subscribers(self) -> list[Subscriber]:
        return self.outbox.subscribers

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.lanes = {sub.key: Lane(self, sub) for sub in self.subscribers}
        keys, now = tuple(self.lanes), self.clock()
        await self.store.write(lambda c: outbox.orphans(c, keys, now))
        self.outbox.backlog.update(await self.store.read(outbox.backlogs))

    def backlog(self) -> dict[str, int]:
        """Undelivered notifications per subscriber (``/metrics``)."""
        return {key: self.outbox.backlog.get(key, 0) for key in self.lanes}

    async def _recount(self) -> None:
        """Every ``RECOUNT_S``, the backlog from the table (a rolled-back insert is forgiven)."""
        while True:
            await asyncio.sleep(RECOUNT_S)
            counted = await self.store.read(outbox.backlogs)
            for key in self.lanes:
                self.outbox.backlog[key] = counted.get(key, 0)
            for sub in self.subscribers:
                if sub.key in self.outbox.paused:
                    self.outbox.settled(sub.key, sub.max_backlog, delta=0)
            self._announce()

    async def run(self) -> None:
        self._running = True
        try:
            async with asyncio.TaskGroup() as tg:
                for key, lane in list(self.lanes.items()):
                    self._tasks[key] = tg.create_task(lane.run(), name=f"notify lane {key}")
                tg.create_task(self._recount(), name="notify backlog recount")
        finally:
            self._running = False
            for task in self._tasks.values():
                task.cancel(msg="notification sender stopping")
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            if self.session is not None:
                await self.session.close()

    def replace_subscribers(self, prefix: str, subs: list[Subscriber]) -> None:
        """Swap the subscribers whose key starts with ``prefix`` for ``subs``, at any time.

        For subscribers made while the engine runs (EventBridge webhook targets, engine/aws/rules.py).
        The outbox's list is replaced in one assignment, so its hook on the writer thread sees the
        old set or the new one, never half of each. Before ``start`` only the list changes (start
        builds every lane); afterwards a changed or removed subscriber's lane is stopped and a new
        one started. Rows still queued for a removed one stay until the next start dead-letters
        them, as for any subscriber dropped from the config."""
        keys = {sub.key for sub in subs}
        kept = [sub for sub in self.outbox.subscribers if not sub.key.startswith(prefix)]
        self.outbox.subscribers = [*kept, *subs]
        if self.session is None:
            return
        for key in [k for k in self.lanes if k.startswith(prefix)]:
            if key not in keys or self.lanes[key].sub != next(s for s in subs if s.key == key):
                del self.lanes[key]
                task = self._tasks.pop(key, None)
                if task is not None:
                    task.cancel(msg="subscriber replaced")
        for sub in subs:
            if sub.key not in self.lanes:
                lane = self.lanes[sub.key] = Lane(self, sub)
                if self._running:
                    self._tasks[sub.key] = asyncio.create_task(lane.run(), name=f"notify lane {sub.key}")

    async def aclose(self) -> None:
        """An Engine closer: the HTTP client is closed even if ``run`` never got to start."""
        if self.session is not None and not self.session.closed:
            await self.session.close()

    def wake(self) -> None:
        """``bus.after_commit``: wake the lanes that have rows they have not seen (cheap, on the loop)."""
        for key, seq in dict(self.outbox.latest).items():
            lane = self.lanes.get(key)
            if lane is not None and seq > lane.known:
                lane.wake.set()
        self._announce()

    def _announce(self) -> None:
        """Publish the subscribers' pause/resume transitions the outbox noted (on the loop)."""
        transitions = self.outbox.transitions
        while transitions and self.publish is not None:
            key, status, backlog = transitions.pop(0)
            cap = next((s.max_backlog for s in self.subscribers if s.key == key), None)
            detail = {"subscriber": key, "status": status, "backlog": backlog, "max_backlog": cap}
            task = asyncio.ensure_future(
                self.publish(envelope(NOTIFY_SOURCE, SUBSCRIBER_DETAIL_TYPE, detail))
            )
            self._published.add(task)
            task.add_done_callback(self._published.discard)

    def wake_all(self) -> None:
        for lane in self.lanes.values():
            lane.wake.set()

    async def post(self, sub: Subscriber, event_id: str, body: bytes) -> _Result:
        assert self.session is not None
        headers = {"Content-Type": "application/json", "User-Agent": "Sluice", **sub.headers}
        headers["Sluice-Event-Id"] = event_id
        if sub.secret:
            headers["Sluice-Signature"] = sign(sub.secret, body, int(time.time()))
        try:
            async with asyncio.timeout(sub.timeout_s):
                async with self.session.post(
                    sub.url, data=body, headers=headers, allow_redirects=False
                ) as resp:
                    await resp.read()
                    text = None if resp.status < 300 else f"HTTP {resp.status} {resp.reason or ''}".strip()
                    return _Result(
                        resp.status, text, retry_after_s(resp.headers.get("Retry-After"), self.clock())
                    )
        except TimeoutError:
            return _Result(None, f"no answer within the {sub.timeout_s:g}s timeout")

    def _settled(self, sub: Subscriber) -> None:
        self.outbox.settled(sub.key, sub.max_backlog)
        if self.outbox.transitions:
            self._announce()

    async def record(self, sub: Subscriber, row: sqlite3.Row, res: _Result, rng: random.Random) -> None:
        now, attempts, seq = self.clock(), row["attempts"] + 1, row["seq"]
        status = res.status
        if status is not None and 200 <= status < 300:
            await self.store.write(lambda c: outbox.delivered(c, seq, now, attempts, status))
            self.delivered += 1
            self._settled(sub)
            log.debug("notification %d (%s) → %s: %s", seq, row["event_id"], sub.key, status)
            return
        permanent = status is not None and 400 <= status < 500 and status not in (408, 429)
        delay = (
            res.retry_after_s
            if res.retry_after_s is not None
            else backoff_s(attempts, rng, sub.backoff_base_s, sub.backoff_cap_s)
        )
        too_old = now + delay - row["created_at"] > sub.max_age_s
        if permanent or attempts >= sub.max_attempts or too_old:
            why = "refused (4xx)" if permanent else "too old" if too_old else "out of attempts"
            await self.store.write(lambda c: outbox.dead_letter(c, row, now, attempts, status, res.error))
            self.dead += 1
            self._settled(sub)
            log.warning("notification %d (%s) → %s dead-lettered after %d attempts, %s: %s",
                        seq, row["event_id"], sub.key, attempts, why, res.error)  # fmt: skip
            return
        await self.store.write(lambda c: outbox.retry_later(c, seq, attempts, now + delay, status, res.error))
        log.log(logging.INFO if attempts == 1 else logging.DEBUG,  # a dead receiver must not flood the log
                "notification %d (%s) → %s failed (attempt %d: %s); retrying in %.1fs",
                 seq, row["event_id"], sub.key, attempts, res.error, delay)  # fmt: skip
