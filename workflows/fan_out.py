"""A step's fan-out fields: ``array``, ``for_each`` and ``max_concurrency``, and which kinds take them.

A function step's ``for_each`` runs in the driver's lanes (``max_concurrency`` caps them); a
container step's is one Batch array job (engine/batch/fanout.py), whose children run as their
queue has room, so ``max_concurrency`` is refused there; ``array: N`` is a container's only.
"""

from __future__ import annotations

from typing import Any

from workflows.fields import FileCtx, read_int
from workflows.templating import Renderable


def fan_out(ctx: FileCtx, where: str, kind: str, body: dict[str, Any]) -> tuple[int | None, int | None]:
    """``array``/``for_each``/``max_concurrency``: which kinds fan out, and how; (array, lanes)."""
    array, each = read_int(ctx, f"{where}.array", body.get("array"), 2, 10000, 4), body.get("for_each")
    if array is not None and kind != "container":
        ctx.err(f"{where}.array", "array is for container steps only", "use for_each for other steps")
    hint = "keep for_each for one child per item, each reading SLUICE_ITEM; or array: N for N children"
    if array is not None and each is not None:
        ctx.err(f"{where}.for_each", "a step has either for_each or array, not both", hint)
    elif kind == "container" and isinstance(each, list) and len(each) > 10000:
        too_many = (
            f"a container step's for_each is one array job of at most 10000 children, got {len(each)} items"
        )
        ctx.err(f"{where}.for_each", too_many, "split the list over several steps")
    elif each is not None and kind not in ("function", "container"):
        ctx.err(
            f"{where}.for_each",
            "for_each runs a function or container step once per item",
            "make the step a function or a container, or remove for_each",
        )
    lanes = read_int(ctx, f"{where}.max_concurrency", body.get("max_concurrency"), 1, 10000, 10)
    if lanes is not None and kind == "container" and each is not None:  # capacity is the queue's to give
        ctx.err(
            f"{where}.max_concurrency",
            "a container step's for_each is one array job; its children run as the queue's "
            "compute environments have room, not in lanes",
            "remove it; to cap the children running at once, give the step a queue of its own "
            "whose environment's max_vcpus allows only that many",
        )
    elif lanes is not None and kind != "function":
        ctx.err(
            f"{where}.max_concurrency", "max_concurrency is for function steps with for_each", "remove it"
        )
    elif lanes is not None and each is None:
        ctx.err(
            f"{where}.max_concurrency",
            "max_concurrency caps the items of a for_each in flight; this step has no for_each",
            "add for_each, or use concurrency to cap the attempts of a function",
        )
    return array, lanes


def read_for_each(ctx: FileCtx, where: str, value: Any) -> Renderable | None:
    if value is None:
        return None
    if isinstance(value, list) or (isinstance(value, str) and "{{" in value):
        return ctx.template(where, value)
    ctx.err(
        where,
        f"must be a list or a template giving a list, got {ctx.show(value)}",
        'write e.g. for_each: "{{ steps.probe.output.tiles }}"',
    )
    return None
