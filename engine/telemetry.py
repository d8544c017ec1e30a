"""In-memory counters and histograms behind ``/metrics``: what happened since this engine started.

``/metrics`` used to count the runs and events tables on every scrape (``GROUP BY`` over the whole
history: ~200 ms at a million runs, on a page Prometheus reads every 15 s, and growing with the
history). Prometheus wants counters anyway, and computes rates and totals from them; so each fact
is counted once, where it becomes durable, and a scrape only formats numbers.

Counted after the commit, never inside the transaction: the store may replay a batch's writes
(one of them raised), and a write function must stay replayable, so a count there could double.

One ``CollectorRegistry`` per engine, never prometheus-client's global one: two engines in one
process (as tests have) must not mix their numbers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from engine.events import RUN_SOURCE, STEP_SOURCE
from engine.states import TERMINAL, Status

#: step durations range from a millisecond function to an hours-long container job
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)
#: from a write queued to its commit durable: ~0.1 ms on an idle loop, milliseconds under load,
#: seconds when the disk stalls
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


class Telemetry:
    """The engine's counters; ``registry`` is what ``/metrics`` renders beside its gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.events = Counter(
            "sluice_events_accepted",
            "Events committed since the engine started, by source",
            ["source"],
            registry=reg,
        )
        self.runs_started = Counter(
            "sluice_runs_started", "Runs created since the engine started", ["workflow"], registry=reg
        )
        self.runs_ended = Counter(
            "sluice_runs_ended",
            "Runs that ended since the engine started, by final state",
            ["workflow", "status"],
            registry=reg,
        )
        self.step_seconds = Histogram(
            "sluice_step_duration_seconds",
            "Top-level step durations (RUNNING to its end, as committed), by final state",
            ["workflow", "step", "status"],
            buckets=STEP_BUCKETS,
            registry=reg,
        )
        self.commit_seconds = Histogram(
            "sluice_store_commit_latency_seconds",
            "From a write queued to its commit durable (intake events and run transitions)",
            buckets=COMMIT_BUCKETS,
            registry=reg,
        )
        #: run -> step -> monotonic time its RUNNING committed; a run's entry goes when it ends
        self._step_began: dict[str, dict[str, float]] = {}

    def runs_created(self, runs: Iterable[Any]) -> None:
        """New runs just committed (``Bus.deliver``); one refused at creation has ended too."""
        for run in runs:
            self.runs_started.labels(run.workflow).inc()
            if run.status in TERMINAL:
                self.runs_ended.labels(run.workflow, str(run.status)).inc()

    def committed(self, events: Iterable[dict[str, Any]], queued_at: float) -> None:
        """A run's transaction is durable with these state-change events (engine/runs/changes.py)."""
        now = time.monotonic()
        self.commit_seconds.observe(now - queued_at)
        for env in events:
            source, detail = env.get("source"), env.get("detail") or {}
            self.events.labels(str(source)).inc()
            status, run_id = detail.get("status"), str(detail.get("run_id"))
            if source == RUN_SOURCE and status in TERMINAL:
                self.runs_ended.labels(str(detail.get("workflow")), str(status)).inc()
                self._step_began.pop(run_id, None)
            elif source == STEP_SOURCE:
                step = str(detail.get("step"))
                if status == Status.RUNNING:
                    self._step_began.setdefault(run_id, {})[step] = now
                elif status in TERMINAL:
                    began = self._step_began.get(run_id, {}).pop(step, None)
                    if began is not None:  # a step resumed after a restart has no start here
                        labels = (str(detail.get("workflow")), step, str(status))
                        self.step_seconds.labels(*labels).observe(now - began)

    def accepted(self, sources: Iterable[str], queued_at: float) -> None:
        """Intake events just committed (``Bus.put``/``put_many``)."""
        self.commit_seconds.observe(time.monotonic() - queued_at)
        for source in sources:
            self.events.labels(source).inc()
