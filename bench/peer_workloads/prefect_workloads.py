"""W0-W3 for Prefect 3, run INSIDE bench/peers/prefect (never imported by the harness).

Usage: ``python prefect_workloads.py w0`` or ``python prefect_workloads.py w1-3 [--w1-runs N]
[--no-w2-1000]``. Prints exactly one JSON line on stdout (the last line) with the results; the harness
parses it. Local mode only: the harness unsets PREFECT_API_URL and points PREFECT_HOME at a temp dir,
so Prefect runs its ephemeral local server against a fresh SQLite database.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from prefect import flow, task


@task
def inc(x: int) -> int:
    return x + 1


@task
def ident(x: int) -> int:
    return x


@task
def total(values: list[int]) -> int:
    return sum(values)


@task
def sleep1() -> int:
    time.sleep(1.0)
    return 1


@flow
def one_step() -> int:
    return inc(0)


@flow
def chain() -> int:
    return inc(inc(inc(0)))


@flow
def fan_out(n: int) -> int:
    futures = ident.map(list(range(1, n + 1)))
    return total(futures.result())


@flow
def sleeper() -> int:
    return sleep1()


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def w1(runs: int) -> dict[str, float]:
    chain()  # first run pays server start and flow registration; W0 measures that, W1 does not
    lat = []
    start = time.perf_counter()
    for _ in range(runs):
        t = time.perf_counter()
        assert chain() == 3
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - start
    return {
        "w1_runs_per_s": runs / wall,
        "w1_p50_ms": statistics.median(lat) * 1000,
        "w1_p99_ms": _pct(lat, 99) * 1000,
        "w1_runs": runs,
    }


def w2(n: int) -> float:
    start = time.perf_counter()
    result = fan_out(n)
    elapsed = time.perf_counter() - start
    assert result == n * (n + 1) // 2, result
    return elapsed


def w3() -> float:
    """20 flow runs started together from 20 threads.

    Threads, not ``asyncio.gather`` of async flows: gathering was ~3.5x slower here (67 s vs 18 s),
    and the peer should be measured at its best.
    """
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: sleeper(), range(20)))
    elapsed = time.perf_counter() - start
    assert results == [1] * 20, results
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=["w0", "w1-3"])
    parser.add_argument("--w1-runs", type=int, default=50)
    parser.add_argument("--no-w2-1000", action="store_true")
    args = parser.parse_args()
    if args.which == "w0":
        assert one_step() == 1
        print(json.dumps({"ok": 1}))
        return
    out: dict[str, float] = {}
    out.update(w1(args.w1_runs))
    out["w2_100_s"] = w2(100)
    if not args.no_w2_1000:
        out["w2_1000_s"] = w2(1000)
    out["w3_s"] = w3()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
