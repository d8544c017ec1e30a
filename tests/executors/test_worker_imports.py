"""Function workers and the fork server import none of the engine's libraries (networkx above
all: the engine pays its import once, the workers must not pay it per process)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

import workflows.dag  # noqa: F401  (the engine side has networkx: the check below is not vacuous)
from engine.executors.base import FunctionCall
from engine.executors.function import FunctionExecutor

HEAVY = ("networkx", "engine", "workflows", "triggers", "jinja2", "aiohttp", "yaml", "jsonschema", "croniter")

HANDLER = f"""
import sys

def loaded(event, context):
    return sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
"""


@pytest.mark.parametrize("fork", [True, False], ids=["forked-from-the-fork-server", "fresh-interpreter"])
async def test_workers_never_import_networkx_nor_the_engine(tmp_path: Path, fork: bool) -> None:
    assert "networkx" in sys.modules
    (tmp_path / "probe.py").write_text(HANDLER)
    fx = FunctionExecutor(workers=1, fork=fork)
    try:
        async with asyncio.timeout(30):
            await fx.start()
            out = await fx.execute(
                FunctionCall(
                    attempt_id="r-1/probe#1",
                    handler="probe:loaded",
                    base_dir=str(tmp_path),
                    event=None,
                    run_id="r-1",
                    step="probe",
                    attempt=1,
                )
            )
    finally:
        async with asyncio.timeout(30):
            await fx.aclose()
    assert out.ok, out.error
    assert out.output == []
