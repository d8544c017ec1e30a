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

import bisect
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from engine.events import RUN_SOURCE, STEP_SOURCE
from engine.states import TERMINAL, Status

#: step durations range from a millisecond function to an hours-long container job
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)
#: from a write queued to its commit durable: ~0.1 ms on an idle loop, milliseconds under load,
#: seconds when the disk stalls
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


class _Histogram:
    """Bucket counts as Prometheus has them (``le``: an upper bound, inclusive), ~0.3 us an observe."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  #: per bucket, the last one +Inf; not cumulative
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def family_sample(self) -> tuple[list[tuple[str, float]], float]:
        cumulative, buckets = 0, list[tuple[str, float]]()
        for bound, n in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        return buckets, self.total


class Telemetry(Collector):
    """The engine's counters; ``registry`` is what ``/metrics`` renders beside its gauges.

    Plain dicts and bucket lists, rendered into prometheus-client's metric families only when
    scraped: a counter's ``labels().inc()`` costs ~2 us (a lock and a lookup), several per run on
    the engine's hottest path; a dict increment costs a tenth of that (bench/RESULTS.md)."""

    def __init__(self) -> None:
        self.events: dict[str, int] = {}
        self.runs_started: dict[str, int] = {}
        self.runs_ended: dict[tuple[str, str], int] = {}
        self.step_seconds: dict[tuple[str, str, str], _Histogram] = {}
        self.commit_seconds = _Histogram(COMMIT_BUCKETS)
        #: run -> step -> monotonic time its RUNNING committed; a run's entry goes when it ends
        self._step_began: dict[str, dict[str, float]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Any]:
        events = CounterMetricFamily(
            "sluice_events_accepted",
            "Events committed since the engine started, by source",
            labels=["source"],
        )
        for source, n in sorted(self.events.items()):
            events.add_metric([source], n)
        yield events
        started = CounterMetricFamily(
            "sluice_runs_started", "Runs created since the engine started", labels=["workflow"]
        )
        for workflow, n in sorted(self.runs_started.items()):
            started.add_metric([workflow], n)
        yield started
        ended = CounterMetricFamily(
            "sluice_runs_ended",
            "Runs that ended since the engine started, by final state",
            labels=["workflow", "status"],
        )
        for pair, n in sorted(self.runs_ended.items()):
            ended.add_metric(list(pair), n)
        yield ended
        steps = HistogramMetricFamily(
            "sluice_step_duration_seconds",
            "Top-level step durations (RUNNING to its end, as committed), by final state",
            labels=["workflow", "step", "status"],
        )
        for labels, hist in sorted(self.step_seconds.items()):
            buckets, total = hist.family_sample()
            steps.add_metric(list(labels), buckets, total)
        yield steps
        commits = HistogramMetricFamily(
            "sluice_store_commit_latency_seconds",
            "From a write queued to its commit durable (intake events and run transitions)",
        )
        buckets, total = self.commit_seconds.family_sample()
        commits.add_metric([], buckets, total)
        yield commits

    def runs_created(self, runs: Iterable[Any]) -> None:
        """New runs just committed (``Bus.deliver``); one refused at creation has ended too."""
        started, ended = self.runs_started, self.runs_ended
        for run in runs:
            started[run.workflow] = started.get(run.workflow, 0) + 1
            if run.status in TERMINAL:
                key = (run.workflow, str(run.status))
                ended[key] = ended.get(key, 0) + 1

    def committed(self, events: Iterable[dict[str, Any]], queued_at: float) -> None:
        """A run's transaction is durable with these state-change events (engine/runs/changes.py)."""
        now = time.monotonic()
        self.commit_seconds.observe(now - queued_at)
        counts = self.events
        for env in events:
            source, detail = str(env.get("source")), env.get("detail") or {}
            counts[source] = counts.get(source, 0) + 1
            status, run_id = detail.get("status"), str(detail.get("run_id"))
            if source == RUN_SOURCE and status in TERMINAL:
                key = (str(detail.get("workflow")), str(status))
                self.runs_ended[key] = self.runs_ended.get(key, 0) + 1
                self._step_began.pop(run_id, None)
            elif source == STEP_SOURCE:
                step = str(detail.get("step"))
                if status == Status.RUNNING:
                    self._step_began.setdefault(run_id, {})[step] = now
                elif status in TERMINAL:
                    began = self._step_began.get(run_id, {}).pop(step, None)
                    if began is not None:  # a step resumed after a restart has no start here
                        labels = (str(detail.get("workflow")), step, str(status))
                        hist = self.step_seconds.get(labels)
                        if hist is None:
                            hist = self.step_seconds[labels] = _Histogram(STEP_BUCKETS)
                        hist.observe(now - began)

    def accepted(self, sources: Iterable[str], queued_at: float) -> None:
        """Intake events just committed (``Bus.put``/``put_many``)."""
        self.commit_seconds.observe(time.monotonic() - queued_at)
        counts = self.events
        for source in sources:
            counts[source] = counts.get(source, 0) + 1
