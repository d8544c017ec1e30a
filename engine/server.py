"""``sluice serve``: the Engine plus its intake — triggers and the HTTP API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .engine import Engine, Settings


def build_server(settings: Settings, catalog: Any, workflows_dir: Path) -> Engine:
    engine = Engine(settings, catalog)
    return engine
