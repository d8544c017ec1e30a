"""A trigger's ``batch:``: one run receives a list of the trigger's events (SQS -> Lambda).

``batch: {max: 100, window: 30s}`` closes a batch at 100 events, or 30 s after its first event
arrived, whichever comes first. Schedules have no batches: each fire is its own run.
"""

from __future__ import annotations

from typing import Any

from workflows.fields import FileCtx, read_duration, read_int
from workflows.spec import BatchSpec

FIELDS = ("max", "window")
#: SQS's own ceilings for a Lambda event source: 10,000 records, a 300 s batching window
MAX_EVENTS = 10_000
MAX_WINDOW_S = 300.0
EXAMPLE = "batch: {max: 100, window: 30s}"


def parse_batch(ctx: FileCtx, where: str, raw: Any) -> BatchSpec | None:
    if raw is None:
        return None
    if not ctx.fields(where, raw, FIELDS, required=("max", "window")):
        return None
    size = read_int(ctx, f"{where}.max", raw.get("max"), 1, MAX_EVENTS, 100)
    window = read_duration(ctx, f"{where}.window", raw.get("window"), "30s")
    if window is not None and not 0 < window <= MAX_WINDOW_S:
        ctx.err(f"{where}.window", f"must be more than 0s and at most {MAX_WINDOW_S:g}s, got {window:g}s",
                f"write e.g. {EXAMPLE}")  # fmt: skip
        return None
    if size is None or window is None:
        return None
    return BatchSpec(size, window)
