"""Function workers die with the engine: after ``kill -9`` no attempt runs on without it.

A step that was running when the engine was killed is retried after the restart (functions are
at-least-once); the promise checked here is that the two attempts never run at the same time, and
that the killed one stops at once instead of running on with no timeout and no engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.engines import write_flow
from tests.support.paths import ROOT
from tests.support.serving import free_port, healthy, serve
from tests.support.waiting import wait_until, wait_until_sync

pytestmark = pytest.mark.timeout(120)

SLOW = """
import json, os, subprocess, time
from pathlib import Path

LOG = Path(__file__).with_name("effects.log")


def note(what):
    with LOG.open("a") as f:
        f.write(json.dumps({"pid": os.getpid(), "what": what, "at": time.time()}) + "\\n")


def slow(event, context):
    child = subprocess.Popen(["sleep", "60"])  # a handler's own child dies with its worker too
    note(f"child {child.pid}")
    note("start")
    for _ in range(int(event["ticks"])):
        time.sleep(0.1)
        note("tick")
    note("end")
    child.kill()
    return {"ok": True}
"""

FLOW = """
name: slow
triggers:
  - webhook: {name: go, auth: none}
steps:
  slow:
    function: handlers:slow
    timeout: 30s
    input: {ticks: 30}
"""


def effects(flows: Path) -> list[dict[str, object]]:
    path = flows / "effects.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def ticked(folder: Path) -> bool:
    return any(e["what"] == "tick" for e in effects(folder))


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def processes_in(cwd: Path) -> list[int]:
    """Live processes whose working directory is ``cwd``: the engine, its fork server, its workers."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if Path(os.readlink(entry / "cwd")) == cwd and alive(int(entry.name)):
                    found.append(int(entry.name))
    return found


def kill_leftovers(cwd: Path) -> None:
    """A failed test must not leave its workers behind for the next one."""
    for pid in processes_in(cwd):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def post(base: str) -> None:
    req = urllib.request.Request(base + "/hooks/slow/go", data=b"{}", method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 202


def run_status(base: str) -> str | None:
    try:
        with urllib.request.urlopen(base + "/api/v1/runs", timeout=2) as resp:
            runs = json.loads(resp.read())
    except (urllib.error.URLError, OSError):
        return None
    items = runs.get("runs", runs) if isinstance(runs, dict) else runs
    return items[0]["status"] if items else None


def test_kill_9_takes_running_function_workers_with_it_and_the_retry_never_overlaps(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    write_flow(flows, FLOW, SLOW)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve(tmp_path, port)
    try:
        wait_until_sync(lambda: healthy(base), 30, what="the server to start")
        post(base)
        wait_until_sync(lambda: ticked(flows), 30, what="the step to start")
        first = effects(flows)
        worker = int(first[0]["pid"])  # type: ignore[call-overload]
        child = int(str(first[0]["what"]).split()[1])
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = time.time()
        wait_until_sync(lambda: not alive(worker), 2, what=f"worker {worker} to die with the engine")
        wait_until_sync(lambda: not alive(child), 2, what=f"the handler's child {child} to die with it")
        wait_until_sync(lambda: not processes_in(tmp_path), 2, what="the fork server and workers to be gone")
        last_of_first = max(float(e["at"]) for e in effects(flows))  # type: ignore[arg-type]
        assert last_of_first < killed_at + 0.2, "the killed attempt kept running after the engine died"

        proc = serve(tmp_path, port)
        wait_until_sync(lambda: healthy(base), 30, what="the restart")
        wait_until_sync(lambda: run_status(base) in ("SUCCEEDED", "FAILED"), 60, what="the run to end")
        assert run_status(base) == "SUCCEEDED"
        spans: dict[int, list[float]] = {}
        for e in effects(flows):
            spans.setdefault(int(e["pid"]), []).append(float(e["at"]))  # type: ignore[call-overload,arg-type]
        assert len(spans) == 2, f"expected the killed attempt and one retry, got {sorted(spans)}"
        (a_start, a_end), (b_start, b_end) = sorted((min(t), max(t)) for t in spans.values())
        assert a_end < b_start, f"the two attempts overlapped: {a_start}..{a_end} and {b_start}..{b_end}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        kill_leftovers(tmp_path)


EMBEDDER = """
import asyncio, json, sys
from engine.executors.base import FunctionCall
from engine.executors.function import FunctionExecutor


async def main():
    async with FunctionExecutor(workers=1, fork=FORK) as pool:
        print(json.dumps(pool.worker_pids), flush=True)
        call = FunctionCall(handler="handlers:slow", base_dir=sys.argv[1], event={"ticks": 300},
                            run_id="r", step="s", attempt=1, attempt_id="r/s#1", timeout_s=60)
        await pool.execute(call)

asyncio.run(main())
"""


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "interpreter"])
def test_workers_of_a_killed_engine_process_die_at_once(tmp_path: Path, fork: bool) -> None:
    (tmp_path / "handlers.py").write_text(textwrap.dedent(SLOW))
    script = tmp_path / "embed.py"
    script.write_text(EMBEDDER.replace("FORK", str(fork)))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        (worker,) = json.loads(proc.stdout.readline())
        wait_until_sync(lambda: ticked(tmp_path), 30, what="the call to start")
        child = int(str(effects(tmp_path)[0]["what"]).split()[1])
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_until_sync(lambda: not alive(worker), 2, what=f"worker {worker} to die with its engine")
        wait_until_sync(lambda: not alive(child), 2, what=f"the handler's child {child} to die with it")
        wait_until_sync(lambda: not processes_in(tmp_path), 2, what="every process of the pool to be gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        kill_leftovers(tmp_path)


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


async def test_a_new_pool_starts_only_once_the_workers_of_the_last_one_are_gone(tmp_path: Path) -> None:
    """The barrier itself: a process still holding the pool's lock (as a killed engine's worker
    would) holds up ``start`` until it exits, so recovery cannot overlap it."""
    from engine.executors.function import FunctionExecutor

    lock = tmp_path / "workers.lock"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, str(lock), "1.0", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and await holder.stdout.readline() == b"held\n"
        t0 = time.monotonic()
        async with FunctionExecutor(workers=1, lock_path=lock) as pool:
            waited = time.monotonic() - t0
            assert holder.returncode is not None, "the pool started while the earlier worker still ran"
            assert waited >= 0.5
            (pid,) = pool.worker_pids
            _fd_of(pid, lock)
    finally:
        if holder.returncode is None:
            holder.kill()
        await holder.wait()


def _fd_of(pid: int, path: Path) -> str:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return fd
    raise AssertionError(f"worker {pid} does not hold {path}")


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "interpreter"])
async def test_a_timed_out_attempt_takes_its_handlers_children_with_it(tmp_path: Path, fork: bool) -> None:
    from engine.executors.base import TIMEOUT, FunctionCall
    from engine.executors.function import FunctionExecutor

    (tmp_path / "handlers.py").write_text(textwrap.dedent(SLOW))
    call = FunctionCall(handler="handlers:slow", base_dir=str(tmp_path), event={"ticks": 300}, run_id="r",
                        step="s", attempt=1, attempt_id="r/s#1", timeout_s=0.5)  # fmt: skip
    async with FunctionExecutor(workers=1, fork=fork) as pool:
        out = await pool.execute(call)
        assert out.error_type == TIMEOUT
        child = int(str(effects(tmp_path)[0]["what"]).split()[1])
        await wait_until(lambda: not alive(child), 2, what=f"the handler's child {child} to die with it")
