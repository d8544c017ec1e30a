"""The schedule trigger with an injected clock (exact and fast), plus one real-time test."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.triggers import MemoryKV, RecordingEmit
from triggers.schedule import AUDIT_LIMIT, Schedule, ScheduleTriggerRunner, parse_schedule
from workflows.schedules import Fires

pytestmark = pytest.mark.timeout(30)

D0 = datetime(2026, 3, 2, 0, 10, tzinfo=UTC)  # a Monday; first start at 00:10 UTC
H = timedelta(hours=1)


@dataclass
class FakeClock:
    """The injected clock: ``sleep`` moves time forward instantly and records what was asked."""

    now: datetime
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)
        await asyncio.sleep(0)


@dataclass
class AuditLog:
    entries: list[tuple[str, str, str, datetime, str]] = field(default_factory=list)

    async def __call__(
        self, kind: str, workflow: str, trigger: str, scheduled: datetime, reason: str
    ) -> None:
        self.entries.append((kind, workflow, trigger, scheduled, reason))


def runner(
    expr: str = "rate(1 hour)", tz: str = "UTC", kv: MemoryKV | None = None, **kwargs: Any
) -> ScheduleTriggerRunner:
    return ScheduleTriggerRunner(
        name="tick", workflow="wf", schedule=parse_schedule(expr, tz), kv=kv or MemoryKV(), **kwargs
    )


def times(emit: RecordingEmit) -> list[str]:
    return [e.event["time"] for e in emit.events]


async def test_first_start_does_not_backfill_and_time_is_the_scheduled_time() -> None:
    emit, kv = RecordingEmit(), MemoryKV()
    r = runner(kv=kv)
    assert await r.tick(D0, emit) == []
    late = D0.replace(hour=1, minute=0, second=0, microsecond=4_000)  # woke 4 ms late
    (fire,) = await r.tick(late, emit)
    assert fire.scheduled_time == D0.replace(hour=1, minute=0)
    assert fire.late_s == pytest.approx(0.004)
    (got,) = emit.events
    assert got.event == {
        "version": "0",
        "id": got.event["id"],
        "source": "sluice.schedule",
        "detail-type": "Scheduled Event",
        "time": "2026-03-02T01:00:00Z",
        "account": "local",
        "region": "local",
        "resources": ["schedule/wf/tick"],
        "detail": {
            "scheduled_time": "2026-03-02T01:00:00Z",
            "expression": "rate(1 hour)",
            "timezone": "UTC",
            "workflow": "wf",
            "trigger": "tick",
        },
    }
    assert got.dedupe_key == "schedule:wf:tick:2026-03-02T01:00:00Z"
    assert got.workflow == "wf"
    state = await kv.get("schedule:wf:tick")
    assert state["scheduled_time"] == "2026-03-02T01:00:00+00:00"
    assert state["expression"] == "rate(1 hour)"
    assert await r.tick(late + timedelta(seconds=1), emit) == []


async def outage(catchup: str, expr: str = "rate(1 hour)", tz: str = "UTC", **kwargs: Any) -> tuple[Any, ...]:
    """Fire once at 01:00 on day 0, then be down for three days; tick at 01:30 on day 3."""
    emit, kv, audit = RecordingEmit(), MemoryKV(), AuditLog()
    r = runner(expr, tz, kv=kv, catchup=catchup, audit=audit, **kwargs)
    await r.tick(D0, emit)
    await r.tick(D0.replace(hour=1, minute=0), emit)
    emit.events.clear()
    back = D0.replace(hour=1, minute=30) + timedelta(days=3)
    fires = await r.tick(back, emit)
    return r, emit, kv, audit, fires, back


async def test_outage_catchup_none_skips_all_and_audits_each() -> None:
    r, emit, kv, audit, fires, back = await outage("none")
    assert fires == [] and emit.events == []
    assert len(audit.entries) == 72
    kind, workflow, trigger, first, reason = audit.entries[0]
    assert (kind, workflow, trigger, first) == ("skipped", "wf", "tick", D0.replace(hour=2, minute=0))
    assert "catchup: none" in reason
    assert audit.entries[-1][3] == D0.replace(hour=1, minute=0) + timedelta(days=3)
    state = await kv.get("schedule:wf:tick")
    assert state["skipped_total"] == 72 and state["last_skip"]["count"] == 72
    # and the schedule carries on from there, on time
    (fire,) = await r.tick(back.replace(hour=2, minute=0), emit)
    assert fire.scheduled_time == back.replace(hour=2, minute=0) and not fire.catchup


async def test_outage_catchup_latest_fires_the_latest_missed_once() -> None:
    r, emit, _, audit, fires, back = await outage("latest")
    assert times(emit) == ["2026-03-05T01:00:00Z"]
    assert fires[0].catchup and fires[0].late_s == 30 * 60
    assert len(audit.entries) == 71
    assert await r.tick(back + timedelta(seconds=5), emit) == []


async def test_outage_catchup_all_within_window_oldest_first() -> None:
    _, emit, _, audit, _, _ = await outage("all", catchup_window_s=6 * 3600, max_catchup=10)
    assert times(emit) == [
        f"2026-03-0{d}T{h:02d}:00:00Z" for d, h in [(4, 20), (4, 21), (4, 22), (4, 23), (5, 0), (5, 1)]
    ]
    assert len(audit.entries) == 66
    assert "outside catchup_window (21600s) or over max_catchup (10)" in audit.entries[0][4]


async def test_outage_catchup_all_bounded_by_max_catchup() -> None:
    _, emit, kv, audit, _, _ = await outage("all", max_catchup=5)
    assert times(emit) == [f"2026-03-02T{h:02d}:00:00Z" for h in range(2, 7)]
    assert len(audit.entries) == 67
    assert audit.entries[0][3] == D0.replace(hour=7, minute=0)
    assert (await kv.get("schedule:wf:tick"))["scheduled_time"] == "2026-03-05T01:00:00+00:00"


async def test_catchup_all_plus_the_on_time_fire() -> None:
    emit, audit = RecordingEmit(), AuditLog()
    r = runner(catchup="all", max_catchup=3, audit=audit)
    await r.tick(D0, emit)
    fires = await r.tick(D0.replace(hour=6, minute=0, second=0, microsecond=500_000), emit)
    assert [(f.scheduled_time.hour, f.catchup) for f in fires] == [
        (1, True),
        (2, True),
        (3, True),
        (6, False),
    ]
    assert [a[3].hour for a in audit.entries] == [4, 5]


async def test_cron_outage_across_dst_in_a_time_zone() -> None:
    """09:00 Berlin is 08:00Z before the spring change (2026-03-29) and 07:00Z after it."""
    emit, audit = RecordingEmit(), AuditLog()
    r = runner("cron(0 9 * * ? *)", "Europe/Berlin", catchup="all", audit=audit)
    await r.tick(datetime(2026, 3, 27, 12, tzinfo=UTC), emit)
    fires = await r.tick(datetime(2026, 3, 30, 12, tzinfo=UTC), emit)
    assert times(emit) == ["2026-03-28T08:00:00Z", "2026-03-29T07:00:00Z", "2026-03-30T07:00:00Z"]
    assert [f.catchup for f in fires] == [True, True, True]
    assert audit.entries == []


async def test_cron_outage_latest_and_none() -> None:
    for catchup, expected, skipped in (("latest", ["2026-03-30T07:00:00Z"], 2), ("none", [], 3)):
        emit, audit = RecordingEmit(), AuditLog()
        r = runner("0 9 * * *", "Europe/Berlin", catchup=catchup, audit=audit)
        await r.tick(datetime(2026, 3, 27, 12, tzinfo=UTC), emit)
        await r.tick(datetime(2026, 3, 30, 12, tzinfo=UTC), emit)
        assert times(emit) == expected
        assert len(audit.entries) == skipped


async def test_audit_is_bounded_with_a_summary_entry() -> None:
    emit, audit, kv = RecordingEmit(), AuditLog(), MemoryKV()
    r = runner("rate(1 minute)", kv=kv, audit=audit)
    await r.tick(D0, emit)
    await r.tick(D0 + timedelta(days=3, seconds=90), emit)
    assert len(audit.entries) == AUDIT_LIMIT + 1
    missed = 3 * 24 * 60  # the newest fire (30 s late) is on time, not missed
    assert f"{missed - AUDIT_LIMIT} more skipped fires not listed" in audit.entries[-1][4]
    assert (await kv.get("schedule:wf:tick"))["skipped_total"] == missed


async def test_restart_never_double_fires() -> None:
    emit, kv = RecordingEmit(), MemoryKV()
    first = runner(kv=kv)
    await first.tick(D0, emit)
    await first.tick(D0.replace(hour=1, minute=0), emit)
    second = runner(kv=kv)  # a new process, same store
    assert await second.tick(D0.replace(hour=1, minute=0, second=30), emit) == []
    assert emit.calls == 1
    (fire,) = await second.tick(D0.replace(hour=2, minute=0), emit)
    assert not fire.duplicate


async def test_crash_between_emit_and_record_is_a_duplicate_not_a_second_fire() -> None:
    emit, kv = RecordingEmit(), MemoryKV()
    r = runner(kv=kv)
    await r.tick(D0, emit)
    await emit({"detail": {}}, dedupe_key="schedule:wf:tick:2026-03-02T01:00:00Z")  # committed, then "crash"
    restarted = runner(kv=kv)
    (fire,) = await restarted.tick(D0.replace(hour=1, minute=0, second=1), emit)
    assert fire.duplicate
    assert len(emit.events) == 1
    assert (await kv.get("schedule:wf:tick"))["scheduled_time"] == "2026-03-02T01:00:00+00:00"


async def test_editing_the_schedule_does_not_rerun_the_last_tick() -> None:
    emit, kv = RecordingEmit(), MemoryKV()
    r = runner("rate(1 hour)", kv=kv, catchup="all")
    await r.tick(D0, emit)
    await r.tick(D0.replace(hour=1, minute=0), emit)
    edited = runner("cron(0 * * * ? *)", kv=kv, catchup="all")  # same fire times, new expression
    assert await edited.tick(D0.replace(hour=1, minute=0, second=20), emit) == []
    assert await edited.tick(D0.replace(hour=1, minute=59), emit) == []
    (fire,) = await edited.tick(D0.replace(hour=2, minute=0), emit)
    assert fire.scheduled_time == D0.replace(hour=2, minute=0)
    assert emit.events[-1].event["detail"]["expression"] == "cron(0 * * * ? *)"
    # a time-zone edit counts as an edit too
    moved = runner("cron(0 * * * ? *)", "Asia/Kolkata", kv=kv, catchup="all")
    assert await moved.tick(D0.replace(hour=5, minute=0), emit) == []
    assert emit.calls == 2


async def test_run_sleeps_to_each_deadline_with_the_injected_clock() -> None:
    clock = FakeClock(D0)
    emit = RecordingEmit()
    woke_at: list[datetime] = []
    emit.on_call = lambda event: woke_at.append(clock.now)
    r = runner(kv=MemoryKV(), clock=clock, sleep=clock.sleep)
    await r.start()
    task = asyncio.create_task(r.run(emit))
    await emit.wait_for(3)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert times(emit)[:3] == ["2026-03-02T01:00:00Z", "2026-03-02T02:00:00Z", "2026-03-02T03:00:00Z"]
    assert woke_at[:3] == [D0.replace(hour=h, minute=0) for h in (1, 2, 3)]  # exactly on the deadline
    assert max(clock.slept) <= 60.0  # long waits re-read the wall clock once a minute, no more often
    assert len(clock.slept) < 3 * 60 + 5


async def test_real_time_rate_one_second() -> None:
    emit = RecordingEmit()
    lateness: list[float] = []
    emit.on_call = lambda event: lateness.append(
        (datetime.now(UTC) - datetime.fromisoformat(event["time"])).total_seconds()
    )
    r = runner("rate(1 second)", kv=MemoryKV())
    await r.start()
    task = asyncio.create_task(r.run(emit))
    try:
        await emit.wait_for(2, timeout_s=3.5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    first, second = (datetime.fromisoformat(e.event["time"]) for e in emit.events[:2])
    assert second - first == timedelta(seconds=1)
    print(f"rate(1 second) lateness: {[f'{x * 1000:.1f} ms' for x in lateness]}")
    assert all(0 <= x < 0.5 for x in lateness)  # measured: a few ms; slack for a shared 2-core box


async def test_a_tick_interrupted_mid_catchup_resumes_the_same_fires() -> None:
    """The bus fails on the third of five catch-up fires; the restarted trigger fires 3-5, no more."""
    emit, kv, audit = RecordingEmit(), MemoryKV(), AuditLog()
    failing = {"2026-03-02T04:00:00Z"}

    def flaky(event: dict[str, Any]) -> None:
        if event["time"] in failing:
            failing.clear()
            raise RuntimeError("bus down")

    emit.on_call = flaky
    r = runner(kv=kv, catchup="all", max_catchup=5, audit=audit)
    await r.tick(D0, emit)
    await r.tick(D0.replace(hour=1, minute=0), emit)
    back = D0 + timedelta(days=1)
    with pytest.raises(RuntimeError, match="bus down"):
        await r.tick(back, emit)
    restarted = runner(kv=kv, catchup="all", max_catchup=5, audit=audit)
    await restarted.tick(back + timedelta(minutes=1), emit)
    assert times(emit) == [f"2026-03-02T{h:02d}:00:00Z" for h in range(1, 7)]
    skipped = [a[3] for a in audit.entries]
    assert len(skipped) == len(set(skipped)) == 23 - 5
    assert (await kv.get("schedule:wf:tick"))["scheduled_time"] == "2026-03-03T00:00:00+00:00"


def test_from_spec_reads_the_spec_fields() -> None:
    from workflows.spec import ScheduleTrigger

    spec = ScheduleTrigger(
        name="nightly",
        expression="cron(0 2 * * ? *)",
        timezone="Europe/Berlin",
        catchup="all",
        catchup_window_s=3600.0,
        max_catchup=3,
    )
    r = ScheduleTriggerRunner.from_spec("report", spec, kv=MemoryKV())
    assert (r.name, r.workflow, r.catchup, r.catchup_window_s, r.max_catchup) == (
        "nightly",
        "report",
        "all",
        3600.0,
        3,
    )
    assert (r.schedule.expression, r.schedule.timezone, r.key) == (
        "cron(0 2 * * ? *)",
        "Europe/Berlin",
        "schedule:report:nightly",
    )


# --- one-time at(...) schedules ------------------------------------------------------------------

AT = "at(2026-03-02T06:00:00)"  # 06:00 Berlin (CET) is 05:00 UTC on D0's day
AT_UTC = datetime(2026, 3, 2, 5, tzinfo=UTC)


async def test_at_fires_once_and_never_again_also_after_a_restart() -> None:
    emit, kv = RecordingEmit(), MemoryKV()
    r = runner(AT, "Europe/Berlin", kv=kv)
    assert await r.tick(D0, emit) == []
    assert await r.tick(AT_UTC - timedelta(seconds=1), emit) == []
    (fire,) = await r.tick(AT_UTC + timedelta(milliseconds=3), emit)
    assert fire.scheduled_time == AT_UTC and not fire.catchup
    assert times(emit) == ["2026-03-02T05:00:00Z"]
    assert await r.tick(AT_UTC + timedelta(days=1), emit) == []
    for catchup in ("none", "latest", "all"):  # a new process, same store, any policy
        restarted = runner(AT, "Europe/Berlin", kv=kv, catchup=catchup)
        assert await restarted.tick(AT_UTC + timedelta(days=2), emit) == []
    assert emit.calls == 1
    state = await kv.get("schedule:wf:tick")
    assert (state["last_fired"], state["scheduled_time"]) == ("2026-03-02T05:00:00+00:00",) * 2


async def test_after_its_fire_the_at_loop_idles_without_spinning() -> None:
    clock = FakeClock(D0)
    emit = RecordingEmit()
    r = runner(AT, "Europe/Berlin", kv=MemoryKV(), clock=clock, sleep=clock.sleep)
    await r.start()
    task = asyncio.create_task(r.run(emit))
    await emit.wait_for(1)
    for _ in range(20):
        await asyncio.sleep(0)
    slept = len(clock.slept)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not task.done() and len(clock.slept) == slept  # waiting for nothing, quietly
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert times(emit) == ["2026-03-02T05:00:00Z"]


@pytest.mark.parametrize(("catchup", "fired", "skipped"), [("none", 0, 1), ("latest", 1, 0), ("all", 1, 0)])
async def test_an_at_missed_while_down_follows_the_catchup_policy(
    catchup: str, fired: int, skipped: int
) -> None:
    emit, kv, audit = RecordingEmit(), MemoryKV(), AuditLog()
    await runner(AT, "Europe/Berlin", kv=kv, catchup=catchup).tick(D0, emit)  # then down until the next day
    back = runner(AT, "Europe/Berlin", kv=kv, catchup=catchup, audit=audit)
    fires = await back.tick(AT_UTC + timedelta(days=1), emit)
    assert [(f.scheduled_time, f.catchup) for f in fires] == [(AT_UTC, True)] * fired
    assert [a[3] for a in audit.entries] == [AT_UTC] * skipped
    assert await back.tick(AT_UTC + timedelta(days=2), emit) == []


async def test_an_at_in_the_past_at_first_start_never_fires() -> None:
    emit = RecordingEmit()
    r = runner(AT, "Europe/Berlin", kv=MemoryKV(), catchup="all")
    assert await r.tick(AT_UTC + timedelta(hours=1), emit) == []
    assert await r.tick(AT_UTC + timedelta(days=30), emit) == []
    assert emit.calls == 0


async def test_a_schedule_that_cannot_compute_its_next_fire_stops_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One broken schedule must not end ``run`` with an exception (that would stop the server)."""

    class Broken:
        def next_after(self, after: datetime) -> datetime | None:
            raise OverflowError("no representable fire")

        def between(self, start: datetime, end: datetime, limit: int, keep: str) -> Fires:
            return Fires([], 0)

    clock = FakeClock(D0)
    r = ScheduleTriggerRunner(
        name="tick",
        workflow="wf",
        schedule=Schedule("rate(1 hour)", "UTC", 3600.0, Broken()),
        kv=MemoryKV(),
        clock=clock,
        sleep=clock.sleep,
    )
    task = asyncio.create_task(r.run(RecordingEmit()))
    for _ in range(50):
        await asyncio.sleep(0)
    assert not task.done()
    assert "wf/tick: cannot compute the next fire; idle until stopped" in caplog.text
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
