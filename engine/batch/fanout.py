"""A container step's ``for_each``: one array job, child *i* running with item *i*.

Step Functions' Map state over a Batch job becomes one Batch array job of ``len(items)``
children, so queues, capacity, the retry strategy, ``array_status_summary``, logs and terminate
work as for ``array: N``. Each item reaches its child as data, never as shell text: the
environment variable ``SLUICE_ITEM`` (the item as JSON) beside ``SLUICE_ARRAY_INDEX``, and
``{{ item }}``/``{{ index }}`` in ``container.env`` (and ``command`` arguments), rendered per
child. A child's item lives in its own job row (its spec), never in one row for the whole
array, so 10,000 children are written in the array's chunks like any other array's.

An item those templates do not fit fails its own child, as a function ``for_each``'s bad item
fails alone: the child is created FAILED (no container, no attempt; its reason ``item 3: ...``)
and the others run. Templates that do not read the item fail the step before any job exists.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from engine.batch.jobs import MAX_ARRAY, ChildError, JobError, JobSpec, check_command
from workflows import secrets
from workflows.errors import SluiceError
from workflows.spec import StepSpec
from workflows.templating import Renderable

#: an item as JSON: well under Linux's 128 KiB per environment string, with room for the rest
MAX_ITEM_BYTES = 32 * 1024
#: all items together: each child's row holds its own, the store keeps them all
MAX_ITEMS_BYTES = 16 * 1024 * 1024
ITEM_ENV = "SLUICE_ITEM"
#: the reason of a child created FAILED because its item did not fit (:class:`PerChild`)
_ITEM_REASON = re.compile(r"item \d+: steps\.")


def misfit(reason: str | None) -> bool:
    """The child never ran: its item did not fit the step's env or command (a template's error,
    or a value no container takes), as a function for_each's item fails its input's template."""
    return reason is not None and _ITEM_REASON.match(reason) is not None


def render_items(name: str, spec: StepSpec, ctx: Mapping[str, Any]) -> list[str]:
    """The step's items, each as compact JSON (what ``SLUICE_ITEM`` holds); SluiceError says why not."""
    assert spec.for_each is not None, name
    items = spec.for_each.render(ctx)
    if not isinstance(items, list):
        raise SluiceError(
            f"steps.{name}.for_each must render to a list, got {type(items).__name__} "
            f"({_preview(items)}); point it at a list, e.g. {{{{ steps.probe.output.tiles }}}}"
        )
    if len(items) > MAX_ARRAY:
        raise SluiceError(
            f"steps.{name}.for_each gave {len(items)} items; a container step runs at most {MAX_ARRAY} "
            "(one array job, as in AWS Batch); split the list over several steps or runs"
        )
    texts, total = [], 0
    for i, item in enumerate(items):
        text = json.dumps(item, separators=(",", ":"), ensure_ascii=False)
        size = len(text.encode())
        if size > MAX_ITEM_BYTES:
            raise SluiceError(
                f"steps.{name}.for_each item {i} is {size} bytes as JSON; a container's item "
                f"is at most {MAX_ITEM_BYTES} (it goes in an environment variable); put the data in a "
                "file the container mounts and pass its path as the item"
            )
        total += size
        if total > MAX_ITEMS_BYTES:
            raise SluiceError(
                f"steps.{name}.for_each items add up to over {MAX_ITEMS_BYTES} bytes as JSON; put the "
                "data in files the containers mount and pass their paths as the items"
            )
        texts.append(text)
    return texts


@dataclass(frozen=True, slots=True)
class PerChild:
    """How child *i*'s spec differs from the array's: the parts whose templates read the item."""

    name: str
    ctx: Mapping[str, Any]
    items: list[str] | None  #: None for ``array: N``, whose children have an index and no item
    env: dict[str, Renderable]  #: container.env values that read ``item`` or ``index``
    command: tuple[Renderable, ...] | None  #: the command, when one of its arguments reads them

    def __call__(self, base: JobSpec, index: int) -> JobSpec:
        try:
            return self._render(base, index)
        except SluiceError as exc:  # a template, or its value, that does not fit this item
            raise ChildError(f"item {index}: {exc}") from exc

    def _render(self, base: JobSpec, index: int) -> JobSpec:
        text = None if self.items is None else self.items[index]
        ctx = {**self.ctx, "index": index}
        if text is not None:
            ctx["item"] = json.loads(text)
        env, sealed = dict(base.environment), dict(base.secrets)
        for key, value in self.env.items():
            rendered = env_text(value.render(ctx))
            if "\0" in rendered:
                raise JobError(f"steps.{self.name}.container.env.{key}: item {index} puts a NUL in it")
            ref = secrets.seal(rendered)
            if ref is None:
                env[key] = rendered
                sealed.pop(key, None)
            else:
                sealed[key] = ref
        command = base.command
        if self.command is not None:
            command = tuple(env_text(part.render(ctx)) for part in self.command)
            if any(secrets.holds_secret(part) for part in command):
                raise JobError(
                    f"steps.{self.name}.container.command: holds a value from ${{env:...}}, which "
                    "would show in the job's description; pass it through env: instead"
                )
        if text is not None:
            env[ITEM_ENV] = text  # set last: the item is Sluice's to give, as the index is
        child = replace(base, environment=env, secrets=sealed, command=command)
        try:
            check_command(child)
        except JobError as exc:  # its "command[2]: ..." named as the step's field, as the others are
            raise JobError(f"steps.{self.name}.container.{exc}") from exc
        return child


def per_child(name: str, spec: StepSpec, ctx: Mapping[str, Any], items: list[str] | None) -> PerChild:
    """What each child renders itself: with ``items`` a ``for_each``'s, without an ``array: N``'s
    (its templates may read ``{{ index }}``)."""
    c = spec.container
    assert c is not None, name
    reads_item = {"item", "index"}.intersection
    env = {k: v for k, v in c.env.items() if reads_item(v.variables)}
    command = c.command if c.command and any(reads_item(p.variables) for p in c.command) else None
    return PerChild(name, ctx, items, env, command)


def child_outputs(conn: sqlite3.Connection, parent_id: str) -> list[dict[str, Any]]:
    """Each child's output, in item order: what a container step's output is, one per child."""
    sql = (
        "SELECT j.id, j.array_index, j.status, j.status_reason, j.exit_code, j.attempts, "
        "(SELECT a.log_path FROM job_attempts a WHERE a.job_id = j.id ORDER BY a.attempt DESC LIMIT 1) "
        "FROM jobs j WHERE j.parent_id = ? ORDER BY j.array_index"
    )
    return [
        {
            "job_id": job_id,
            "index": index,
            "status": status,
            "exit_code": code,
            "attempts": attempts,
            "log_path": log_path,
            **({"status_reason": reason} if status != "SUCCEEDED" else {}),
        }
        for job_id, index, status, reason, code, attempts, log_path in conn.execute(sql, (parent_id,))
    ]


def misfits(conn: sqlite3.Connection, parent_id: str) -> list[tuple[int, str]]:
    """The children created FAILED because their item did not fit: (index, reason), in order.
    They end in the submission's own commit, so no watcher of the array is told of them."""
    sql = (
        "SELECT array_index, status_reason FROM jobs "
        "WHERE parent_id = ? AND status = 'FAILED' AND attempts = 0 ORDER BY array_index"
    )
    return [(i, reason) for i, reason in conn.execute(sql, (parent_id,)) if misfit(reason)]


def children_done(conn: sqlite3.Connection, parent_id: str) -> int:
    sql = "SELECT COUNT(*) FROM jobs WHERE parent_id = ? AND status IN ('SUCCEEDED', 'FAILED')"
    return int(conn.execute(sql, (parent_id,)).fetchone()[0])


def failure(outputs: list[dict[str, Any]], size: int) -> str | None:
    """None when every child succeeded; else the function for_each's message: how many, the first."""
    failed = [o for o in outputs if o["status"] != "SUCCEEDED"]
    missing = size - len(outputs)
    if not failed and not missing:
        return None
    if not failed:
        return f"{missing} of {size} items have no child job"
    first = failed[0]
    return (
        f"{len(failed) + missing} of {size} items failed; item {first['index']}: "
        f"job {first['job_id']}: {first.get('status_reason')}"
    )


def env_text(value: Any) -> str:
    """A rendered value as an argument or environment text: JSON unless it is a string or number
    (``true``, not Python's ``True``, as a literal ``FLAG: true`` in the file gives)."""
    if isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return str(value)
    return json.dumps(value)


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
