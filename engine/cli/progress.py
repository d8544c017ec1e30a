"""A run's progress as one scannable line per state change (arq's glyph style)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from engine.store.records import RunRecord
from workflows.secrets import hide

GLYPHS = {
    "RUNNING": "→",
    "WAITING": "…",
    "SUCCEEDED": "✓",
    "FAILED": "✗",
    "SKIPPED": "↷",
    "CANCELLED": "⊘",
}


class ProgressPrinter:
    """Prints ``  0.12s ✓ fetch  0.01s`` lines for one run (or every run, when ``run_id`` is None)."""

    def __init__(self, out: TextIO = sys.stderr, run_id: str | None = None) -> None:
        self.out = out
        self.run_id = run_id
        self.t0 = time.monotonic()
        self.width = 12

    def __call__(
        self, kind: str, run: RunRecord, step: str | None, status: str, info: dict[str, Any]
    ) -> None:
        if self.run_id is not None and run.id != self.run_id:
            return
        elapsed = time.monotonic() - self.t0
        line = self._line(kind, run, step, status, info)
        if line:
            self.out.write(hide(f"{elapsed:6.2f}s {line}\n"))  # an error message may quote a secret
            self.out.flush()

    def _line(self, kind: str, run: RunRecord, step: str | None, status: str, info: dict[str, Any]) -> str:
        glyph = GLYPHS.get(status, "·")
        if kind == "run":
            if status == "RUNNING":
                return f"{glyph} run {run.id} of {run.workflow} started"
            tail = f" in {info['duration_s']:.2f}s" if info.get("duration_s") is not None else ""
            reason = f": {info['reason']}" if info.get("reason") else ""
            if status != "SUCCEEDED" and not reason and info.get("error"):
                reason = f": {_error_text(info['error'])}"
            return f"{glyph} run {run.id} {status}{tail}{reason}"
        name = (step or "").ljust(self.width)
        if kind == "retry":
            return (
                f"↻ {name} attempt {info['attempt']} failed ({_error_text(info.get('error'))}); "
                f"retrying in {info['delay_s']:.2f}s"
            )
        if status == "RUNNING":
            extra = f" ({info['items']} items)" if "items" in info else ""
            if info.get("attempt", 1) > 1:
                extra = f" (attempt {info['attempt']})"
            if info.get("waited_s"):
                extra += f" after waiting {info['waited_s']:.2f}s for a worker"
            return f"{glyph} {name} started{extra}"
        if status == "WAITING":
            return f"{glyph} {name} waiting for a function worker"
        if status == "SKIPPED":
            return f"{glyph} {name} skipped: {info.get('reason')}"
        if status == "FAILED":
            return f"{glyph} {name} failed: {_error_text(info.get('error'))}"
        duration = info.get("duration_s")
        return f"{glyph} {name} {'' if not duration else f'{duration:.2f}s'}".rstrip()


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return "unknown error"
    message = str(error.get("errorMessage", "")).strip().splitlines()
    return f"{error.get('errorType')}: {message[0] if message else ''}"


def render_outputs(outputs: Any) -> str:
    return json.dumps(outputs, indent=2, ensure_ascii=False, sort_keys=False)
