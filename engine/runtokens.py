"""Run-scoped API tokens: what ``context.sluice`` in a function handler authenticates with.

A token names its run and carries an HMAC of it under a key made at engine start and held only in
memory: nothing to configure, nothing stored, and a restart voids every token at once (the
workers that held them are gone by then too). A token is good only while its run is being driven
by this engine (``alive``), so it expires when the run ends. What a token may touch (its own run,
and the jobs and runs it made) is checked by the API guard (engine/api/auth.py), with the
ownership kept here: in memory, for the token's lifetime.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable

PREFIX = "sluice-run."


class RunTokens:
    """Mints and checks run tokens; remembers what each live run made through the API."""

    def __init__(self, alive: Callable[[str], bool]) -> None:
        self._key = secrets.token_bytes(32)
        self._alive = alive
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

    def owns(self, run_id: str, thing: str) -> bool:
        """``thing`` is the run itself, or a job/run it made (an array child by its parent)."""
        if thing == run_id:
            return True
        made = self._owned.get(run_id, ())
        return thing in made or thing.partition(":")[0] in made

    def forget(self, run_id: str) -> None:
        """The run ended: its token is void (``alive`` says so) and what it made is forgotten."""
        self._owned.pop(run_id, None)
