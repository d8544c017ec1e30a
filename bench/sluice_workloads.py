"""Sluice's own W0-W3 (issue 6), the workloads the peers also run, and what all of W0-W7 share.

- :func:`write_bench_workflows` writes the bench workflows (W0 one step, W1 chain of ``inc``, W2 fan-out
  via ``for_each`` + a summing join, W3 one ``sleep 1`` step, W4 a webhook) and their handler module.
- W0 runs ``sluice run`` in a fresh process (:func:`sluice_cli_run`); W1-W3 drive an in-process
  ``engine.engine.Engine``. W4-W5 (triggers) are in ``sluice_intake``, W6-W7 (container jobs, the
  footprint) in ``sluice_jobs``; each group registers with :func:`register_group`. Each workload
  returns metric -> number under the names declared in its registry entry, so RESULTS.md's ratios
  line up; a workload that cannot run here raises :class:`Skip`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from .core import (
    REPO_DIR,
    Context,
    Measured,
    Skip,
    Workload,
    _tree_rss_kb,
    latency_metrics,
    register,
    run_measured,
    tail,
)

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
    """Skip early, with one clear reason, while ``engine.engine.Engine`` does not exist.

    Every workload that hosts an engine in this process calls it first, so it also sets the
    process up as ``sluice serve`` does (``tune_gc``).
    """
    if importlib.util.find_spec("engine") is None or importlib.util.find_spec("engine.engine") is None:
        raise Skip(f"{ENGINE_MISSING} (engine.engine.Engine not importable)")
    from engine.engine import tune_gc

    tune_gc()


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


def _catalog(folder: Path) -> Any:
    from workflows.loader import load_dir

    return load_dir(folder)


def _engine_rss() -> dict[str, float]:
    """The harness process's own VmRSS (the engine runs in it) and its descendants' (the workers)."""
    with open(f"/proc/{os.getpid()}/status") as fh:
        me = next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
    tree = _tree_rss_kb(os.getpid())
    return {"engine_rss_mb": me / 1024.0, "workers_rss_mb": (tree - me) / 1024.0}


def _with_engine(ctx: Context, body: Callable[[Any], Awaitable[dict[str, float]]], **settings: Any) -> Any:
    """Run ``body(engine)`` inside a fresh in-process Engine over the bench workflows."""
    _engine_available()
    from engine.engine import Engine, Settings

    folder = ctx.tmp / f"wf-{ctx.rep}"
    write_bench_workflows(folder)

    async def main() -> dict[str, float]:
        engine = Engine(Settings(data_dir=folder / ".sluice", **settings), _catalog(folder))
        async with engine:
            return await body(engine)

    return asyncio.run(main())


def w1_chain(ctx: Context) -> dict[str, float]:
    """W1: 50 runs of w1_chain back to back in one Engine: runs/s, per-run p50/p99 ms.

    One warm-up run first, so the figure is the steady state (W0 covers the cold start).
    """

    async def body(engine: Any) -> dict[str, float]:
        await engine.run_to_end("w1_chain")
        seconds = []
        start = time.perf_counter()
        for _ in range(50):
            t0 = time.perf_counter()
            summary = await engine.run_to_end("w1_chain")
            seconds.append(time.perf_counter() - t0)
            if summary["outputs"]["result"] != 3:
                raise RuntimeError(f"w1_chain gave {summary['status']} {summary['outputs']}")
        wall = time.perf_counter() - start
        return {"w1_runs_per_s": 50 / wall, **latency_metrics("w1", seconds), **_engine_rss()}

    return dict(_with_engine(ctx, body))


def w2_fanout(ctx: Context) -> dict[str, float]:
    """W2: one run of w2_fanout with n=100 and n=1000 -> {"w2_100_s", "w2_1000_s"} (results 5050, 500500).

    The first 100-way run in an engine also pays the pool's scale-out (a call that finds no idle
    worker starts one, up to max_workers): it is kept as ``w2_100_first_s``; ``w2_100_s`` is the
    next one, with the pool as a running ``serve`` has it.
    """

    async def body(engine: Any) -> dict[str, float]:
        await engine.run_to_end("w2_fanout", {"n": 10})  # warm the workers and the template cache
        out = {}
        for key, n, expect in (
            ("w2_100_first_s", 100, 5050),
            ("w2_100_s", 100, 5050),
            ("w2_1000_s", 1000, 500500),
        ):
            t0 = time.perf_counter()
            summary = await engine.run_to_end("w2_fanout", {"n": n})
            out[key] = time.perf_counter() - t0
            if summary["outputs"]["result"] != expect:
                raise RuntimeError(f"w2_fanout n={n} gave {summary['status']} {summary['outputs']}")
        return out | _engine_rss()

    return dict(_with_engine(ctx, body))


def w3_concurrency(ctx: Context) -> dict[str, float]:
    """W3: 20 runs of w3_sleep started together, wall time until all are done.

    The function pool starts with one worker per core and scales out when a call finds none idle, so
    the first round pays ~18 worker starts: it is reported as ``w3_cold_s``; ``w3_s`` is the median
    of the following rounds in the same engine (the pool is warm, as in a long-running ``serve``).
    """
    rounds = 2 if ctx.quick else 4

    async def body(engine: Any) -> dict[str, float]:
        walls = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            ids = [await engine.start_run("w3_sleep") for _ in range(20)]
            statuses = await asyncio.gather(*(engine.orchestrator.wait(i) for i in ids))
            walls.append(time.perf_counter() - t0)
            if set(statuses) != {"SUCCEEDED"}:
                raise RuntimeError(f"w3 statuses {statuses}")
        return {"w3_cold_s": walls[0], "w3_s": statistics.median(walls[1:])} | _engine_rss()

    return dict(_with_engine(ctx, body))


_MS = "ms"
#: (name, function, description, units per metric, target per metric)
Spec = tuple[str, Any, str, dict[str, str], dict[str, str]]
_SPECS: list[Spec] = [
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
            "w1_p50_ms": _MS,
            "w1_p99_ms": _MS,
            "engine_rss_mb": "MB",
            "workers_rss_mb": "MB",
        },
        {"w1_runs_per_s": ">= 200 runs/s (>= 2x Luigi, >= 200x Prefect)", "w1_p50_ms": "<= 5 ms"},
    ),
    (
        "W2",
        w2_fanout,
        "fan-out 100 / 1000 + join",
        {
            "w2_100_first_s": "s",
            "w2_100_s": "s",
            "w2_1000_s": "s",
            "engine_rss_mb": "MB",
            "workers_rss_mb": "MB",
        },
        {"w2_100_s": "<= 0.06 s", "w2_1000_s": "<= 0.5 s"},
    ),
    (
        "W3",
        w3_concurrency,
        "20 runs x sleep 1 s, started together (cold first round, warm median)",
        {"w3_cold_s": "s", "w3_s": "s", "engine_rss_mb": "MB", "workers_rss_mb": "MB"},
        {"w3_s": "<= 1.1 s"},
    ),
]


def register_group(specs: list[Spec], reps: Mapping[str, int] | None = None) -> None:
    """Register ``sluice.<name>`` for each spec (three repetitions unless ``reps`` says otherwise)."""
    for name, fn, desc, units, targets in specs:
        register(
            Workload(
                f"sluice.{name}",
                "sluice",
                fn,
                desc,
                units=units,
                targets=targets,
                reps=(reps or {}).get(name, 3),
                quick_reps=1,
            )
        )


register_group(_SPECS)

__all__ = ["REPO_DIR", "Spec", "register_group", "sluice_cli_run", "write_bench_workflows"]
