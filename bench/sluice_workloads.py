"""Sluice's own W0-W7: placeholders until the engine lands, shaped so filling them is a few lines.

What is ready:
- :func:`write_bench_workflows` writes the bench workflows (W0 one step, W1 chain of ``inc``, W2 fan-out
  via ``for_each`` + a summing join, W3 one ``sleep 1`` step) and their handler module into a directory,
  in the workflow language of DESIGN.md.
- :func:`sluice_cli_run` runs ``sluice run WORKFLOW --dir DIR --input JSON --json`` in a fresh process
  with a fresh data dir and returns wall time, peak RSS and the parsed JSON; W0 uses it and becomes
  live by itself as soon as ``sluice run`` works (until then it skips with the CLI's own error).

What the core engineers fill in (each is marked TODO and currently raises :class:`Skip`):
``w1_chain``, ``w2_fanout``, ``w3_concurrency`` (in-process, through ``engine.engine.Engine``),
``w4_ingest``, ``w5_trigger_latency``, ``w6_containers``, ``w7_footprint``. Each receives a
:class:`~bench.core.Context` (``ctx.quick``, ``ctx.tmp``, ``ctx.note``) and returns metric -> number
using the metric names already declared in the registry below, so RESULTS.md's ratios line up.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .core import REPO_DIR, Context, Measured, Skip, Workload, register, run_measured, tail

ENGINE_MISSING = "engine not yet available"

HANDLERS = '''\
"""Trivial handlers for the benchmark workflows (written by bench/sluice_workloads.py)."""

import time


def inc(event, context):
    return int(event.get("x", 0)) + 1


def ident(event, context):
    return event["x"]


def total(event, context):
    return sum(event["values"])


def sleep(event, context):
    time.sleep(float(event.get("seconds", 1)))
    return 1
'''

WORKFLOWS = {
    "w0_one": """\
        name: w0_one
        description: W0 - one trivial function step (cold start).
        steps:
          a: {function: "benchfns:inc", input: {x: 0}}
        outputs: {result: "{{ steps.a.output }}"}
        """,
    "w1_chain": """\
        name: w1_chain
        description: W1 - inc(0) -> inc -> inc = 3.
        params:
          x: {type: integer, default: 0}
        steps:
          a: {function: "benchfns:inc", input: {x: "{{ params.x }}"}}
          b: {function: "benchfns:inc", needs: [a], input: {x: "{{ steps.a.output }}"}}
          c: {function: "benchfns:inc", needs: [b], input: {x: "{{ steps.b.output }}"}}
        outputs: {result: "{{ steps.c.output }}"}
        """,
    "w2_fanout": """\
        name: w2_fanout
        description: W2 - n-way fan-out of trivial steps and a join (n=100 gives 5050).
        params:
          n: {type: integer, default: 100}
        steps:
          leaf:
            function: "benchfns:ident"
            for_each: "{{ range(1, params.n + 1) | list }}"
            input: {x: "{{ item }}"}
          join:
            function: "benchfns:total"
            needs: [leaf]
            input: {values: "{{ steps.leaf.output }}"}
        outputs: {result: "{{ steps.join.output }}"}
        """,
    "w3_sleep": """\
        name: w3_sleep
        description: W3 - one step sleeping 1 s (20 runs are started together).
        steps:
          nap: {function: "benchfns:sleep", input: {seconds: 1}}
        outputs: {result: "{{ steps.nap.output }}"}
        """,
}


def write_bench_workflows(folder: Path) -> dict[str, Path]:
    """Write ``benchfns.py`` and one YAML per workload into ``folder``; return name -> YAML path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "benchfns.py").write_text(HANDLERS)
    paths = {}
    for name, text in WORKFLOWS.items():
        path = folder / f"{name}.yaml"
        path.write_text(textwrap.dedent(text))
        paths[name] = path
    return paths


def sluice_executable() -> str:
    """The ``sluice`` console script beside this interpreter (the repo venv), else on PATH."""
    here = Path(sys.executable).with_name("sluice")
    found = str(here) if here.exists() else shutil.which("sluice")
    if not found:
        raise Skip(f"{ENGINE_MISSING}: no `sluice` console script (pip install -e . in the venv)")
    return found


def sluice_cli_run(
    workflow: str, folder: Path, data_dir: Path, run_input: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], Measured]:
    """``sluice run WORKFLOW --dir DIR --input JSON --json`` in a fresh process.

    Returns (the parsed ``--json`` answer, the :class:`~bench.core.Measured` process: wall seconds,
    peak RSS and PSS of its process tree, i.e. engine plus workers).
    A non-zero exit is reported as :class:`Skip` with the CLI's stderr, because before the engine lands
    that is the expected state, not a harness failure.
    """
    cmd = [sluice_executable(), "run", workflow, "--dir", str(folder), "--input", json.dumps(run_input or {})]
    cmd.append("--json")
    env = {**os.environ, "SLUICE_DATA_DIR": str(data_dir)}
    m = run_measured(cmd, env=env, cwd=folder, timeout_s=120)
    if m.returncode != 0 or m.timed_out:
        raise Skip(f"{ENGINE_MISSING}: `sluice run` exit {m.returncode}: {tail(m.stderr, 2)}")
    return _parse_json(m.stdout), m


def _parse_json(stdout: str) -> dict[str, Any]:
    """The CLI's ``--json`` answer: the whole stdout (pretty-printed), else its last JSON line."""
    try:
        return dict(json.loads(stdout))
    except ValueError:
        for line in reversed(stdout.splitlines()):
            try:
                return dict(json.loads(line))
            except ValueError:
                continue
    raise RuntimeError(f"`sluice run --json` printed no JSON: {tail(stdout, 3)}")


def _engine_available() -> None:
    """Skip early, with one clear reason, while ``engine.engine.Engine`` does not exist."""
    if importlib.util.find_spec("engine") is None or importlib.util.find_spec("engine.engine") is None:
        raise Skip(f"{ENGINE_MISSING} (engine.engine.Engine not importable)")


# ------------------------------------------------------------------------------------- the workloads


def w0_cold_start(ctx: Context) -> dict[str, float]:
    """W0: ``sluice run`` of a 1-step workflow, fresh process and fresh data dir, to exit."""
    _engine_available()
    folder = ctx.tmp / f"w0-{ctx.rep}"
    write_bench_workflows(folder)
    answer, m = sluice_cli_run("w0_one", folder, folder / ".sluice")
    if answer.get("outputs", {}).get("result") != 1:
        raise RuntimeError(
            f"w0_one answered {answer.get('status')} / {answer.get('outputs')}, expected result 1"
        )
    return {"w0_s": m.wall_s, "peak_rss_mb": m.peak_rss_mb, "peak_pss_mb": m.peak_pss_mb}


def w1_chain(ctx: Context) -> dict[str, float]:
    """W1: 50 runs of w1_chain back to back in one Engine: runs/s, per-run p50/p99 ms.

    TODO(core): load the catalog of the folder from :func:`write_bench_workflows`, then
    ``async with Engine(Settings(data_dir=ctx.tmp / "data"), catalog) as engine:`` run
    ``await engine.run_to_end("w1_chain")`` once to warm the workers, then time 50 runs back to back
    (assert ``summary["outputs"]["result"] == 3``) and return
    {"w1_runs_per_s", "w1_p50_ms", "w1_p99_ms", "engine_rss_mb", "workers_rss_mb"}
    (``bench.core.latency_metrics("w1", seconds)`` gives the two latency keys;
    ``bench.core._tree_rss_kb(os.getpid())`` minus the engine's own VmRSS gives the workers').
    """
    _engine_available()
    raise Skip(f"{ENGINE_MISSING}: W1 not wired to engine.engine.Engine yet")


def w2_fanout(ctx: Context) -> dict[str, float]:
    """W2: one run of w2_fanout with n=100 and n=1000 -> {"w2_100_s", "w2_1000_s"} (results 5050, 500500).

    TODO(core): same Engine set-up as W1.
    """
    _engine_available()
    raise Skip(f"{ENGINE_MISSING}: W2 not wired to engine.engine.Engine yet")


def w3_concurrency(ctx: Context) -> dict[str, float]:
    """W3: 20 runs of w3_sleep started together (asyncio.gather) -> {"w3_s"} wall time until all done.

    TODO(core): the worker pool needs >= 20 slots for sleeping steps, or W3 measures pool size.
    """
    _engine_available()
    raise Skip(f"{ENGINE_MISSING}: W3 not wired to engine.engine.Engine yet")


def w4_ingest(ctx: Context) -> dict[str, float]:
    """W4: 10,000 webhook POSTs, 16 loopback clients -> {"accepted_per_s", "p99_ms", "bus_batch_put_per_s"}.

    TODO(webhooks): reuse ``bench.limits._load`` as the client against ``sluice serve``.
    """
    raise Skip(f"{ENGINE_MISSING}: webhook intake not landed")


def w5_trigger_latency(ctx: Context) -> dict[str, float]:
    """W5: file close / webhook POST -> run committed and -> first step started, p50/p99 over 500 events.

    TODO(triggers): metrics {"file_commit_p50_ms", "file_commit_p99_ms", "file_step_p50_ms",
    "hook_step_p50_ms", "schedule_late_p99_ms"}.
    """
    raise Skip(f"{ENGINE_MISSING}: triggers not landed")


def w6_containers(ctx: Context) -> dict[str, float]:
    """W6: `true` job submit -> SUCCEEDED vs limit.docker; 2,000 jobs at capacity 8; scheduler decision time.

    TODO(batch): metrics {"job_total_p50_ms", "jobs_per_s_at_8", "decision_ms_at_10000"}; skip without Docker
    exactly as ``bench.limits.docker_bare`` does.
    """
    raise Skip(f"{ENGINE_MISSING}: container jobs not landed")


def w7_footprint(ctx: Context) -> dict[str, float]:
    """W7: engine RSS idle, with 10,000 queued jobs, with 1,000 runs in flight (workers separately).

    TODO(core): sample with ``bench.core._tree_rss_kb`` on the engine pid and on each worker pid.
    """
    raise Skip(f"{ENGINE_MISSING}: footprint needs a running engine")


_SPECS: list[tuple[str, Any, str, dict[str, str], dict[str, str]]] = [
    (
        "W0",
        w0_cold_start,
        "cold start: `sluice run` 1 step, fresh process",
        {"w0_s": "s", "peak_rss_mb": "MB", "peak_pss_mb": "MB"},
        {"w0_s": "<= 0.6 s"},
    ),
    (
        "W1",
        w1_chain,
        "3-step chain x50 back to back",
        {
            "w1_runs_per_s": "runs/s",
            "w1_p50_ms": "ms",
            "w1_p99_ms": "ms",
            "engine_rss_mb": "MB",
            "workers_rss_mb": "MB",
        },
        {"w1_runs_per_s": ">= 200 runs/s (>= 2x Luigi, >= 200x Prefect)", "w1_p50_ms": "<= 5 ms"},
    ),
    (
        "W2",
        w2_fanout,
        "fan-out 100 / 1000 + join",
        {"w2_100_s": "s", "w2_1000_s": "s"},
        {"w2_100_s": "<= 0.06 s", "w2_1000_s": "<= 0.5 s"},
    ),
    ("W3", w3_concurrency, "20 runs x sleep 1 s, started together", {"w3_s": "s"}, {"w3_s": "<= 1.1 s"}),
    (
        "W4",
        w4_ingest,
        "10,000 webhook events, 16 clients",
        {"accepted_per_s": "ev/s", "p99_ms": "ms", "bus_batch_put_per_s": "ev/s"},
        {
            "accepted_per_s": ">= 3,000/s and >= 65% of limit.http_commit",
            "p99_ms": "<= 15 ms",
            "bus_batch_put_per_s": ">= 20,000/s",
        },
    ),
    (
        "W5",
        w5_trigger_latency,
        "trigger -> run committed -> first step",
        {},
        {
            "file_commit_p50_ms": "<= 5 ms (p99 <= 20 ms)",
            "file_step_p50_ms": "<= 8 ms",
            "schedule_late_p99_ms": "<= 10 ms",
        },
    ),
    (
        "W6",
        w6_containers,
        "container jobs vs bare Docker",
        {},
        {
            "job_total_p50_ms": "<= 1.15x limit.docker",
            "jobs_per_s_at_8": ">= 0.9x bare Docker",
            "decision_ms_at_10000": "< 5 ms",
        },
    ),
    (
        "W7",
        w7_footprint,
        "engine footprint",
        {"idle_rss_mb": "MB", "queued_10000_extra_mb": "MB"},
        {"idle_rss_mb": "<= 60 MB", "queued_10000_extra_mb": "<= 30 MB"},
    ),
]

for _name, _fn, _desc, _units, _targets in _SPECS:
    register(Workload(f"sluice.{_name}", "sluice", _fn, _desc, units=_units, targets=_targets, quick_reps=1))

__all__ = ["REPO_DIR", "sluice_cli_run", "write_bench_workflows"]
