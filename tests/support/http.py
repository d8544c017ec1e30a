"""A started Engine serving only its HTTP surface on a free port, and an HTTP client session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.api.app import HttpService, Routes
from engine.api.auth import AuthPolicy
from engine.engine import Engine, Settings
from workflows.loader import load_dir

#: secrets the HTTP tests configure and then look for in answers and logs (they must never show)
SECRET = "s3cr3t-value-never-shown"
TOKEN = "tok-never-shown-123"


@dataclass
class Served:
    engine: Engine
    url: str


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """``await serve(flows)``: a started Engine with only the HTTP service, on a free port.

    Not ``build_server``: these tests pin the HTTP surface alone, without triggers or the
    components other modules install (the serve end-to-end test covers ``build_server``).
    """
    engines: list[Engine] = []

    async def make(
        flows: Path,
        *,
        auth: AuthPolicy | None = None,
        groups: Callable[[Engine], list[Routes]] | None = None,
        **kw: Any,
    ) -> Served:
        """``groups(engine)``: route groups beyond the core ones (as engine/server.py adds them)."""
        kw.setdefault("data_dir", tmp_path / "data")
        settings = Settings(workers=1, grace_s=2, port=0, **kw)
        engine = Engine(settings, load_dir(flows))
        http = HttpService(engine, groups(engine) if groups else (), auth=auth)
        engine.add_service(http, closer=http.aclose)
        engines.append(engine)
        await engine.start()
        return Served(engine, f"http://127.0.0.1:{http.port}")

    yield make
    for engine in engines:
        await engine.stop(grace_s=0)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
