"""Shared fixtures: engines on a temp data dir, workflow folders written by the test."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.engine import Engine, Settings
from workflows.loader import load_dir

pytest_plugins = ["docker_fixtures"]


async def until(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll ``check`` every 20 ms until it holds; fail the test after ``timeout_s``."""
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def write_flow(folder: Path, yaml_text: str, handlers: str | None = None, *, name: str = "flow.yaml") -> Path:
    """Write a workflow file (and a ``handlers.py`` beside it) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(yaml_text), encoding="utf-8")
    if handlers is not None:
        (folder / "handlers.py").write_text(textwrap.dedent(handlers), encoding="utf-8")
    return path


MakeEngine = Callable[..., Awaitable[Engine]]


@pytest.fixture
async def make_engine(tmp_path: Path) -> AsyncIterator[MakeEngine]:
    """A factory of started engines over a workflow folder; all are stopped at teardown."""
    engines: list[Engine] = []

    async def make(flows: Path, *, data_dir: Path | None = None, workers: int = 2, **kw: Any) -> Engine:
        settings = Settings(data_dir=data_dir or tmp_path / "data", workers=workers, grace_s=5, **kw)
        engine = Engine(settings, load_dir(flows))
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.stop(grace_s=0)
