"""One bounded wait: poll a condition until it holds, never a fixed sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

Check = Callable[[], Any] | Callable[[], Awaitable[Any]]


async def wait_until(
    check: Check, timeout_s: float = 20.0, *, what: str = "condition", step_s: float = 0.02
) -> Any:
    """Poll ``check`` (sync or async) every ``step_s`` until it returns something truthy; return it.

    Fails the test with ``what`` in the message after ``timeout_s``, so a hung wait surfaces by name.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {timeout_s:g}s")
        await asyncio.sleep(step_s)


def wait_until_sync(check: Callable[[], Any], timeout_s: float = 20.0, *, what: str = "condition") -> Any:
    """``wait_until`` for tests that drive subprocesses from plain (non-async) code."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {timeout_s:g}s")
        time.sleep(0.02)
