"""Sluice's W4 and W5 (issue 6): events coming in through a serving engine's triggers.

W4 is a burst of webhooks from 16 clients in another process, then the runs they started; W5 the
latency from a file close, a webhook POST and a schedule tick to the run and its first step, read
from the engine's own timestamps. Both run ``build_server`` (HTTP port, triggers) in this process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import sqlite3
import sys
import time
from asyncio.subprocess import PIPE
from pathlib import Path

from .core import REPO_DIR, Context, latency_metrics, tail
from .limits import _cpu_s
from .sluice_workloads import _MS, Spec, _catalog, _engine_available, register_group, write_bench_workflows

HOOK_FLOW = """\
name: w4_hook
description: W4 - webhook intake; one trivial step per event.
triggers:
  - webhook: {name: in, auth: none}
steps:
  a: {function: "benchfns:inc", input: {x: 1}}
"""


def w4_ingest(ctx: Context) -> dict[str, float]:
    """W4: 10,000 webhook POSTs (2,000 in --quick), 16 loopback clients in another process.

    The server is ``build_server`` on port 0 in this process; the client is ``bench.ingest_client``
    in a subprocess so each side has a core. A 202 means the event and its run are committed; the
    runs held during the burst then run, and ``all_runs_done_s`` is the wall time from the first
    POST until every run has finished. Also
    the bus's own ``put_many``: 10,000 events in batches of 1,000, each batch one durable commit.
    """
    _engine_available()
    from engine.bus.bus import Bus
    from engine.engine import Settings
    from engine.server import build_server
    from engine.store.store import Store

    folder = ctx.tmp / f"w4-{ctx.rep}"
    write_bench_workflows(folder)
    (folder / "w4_hook.yaml").write_text(HOOK_FLOW)
    events = 2_000 if ctx.quick else 10_000

    async def main() -> dict[str, float]:
        engine = build_server(Settings(data_dir=folder / ".sluice", port=0), _catalog(folder), folder)
        async with engine:
            http = next(s for s in engine.services if getattr(s, "name", "") == "http")
            url = f"http://127.0.0.1:{http.port}/hooks/w4_hook/in"
            cmd = [sys.executable, "-m", "bench.ingest_client", "--url", url, "--events", str(events)]
            proc = await asyncio.create_subprocess_exec(
                *cmd, "--concurrency", "16", cwd=REPO_DIR, stdout=PIPE, stderr=PIPE
            )
            cpu0, posted = _cpu_s(os.getpid()), time.perf_counter()
            out_b, err_b = await asyncio.wait_for(proc.communicate(), 180)
            engine_cpu = _cpu_s(os.getpid()) - cpu0
            if proc.returncode != 0:
                raise RuntimeError(f"ingest client failed: {tail(err_b.decode())}")
            load = json.loads(out_b.decode().strip().splitlines()[-1])
            orch, answered = engine.orchestrator, time.perf_counter()
            held_at_end = orch.held
            while (orch.held or orch.active) and time.perf_counter() - answered < 120:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # polled: the orchestrator has no idle event to wait on
            drained = time.perf_counter() - answered
            if orch.finished < load["accepted"]:
                ctx.note(f"only {orch.finished} of {load['accepted']:.0f} runs finished")
        store = Store(folder / "bus.db")
        await store.open()
        try:
            bus = Bus(store, {})
            batch = [
                ({"source": "bench", "detail-type": "put", "detail": {"n": i}}, None, None)
                for i in range(1000)
            ]
            t0 = time.perf_counter()
            for _ in range(10):
                await bus.put_many(batch)
            put_rate = 10_000 / (time.perf_counter() - t0)
        finally:
            await store.close()
        if load["rejected"]:
            ctx.note(f"{load['rejected']:.0f} requests answered other than 202")
        return {
            "accepted_per_s": load["accepted_per_s"],
            "p50_ms": load["latency_p50_ms"],
            "p99_ms": load["latency_p99_ms"],
            "rejected": load["rejected"],
            "engine_cpu_us_per_event": engine_cpu / max(load["accepted"], 1) * 1e6,
            "held_at_end": held_at_end,
            "runs_done_after_s": drained,
            "all_runs_done_s": answered - posted + drained,
            "client_cpu_us_per_req": load["client_cpu_us_per_req"],
            "bus_batch_put_per_s": put_rate,
        }

    return dict(asyncio.run(main()))


def _w5_flows(inbox: Path) -> dict[str, str]:
    return {
        "w5_file.yaml": f"""\
name: w5_file
triggers:
  - files: {{path: "{inbox}", suffix: .txt}}
steps:
  a: {{function: "benchfns:inc", input: {{x: 1}}}}
""",
        "w5_hook.yaml": """\
name: w5_hook
triggers:
  - webhook: {name: in, auth: none}
steps:
  a: {function: "benchfns:inc", input: {x: 1}}
""",
        "w5_tick.yaml": """\
name: w5_tick
triggers:
  - schedule: rate(1 second)
steps:
  a: {function: "benchfns:inc", input: {x: 1}}
""",
    }


def _w5_rows(
    conn: sqlite3.Connection, workflow: str
) -> list[tuple[str, str, float, float, float | None, str]]:
    """(event body, event time, received_at, run created_at, first step started_at, run id) per run."""
    sql = (
        "SELECT e.body, e.time, e.received_at, r.created_at,"
        " (SELECT MIN(s.started_at) FROM steps s WHERE s.run_id = r.id), r.id"
        " FROM runs r JOIN events e ON e.id = r.event_id WHERE r.workflow = ?"
    )
    return list(conn.execute(sql, (workflow,)).fetchall())


def w5_trigger_latency(ctx: Context) -> dict[str, float]:
    """W5: file close / webhook POST / schedule fire -> run committed -> first step started.

    Measured from the engine's own records (event ``received_at``, run ``created_at``, first step
    ``started_at``) against the writer's close time (``time.time()`` right after ``close``). Files
    are written 5 ms apart so this measures latency, not a backlog. Webhook POSTs are sequential.
    Schedule lateness: the event's scheduled ``time`` vs the run's ``created_at``, ``rate(1 second)``.
    """
    _engine_available()
    import aiohttp

    from engine.engine import Settings
    from engine.server import build_server

    folder = ctx.tmp / f"w5-{ctx.rep}"
    inbox = ctx.tmp / f"w5-inbox-{ctx.rep}"
    inbox.mkdir(parents=True)
    write_bench_workflows(folder)
    for name, text in _w5_flows(inbox).items():
        (folder / name).write_text(text)
    n_files = 100 if ctx.quick else 500
    n_hooks = 50 if ctx.quick else 200

    async def main() -> dict[str, float]:
        engine = build_server(Settings(data_dir=folder / ".sluice", port=0), _catalog(folder), folder)
        closed: dict[str, float] = {}
        posted: dict[str, tuple[float, float]] = {}
        async with engine:
            await asyncio.sleep(0.5)
            for i in range(n_files):
                name = f"f{i:05d}.txt"
                with open(inbox / name, "w") as fh:  # noqa: ASYNC230 - the close instant is the point
                    fh.write("x\n")
                closed[name] = time.time()
                await asyncio.sleep(0.005)
            http = next(s for s in engine.services if getattr(s, "name", "") == "http")
            url = f"http://127.0.0.1:{http.port}/hooks/w5_hook/in"
            async with aiohttp.ClientSession() as session:
                for i in range(n_hooks):
                    t0 = time.time()
                    async with session.post(url, json={"i": i}) as resp:
                        answer = await resp.json()
                    posted[answer["run_ids"][0]] = (t0, time.time())
                    await asyncio.sleep(0.002)
            await asyncio.sleep(3.5 if ctx.quick else 5.0)  # let the schedule fire a few more times
            file_rows = await engine.store.read(lambda c: _w5_rows(c, "w5_file"))
            hook_rows = await engine.store.read(lambda c: _w5_rows(c, "w5_hook"))
            tick_rows = await engine.store.read(lambda c: _w5_rows(c, "w5_tick"))
            await engine.orchestrator.aclose()
        commit, step, received = [], [], []
        for body, _t, recv, created, started, _rid in file_rows:
            name = next((n for n in re.findall(r"f\d{5}\.txt", body)), None)
            if name is None or name not in closed:
                continue
            received.append(recv - closed[name])
            commit.append(created - closed[name])
            if started is not None:
                step.append(started - closed[name])
        if len(commit) < n_files:
            ctx.note(f"file runs found: {len(commit)} of {n_files}")
        hook_202 = [t1 - t0 for t0, t1 in posted.values()]
        hook_step = [r[4] - posted[r[5]][0] for r in hook_rows if r[5] in posted and r[4] is not None]
        late = [
            created - dt.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
            for _b, t, _r, created, _s, _i in tick_rows
        ]
        ctx.note(f"schedule fires measured per repetition: {len(late)}")
        return {
            **latency_metrics("file_received", received),
            **latency_metrics("file_commit", commit),
            **latency_metrics("file_step", step),
            **latency_metrics("hook_202", hook_202),
            **latency_metrics("hook_step", hook_step),
            **latency_metrics("schedule_late", late),
        }

    return dict(asyncio.run(main()))


_SPECS: list[Spec] = [
    (
        "W4",
        w4_ingest,
        "10,000 webhook events, 16 clients (another process), then their runs; bus put_many",
        {
            "accepted_per_s": "ev/s",
            "p50_ms": _MS,
            "p99_ms": _MS,
            "rejected": "n",
            "engine_cpu_us_per_event": "µs CPU",
            "client_cpu_us_per_req": "µs CPU",
            "held_at_end": "n",
            "runs_done_after_s": "s",
            "all_runs_done_s": "s",
            "bus_batch_put_per_s": "ev/s",
        },
        {
            "accepted_per_s": ">= 3,000/s and >= 65% of limit.http_commit",
            "p99_ms": "<= 15 ms",
            "bus_batch_put_per_s": ">= 20,000/s",
        },
    ),
    (
        "W5",
        w5_trigger_latency,
        "trigger -> run committed -> first step (engine's own timestamps)",
        {
            f"{k}_{p}_ms": _MS
            for k in ("file_received", "file_commit", "file_step", "hook_202", "hook_step", "schedule_late")
            for p in ("p50", "p99")
        },
        {
            "file_commit_p50_ms": "<= 5 ms",
            "file_commit_p99_ms": "<= 20 ms",
            "file_step_p50_ms": "<= 8 ms",
            "schedule_late_p99_ms": "<= 10 ms",
        },
    ),
]

register_group(_SPECS)
