"""Notifications: a transactional outbox and a sender that delivers it to subscribers.

Why an outbox: the row that says "tell X about event E" is inserted by a bus
``tx_hook`` inside the very transaction that commits E, so a crash between the
commit and the HTTP POST loses nothing — the sender finds the row on restart.
The hook only inserts rows (no I/O), so a slow or dead receiver can never hold
up the engine; it costs only its own queue.

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
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from engine.notify.subscribers import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    Subscriber,
    safe_url,
    sign,
    subscribers_from_catalog,
    subscribers_from_config,
)

if TYPE_CHECKING:
    import aiohttp

    from engine.engine import Engine

log = logging.getLogger(__name__)

POLL_S = 5.0  #: an idle lane re-reads its queue this often (a safety net; wakes are pushed)
BATCH = 64


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


_INSERT = "INSERT INTO outbox (subscriber, url, event_id, body, created_at, next_at) VALUES (?,?,?,?,?,?)"


# --- the outbox (writer thread) -------------------------------------------------------------------------


class Outbox:
    """The bus hook: for each committed event, one row per matching subscriber, same transaction."""

    def __init__(self, subscribers: Sequence[Subscriber], clock: Any = time.time) -> None:
        self.subscribers = list(subscribers)
        self.clock = clock
        #: highest outbox seq inserted per subscriber (written on the writer thread, read on the loop)
        self.latest: dict[str, int] = {}

    def hook(self, conn: sqlite3.Connection, env: dict[str, Any], depth: int) -> None:
        subs = [s for s in self.subscribers if s.matches(env)]
        if not subs:
            return
        now = self.clock()
        for sub in subs:
            try:
                body = sub.body(env)
            except Exception as exc:  # one subscriber's transform must not fail the event's commit
                log.error("subscriber %s: transform failed for event %s: %s", sub.key, env.get("id"), exc)
                continue
            cur = conn.execute(
                _INSERT,
                (sub.key, safe_url(sub.url), env["id"], body, now, now),
            )
            self.latest[sub.key] = int(cur.lastrowid or 0)


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
                    task.add_done_callback(lambda t, seq=row["seq"]: self._done(seq))
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

    def _done(self, seq: int) -> None:
        self.inflight.pop(seq, None)
        self.slots.release()
        self.wake.set()

    def _fetch(
        self, conn: sqlite3.Connection, busy: tuple[int, ...]
    ) -> tuple[list[sqlite3.Row], int, float | None]:
        key, now = self.sub.key, self.s.clock()
        known = conn.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM outbox WHERE subscriber=?", (key,)
        ).fetchone()[0]
        if self.sub.ordered:
            head = conn.execute(
                "SELECT * FROM outbox WHERE subscriber=? AND status='pending' ORDER BY seq LIMIT 1", (key,)
            ).fetchone()
            if head is None or head["seq"] in busy:
                return [], known, None
            if head["next_at"] > now:
                return [], known, head["next_at"]
            return [head], known, None
        holes = ",".join("?" * len(busy))
        skip = f" AND seq NOT IN ({holes})" if busy else ""
        rows = conn.execute(
            f"SELECT * FROM outbox WHERE subscriber=? AND status='pending' AND next_at<=?{skip} "
            f"ORDER BY seq LIMIT {BATCH}",
            (key, now, *busy),
        ).fetchall()
        nxt = conn.execute(
            f"SELECT MIN(next_at) FROM outbox WHERE subscriber=? AND status='pending' AND next_at>?{skip}",
            (key, now, *busy),
        ).fetchone()[0]
        return rows, known, nxt

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

    def __init__(self, engine: Engine, outbox: Outbox, *, clock: Any = time.time) -> None:
        self.engine = engine
        self.store = engine.store
        self.outbox = outbox
        self.clock = clock
        self.lanes: dict[str, Lane] = {}
        self.session: aiohttp.ClientSession | None = None
        self.delivered = 0
        self.dead = 0

    @property
    def subscribers(self) -> list[Subscriber]:
        return self.outbox.subscribers

    async def start(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.lanes = {sub.key: Lane(self, sub) for sub in self.subscribers}
        await self.store.write(self._orphans)

    def _orphans(self, conn: sqlite3.Connection) -> None:
        """Rows of subscribers no longer configured go to the dead letters (nobody would send them)."""
        keys = tuple(self.lanes)
        holes = ",".join("?" * len(keys)) or "''"
        query = f"SELECT * FROM outbox WHERE status='pending' AND subscriber NOT IN ({holes})"
        for row in conn.execute(query, keys).fetchall():
            _dead_letter(conn, row, self.clock(), row["attempts"], None, "subscriber no longer configured")
            log.warning("notification %d for %s: subscriber %s no longer configured; dead-lettered",
                        row["seq"], row["event_id"], row["subscriber"])  # fmt: skip

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for lane in self.lanes.values():
                    tg.create_task(lane.run(), name=f"notify lane {lane.sub.key}")
                if not self.lanes:
                    await asyncio.Event().wait()
        finally:
            if self.session is not None:
                await self.session.close()

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

    async def record(self, sub: Subscriber, row: sqlite3.Row, res: _Result, rng: random.Random) -> None:
        now, attempts, seq = self.clock(), row["attempts"] + 1, row["seq"]
        status = res.status
        if status is not None and 200 <= status < 300:
            await self.store.write(
                lambda c: c.execute(
                    "UPDATE outbox SET status='delivered', delivered_at=?, attempts=?, last_status=? "
                    "WHERE seq=?",
                    (now, attempts, status, seq),
                )
            )
            self.delivered += 1
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
            await self.store.write(lambda c: _dead_letter(c, row, now, attempts, status, res.error))
            self.dead += 1
            log.warning("notification %d (%s) → %s dead-lettered after %d attempts, %s: %s",
                        seq, row["event_id"], sub.key, attempts, why, res.error)  # fmt: skip
            return
        await self.store.write(
            lambda c: c.execute(
                "UPDATE outbox SET attempts=?, next_at=?, last_status=?, last_error=? WHERE seq=?",
                (attempts, now + delay, status, res.error, seq),
            )
        )
        log.log(logging.INFO if attempts == 1 else logging.DEBUG,  # a dead receiver must not flood the log
                "notification %d (%s) → %s failed (attempt %d: %s); retrying in %.1fs",
                 seq, row["event_id"], sub.key, attempts, res.error, delay)  # fmt: skip


def _dead_letter(
    conn: sqlite3.Connection,
    row: sqlite3.Row,
    now: float,
    attempts: int,
    status: int | None,
    error: str | None,
) -> None:
    conn.execute(
        "INSERT INTO dead_letters (subscriber, url, event_id, body, created_at, failed_at, attempts, "
        "last_status, last_error) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            *(row[k] for k in ("subscriber", "url", "event_id", "body", "created_at")),
            now,
            attempts,
            status,
            error,
        ),
    )
    conn.execute("DELETE FROM outbox WHERE seq=?", (row["seq"],))


# --- dead letters (API and CLI) -------------------------------------------------------------------------


def _where_ids(ids: Sequence[int] | None) -> tuple[str, tuple[int, ...]]:
    if ids is None:
        return "", ()
    return f" WHERE seq IN ({','.join('?' * len(ids)) or 'NULL'})", tuple(int(i) for i in ids)


def dlq_list(conn: sqlite3.Connection, limit: int = 100) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM dead_letters ORDER BY seq LIMIT ?", (limit,)).fetchall()
    return [
        {
            "id": r["seq"],
            "subscriber": r["subscriber"],
            "url": r["url"],
            "event_id": r["event_id"],
            "attempts": r["attempts"],
            "last_status": r["last_status"],
            "last_error": r["last_error"],
            "created_at": r["created_at"],
            "failed_at": r["failed_at"],
        }
        for r in rows
    ]


def dlq_retry(conn: sqlite3.Connection, ids: Sequence[int] | None, now: float) -> int:
    """Move dead letters back to the outbox with a fresh attempt budget; returns how many."""
    where, args = _where_ids(ids)
    rows = conn.execute(f"SELECT * FROM dead_letters{where} ORDER BY seq", args).fetchall()
    for r in rows:
        conn.execute(
            _INSERT,
            (r["subscriber"], r["url"], r["event_id"], r["body"], now, now),
        )
        conn.execute("DELETE FROM dead_letters WHERE seq=?", (r["seq"],))
    return len(rows)


def dlq_purge(conn: sqlite3.Connection, ids: Sequence[int] | None) -> int:
    where, args = _where_ids(ids)
    return conn.execute(f"DELETE FROM dead_letters{where}", args).rowcount


# --- wiring ---------------------------------------------------------------------------------------------


def install(engine: Engine, extra: Sequence[Subscriber] = ()) -> NotifyService:
    """Wire notifications into an engine (before ``start``): outbox hook, wake-up, sender, routes."""
    from engine.bus.destinations import url_subscribers

    outbox = Outbox([*subscribers_from_catalog(engine.catalog), *url_subscribers(engine.catalog), *extra])
    keys = [s.key for s in outbox.subscribers]
    if len(set(keys)) != len(keys):
        raise ValueError(f"subscriber names must be unique, got {sorted(keys)}")
    service = NotifyService(engine, outbox)
    engine.bus.tx_hooks.append(outbox.hook)
    engine.bus.after_commit.append(service.wake)
    engine.services.append(service)
    engine.closers.append(service.aclose)
    engine.notify = service  # type: ignore[attr-defined]

    def add(app: Any) -> None:
        from engine.api.notify import add_routes

        add_routes(app, engine)

    engine.api_extensions.append(add)
    return service


def load_config(path: str | None = None) -> dict[str, Any]:
    """The server config file (``$SLUICE_CONFIG``, YAML): ``subscribers:`` and ``retention_days:``."""
    import os
    from pathlib import Path

    import yaml

    from workflows.sections import YamlLoader  # YAML 1.2 booleans: a bare ``on:`` stays the key "on"

    path = path or os.environ.get("SLUICE_CONFIG")
    if not path:
        return {}
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=YamlLoader) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the server config: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the server config must be a mapping (write subscribers: [...])")
    unknown = sorted(set(data) - {"subscribers", "retention_days"})
    if unknown:
        raise ValueError(f"{path}: unknown setting {unknown[0]!r} (use subscribers, retention_days)")
    return data


def install_from_config(engine: Engine, path: str | None = None) -> NotifyService:
    """``sluice serve`` wiring: notifications (catalog + global subscribers) and archive compaction."""
    from engine.bus import archive

    config = load_config(path)
    service = install(engine, subscribers_from_config(config.get("subscribers") or []))
    archive.install(engine, config.get("retention_days"))
    return service
