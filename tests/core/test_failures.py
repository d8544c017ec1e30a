"""A failing part is reported and contained; a crashed server never exits 0."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from engine.engine import Engine, Settings
from engine.server import TriggerService
from tests.support.engines import write_flow
from triggers.base import Emit
from workflows.loader import load_dir

FLOW = """
name: ok
steps:
  one: {function: "handlers:one"}
"""
HANDLERS = "def one(event, context):\n    return 1\n"


class BrokenTrigger:
    """A trigger whose source fails after it started (a folder gone, a schedule past its range)."""

    name = "broken"

    async def start(self) -> None:
        return None

    async def run(self, emit: Emit) -> None:
        await asyncio.sleep(0.05)
        raise OverflowError("date value out of range")


class BrokenService:
    name = "broken part"

    async def start(self) -> None:
        return None

    async def run(self) -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("a bug in a component")


async def test_a_failing_trigger_is_disabled_alone_and_the_engine_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    engine = Engine(Settings(data_dir=tmp_path / "data", workers=1, grace_s=1), load_dir(tmp_path / "flows"))
    emit = engine.bus.emitter("ok", "broken")
    service = TriggerService(BrokenTrigger, emit, "trigger ok/broken", engine.store)
    engine.add_service(service)
    with caplog.at_level(logging.ERROR):
        async with engine:
            await asyncio.sleep(0.3)
            assert not engine.should_exit.is_set(), "one trigger's failure stopped the engine"
            assert service.failed is not None and "out of range" in service.failed
            summary = await engine.run_to_end("ok", timeout_s=10)
            assert summary["status"] == "SUCCEEDED"
            audit = await engine.store.read(
                lambda c: c.execute("SELECT kind, subject FROM audit WHERE kind='trigger-failed'").fetchall()
            )
            assert [tuple(r) for r in audit] == [("trigger-failed", "ok/broken")]
    assert "trigger ok/broken failed and is disabled" in caplog.text


async def test_a_crashed_component_makes_serve_report_failure(tmp_path: Path) -> None:
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    engine = Engine(Settings(data_dir=tmp_path / "data", workers=1, grace_s=1), load_dir(tmp_path / "flows"))
    engine.add_service(BrokenService())
    status = await asyncio.wait_for(engine.serve(handle_signals=False), 20)
    assert status == 1


async def test_a_clean_stop_of_serve_reports_success(tmp_path: Path) -> None:
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    engine = Engine(Settings(data_dir=tmp_path / "data", workers=1, grace_s=1), load_dir(tmp_path / "flows"))
    serving = asyncio.create_task(engine.serve(handle_signals=False))
    await asyncio.sleep(0.3)
    engine.should_exit.set()
    assert await asyncio.wait_for(serving, 20) == 0
