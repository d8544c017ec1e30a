"""The ``scale`` group (issue 19): the costs that grow with the work, ``python -m bench --scale``.

Each workload runs one standalone bench module (``python -m bench.<module>``, usable alone too) in
a fresh process, so its heap, collector and event loop are its own (peak RSS and latencies are
not the harness's), and records the figures it prints. ``--scale`` runs the ``limits`` group
first, so the machine's own limits sit beside these figures in the same results file.
``--quick --scale`` shrinks every size to a smoke test; plain ``--quick`` (CI) runs none of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from .core import REPO_DIR, Context, Workload, register, tail

GROUP = "scale"

#: name, module, full-size arguments, --quick arguments, description, targets (issue 19)
SPECS: list[tuple[str, str, list[str], list[str], str, dict[str, str]]] = [
    (
        "history",
        "bench.history",
        ["--runs", "1000000"],
        ["--runs", "20000"],
        "API history pages and dashboard counts with 1M finished runs in the store",
        {
            "first_page_ms": "<= 5 ms",
            "status_page_ms": "<= 5 ms",
            "workflow_page_ms": "<= 5 ms",
            "tenth_page_ms": "<= 5 ms",
            "dashboard_counts_ms": "<= 5 ms",
            "small_read_beside_long_read_ms": "not behind the long read",
        },
    ),
    (
        "fanout",
        "bench.fanout",
        ["100000"],
        ["2000"],
        "one for_each run over 100,000 items: peak RSS growth and items/s",
        {"peak_rss_growth_mb": "<= 50 MB", "items_per_s": ">= the 10,000-item rate"},
    ),
    (
        "arrays",
        "bench.arrays",
        ["--size", "10000"],
        ["--size", "1000"],
        "a 10,000-child array submitted: the longest store transaction, probe writes meanwhile",
        {"max_hold_ms": "<= 20 ms", "summaries_not_exact": "0"},
    ),
    (
        "routing",
        "bench.routing",
        ["--rules", "1000", "--events", "20000"],
        ["--rules", "200", "--events", "2000"],
        "bus matching per event with 1,000 source-less rules",
        {"per_event_us": "<= 20 us"},
    ),
    (
        "files",
        "bench.files_flood",
        ["--files", "20000"],
        ["--files", "1000"],
        "20,000 files into one watched folder, end to end (one run each, exactly once)",
        {"runs_per_s": ">= 1,000/s", "exactly_once": "1"},
    ),
    (
        "webhook_wait",
        "bench.webhook_wait",
        ["--requests", "600"],
        ["--requests", "60"],
        "?wait webhook, 3-step chain: one client, 4 clients, in-process W1 before and after",
        {"one_client.p99_over_p50": "<= 2"},
    ),
]


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a module's JSON answer (nested keys joined with dots; booleans as 0/1)."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, bool | int | float):
            out[prefix + key] = float(value)
    return out


def _workload(module: str, full: list[str], quick: list[str]) -> Any:
    def run(ctx: Context) -> dict[str, float]:
        cmd = [sys.executable, "-m", module, *(quick if ctx.quick else full)]
        load = os.getloadavg()
        done = subprocess.run(cmd, cwd=REPO_DIR, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[2:])} exited {done.returncode}: {tail(done.stderr, 4)}")
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        ctx.note(f"`{' '.join(cmd[2:])}`, load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
        return flatten(answer)

    return run


for _name, _module, _full, _quick, _desc, _targets in SPECS:
    register(
        Workload(
            f"{GROUP}.{_name}",
            GROUP,
            _workload(_module, _full, _quick),
            _desc,
            targets=_targets,
            reps=1,
            quick_reps=1,
            timeout_s=1800.0,
        )
    )
