"""``python -m bench [--quick] [--scale] [--only NAME ...] [--out DIR] [--list]``: run the workloads, write
the JSON.

``--scale`` runs the ``scale`` group (bench/scale.py: the costs that grow with the work, minutes
long) with the machine's ``limits`` beside it; without it no ``scale`` workload runs unless named.

The exit code is 0 whenever the harness itself worked: a workload that cannot run here (no Docker, no
peer venv, no engine) or that fails is recorded as skipped with its reason, because CI runs
``--quick`` as a smoke test and no timing (nor a missing tool) may fail it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

# imported to register their workloads, in this order: limits, peers, then Sluice's W0-W3 (imported by
# sluice_intake), W4-W5 (sluice_intake), W6-W7 (sluice_jobs) and the scale group
from . import limits, peers, scale, sluice_intake, sluice_jobs  # noqa: F401
from .core import BENCH_DIR, REPO_DIR, Context, Skip, Workload, registry, summarize, tail, temp_dir
from .report import header, render_markdown


def machine() -> dict[str, Any]:
    """What the numbers depend on; a figure without this is not comparable with the next one."""
    mem_kb = 0
    try:
        with open("/proc/meminfo") as fh:
            mem_kb = next(int(line.split()[1]) for line in fh if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):
        pass
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def git_commit() -> tuple[str, bool]:
    """Short commit and whether the tree had uncommitted changes (others work in the same tree)."""
    try:
        short = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return short or "nocommit", bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return "nocommit", False


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Timeout


def run_workload(w: Workload, quick: bool) -> dict[str, Any]:
    """Set up once, repeat, summarise; every failure becomes a recorded skip, never an exception."""
    reps = w.quick_reps if quick else w.reps
    record: dict[str, Any] = {"name": w.name, "group": w.group, "description": w.description}
    record.update({"units": dict(w.units), "targets": dict(w.targets), "reps_planned": reps})
    tmp = temp_dir(w.name.replace(".", "-"))
    ctx = Context(quick=quick, rep=0, tmp=tmp)
    samples: list[dict[str, float]] = []
    start = time.perf_counter()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(w.timeout_s) + 30)  # a guard: workloads bound their own subprocesses
    try:
        if w.setup is not None:
            w.setup(ctx)
        for rep in range(reps):
            ctx.rep = rep
            samples.append({k: float(v) for k, v in w.fn(ctx).items()})
        record["status"] = "ok"
    except Skip as exc:
        record.update(status="skipped", reason=str(exc))
    except _Timeout:
        record.update(status="skipped", reason=f"failed: exceeded {w.timeout_s:.0f}s")
    except Exception as exc:
        record.update(status="skipped", reason=f"failed: {type(exc).__name__}: {exc}")
        record["traceback"] = tail(traceback.format_exc(), 8)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        shutil.rmtree(tmp, ignore_errors=True)
    record.update(reps=len(samples), seconds=round(time.perf_counter() - start, 2), notes=ctx.notes)
    record["metrics"] = summarize(samples) if samples else {}
    return record


def select(names: list[str] | None, scale_group: bool = False) -> list[Workload]:
    """``--only`` takes exact names, groups (``limits``, ``peers``, ``sluice``, ``scale``) or globs
    (``peer.*``); ``--scale`` alone is the limits and the scale group."""
    all_w = list(registry().values())
    if not names and scale_group:
        return [w for w in all_w if w.group in ("limits", scale.GROUP)]
    if not names:
        return [w for w in all_w if w.group != scale.GROUP]
    chosen = [
        w
        for w in all_w
        if any(
            n == w.name or n == w.group or fnmatch.fnmatch(w.name, n) or w.name.startswith(n + ".")
            for n in names
        )
    ]
    unknown = [
        n
        for n in names
        if not any(
            n == w.name or n == w.group or fnmatch.fnmatch(w.name, n) or w.name.startswith(n + ".")
            for w in all_w
        )
    ]
    if unknown:
        raise SystemExit(f"unknown workload(s): {', '.join(unknown)} (see --list)")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run, < 2 min; never installs peers")
    parser.add_argument("--scale", action="store_true", help="the scale group and the limits (minutes)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="workload names, groups or globs")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="results directory")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = parser.parse_args(argv)
    if args.list:
        for w in registry().values():
            print(f"{w.name:28} {w.group:7} {w.description}")
        return 0
    workloads = select(args.only, args.scale)
    short, dirty = git_commit()
    started = dt.datetime.now(dt.UTC)
    command = (
        "python -m bench"
        + ("" if argv is None and len(sys.argv) <= 1 else " ")
        + shlex.join(sys.argv[1:] if argv is None else argv)
    )
    result: dict[str, Any] = {
        "schema": 1,
        "started_at": started.isoformat(timespec="seconds"),
        "commit": short,
        "dirty": dirty,
        "command": command.strip(),
        "quick": args.quick,
        "scale": args.scale,
        "machine": machine(),
        "workloads": [],
    }
    t0 = time.perf_counter()
    for w in workloads:
        print(f"[bench] {w.name} ...", file=sys.stderr, flush=True)
        rec = run_workload(w, args.quick)
        status = rec["status"] if rec["status"] == "ok" else f"skipped ({rec['reason']})"
        print(f"[bench] {w.name}: {status} in {rec['seconds']}s", file=sys.stderr, flush=True)
        result["workloads"].append(rec)
    result["duration_s"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = ("-quick" if args.quick else "") + ("-scale" if args.scale else "")
    path = args.out / f"{started:%Y-%m-%d}-{short}{suffix}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)
    print("\n" + header(result) + "\n")
    print(render_markdown(result))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
