"""Render a results file as the Markdown table RESULTS.md keeps: ``python -m bench.report [FILE]``.

Without FILE it picks the newest full (neither ``-quick`` nor ``-scale``) run in bench/results, so
refreshing RESULTS.md after a run is one command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 0.1:
        return f"{x:.3f}"
    return f"{x:.4f}"


def _unit(rec: dict[str, Any], metric: str) -> str:
    """Declared unit, else the one the metric's name ends with (``_ms``, ``_s``, ``_mb``...)."""
    if metric in rec["units"]:
        return str(rec["units"][metric])
    for suffix, unit in (("_per_s", "/s"), ("_ms", "ms"), ("_us", "µs"), ("_mb", "MB"), ("_s", "s")):
        if metric.endswith(suffix):
            return unit
    return ""


def render_markdown(result: dict[str, Any]) -> str:
    """The human table: one row per metric, median with [min-max], and skips with their reasons."""
    lines = [
        "| workload | metric | median | min - max | unit | reps |",
        "|---|---|---:|---:|---|---:|",
    ]
    for rec in result["workloads"]:
        if rec["status"] != "ok" and not rec["metrics"]:
            reason = rec["reason"].replace("|", "/")
            lines.append(f"| {rec['name']} | — | skipped: {reason} | | | 0 |")
            continue
        for metric, s in rec["metrics"].items():
            unit = _unit(rec, metric)
            rng = f"{_fmt(s['min'])} - {_fmt(s['max'])}"
            lines.append(
                f"| {rec['name']} | {metric} | {_fmt(s['median'])} | {rng} | {unit} | {rec['reps']} |"
            )
        if rec["status"] != "ok":
            reason = rec["reason"].replace("|", "/")
            lines.append(f"| {rec['name']} | — | partly skipped: {reason} | | | |")
    noted = [rec for rec in result["workloads"] if rec.get("notes")]
    notes = [f"- `{rec['name']}`: {'; '.join(rec['notes'])}" for rec in noted]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines)


def header(result: dict[str, Any]) -> str:
    """Machine, commit and command in one paragraph: a table without them cannot be compared."""
    m = result["machine"]
    dirty = " (with uncommitted changes in the tree)" if result.get("dirty") else ""
    return (
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}, "
        f"Linux {m['kernel']}, load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}; "
        f"commit `{result['commit']}`{dirty}; command `{result['command']}`; "
        f"started {result['started_at']}, took {result['duration_s']} s."
    )


def latest() -> Path:
    runs = sorted(p for p in RESULTS_DIR.glob("*.json") if not p.stem.endswith(("-quick", "-scale")))
    if not runs:
        raise SystemExit(f"no full run in {RESULTS_DIR}")
    return max(runs, key=lambda p: p.stat().st_mtime)


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else latest()
    result = json.loads(path.read_text())
    print(header(result) + "\n")
    print(render_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
