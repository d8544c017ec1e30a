"""FunctionExecutor against real worker processes and real handler files (tests/handlers/)."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.executors import worker as worker_module
from engine.executors.base import (
    BAD_OUTPUT,
    ENGINE_RESTARTED,
    HANDLER_NOT_FOUND,
    OUT_OF_MEMORY,
    TIMEOUT,
    WORKER_CRASHED,
    FunctionCall,
)
from engine.executors.function import FunctionExecutor, WorkerStartError
from tests.support.paths import HANDLERS, ROOT
from tests.support.waiting import wait_until

ALPHA = str(HANDLERS / "alpha")
BETA = str(HANDLERS / "beta")
MiB = 1024 * 1024

MakeExecutor = Callable[..., Awaitable[FunctionExecutor]]


def call(handler: str, event: Any = None, base_dir: str = ALPHA, **kw: Any) -> FunctionCall:
    kw.setdefault("attempt_id", f"r-1/{handler}#1")
    kw.setdefault("run_id", "r-1")
    return FunctionCall(handler=f"handlers:{handler}", base_dir=base_dir, event=event,
                        step="probe", attempt=1, **kw)  # fmt: skip


def descendants(pid: int | None = None) -> set[int]:
    """Every live process under ``pid`` (default: us): workers are the fork server's children."""
    found: set[int] = set()
    todo = [os.getpid() if pid is None else pid]
    while todo:
        for path in glob.glob(f"/proc/{todo.pop()}/task/*/children"):
            with contextlib.suppress(OSError):
                kids = {int(p) for p in Path(path).read_text().split()} - found
                found |= kids
                todo.extend(kids)
    return found


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
async def make_executor() -> AsyncIterator[MakeExecutor]:
    """A factory that starts executors and closes every one of them in teardown."""
    made: list[FunctionExecutor] = []

    async def make(**kw: Any) -> FunctionExecutor:
        kw.setdefault("workers", 2)
        fx = FunctionExecutor(**kw)
        made.append(fx)
        async with asyncio.timeout(30):
            await fx.start()
        return fx

    yield make
    async with asyncio.timeout(30):
        for fx in made:
            await fx.aclose()


@pytest.fixture
async def fx(make_executor: MakeExecutor) -> FunctionExecutor:
    return await make_executor()


def test_worker_error_types_match_base() -> None:
    assert (worker_module.OUT_OF_MEMORY, worker_module.BAD_OUTPUT, worker_module.HANDLER_NOT_FOUND) == (
        OUT_OF_MEMORY,
        BAD_OUTPUT,
        HANDLER_NOT_FOUND,
    )


async def test_sync_and_async_handlers_return_json(fx: FunctionExecutor) -> None:
    out = await fx.execute(call("echo", {"a": [1, 2.5, None, "x"]}))
    assert out.ok and out.output == {"event": {"a": [1, 2.5, None, "x"]}, "where": "alpha"}
    assert out.error is None and out.duration_s > 0
    out = await fx.execute(call("async_echo", 7))
    assert out.ok and out.output == {"async": True, "event": 7}
    out = await fx.execute(call("async_echo", 8))  # the worker's loop is reused
    assert out.output == {"async": True, "event": 8}


async def test_non_json_output_is_invalid_output(fx: FunctionExecutor) -> None:
    out = await fx.execute(call("not_json"))
    assert not out.ok and out.error_type == BAD_OUTPUT
    assert "set" in out.error["errorMessage"]
    out = await fx.execute(call("nan"))
    assert out.error_type == BAD_OUTPUT and "float" in out.error["errorMessage"]


async def test_exception_has_lambda_shape(fx: FunctionExecutor) -> None:
    out = await fx.execute(call("fail", "x"))
    assert not out.ok
    assert out.error["errorType"] == "Boom"
    assert out.error["errorMessage"] == "bad input 'x'"
    trace = out.error["stackTrace"]
    assert isinstance(trace, list) and all(isinstance(line, str) for line in trace)
    assert any("raise Boom" in line for line in trace)
    assert (await fx.execute(call("echo", 1))).ok  # the worker is still fine


async def test_stack_trace_holds_the_users_frames_only_as_lambdas_does(fx: FunctionExecutor) -> None:
    out = await fx.execute(call("fail", "x"))
    trace = out.error["stackTrace"]
    assert trace and not any(entry.startswith("Traceback") for entry in trace)
    assert not any("engine/executors" in entry for entry in trace), trace
    first = trace[0]  # one entry per frame: '  File "...handlers.py", line N, in fail\n    raise ...\n'
    assert first.startswith('  File "') and "handlers.py" in first and ", line " in first
    assert "raise Boom" in trace[-1] and not any(entry.startswith("Boom:") for entry in trace)


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        ("nope:fn", "does not exist"),
        ("handlers:missing", "has no attribute 'missing'"),
        ("broken:fn", "No module named 'no_such_module_anywhere'"),
        ("handlers", "not of the form"),
    ],
)
async def test_handler_not_found(fx: FunctionExecutor, handler: str, reason: str) -> None:
    c = FunctionCall(attempt_id="a", handler=handler, base_dir=ALPHA, event=None, run_id="r", step="s",
                     attempt=1)  # fmt: skip
    out = await fx.execute(c)
    assert out.error_type == HANDLER_NOT_FOUND
    assert reason in out.error["errorMessage"]


async def test_sibling_imports_and_same_module_name_in_two_folders(make_executor: MakeExecutor) -> None:
    fx = await make_executor(workers=1)  # one worker, so both folders load into the same process
    a = await fx.execute(call("sibling"))
    b = await fx.execute(call("sibling", base_dir=BETA))
    assert a.output["helper"] == "alpha-helpers" and b.output["helper"] == "beta-helpers"
    assert a.output["module"] != b.output["module"]
    assert (await fx.execute(call("echo", 1, base_dir=BETA))).output["where"] == "beta"
    assert (await fx.execute(call("echo", 1))).output["where"] == "alpha"
    # imports made while the handler runs resolve in its own folder too
    assert (await fx.execute(call("lazy_sibling", base_dir=BETA))).output == "beta-helpers"
    assert (await fx.execute(call("lazy_sibling"))).output == "alpha-helpers"


async def test_timeout_kills_the_worker_and_the_pool_recovers(fx: FunctionExecutor) -> None:
    before = set(fx.worker_pids)
    started = time.monotonic()
    out = await fx.execute(call("spin", timeout_s=0.5))
    assert 0.5 <= time.monotonic() - started < 3
    assert out.error_type == TIMEOUT
    assert out.error["errorMessage"] == "Task timed out after 0.50 seconds"
    assert fx.stats["timeouts"] == 1
    await wait_until(lambda: len(fx.worker_pids) == 2)
    killed = before - set(fx.worker_pids)
    assert len(killed) == 1 and gone(killed.pop())
    results = await asyncio.gather(*(fx.execute(call("double", i)) for i in range(10)))
    assert [r.output for r in results] == [i * 2 for i in range(10)]


async def test_memory_limit_is_enforced_and_the_worker_retired(fx: FunctionExecutor) -> None:
    before = set(fx.worker_pids)
    out = await fx.execute(call("hog", 400 * MiB, memory_bytes=100 * MiB))
    assert out.error_type == OUT_OF_MEMORY, out.error
    assert "100 MiB" in out.error["errorMessage"]
    await wait_until(lambda: len(fx.worker_pids) == 2 and set(fx.worker_pids) != before)
    assert fx.stats["workers_replaced"] == 1
    ok = await fx.execute(call("hog", 10 * MiB, memory_bytes=100 * MiB))  # under the limit: fine
    assert ok.output == 10 * MiB
    big = await fx.execute(call("hog", 200 * MiB))  # without a limit a big allocation works
    assert big.ok


@pytest.mark.parametrize(("handler", "event", "how"), [("exit_hard", 3, "exited with code 3"),
                                                       ("segfault", None, "signal SIGSEGV")])  # fmt: skip
async def test_crash_is_an_outcome(fx: FunctionExecutor, handler: str, event: Any, how: str) -> None:
    out = await fx.execute(call(handler, event))
    assert out.error_type == WORKER_CRASHED
    assert how in out.error["errorMessage"]
    await wait_until(lambda: len(fx.worker_pids) == 2)
    assert (await fx.execute(call("double", 21))).output == 42
    assert fx.stats["workers_replaced"] == 1


async def test_worker_killed_while_idle_is_replaced(fx: FunctionExecutor) -> None:
    victim = fx.worker_pids[0]
    os.kill(victim, signal.SIGKILL)
    await wait_until(lambda: victim not in fx.worker_pids and len(fx.worker_pids) == 2)
    results = await asyncio.gather(*(fx.execute(call("double", i)) for i in range(4)))
    assert all(r.ok for r in results)


async def test_output_and_logging_captured_per_attempt(fx: FunctionExecutor, tmp_path: Path) -> None:
    first = tmp_path / "logs" / "r-1" / "probe#1.log"  # parent folders are created
    out = await fx.execute(call("chatty", log_path=str(first)))
    assert out.ok and out.log_path == str(first)
    text = first.read_text()
    for line in ("to stdout", "to stderr", "raw fd 1", "from a subprocess", "INFO user: via logging",
                 "WARNING sluice.function.probe: via context.logger"):  # fmt: skip
        assert line in text
    second = tmp_path / "logs" / "r-1" / "probe#2.log"
    await fx.execute(call("echo", 1, log_path=str(second)))
    assert not second.exists()  # a silent attempt gets no file; nothing of the earlier one leaks in
    await fx.execute(call("chatty", log_path=str(second)))
    assert second.read_text().count("to stdout") == 1  # only its own output
    assert first.read_text() == text  # nor anything later into the earlier file


async def test_context_fields(fx: FunctionExecutor) -> None:
    before = time.time()
    attempt_id = "r-1/probe[3]#1"
    out = await fx.execute(call("ctx", timeout_s=5, index=3, extra={"tenant": "acme"}, attempt_id=attempt_id))
    o = out.output
    assert (o["run_id"], o["step"], o["attempt"], o["index"], o["tenant"]) == ("r-1", "probe", 1, 3, "acme")
    assert before + 5 <= o["deadline"] <= time.time() + 5
    assert 4 < o["first"] <= 5 and o["second"] < o["first"]
    assert 0 < o["millis"] <= 5000
    assert o["aws_request_id"] == "r-1/probe[3]#1" and o["function_name"] == "handlers:ctx"
    no_timeout = (await fx.execute(call("ctx"))).output
    assert no_timeout["deadline"] is None and no_timeout["first"] is None


async def test_concurrency_limit(make_executor: MakeExecutor) -> None:
    fx = await make_executor(workers=3)
    limited = await asyncio.gather(*(fx.execute(call("sleep", 0.15, concurrency=1)) for _ in range(3)))
    spans = sorted((r.output["start"], r.output["end"]) for r in limited)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end  # one at a time
    free = await asyncio.gather(*(fx.execute(call("sleep", 0.3)) for _ in range(3)))
    starts = [r.output["start"] for r in free]
    ends = [r.output["end"] for r in free]
    assert max(starts) < min(ends)  # without a limit all three overlap


async def test_many_concurrent_calls(fx: FunctionExecutor) -> None:
    results = await asyncio.gather(*(fx.execute(call("double", i)) for i in range(500)))
    assert [r.output for r in results] == [i * 2 for i in range(500)]
    assert fx.stats == {"calls": 500, "failures": 0, "timeouts": 0, "workers_replaced": 0}


async def test_cancellation_kills_the_worker(fx: FunctionExecutor) -> None:
    task = asyncio.create_task(fx.execute(call("sleep", 30)))
    await wait_until(lambda: fx.stats["calls"] == 1)
    before = set(fx.worker_pids)
    task.cancel("run cancelled by user")
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: len(fx.worker_pids) == 2 and set(fx.worker_pids) != before)
    killed = before - set(fx.worker_pids)
    await wait_until(lambda: all(gone(pid) for pid in killed))
    assert (await fx.execute(call("double", 1))).output == 2


async def test_max_calls_per_worker_recycles(make_executor: MakeExecutor) -> None:
    fx = await make_executor(workers=1, max_calls_per_worker=2)
    pids = [(await fx.execute(call("sleep", 0))).output["pid"] for _ in range(4)]
    assert pids[0] == pids[1] != pids[2] == pids[3]
    assert fx.stats["workers_replaced"] == 2


async def test_aclose_leaves_no_child_processes() -> None:
    before = descendants()
    fx = FunctionExecutor(workers=2)
    await fx.start()
    pids = set(fx.worker_pids)
    assert len(pids) == 2 and pids <= descendants()
    busy = asyncio.create_task(fx.execute(call("sleep", 30)))  # a stuck attempt must not hold up aclose
    await wait_until(lambda: fx.stats["calls"] == 1)
    assert "busy=1" in repr(fx)
    async with asyncio.timeout(10):
        await fx.aclose()
        await fx.aclose()  # idempotent
        out = await busy
    assert out.error_type == ENGINE_RESTARTED
    assert descendants() <= before and all(gone(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        await fx.execute(call("echo"))


# The exit code itself is not asserted: on a busy machine another test's finished child may have its
# pid reused, and asyncio then reports 255 ("Unknown child process"); the clear message is the point.
@pytest.mark.parametrize(("script", "message"), [("#!/bin/sh\nexit 7\n", r"did not start: worker \d+ exited"),
                                                 (None, "cannot run function worker")])  # fmt: skip
async def test_bad_python_fails_start_clearly(tmp_path: Path, script: str | None, message: str) -> None:
    fake = tmp_path / "python"
    if script is not None:
        fake.write_text(script)
        fake.chmod(0o755)
    fx = FunctionExecutor(workers=2, python=str(fake))
    with pytest.raises(WorkerStartError, match=message):
        await fx.start()
    await fx.aclose()


async def test_pool_scales_out_for_waiting_calls_and_back_in_when_idle(make_executor: MakeExecutor) -> None:
    fx = await make_executor(workers=2, max_workers=8, idle_timeout_s=0.5)
    t0 = time.monotonic()
    # two runs: one run alone may not grow the pool into the reserve kept for the others
    outs = await asyncio.gather(*(fx.execute(call("sleep", 0.6, run_id=f"r-{i % 2}")) for i in range(8)))
    elapsed = time.monotonic() - t0
    assert all(o.ok for o in outs)
    assert len({o.output["pid"] for o in outs}) == 8, "each sleeping call got a worker of its own"
    assert elapsed < 2.0, f"8 sleeps of 0.6 s took {elapsed:.2f}s: calls queued instead of scaling out"
    await wait_until(lambda: len(fx.worker_pids) == 2, timeout_s=10)  # extras retired after idling


async def test_sleeping_calls_get_workers_before_scale_after(make_executor: MakeExecutor) -> None:
    """The kernel shows the workers asleep (time.sleep), so the pool forks for the waiting calls."""
    fx = await make_executor(workers=1, max_workers=4, scale_after_s=30.0)
    t0 = time.monotonic()
    outs = await asyncio.gather(*(fx.execute(call("sleep", 0.5, run_id=f"r-{i % 2}")) for i in range(4)))
    elapsed = time.monotonic() - t0
    assert len({o.output["pid"] for o in outs}) == 4
    assert elapsed < 1.5, f"4 sleeps of 0.5 s took {elapsed:.2f}s: they queued on one worker"


async def test_computing_calls_are_not_taken_for_asleep(make_executor: MakeExecutor) -> None:
    fx = await make_executor(workers=1, max_workers=4, scale_after_s=30.0)
    outs = await asyncio.gather(*(fx.execute(call("busy", 0.2)) for _ in range(3)))
    assert all(o.ok for o in outs)
    assert len({o.output["pid"] for o in outs}) == 1, "no worker is started before scale_after_s"


async def test_max_workers_caps_the_scale_out(make_executor: MakeExecutor) -> None:
    fx = await make_executor(workers=1, max_workers=2)
    outs = await asyncio.gather(*(fx.execute(call("sleep", 0.3)) for _ in range(4)))
    assert len({o.output["pid"] for o in outs}) == 2
    starts = sorted(o.output["start"] for o in outs)
    assert starts[2] - starts[0] >= 0.25, "the third call waited for a worker"


async def test_a_burst_of_short_calls_does_not_grow_the_pool(make_executor: MakeExecutor) -> None:
    fx = await make_executor(workers=2, max_workers=16)
    await warm(fx, 2)
    outs = await asyncio.gather(*(fx.execute(call("echo", i)) for i in range(600)))
    assert [o.output["event"] for o in outs] == list(range(600))
    assert len(fx.worker_pids) == 2, "short calls drain through the warm workers; no interpreter starts"


async def test_a_timed_out_attempt_keeps_what_it_printed(fx: FunctionExecutor, tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "hang.log"
    out = await fx.execute(call("print_then_spin", log_path=str(log_path), timeout_s=0.5))
    assert out.error_type == TIMEOUT
    assert log_path.read_text() == "about to hang\n"


# -- the fork server ------------------------------------------------------------------------------


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def test_workers_are_forked_and_a_user_module_named_worker_stays_theirs(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    (tmp_path / "worker.py").write_text("def handle(event, context):\n    return {'mine': event}\n")
    fx = await make_executor()
    server = fx.fork_server_pid
    assert server is not None and {parent_of(pid) for pid in fx.worker_pids} == {server}
    handle = FunctionCall(
        attempt_id="r-1/w#1", handler="worker:handle", base_dir=str(tmp_path), event=7,
        run_id="r-1", step="probe", attempt=1,
    )  # fmt: skip
    out = await fx.execute(handle)
    assert out.ok and out.output == {"mine": 7}


async def test_a_killed_fork_server_takes_its_workers_and_the_pool_carries_on(
    make_executor: MakeExecutor,
) -> None:
    fx = await make_executor(workers=2)
    server = fx.fork_server_pid
    assert server is not None
    before = set(fx.worker_pids)
    busy = asyncio.create_task(fx.execute(call("sleep", 30)))
    await wait_until(lambda: fx.stats["calls"] == 1)
    os.kill(server, signal.SIGKILL)
    out = await asyncio.wait_for(busy, 10)
    assert out.error_type == WORKER_CRASHED  # its worker died with the server (PR_SET_PDEATHSIG)
    await wait_until(lambda: all(gone(pid) for pid in before))
    await wait_until(lambda: len(fx.worker_pids) == 2 and not set(fx.worker_pids) & before)
    assert fx.fork_server_pid is None
    assert {parent_of(pid) for pid in fx.worker_pids} == {os.getpid()}  # fresh interpreters now
    assert (await fx.execute(call("double", 21))).output == 42


async def test_a_spawn_that_timed_out_leaves_neither_a_process_nor_a_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker whose start took too long is given up: it must exit and be forgotten, not leak."""
    from engine.executors import forked

    server = forked.ForkServer(sys.executable)
    await server.start()
    try:
        monkeypatch.setattr(forked, "_START_TIMEOUT_S", 0)
        with pytest.raises(TimeoutError):
            await server.spawn()
        monkeypatch.undo()
        await wait_until(lambda: not server._abandoned and not server._early_exits and not server._waiting)
        assert server.proc is not None and descendants(server.proc.pid) == set()
        child = await server.spawn()  # the server still serves
        assert child.returncode is None
        child.kill()
        assert await asyncio.wait_for(child.wait(), 10) == -signal.SIGKILL
    finally:
        await server.aclose()


def test_the_fork_server_leaves_when_the_engine_is_gone(tmp_path: Path) -> None:
    """The engine killed (-9): workers see EOF and exit, then the fork server exits; nothing stays."""
    script = tmp_path / "engine.py"
    script.write_text(
        "import asyncio, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from engine.executors.function import FunctionExecutor\n"
        "async def main():\n"
        "    fx = FunctionExecutor(workers=2)\n"
        "    await fx.start()\n"
        "    print(fx.fork_server_pid, *fx.worker_pids, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 3
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    deadline = time.monotonic() + 10
    while not all(gone(pid) or zombie(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if not gone(p)]}"
        time.sleep(0.02)


def zombie(pid: int) -> bool:
    """Exited but not reaped (by init, after its parent died)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def warm(fx: FunctionExecutor, workers: int) -> None:
    """One call in each idle worker, side by side: each imports the handler's module (a cold start)."""
    outs = await asyncio.gather(*(fx.execute(call("sleep", 0.01)) for _ in range(workers)))
    assert len({o.output["pid"] for o in outs}) == workers


@pytest.fixture
def cpu_hogs() -> Any:
    """Three busy loops on this 2-core machine: every process now waits for a CPU at times."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    yield hogs
    for hog in hogs:
        hog.kill()
        hog.wait()


async def test_a_burst_on_a_loaded_machine_does_not_grow_the_pool(
    make_executor: MakeExecutor, cpu_hogs: Any
) -> None:
    """Workers that wait for a CPU are not stuck: more interpreters would only lengthen the queue."""
    fx = await make_executor(workers=2, max_workers=16)
    await warm(fx, 2)
    for _ in range(5):
        outs = await asyncio.gather(*(fx.execute(call("echo", i)) for i in range(600)))
        assert [o.output["event"] for o in outs] == list(range(600))
    assert len(fx.worker_pids) == 2, "the pool grew for calls that only waited for a CPU"


async def test_calls_that_compute_long_still_get_more_workers(make_executor: MakeExecutor) -> None:
    fx = await make_executor(workers=1, max_workers=4, scale_after_s=0.05)
    outs = await asyncio.gather(*(fx.execute(call("busy", 0.6)) for _ in range(3)))
    assert all(o.ok for o in outs)
    pids = {o.output["pid"] for o in outs}
    assert len(pids) == 3, "a computing call past scale_after_s lets the waiting calls start"


async def test_waiting_runs_take_turns_for_a_worker(make_executor: MakeExecutor) -> None:
    """One worker: run A queues five calls, then run B one; B's goes second, not sixth."""
    fx = await make_executor(workers=1, max_workers=1)
    blocker = asyncio.ensure_future(fx.execute(call("sleep", 0.2, run_id="r-a")))
    await wait_until(lambda: fx.pool()["busy"] == 1, timeout_s=5)
    a_calls = [asyncio.ensure_future(fx.execute(call("sleep", 0.01, run_id="r-a"))) for _ in range(5)]
    await wait_until(lambda: fx.pool()["waiting"] == 5, timeout_s=5)
    b_call = asyncio.ensure_future(fx.execute(call("sleep", 0.01, run_id="r-b")))
    outs = await asyncio.gather(blocker, *a_calls, b_call)
    order = sorted(range(1, 7), key=lambda i: outs[i].output["start"])
    assert order.index(6) <= 1, f"run B's call ran {order.index(6) + 1}th of 6 waiting calls"
    starts_a = [outs[i].output["start"] for i in range(1, 6)]
    assert starts_a == sorted(starts_a), "a run's own calls keep their order"


async def test_one_run_does_not_grow_the_pool_into_the_reserve(make_executor: MakeExecutor) -> None:
    fx = await make_executor(workers=1, max_workers=4)
    outs = await asyncio.gather(*(fx.execute(call("sleep", 0.4)) for _ in range(4)))
    assert len({o.output["pid"] for o in outs}) == 3, "one run held more than max_workers less a quarter"
