"""Scheduling policies (fair share): create, update, delete, list; the one writer of ``scheduling_policies``.

A policy is checked whole before anything is written (:class:`~engine.batch.fairshare.PolicyError`
becomes a :class:`~engine.batch.jobs.JobError` naming the field); queues name it by
``scheduling_policy``. The ordering itself is in engine/batch/fairshare.py.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any

from engine.batch.book import Book
from engine.batch.fairshare import PolicyError, SchedulingPolicy
from engine.batch.jobs import JobError
from engine.store.store import Store

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def load(conn: sqlite3.Connection) -> dict[str, SchedulingPolicy]:
    return {
        r[0]: SchedulingPolicy.from_json(r[0], json.loads(r[1]))
        for r in conn.execute("SELECT name, body FROM scheduling_policies ORDER BY name")
    }


def _save(conn: sqlite3.Connection, policy: SchedulingPolicy, at: float) -> None:
    body = {k: v for k, v in policy.to_json().items() if k != "name"}
    conn.execute(
        "INSERT INTO scheduling_policies (name, body, created_at) VALUES (?,?,?) "
        "ON CONFLICT (name) DO UPDATE SET body = excluded.body",
        (policy.name, json.dumps(body), at),
    )


def _delete(conn: sqlite3.Connection, name: str) -> None:
    conn.execute("DELETE FROM scheduling_policies WHERE name=?", (name,))


class Policies:
    def __init__(self, store: Store, book: Book, wake: Callable[[], None]) -> None:
        self.store, self.book, self.wake = store, book, wake

    def list(self) -> list[dict[str, Any]]:
        used: dict[str, list[str]] = {}
        for q in self.book.queues.values():
            if q.policy is not None:
                used.setdefault(q.policy, []).append(q.name)
        return [
            {**p.to_json(), "queues": sorted(used.get(name, []))}
            for name, p in sorted(self.book.policies.items())
        ]

    async def put(self, body: Mapping[str, Any], *, create: bool) -> dict[str, Any]:
        """Create (``create``) or change the named policy; a change names only what changes."""
        name = body.get("name") if isinstance(body, Mapping) else None
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise JobError(f"name: letters, digits, - and _ (up to 128), got {name!r}")
        old = self.book.policies.get(name)
        if create == (old is not None):
            raise JobError(
                f"scheduling policy {name!r} {'already exists' if old else 'does not exist'}",
                "conflict" if old else "not_found",
                409 if old else 404,
            )
        merged = {**(old.to_json() if old else {}), **body}
        try:
            policy = SchedulingPolicy.from_json(name, merged)
        except PolicyError as exc:
            raise JobError(str(exc)) from None
        now = time.time()
        await self.store.write(lambda c: _save(c, policy, now))
        self.book.policies[name] = policy
        self.wake()
        return policy.to_json()

    async def delete(self, name: str) -> None:
        """As AWS: refused while a job queue uses it."""
        if name not in self.book.policies:
            raise JobError(f"scheduling policy {name!r} does not exist", "not_found", 404)
        users = sorted(q.name for q in self.book.queues.values() if q.policy == name)
        if users:
            raise JobError(
                f"scheduling policy {name} is used by job queue(s) {', '.join(users)}; "
                "set their scheduling_policy to null first"
            )
        await self.store.write(lambda c: _delete(c, name))
        del self.book.policies[name]
