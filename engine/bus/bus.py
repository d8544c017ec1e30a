"""The bus: commit an event, match it against every rule, create runs — in one transaction.

An event is acknowledged (``put`` returns) only after the transaction that holds
it *and the runs it starts* has committed, so an accepted event can never be
lost between "stored" and "routed". Routing is idempotent: a run is unique per
(event, workflow), and a producer's ``dedupe_key`` makes a re-sent event (a file
seen again after a restart, a webhook retried with the same Idempotency-Key)
start nothing new.

Matching runs on the writer thread inside the transaction: rules are compiled
once when the catalog loads and are read-only afterwards.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.bus import batch_rows
from engine.bus.destinations import final_status, record_event, workflow_targets
from engine.bus.routing import RuleIndex
from engine.errors import INVALID_INPUT, error_record
from engine.events import complete
from engine.ids import ordered_id
from engine.states import Status
from engine.store import audit, records
from engine.store.records import RunRecord
from engine.store.store import Store
from engine.telemetry import Telemetry
from engine.types import TxHook
from triggers.base import EmitResult
from workflows.errors import InputError, SluiceError
from workflows.loader import resolve_input
from workflows.patterns import prepare_event
from workflows.spec import BatchSpec, EventTrigger, ScheduleTrigger, Workflow

log = logging.getLogger(__name__)

#: a chain of workflows started by each other's state changes stops here (a loop guard)
MAX_DEPTH = 8
#: this many events put within BURST_WINDOW_S (>= 200/s) make a burst: new runs then wait for
#: intake (engine/orchestrator.py, admission)
BURST_EVENTS = 4
BURST_WINDOW_S = 0.02
#: this many within the same window (>= 1,600/s, faster than held runs drain while intake runs
#: beside them) make a flood: new runs then wait until it ebbs (or for MAX_HOLD_S)
FLOOD_EVENTS = 32


@dataclass(frozen=True, slots=True)
class Rule:
    workflow: str
    trigger: str
    pattern: Any  # workflows.patterns.Pattern
    input: Any  # Renderable | None


@dataclass(frozen=True, slots=True)
class Target:
    """Where a trigger's own event goes: its workflow, through the trigger's ``input`` template."""

    workflow: str
    trigger: str | None = None
    params: Mapping[str, Any] | None = None  # explicit run input (a manual run), skips the template
    #: a retry from the failed steps: steps that start SUCCEEDED with these outputs, and their run
    keep: Mapping[str, Any] | None = None
    kept_from: str | None = None


def new_run_id() -> str:
    return ordered_id("r-")


class Bus:
    """Durable intake and routing. Hand new runs to whoever listens (the orchestrator)."""

    def __init__(
        self, store: Store, catalog: Mapping[str, Workflow], *, clock: Callable[[], float] = time.time
    ):
        self.store = store
        self.clock = clock
        self._catalog = catalog
        self._rules: RuleIndex[Rule] = RuleIndex()
        #: rules added while running (EventBridge's PutRule/PutTargets, engine/aws/rules.py); the
        #: tuple is replaced whole, never changed, so the writer thread always reads a complete set
        self.extra_rules: tuple[Rule, ...] = ()
        self._listeners: list[Callable[[list[RunRecord]], None]] = []
        self.tx_hooks: list[TxHook] = []  #: run inside the event's transaction (the notify outbox)
        self.after_commit: list[Callable[[], None]] = []  #: on the loop, after a commit with events
        self.events_accepted = 0
        self.telemetry = Telemetry()  #: what /metrics counts, after each commit (engine/telemetry.py)
        #: the (workflow, trigger) pairs paused now (engine/pauses.py): their rules start nothing
        self.paused: Callable[[], frozenset[tuple[str, str]]] = frozenset
        self._arrivals: deque[float] = deque(maxlen=FLOOD_EVENTS)  #: monotonic times of the last puts
        self.batched: dict[tuple[str, str], BatchSpec] = {}
        self.recompile()
        store.linger = self.flooding  # a flood's webhooks then share their commits (engine/store.py)

    def recompile(self) -> None:
        """Build the rules, destinations and batch triggers from the catalog as it is now.

        Called once at load and again after a hot reload (engine/reload.py) swapped the catalog.
        Each is built aside and then assigned whole, so the writer thread, which reads them
        while it routes, sees either the old set or the new one, never a mix."""
        rules: RuleIndex[Rule] = RuleIndex()
        for wf in self._catalog.values():
            for trig in wf.triggers:
                if not isinstance(trig, EventTrigger):
                    continue
                rules.add(Rule(wf.name, trig.name, trig.compiled, trig.input), trig.pattern)
        self._rules = rules
        self._destinations = workflow_targets(self._catalog)
        #: triggers whose events wait for a batch (engine/bus/batches.py closes them into runs)
        self.batched = {
            (wf.name, t.name): t.batch
            for wf in self._catalog.values()
            for t in wf.triggers
            if not isinstance(t, ScheduleTrigger) and t.batch is not None
        }

    @property
    def catalog(self) -> Mapping[str, Workflow]:
        """The workflows this bus routes to (swapped whole by a hot reload, then :meth:`recompile`)."""
        return self._catalog

    @property
    def rule_count(self) -> int:
        return len(self._rules) + len(self.extra_rules)

    def on_runs(self, listener: Callable[[list[RunRecord]], None]) -> None:
        """``listener(runs)`` after each commit that started runs (the orchestrator drives them)."""
        self._listeners.append(listener)

    def add_tx_hook(self, hook: TxHook) -> None:
        """``hook(conn, event, depth)`` inside every event's transaction (the notification outbox)."""
        self.tx_hooks.append(hook)

    def on_commit(self, wake: Callable[[], None]) -> None:
        """``wake()`` on the loop after every commit that held events (the sender's lanes)."""
        self.after_commit.append(wake)

    def deliver(self, runs: list[RunRecord]) -> None:
        """After a commit that held events: hand new runs over, wake post-commit listeners."""
        if runs:
            self.telemetry.runs_created(runs)
            for listener in self._listeners:
                listener(runs)
        for wake in self.after_commit:
            wake()

    async def put(
        self,
        event: dict[str, Any],
        *,
        dedupe_key: str | None = None,
        target: Target | None = None,
        depth: int = 0,
    ) -> EmitResult:
        """Commit one event and the runs it starts; returns once both are durable."""
        env = complete(event)
        queued_at = time.monotonic()
        self._arrivals.append(queued_at)
        (result, runs) = await self.store.write(
            lambda conn: self.admit(conn, env, dedupe_key, target, depth), shed=True
        )
        self.telemetry.accepted([] if result.duplicate else [str(env.get("source"))], queued_at)
        self.deliver(runs)
        return result

    def in_burst(self) -> bool:
        """Events are arriving fast (the last BURST_EVENTS within BURST_WINDOW_S): intake is busy."""
        return self._arrived_within(BURST_EVENTS)

    def flooding(self) -> bool:
        """Events are arriving faster than runs could keep up (FLOOD_EVENTS within BURST_WINDOW_S)."""
        return self._arrived_within(FLOOD_EVENTS)

    def _arrived_within(self, count: int) -> bool:
        arrivals = self._arrivals
        return len(arrivals) >= count and time.monotonic() - arrivals[-count] < BURST_WINDOW_S

    async def put_many(
        self, entries: Iterable[tuple[dict[str, Any], str | None, Target | None]], *, depth: int = 0
    ) -> list[EmitResult]:
        """Commit a batch in one transaction (PutEvents). Each entry is (event, dedupe_key, target);
        ``depth`` is the chain depth of the run that put them (0: from outside)."""
        prepared = [(complete(ev), key, target) for ev, key, target in entries]
        queued_at = time.monotonic()
        self._arrivals.extend([queued_at] * min(len(prepared), FLOOD_EVENTS))

        def admit_all(conn: sqlite3.Connection) -> list[tuple[EmitResult, list[RunRecord]]]:
            return [self.admit(conn, env, key, target, depth) for env, key, target in prepared]

        outcomes = await self.store.write(admit_all, heavy=len(prepared) > 10, shed=True)
        fresh = [
            str(p[0].get("source"))
            for p, (res, _) in zip(prepared, outcomes, strict=True)
            if not res.duplicate
        ]
        self.telemetry.accepted(fresh, queued_at)
        self.deliver([run for _, runs in outcomes for run in runs])
        return [result for result, _ in outcomes]

    def emitter(self, workflow: str, trigger: str) -> Any:
        """An ``Emit`` bound to one trigger of one workflow (see triggers/base.py)."""

        async def emit(
            event: dict[str, Any], *, dedupe_key: str | None = None, workflow: str | None = workflow
        ) -> EmitResult:
            return await self.put(event, dedupe_key=dedupe_key, target=Target(workflow or "", trigger))

        return emit

    # -- on the writer thread ---------------------------------------------------------------

    def admit(
        self,
        conn: sqlite3.Connection,
        env: dict[str, Any],
        dedupe_key: str | None,
        target: Target | None,
        depth: int,
    ) -> tuple[EmitResult, list[RunRecord]]:
        if dedupe_key is not None:
            row = conn.execute("SELECT id FROM events WHERE dedupe_key=?", (dedupe_key,)).fetchone()
            if row is not None:
                run_ids = tuple(r[0] for r in conn.execute("SELECT id FROM runs WHERE event_id=?", (row[0],)))
                return EmitResult(row[0], run_ids, duplicate=True), []
        self.insert_event(conn, env, dedupe_key)
        runs = self.route(conn, env, target, depth)
        return EmitResult(env["id"], tuple(r.id for r in runs)), runs

    def insert_event(
        self, conn: sqlite3.Connection, env: dict[str, Any], dedupe_key: str | None = None
    ) -> None:
        records.insert_event(conn, env, self.clock(), dedupe_key)
        self.events_accepted += 1

    def publish(self, conn: sqlite3.Connection, env: dict[str, Any], depth: int) -> list[RunRecord]:
        """Commit a state-change event inside the caller's transaction; returns the runs it starts."""
        env = complete(env)
        self.insert_event(conn, env)
        return self.route(conn, env, None, depth)

    def route(
        self, conn: sqlite3.Connection, env: dict[str, Any], target: Target | None, depth: int
    ) -> list[RunRecord]:
        for hook in self.tx_hooks:
            hook(conn, env, depth)
        runs: list[RunRecord] = []
        if target is not None and target.workflow:
            run = self.start_in_tx(conn, env, target.workflow, target.trigger, target.params, None, depth)
            if run is not None:
                if target.keep and run.status == Status.PENDING:
                    self._keep_steps(conn, run, target.keep, target.kept_from or "")
                runs.append(run)
        runs.extend(self._destination(conn, env, depth))
        paused = self.paused()
        for rule in self.matching_rules(env):
            if (rule.workflow, rule.trigger) in paused:  # as an EventBridge rule DISABLED
                continue
            if depth + 1 > MAX_DEPTH:
                self._audit_depth(conn, env, rule, depth)
                continue
            run = self.start_in_tx(conn, env, rule.workflow, rule.trigger, None, rule.input, depth + 1)
            if run is not None:
                runs.append(run)
        return runs

    def matching_rules(self, env: dict[str, Any]) -> list[Rule]:
        prepared = prepare_event(env)  # dotted keys expanded once, not once per rule
        rules = (*self._rules.candidates(prepared), *self.extra_rules)
        return [r for r in rules if r.pattern.matches_prepared(prepared)]

    def start_in_tx(
        self,
        conn: sqlite3.Connection,
        env: dict[str, Any],
        workflow: str,
        trigger: str | None,
        params: Mapping[str, Any] | None,
        input_tpl: Any,
        depth: int,
        *,
        batched: bool = False,
    ) -> RunRecord | None:
        """Create one run of ``workflow`` for ``env`` inside the caller's transaction.

        Params come from ``params`` as given, else the trigger's ``input`` template rendered with
        the event; input that does not fit the workflow creates the run FAILED with the reason.
        Returns None when the (event, workflow) pair already has a run, or when the trigger
        takes its events in batches: the event then waits for its batch, committed with it
        (``batched`` is the batch's own event, closed by engine/bus/batches.py). Call
        :meth:`deliver` with the returned runs after the commit (routing and replay do).
        """
        wf = self._catalog.get(workflow)
        if wf is None:
            raise KeyError(f"no workflow named {workflow!r}")
        if not batched and trigger is not None and (workflow, trigger) in self.batched:
            batch_rows.add(conn, workflow, trigger, env["id"], depth, self.clock())
            return None
        if input_tpl is None and trigger is not None and params is None:
            input_tpl = _trigger_input(wf, trigger)
        now = self.clock()
        run = RunRecord(new_run_id(), workflow, env, {}, now, depth, trigger, version=wf.version, spec=wf)
        try:
            data = (
                dict(params)
                if params is not None
                else ({} if input_tpl is None else input_tpl.render({"event": env}))
            )
            run.params = resolve_input(wf, data)
        except (InputError, SluiceError) as exc:
            run.status = Status.FAILED
            run.error = error_record(INVALID_INPUT, str(exc))
        origin = env.get("_origin_id") or env["id"]
        if not records.insert_run(conn, run, origin):
            return None
        return run

    def _keep_steps(
        self, conn: sqlite3.Connection, run: RunRecord, keep: Mapping[str, Any], origin: str
    ) -> None:
        """The new run starts with these steps SUCCEEDED (a redrive): their rows, and the driver's view."""
        records.copy_steps(conn, run.id, keep, origin, run.created_at)
        for name, output in keep.items():
            run.steps[(name, -1)] = {"status": Status.SUCCEEDED, "output": output, "error": None}

    def _destination(self, conn: sqlite3.Connection, env: dict[str, Any], depth: int) -> list[RunRecord]:
        """A run ended: start its ``on_success``/``on_failure`` workflow with the invocation record."""
        if not self._destinations:
            return []
        status = final_status(env)
        if status is None:
            return []
        target = self._destinations.get((env["detail"]["workflow"], status))
        if target is None:
            return []
        if depth + 1 > MAX_DEPTH:
            self._audit_depth(conn, env, Rule(target, "on_" + status.lower(), None, None), depth)
            return []
        record = complete(record_event(env, target))
        self.insert_event(conn, record)
        return self.route(conn, record, Target(target), depth + 1)

    def _audit_depth(self, conn: sqlite3.Connection, env: dict[str, Any], rule: Rule, depth: int) -> None:
        detail = {
            "event_id": env["id"],
            "workflow": rule.workflow,
            "reason": f"workflow chain deeper than {MAX_DEPTH} runs; not starting {rule.workflow} "
            "(check for workflows that start each other)",
        }
        audit.insert(conn, "chain-depth", rule.workflow, detail, self.clock())
        log.warning("not starting %s from event %s: %s", rule.workflow, env["id"], detail["reason"])


def _trigger_input(wf: Workflow, trigger: str) -> Any:
    for trig in wf.triggers:
        if trig.name == trigger:
            return trig.input
    return None
