"""A client of a running engine for scripts outside it: ``from engine.client import Sluice``.

::

    async with Sluice() as sluice:              # $SLUICE_SERVER, $SLUICE_API_TOKEN
        job = await sluice.submit_job("default", container={"image": "busybox:1.36",
                                                            "command": ["echo", "hi"]})
        done = await sluice.wait_job(job["job_id"], timeout_s=300)

:class:`SluiceSync` is the same without asyncio (the blocking client a function handler gets as
``context.sluice``, engine/executors/api_client.py). Errors are :class:`SluiceError` with the
engine's ``status``/``code``/``message``; a wait past its ``timeout_s`` is :class:`WaitTimeout`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from engine.executors.api_client import (
    FIRST_POLL_S,
    JOB_DONE,
    MAX_POLL_S,
    RUN_DONE,
    Client,
    SluiceError,
    WaitTimeout,
    error_of,
    event_entry,
    submit_body,
)

__all__ = ["Sluice", "SluiceError", "SluiceSync", "WaitTimeout"]

DEFAULT_SERVER = "http://127.0.0.1:8765"


def _server(url: str | None) -> str:
    return url or os.environ.get("SLUICE_SERVER") or DEFAULT_SERVER


def _token(token: str | None) -> str | None:
    """The argument, else ``$SLUICE_API_TOKEN``, else the file ``$SLUICE_API_TOKEN_FILE`` names."""
    if token:
        return token
    if os.environ.get("SLUICE_API_TOKEN"):
        return os.environ["SLUICE_API_TOKEN"]
    path = os.environ.get("SLUICE_API_TOKEN_FILE")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError as exc:
        message = f"$SLUICE_API_TOKEN_FILE={path}: cannot read it: {exc.strerror}"
        raise SluiceError(0, "no_token", message) from None


class SluiceSync(Client):
    """The blocking client; the URL and token default as :class:`Sluice`'s do."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout_s: float = 30.0) -> None:
        super().__init__(_server(url), _token(token), timeout_s=timeout_s)


class Sluice:
    """The engine's API over aiohttp. Use as ``async with Sluice(url, token) as sluice:``.

    ``url`` defaults to ``$SLUICE_SERVER`` (then http://127.0.0.1:8765), ``token`` to
    ``$SLUICE_API_TOKEN`` (or the file ``$SLUICE_API_TOKEN_FILE``)."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout_s: float = 30.0) -> None:
        self._sync = SluiceSync(url, token, timeout_s=timeout_s)  # checks the URL, holds the token
        self.url = self._sync.url
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"<Sluice {self.url}>"

    async def __aenter__(self) -> Sluice:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def request(self, method: str, path: str, body: Any = None, *, text: bool = False) -> Any:
        """JSON in and out (``text``: the answer as text, for logs)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        headers = {"Accept": "text/plain" if text else "application/json"}
        token = self._sync._token
        if token:
            headers["Authorization"] = "Bearer " + token
        url = self.url + path
        try:
            async with self._session.request(method, url, json=body, headers=headers) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise error_of(resp.status, raw, url)
                if text:
                    return raw.decode("utf-8", "replace")
                return await resp.json(content_type=None) if raw else None
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise SluiceError(0, "unreachable", f"cannot reach the engine at {self.url}: {reason}") from None

    # -- jobs ------------------------------------------------------------------------------------

    async def submit_job(
        self,
        queue: str = "default",
        *,
        definition: str | None = None,
        container: dict[str, Any] | None = None,
        name: str | None = None,
        array_size: int | None = None,
        parameters: dict[str, str] | None = None,
        depends_on: list[Any] | None = None,
        timeout_s: float | None = None,
        attempts: int | None = None,
        **more: Any,
    ) -> dict[str, Any]:
        """Submit a job (an array job with ``array_size``); answers ``{"job_id", "status", ...}``.

        ``more`` are other fields of ``POST /api/v1/jobs`` (``tags``, ``retry_strategy``,
        ``container_overrides``, ``scheduling_priority``), sent as given."""
        options = {"name": name, "array_size": array_size, "parameters": parameters,
                   "depends_on": depends_on, "timeout": timeout_s, "attempts": attempts, **more}  # fmt: skip
        body = submit_body(queue, definition, container, options)
        return dict(await self.request("POST", "/api/v1/jobs", body))

    async def describe_job(self, job_id: str) -> dict[str, Any]:
        return dict(await self.request("GET", "/api/v1/jobs/" + quote(job_id, safe=":")))

    async def wait_job(self, job_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        """Poll until the job is SUCCEEDED or FAILED; answers its description."""
        return await _wait(f"job {job_id}", lambda: self.describe_job(job_id), JOB_DONE, timeout_s)

    async def job_logs(self, job_id: str, attempt: int | None = None) -> str:
        """What the job's attempt (default: its latest) printed, up to 1 MiB."""
        query = "" if attempt is None else f"?attempt={int(attempt)}"
        return str(
            await self.request("GET", "/api/v1/jobs/" + quote(job_id, safe=":") + "/logs" + query, text=True)
        )

    async def cancel_job(self, job_id: str, reason: str | None = None) -> dict[str, Any]:
        path = "/api/v1/jobs/" + quote(job_id, safe=":") + "/cancel"
        return dict(await self.request("POST", path, {"reason": reason} if reason else {}))

    # -- events and runs -------------------------------------------------------------------------

    async def put_event(
        self, source: str, detail_type: str, detail: dict[str, Any] | None = None, resources: Any = ()
    ) -> str:
        """Put one event on the engine's bus (EventBridge's PutEvents); answers its id."""
        entry = event_entry(source, detail_type, detail or {}, resources)
        answer = (await self.request("POST", "/api/v1/events", {"Entries": [entry]}))["Entries"][0]
        if "ErrorCode" in answer:
            raise SluiceError(400, str(answer["ErrorCode"]), str(answer.get("ErrorMessage")))
        return str(answer["EventId"])

    async def start_run(self, workflow: str, params: dict[str, Any] | None = None) -> str:
        path = "/api/v1/workflows/" + quote(workflow, safe="") + "/runs"
        return str((await self.request("POST", path, params or {}))["run_id"])

    async def describe_run(self, run_id: str) -> dict[str, Any]:
        return dict(await self.request("GET", "/api/v1/runs/" + quote(run_id, safe="")))

    async def wait_run(self, run_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        return await _wait(f"run {run_id}", lambda: self.describe_run(run_id), RUN_DONE, timeout_s)

    async def run(
        self, workflow: str, params: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Start a run and wait for it to end."""
        return await self.wait_run(await self.start_run(workflow, params), timeout_s)


async def _wait(
    what: str, look: Callable[[], Awaitable[dict[str, Any]]], done: tuple[str, ...], timeout_s: float | None
) -> dict[str, Any]:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    pause = FIRST_POLL_S
    while True:
        last = await look()
        if last.get("status") in done:
            return last
        if deadline is not None and time.monotonic() + pause > deadline:
            raise WaitTimeout(what, timeout_s or 0.0, last)
        await asyncio.sleep(pause)
        pause = min(pause * 2, MAX_POLL_S)
