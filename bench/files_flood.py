"""A file flood (issue 19): ``python -m bench.files_flood [--files N] [--after keep|delete]``.

A ``build_server`` engine in this process watches one folder with a one-step workflow; a thread
writes N small files into it as fast as it can, and the figure is the wall time from the first
file until every run has ended, with the runs counted against the files (exactly once: one run
per file, none twice). The engine was started on an empty folder, so the files arrive through the
watch, not the start-up scan.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .limits import _cpu_s
from .sluice_workloads import _catalog, write_bench_workflows

FLOW = """\
name: flood
triggers:
  - files: {{path: "{inbox}", suffix: .txt, after: {after}}}
steps:
  a: {{function: "benchfns:inc", input: {{x: 1}}}}
"""


def write_files(inbox: Path, n: int, cpu: list[float]) -> None:
    c0 = time.thread_time()
    for i in range(n):
        with open(inbox / f"f{i:06d}.txt", "w") as fh:
            fh.write("x\n")
    cpu.append(time.thread_time() - c0)


def workers_cpu_s(pid: int | None = None) -> float:
    """CPU of this process's live descendants (the function workers and their fork server)."""
    total = 0.0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid or os.getpid()}/task").iterdir():
            for child in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    total += _cpu_s(int(child)) + workers_cpu_s(int(child))
    return total


async def measure(files: int, after: str) -> dict[str, Any]:
    from engine.engine import Settings, tune_gc
    from engine.server import build_server

    tune_gc()  # as ``sluice serve`` does
    with tempfile.TemporaryDirectory() as tmp:
        folder, inbox = Path(tmp) / "flows", Path(tmp) / "inbox"
        inbox.mkdir()
        write_bench_workflows(folder)
        (folder / "flood.yaml").write_text(FLOW.format(inbox=inbox, after=after))
        engine = build_server(Settings(data_dir=Path(tmp) / "data", port=0), _catalog(folder), folder)
        async with engine:
            await asyncio.sleep(0.5)  # the start-up scan of the empty folder
            orch = engine.orchestrator
            base = orch.finished
            writer_cpu: list[float] = []
            t0, c0, w0 = time.perf_counter(), time.process_time(), workers_cpu_s()
            writer = threading.Thread(target=write_files, args=(inbox, files, writer_cpu))
            writer.start()
            deadline = t0 + 600
            while orch.finished - base < files and time.perf_counter() < deadline:  # noqa: ASYNC110 - polled
                await asyncio.sleep(0.05)
            wall = time.perf_counter() - t0
            writer.join()
            engine_cpu = time.process_time() - c0 - sum(writer_cpu)
            workers_cpu = workers_cpu_s() - w0
            await asyncio.sleep(1.0)  # anything extra (a second run of a file) would show up now

            def counts(conn: Any) -> tuple[int, int, int]:
                runs, ok = conn.execute(
                    "SELECT count(*), sum(status = 'SUCCEEDED') FROM runs WHERE workflow='flood'"
                ).fetchone()
                keys = conn.execute(
                    "SELECT count(DISTINCT json_extract(body, '$.detail.object.key')) FROM events "
                    "WHERE source = 'sluice.files'"
                ).fetchone()[0]
                return int(runs), int(ok or 0), int(keys)

            runs, ok, keys = await engine.store.read(counts)
            return {
                "files": files,
                "after": after,
                "wall_s": round(wall, 2),
                "runs_per_s": round(ok / wall),
                # what the machine's load cannot change: CPU per run, the engine's and the workers'
                "engine_cpu_us_per_run": round(engine_cpu / files * 1e6),
                "workers_cpu_us_per_run": round(workers_cpu / files * 1e6),
                "runs_per_engine_cpu_s": round(files / engine_cpu),
                "runs": runs,
                "succeeded": ok,
                "distinct_files_emitted": keys,
                "exactly_once": runs == ok == keys == files,
                "loadavg": list(os.getloadavg()),
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--after", default="keep")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.files, args.after))))


if __name__ == "__main__":
    main()
