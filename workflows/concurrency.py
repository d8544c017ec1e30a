"""``concurrency:`` of a workflow (its runs at once, per key) and of a function step (its attempts).

``concurrency: 2`` caps the workflow's runs; ``concurrency: {key: "{{ event.detail.customer }}",
limit: 2}`` caps them per distinct key value (each customer gets two at a time). The key renders
from the run's trigger event and params only: it is known when the run is committed, before
any step ran, and again the same after a restart.

On a function step, ``concurrency: 4`` caps its function's attempts in the pool (every run, every
workflow); ``concurrency: {key: "{{ item.customer }}", limit: 1}`` caps the step's attempts per key
value across the workflow's runs (engine/runs/step_keys.py). That key renders when the attempt is
made, from what the step's own templates see (event, params, upstream outputs, a for_each item),
so one fan-out can spread over several keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflows.dag import Dag
from workflows.fields import FileCtx, check_variables, read_int
from workflows.spec import ConcurrencySpec, ParamSpec, StepSpec
from workflows.templating import CONTEXT_NAMES

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


STEP_EXAMPLE = 'concurrency: {key: "{{ item.customer }}", limit: 2}'
MAX_STEP_LIMIT = 10_000


def parse_step_concurrency(ctx: FileCtx, where: str, kind: str, raw: Any) -> dict[str, Any]:
    """A step's ``concurrency``, as the StepSpec fields it sets: ``concurrency`` (a number) or ``keyed``."""
    at = f"{where}.concurrency"
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        if isinstance(raw, int) and not isinstance(raw, bool):
            return {"concurrency": read_int(ctx, at, raw, 1, MAX_STEP_LIMIT, 4)}
        problem = f"must be a number of attempts or a mapping, got {ctx.show(raw)}"
        ctx.err(at, problem, f"write e.g. concurrency: 4, or {STEP_EXAMPLE}")
        return {}
    if kind != "function":
        ctx.err(at, "a keyed concurrency is for function steps", "a container step waits in its job queue")
        return {}
    if not ctx.fields(at, raw, FIELDS, required=("key", "limit")):
        return {}
    limit = read_int(ctx, f"{at}.limit", raw.get("limit"), 1, MAX_STEP_LIMIT, 2)
    key = raw.get("key")
    if key is not None and not isinstance(key, str):
        ctx.err(f"{at}.key", f"must be a string template, got {ctx.show(key)}", f"write e.g. {STEP_EXAMPLE}")
        return {}
    compiled = ctx.template(f"{at}.key", key)
    if limit is None or compiled is None:
        return {}
    return {"keyed": ConcurrencySpec(limit, compiled)}


def check_step_keys(
    ctx: FileCtx, steps: Mapping[str, StepSpec], dag: Dag, params: Mapping[str, ParamSpec]
) -> None:
    """A step's key reads what its input may read: context names, declared params, upstream steps."""
    for step in steps.values():
        if step.keyed is None or step.keyed.key is None:
            continue
        allowed = CONTEXT_NAMES if step.for_each is not None else CONTEXT_NAMES - {"item", "index"}
        where = f"steps.{step.name}.concurrency.key"
        upstream = dag.upstream(step.name)
        check_variables(ctx, where, step.keyed.key, allowed, params, steps, upstream, step.name)
