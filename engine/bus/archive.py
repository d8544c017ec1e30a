"""The archive: every accepted event stays in the store (until retention, engine/store/retention.py);
replay re-delivers it.

Replay sends archived events to the *current* rules. Each replayed copy is a new event (new id)
with ``replay-name`` and its origin id (``events.origin_id``); a run is not started for an
(origin, workflow) pair that already has one unless ``force``. Which workflows a copy goes to:

- event-pattern rules that match it now (``sluice.run`` state changes, PutEvents, ...);
- trigger events (files, schedule, webhook, manual runs) carry no pattern: they reach their
  workflow through the trigger that emitted them. Replay re-targets them by the runs the
  original started (``runs.trigger``), through the same trigger and its current ``input``
  template (a manual run gets its original params back from the event's detail).

Replayed copies themselves are never replayed again (a second replay of the window would
otherwise double).
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from engine.bus.bus import Bus, Target
from engine.events import BATCH_SOURCE, MANUAL_SOURCE
from engine.ids import event_id
from engine.store.records import RunRecord
from workflows.errors import UnitError
from workflows.patterns import compile_pattern
from workflows.spec import EventTrigger
from workflows.units import parse_duration, parse_instant

log = logging.getLogger(__name__)


def parse_time(text: str | float | None, now: float | None = None) -> float | None:
    """``2026-01-31T12:00:00Z`` (with a zone), epoch seconds, or a duration ago (``2h``, ``30m``)."""
    if text is None or text == "":
        return None
    now = time.time() if now is None else now
    try:
        return parse_instant(text)
    except UnitError as not_instant:
        try:
            return now - parse_duration(text)
        except ValueError:
            raise ValueError(
                f"cannot read the time {text!r}: {not_instant}, or 2h for two hours ago"
            ) from None


# --- replay ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Planned:
    event_id: str
    origin_id: str
    workflow: str
    trigger: str | None
    via: str  # "rule" | "trigger" | "manual"
    params: dict[str, Any] | None = None
    input: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "origin_id": self.origin_id, "workflow": self.workflow,
                "trigger": self.trigger, "via": self.via}  # fmt: skip


def _targets(bus: Bus, conn: sqlite3.Connection, row: sqlite3.Row, env: dict[str, Any]) -> list[Planned]:
    origin = row["origin_id"] or row["id"]
    plans: dict[str, Planned] = {}
    for rule in bus.matching_rules(env):
        plans.setdefault(
            rule.workflow, Planned(row["id"], origin, rule.workflow, rule.trigger, "rule", input=rule.input)
        )
    originals = conn.execute("SELECT workflow, trigger, params FROM runs WHERE event_id=?", (row["id"],))
    for run in originals.fetchall():
        wf = bus.catalog.get(run["workflow"])
        if wf is None or run["workflow"] in plans:
            continue
        sources = {t.name for t in wf.triggers if not isinstance(t, EventTrigger)}
        if run["trigger"] is not None and run["trigger"] in sources:
            plans[wf.name] = Planned(row["id"], origin, wf.name, run["trigger"], "trigger")
        elif run["trigger"] is None and row["source"] == MANUAL_SOURCE:
            detail = env.get("detail")
            params = dict(detail) if isinstance(detail, dict) else {}
            plans[wf.name] = Planned(row["id"], origin, wf.name, None, "manual", params=params)
    return list(plans.values())


def plan_replay(
    bus: Bus,
    conn: sqlite3.Connection,
    since: float,
    until: float | None,
    pattern: Any,
    workflow: str | None,
    force: bool,
) -> tuple[list[tuple[dict[str, Any], list[Planned]]], list[dict[str, Any]]]:
    """Archived originals in [since, until) and, for each, the runs a replay would start; and skips."""
    query = (
        "SELECT * FROM events WHERE received_at >= ? AND received_at < ? AND replay_name IS NULL ORDER BY seq"
    )
    chosen: list[tuple[dict[str, Any], list[Planned]]] = []
    skipped: list[dict[str, Any]] = []
    for row in conn.execute(query, (since, float("inf") if until is None else until)).fetchall():
        env = json.loads(row["body"])
        if pattern is not None and not pattern.matches(env):
            continue
        if row["source"] == BATCH_SOURCE:  # made of other events, which are archived themselves
            continue
        plans = [p for p in _targets(bus, conn, row, env) if workflow is None or p.workflow == workflow]
        keep = []
        for p in plans:
            seen = conn.execute(
                "SELECT id FROM runs WHERE origin_id=? AND workflow=? LIMIT 1", (p.origin_id, p.workflow)
            ).fetchone()
            if seen is not None and not force:
                skipped.append({**p.as_dict(), "reason": f"run {seen[0]} already exists (use --force)"})
            else:
                keep.append(p)
        if keep:
            chosen.append((env, keep))
    return chosen, skipped


async def replay(
    bus: Bus,
    since: float,
    until: float | None = None,
    pattern: dict[str, Any] | None = None,
    workflow: str | None = None,
    *,
    dry_run: bool = False,
    force: bool = False,
    name: str | None = None,
) -> dict[str, Any]:
    """Re-deliver archived events to the current rules; returns what was (or would be) started."""
    if workflow is not None and workflow not in bus.catalog:
        known = ", ".join(sorted(bus.catalog)) or "none"
        raise ValueError(f"no workflow named {workflow!r} (known: {known})")
    compiled = None if pattern is None else compile_pattern(pattern)
    name = name or f"replay-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    if dry_run:
        chosen, skipped = await bus.store.read(
            lambda c: plan_replay(bus, c, since, until, compiled, workflow, force)
        )
        return _report(name, chosen, skipped, [], dry_run=True)

    def tx(conn: sqlite3.Connection) -> tuple[Any, Any, list[RunRecord]]:
        chosen, skipped = plan_replay(bus, conn, since, until, compiled, workflow, force)
        runs: list[RunRecord] = []
        for env, plans in chosen:
            runs.extend(_redeliver(bus, conn, env, plans, name))
        return chosen, skipped, runs

    chosen, skipped, runs = await bus.store.write(tx, heavy=True)
    bus.deliver(runs)
    log.info("replay %s: %d events re-delivered, %d runs started, %d skipped",
             name, len(chosen), len(runs), len(skipped))  # fmt: skip
    return _report(name, chosen, skipped, runs, dry_run=False)


def _redeliver(
    bus: Bus, conn: sqlite3.Connection, env: dict[str, Any], plans: list[Planned], name: str
) -> list[RunRecord]:
    """Commit the replayed copy (hooks see it, so subscribers hear of it) and start exactly ``plans``."""
    copy = {**env, "id": event_id(), "replay-name": name, "_origin_id": plans[0].origin_id}
    bus.insert_event(conn, copy)
    for hook in bus.tx_hooks:
        hook(conn, copy, 0)
    runs = []
    for p in plans:
        if p.via == "rule":
            run = bus.start_in_tx(conn, copy, p.workflow, p.trigger, None, p.input, 1)
        else:
            target = Target(p.workflow, p.trigger, p.params)
            run = bus.start_in_tx(conn, copy, target.workflow, target.trigger, target.params, None, 0)
        if run is not None:
            runs.append(run)
    return runs


Chosen = list[tuple[dict[str, Any], list[Planned]]]


def _report(
    name: str, chosen: Chosen, skipped: list[dict[str, Any]], runs: list[Any], *, dry_run: bool
) -> dict[str, Any]:
    return {
        "replay_name": name,
        "dry_run": dry_run,
        "events": len(chosen),
        "planned": [p.as_dict() for _, plans in chosen for p in plans],
        "started": [{"run_id": r.id, "workflow": r.workflow, "event_id": r.event["id"]} for r in runs],
        "skipped": skipped,
    }
