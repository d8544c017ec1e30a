"""When each schedule trigger fires next, for ``GET /api/v1/workflows``, the CLI and the dashboard.

Computed from the schedule runner's own durable state (its cursor in the ``kv`` table,
triggers/schedule.py), not from the expression alone: a ``rate(...)`` is anchored where the runner
started it, and a runner that is behind (after downtime or a pause) fires on time next only after
now. A paused trigger has no next fire: it emits nothing until it is resumed.
"""

from __future__ import annotations

import json

from engine.engine import Engine
from triggers.schedule import next_fire, parse_schedule, state_key, utcnow
from workflows.spec import ScheduleTrigger

Key = tuple[str, str]  #: (workflow, trigger)


async def next_fires(engine: Engine) -> dict[Key, float | None]:
    """Unix seconds of each schedule's next on-time fire (None: paused, or it never fires again)."""
    specs = [
        ((wf.name, t.name), t)
        for wf in engine.catalog.values()
        for t in wf.triggers
        if isinstance(t, ScheduleTrigger)
    ]
    if not specs:
        return {}
    keys = [state_key(*key) for key, _ in specs]
    async with engine.store.reader() as db:
        rows = await db.execute_fetchall(
            f"SELECT key, value FROM kv WHERE key IN ({','.join('?' * len(keys))})", keys
        )
    states = {row[0]: json.loads(row[1]) for row in rows}
    now, out = utcnow(), dict[Key, float | None]()
    for (key, spec), kv_key in zip(specs, keys, strict=True):
        if engine.pauses.is_paused(*key):
            out[key] = None
            continue
        fire = next_fire(parse_schedule(spec.expression, spec.timezone), states.get(kv_key), now)
        out[key] = None if fire is None else fire.timestamp()
    return out
