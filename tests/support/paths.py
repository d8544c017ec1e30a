"""Where the test data lives: the repository root, handler modules and workflow specs."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
HANDLERS = TESTS / "handlers"
SPECS = TESTS / "specs"
