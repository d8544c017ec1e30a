"""The one engine factory of the suite, and writing workflow folders from a test."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.engine import Engine, Settings
from workflows.loader import load_dir


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
