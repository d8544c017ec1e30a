"""A workflow's ``concurrency:``: how many of its runs may run at once, per key.

``concurrency: 2`` caps the workflow's runs; ``concurrency: {key: "{{ event.detail.customer }}",
limit: 2}`` caps them per distinct key value (each customer gets two at a time). The key renders
from the run's trigger event and params only: it is known when the run is committed, before
any step ran, and again the same after a restart.
"""

from __future__ import annotations

from typing import Any

from workflows.fields import FileCtx, read_int
from workflows.spec import ConcurrencySpec

FIELDS = ("key", "limit")
MAX_LIMIT = 100_000
KEY_NAMES = frozenset({"event", "params"})
EXAMPLE = 'concurrency: {key: "{{ event.detail.customer }}", limit: 2}'


def parse_concurrency(ctx: FileCtx, raw: Any) -> ConcurrencySpec | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        limit = read_int(ctx, "concurrency", raw, 1, MAX_LIMIT, 2)
        return None if limit is None else ConcurrencySpec(limit)
    if not isinstance(raw, dict):
        ctx.err(
            "concurrency",
            f"must be a number of runs or a mapping, got {ctx.show(raw)}",
            f"write e.g. {EXAMPLE}",
        )
        return None
    if not ctx.fields("concurrency", raw, FIELDS, required=("limit",)):
        return None
    limit = read_int(ctx, "concurrency.limit", raw.get("limit"), 1, MAX_LIMIT, 2)
    key = raw.get("key")
    if key is not None and not isinstance(key, str):
        ctx.err("concurrency.key", f"must be a string template, got {ctx.show(key)}", f"write e.g. {EXAMPLE}")
        return None
    compiled = ctx.template("concurrency.key", key)
    if compiled is not None:
        other = sorted({v.split(".")[0] for v in compiled.variables} - KEY_NAMES)
        if other:
            ctx.err(
                "concurrency.key",
                f"may use only event and params (it is known before any step runs), not {', '.join(other)}",
                f"write e.g. {EXAMPLE}",
            )
            return None
    if limit is None:
        return None
    return ConcurrencySpec(limit, compiled)
