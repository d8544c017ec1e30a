"""The harness's vocabulary: workloads, repetitions, statistics and measured subprocesses.

Every workload is a plain function called once per repetition; it returns a flat mapping of metric
name to number, or raises :class:`Skip` with a reason. The harness (not the workload) repeats it and
reduces each metric to median/min/max, so every figure in the results file is produced the same way
and a noisy machine shows up as a wide min-max band instead of a silently wrong single number.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent


class Skip(Exception):
    """Raised by a workload that cannot run here (no Docker, no peer venv, no engine yet).

    The harness records the reason and moves on: an unavailable workload must never end the run.
    """


@dataclass
class Context:
    """What a workload knows about the run it is part of."""

    quick: bool
    rep: int
    tmp: Path
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Attach a remark to the workload's record (kept once, however many repetitions say it)."""
        if text not in self.notes:
            self.notes.append(text)


WorkloadFn = Callable[[Context], Mapping[str, float]]


@dataclass(frozen=True)
class Workload:
    """One registry entry.

    ``units`` maps metric names to units for the table; ``targets`` maps a metric to the target text
    from issue 6 so RESULTS.md can state ratios. ``setup`` runs once before the repetitions (e.g. a
    venv install) and may itself raise :class:`Skip`.
    """

    name: str
    group: str
    fn: WorkloadFn
    description: str
    units: Mapping[str, str] = field(default_factory=dict)
    reps: int = 3
    quick_reps: int = 3
    timeout_s: float = 300.0
    targets: Mapping[str, str] = field(default_factory=dict)
    setup: Callable[[Context], None] | None = None


_REGISTRY: dict[str, Workload] = {}


def register(workload: Workload) -> Workload:
    """Add a workload; names are unique so ``--only`` and the results file can refer to them."""
    if workload.name in _REGISTRY:
        raise ValueError(f"workload {workload.name!r} registered twice")
    _REGISTRY[workload.name] = workload
    return workload


def registry() -> dict[str, Workload]:
    """All workloads in registration order (the order of the table)."""
    return dict(_REGISTRY)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: with 200 samples p99 is the 2nd worst, which is what we want to see."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def latency_metrics(prefix: str, seconds: Sequence[float]) -> dict[str, float]:
    """p50/p99 in milliseconds, the unit every latency in the table uses."""
    return {
        f"{prefix}_p50_ms": percentile(seconds, 50) * 1000.0,
        f"{prefix}_p99_ms": percentile(seconds, 99) * 1000.0,
    }


def summarize(samples: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float | list[float]]]:
    """Reduce per-repetition metrics to median/min/max (and keep the raw values for later study)."""
    names: list[str] = []
    for sample in samples:
        names.extend(n for n in sample if n not in names)
    out: dict[str, dict[str, float | list[float]]] = {}
    for name in names:
        values = [float(s[name]) for s in samples if name in s]
        out[name] = {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "values": values,
        }
    return out


@dataclass
class Measured:
    """A finished subprocess: output, wall time and the peak RSS of its whole process tree."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_mb: float
    peak_pss_mb: float = 0.0
    timed_out: bool = False


def _tree_rss_kb(root: int) -> int:
    """Sum VmRSS over ``root`` and its descendants, read from /proc (no psutil dependency)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as fh:
                ppid = 0
                kb = 0
                for line in fh:
                    if line.startswith("PPid:"):
                        ppid = int(line.split()[1])
                    elif line.startswith("VmRSS:"):
                        kb = int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
        pid = int(entry.name)
        rss[pid] = kb
        children.setdefault(ppid, []).append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def _tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(children.get(pid, []))
    return pids


def _tree_pss_kb(root: int) -> int:
    """Proportional set size of the tree: shared pages split between sharers, so forked workers
    (Luigi with workers=20) are not counted 20 times as a plain RSS sum would."""
    total = 0
    for pid in _tree_pids(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                total += next((int(ln.split()[1]) for ln in fh if ln.startswith("Pss:")), 0)
        except (OSError, ValueError):
            continue
    return total


def run_measured(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 300.0,
    sample_rss: bool = True,
) -> Measured:
    """Run a command to exit, timing it and sampling its process tree's RSS every 100 ms.

    Sampling the tree (not ``ru_maxrss`` of one process) matters for Prefect, whose local server
    lives in a child process: the figure compared is what the whole tool costs the machine. Both the
    RSS sum and the PSS sum are kept; they differ when children share pages (forked workers).
    """
    peak = [0, 0]
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    done = threading.Event()

    def sampler() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], _tree_rss_kb(proc.pid))
            peak[1] = max(peak[1], _tree_pss_kb(proc.pid))

    thread = threading.Thread(target=sampler, daemon=True) if sample_rss else None
    if thread:
        thread.start()
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        out, err = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    if thread:
        thread.join()
    return Measured(proc.returncode, out, err, wall, peak[0] / 1024.0, peak[1] / 1024.0, timed_out)


def tail(text: str, lines: int = 6) -> str:
    """The last lines of a stream, for a skip reason that says what went wrong without a wall of text."""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def temp_dir(prefix: str) -> Path:
    """A fresh directory under the system temp dir (never inside the repo, which others share)."""
    return Path(tempfile.mkdtemp(prefix=f"sluice-bench-{prefix}-"))
