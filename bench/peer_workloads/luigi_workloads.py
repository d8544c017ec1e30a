"""W0-W3 for Luigi, run INSIDE bench/peers/luigi (never imported by the harness).

Usage: ``python luigi_workloads.py w0 --dir TMP`` or ``python luigi_workloads.py w1-3 --dir TMP
[--w1-runs N] [--no-w3-workers2]``. Prints one JSON line on stdout. Luigi runs with its local
scheduler (``local_scheduler=True``) and LocalTargets under ``--dir``; every run gets its own id so
no target already exists. Fan-out (W2) uses workers=2 (the machine's cores); W3 is measured with
workers=20 (20 runs truly started together) and, for comparison, workers=2. Luigi keeps no durable
record of runs beyond the target files, which is worth remembering when comparing it with Sluice.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
import uuid

import luigi

ROOT = "."


class Inc(luigi.Task):
    run_id = luigi.Parameter()
    n = luigi.IntParameter()

    def requires(self) -> list[luigi.Task]:
        return [Inc(run_id=self.run_id, n=self.n - 1)] if self.n > 1 else []

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(f"{ROOT}/{self.run_id}/inc{self.n}.json")

    def run(self) -> None:
        x = 0
        if self.n > 1:
            with self.input()[0].open() as fh:
                x = json.load(fh)
        with self.output().open("w") as fh:
            json.dump(x + 1, fh)


class Leaf(luigi.Task):
    run_id = luigi.Parameter()
    i = luigi.IntParameter()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(f"{ROOT}/{self.run_id}/leaf{self.i}.json")

    def run(self) -> None:
        with self.output().open("w") as fh:
            json.dump(self.i, fh)


class Join(luigi.Task):
    run_id = luigi.Parameter()
    n = luigi.IntParameter()

    def requires(self) -> list[luigi.Task]:
        return [Leaf(run_id=self.run_id, i=i) for i in range(1, self.n + 1)]

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(f"{ROOT}/{self.run_id}/join.json")

    def run(self) -> None:
        s = 0
        for target in self.input():
            with target.open() as fh:
                s += json.load(fh)
        with self.output().open("w") as fh:
            json.dump(s, fh)


class Sleep(luigi.Task):
    run_id = luigi.Parameter()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(f"{ROOT}/{self.run_id}/slept.json")

    def run(self) -> None:
        time.sleep(1.0)
        with self.output().open("w") as fh:
            json.dump(1, fh)


def _read(target: luigi.LocalTarget) -> int:
    with target.open() as fh:
        return int(json.load(fh))


def _build(tasks: list[luigi.Task], workers: int = 1) -> None:
    ok = luigi.build(tasks, local_scheduler=True, workers=workers, log_level="WARNING")
    assert ok, "luigi.build failed"


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def w1(runs: int) -> dict[str, float]:
    lat = []
    start = time.perf_counter()
    for _ in range(runs):
        t = time.perf_counter()
        last = Inc(run_id=uuid.uuid4().hex, n=3)
        _build([last])
        assert _read(last.output()) == 3
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
    join = Join(run_id=uuid.uuid4().hex, n=n)
    _build([join], workers=2)
    elapsed = time.perf_counter() - start
    assert _read(join.output()) == n * (n + 1) // 2
    return elapsed


def w3(workers: int) -> float:
    start = time.perf_counter()
    tasks = [Sleep(run_id=uuid.uuid4().hex) for _ in range(20)]
    _build(tasks, workers=workers)
    elapsed = time.perf_counter() - start
    assert all(_read(t.output()) == 1 for t in tasks)
    return elapsed


def main() -> None:
    global ROOT
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=["w0", "w1-3"])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--w1-runs", type=int, default=50)
    parser.add_argument("--no-w3-workers2", action="store_true")
    args = parser.parse_args()
    ROOT = args.dir
    logging.getLogger("luigi-interface").setLevel(logging.WARNING)
    if args.which == "w0":
        task = Inc(run_id=uuid.uuid4().hex, n=1)
        _build([task])
        assert _read(task.output()) == 1
        print(json.dumps({"ok": 1}))
        return
    out: dict[str, float] = {}
    out.update(w1(args.w1_runs))
    out["w2_100_s"] = w2(100)
    out["w2_1000_s"] = w2(1000)
    out["w3_s"] = w3(20)
    if not args.no_w3_workers2:
        out["w3_workers2_s"] = w3(2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
