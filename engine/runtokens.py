"""Run-scoped API tokens: what ``context.sluice`` in a function handler authenticates with.

A token names its run and carries an HMAC of it under a key made at engine start and held only in
memory: nothing to configure, nothing stored, and a restart voids every token at once (the
workers that held them are gone by then too). A token is good only while its run is being driven
by this engine (``alive``), so it expires when the run ends. What a token may touch (its own run,
and the jobs and runs it made) is checked by the API guard (engine/api/auth.py).

What a run made outlives the engine process, though: a step may submit a job and a later step,
after a restart, wait for it. So each job a run submits carries the tag :data:`RUN_TAG`, and each
run it starts an event resource ``sluice:run/<run id>``; the ownership here is a cache of what was
made in this process, and ``made_by`` (the store) answers for the rest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable

PREFIX = "sluice-run."
#: the tag a job submitted by a run carries, and (``sluice:run/<id>``) the resource of the event
#: that starts a run it started: how the store says who made what
RUN_TAG = "sluice:run"
MadeBy = Callable[[str, str], Awaitable[bool]]  #: (run id, job or run id) -> the store says so


class RunTokens:
    """Mints and checks run tokens; remembers what each live run made through the API."""

    def __init__(self, alive: Callable[[str], bool], made_by: MadeBy | None = None) -> None:
        self._key = secrets.token_bytes(32)
        self._alive = alive
        self._made_by = made_by
        self._owned: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"<RunTokens runs={len(self._owned)}>"

    def _mac(self, run_id: str) -> str:
        return hmac.new(self._key, run_id.encode(), hashlib.sha256).hexdigest()

    def mint(self, run_id: str) -> str:
        return f"{PREFIX}{run_id}.{self._mac(run_id)}"

    @staticmethod
    def is_run_token(token: str) -> bool:
        return token.startswith(PREFIX)

    def run_of(self, token: str) -> str | None:
        """The run a token speaks for, or None: forged, from before a restart, or its run ended."""
        run_id, dot, mac = token.removeprefix(PREFIX).rpartition(".")
        if not dot or not hmac.compare_digest(mac.encode(), self._mac(run_id).encode()):
            return None
        return run_id if self._alive(run_id) else None

    def own(self, run_id: str, thing: str) -> None:
        """Run ``run_id`` made job or run ``thing`` through the API."""
        self._owned.setdefault(run_id, set()).add(thing)

    async def owns(self, run_id: str, thing: str) -> bool:
        """``thing`` is the run itself, or a job/run it made (an array child by its parent)."""
        if thing == run_id:
            return True
        base = thing.partition(":")[0]
        made = self._owned.get(run_id, ())
        if thing in made or base in made:
            return True
        if self._made_by is None or not await self._made_by(run_id, base):  # made before a restart?
            return False
        self.own(run_id, base)
        return True

    def forget(self, run_id: str) -> None:
        """The run ended: its token is void (``alive`` says so) and what it made is forgotten."""
        self._owned.pop(run_id, None)
