"""When a dropped file is complete: one run per finished file, never one on a file still open.

Real folders, real inotify, real writer processes (Python threads and ``sh``); the kernel's
lease machinery is what tells a file still open for writing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from tests.support.files import MakeFileTrigger, Running, keys, md5
from tests.support.paths import ROOT
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


async def settled(running: Running, inbox: Path, quiet_s: float) -> list[dict[str, Any]]:
    """Every event of the test, once a wrong quiet-period timer would have fired too."""
    await asyncio.sleep(quiet_s)
    return [e.event for e in await running.barrier(inbox)]


def hold(path: Path, mode: str = "wb") -> BinaryIO:
    """A writer's descriptor the test keeps open across awaits (opened outside the loop's view)."""
    return open(path, mode)


def only(events: list[dict[str, Any]], key: str) -> dict[str, Any]:
    mine = [e["detail"]["object"] for e in events if e["detail"]["object"]["key"] == key]
    assert len(mine) == 1, f"expected exactly one event for {key!r}, got {mine}"
    return mine[0]


async def test_python_writer_holding_the_file_5s_in_bursts_gives_one_run(
    make_file_trigger: MakeFileTrigger, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    running = await make_file_trigger(stable_s=2.0)  # the default: pauses of 2.5 s outlast it
    bursts = [os.urandom(20_000) for _ in range(3)]

    def write() -> None:
        with hold(inbox / "upload.bin", "wb") as f:
            for i, burst in enumerate(bursts):
                f.write(burst)
                f.flush()
                if i < len(bursts) - 1:
                    time.sleep(2.5)

    await asyncio.to_thread(write)
    obj = only(await settled(running, inbox, 2.5), "upload.bin")
    assert obj["size"] == 60_000
    assert obj["etag"] == md5(b"".join(bursts))


async def test_shell_writer_with_sleeps_gives_one_run(
    make_file_trigger: MakeFileTrigger, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    running = await make_file_trigger(stable_s=0.5)
    # the subshell and its `sleep` children share the redirection: one close, at the very end
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", "(echo a; sleep 2; echo b; sleep 2; echo c) > f.txt", cwd=inbox
    )
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    obj = only(await settled(running, inbox, 1.0), "f.txt")
    assert (obj["size"], obj["etag"]) == (6, md5(b"a\nb\nc\n"))


async def test_two_writers_one_closes_early_one_run_when_the_last_closes(
    make_file_trigger: MakeFileTrigger, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    running = await make_file_trigger()
    path = inbox / "shared.log"

    def write() -> None:
        first = open(path, "ab")  # noqa: SIM115 - two descriptors on purpose
        second = open(path, "ab")  # noqa: SIM115
        first.write(b"header\n")
        first.close()  # IN_CLOSE_WRITE while `second` is still open for writing
        time.sleep(1.0)
        second.write(b"body\n")
        second.close()

    await asyncio.to_thread(write)
    obj = only(await settled(running, inbox, 0.6), "shared.log")
    assert (obj["size"], obj["etag"]) == (12, md5(b"header\nbody\n"))


async def test_file_open_for_writing_at_start_up_fires_after_its_close(
    make_file_trigger: MakeFileTrigger, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    f = hold(inbox / "early.csv")  # held open across the runner's start
    try:
        f.write(b"1,2\n")
        f.flush()
        running = await make_file_trigger(stable_s=0.3)
        await asyncio.sleep(1.2)  # the start-up scan found it; its quiet period long passed
        assert running.emit.events == []
        f.write(b"3,4\n")
    finally:
        f.close()
    obj = only(await settled(running, inbox, 0.6), "early.csv")
    assert (obj["size"], obj["etag"]) == (8, md5(b"1,2\n3,4\n"))


async def test_renamed_in_while_still_open_fires_on_close(
    make_file_trigger: MakeFileTrigger, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    running = await make_file_trigger()
    (tmp_path / "staging").mkdir()
    with hold(tmp_path / "staging" / "r.csv", "wb") as f:
        f.write(b"part 1\n")
        f.flush()
        os.rename(tmp_path / "staging" / "r.csv", inbox / "r.csv")
        await asyncio.sleep(0.8)
        assert running.emit.events == []
        f.write(b"part 2\n")
    obj = only(await settled(running, inbox, 0.6), "r.csv")
    assert (obj["size"], obj["etag"]) == (14, md5(b"part 1\npart 2\n"))


async def test_renamed_in_complete_fires_at_once(make_file_trigger: MakeFileTrigger, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    running = await make_file_trigger(stable_s=8.0)  # a rename never waits for a quiet period
    (tmp_path / "done.csv").write_bytes(b"complete")
    os.rename(tmp_path / "done.csv", inbox / "done.csv")
    (got,) = await running.emit.wait_for(1, timeout_s=4.0)  # under stable_s: no timer did it
    assert got.event["detail"]["object"]["etag"] == md5(b"complete")


async def test_written_in_place_gives_one_run_per_close_never_mid_write(
    make_file_trigger: MakeFileTrigger, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    running = await make_file_trigger()
    (inbox / "table.csv").write_bytes(b"v1,v1\n")
    await running.emit.wait_for(1)
    with hold(inbox / "table.csv", "r+b") as f:  # rewritten in place, with a pause
        f.write(b"v2")
        f.flush()
        await asyncio.sleep(1.0)
        f.seek(0, os.SEEK_END)
        f.write(b"more\n")
    events = await settled(running, inbox, 0.6)
    objs = [e["detail"]["object"] for e in events]
    assert [(o["size"], o["etag"]) for o in objs] == [(6, md5(b"v1,v1\n")), (11, md5(b"v2,v1\nmore\n"))]


async def test_deleted_before_its_writer_closes_gives_no_run(
    make_file_trigger: MakeFileTrigger, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    running = await make_file_trigger()
    with hold(inbox / "abandoned.csv", "wb") as f:
        f.write(b"half")
        f.flush()
        await asyncio.sleep(1.0)
        os.unlink(inbox / "abandoned.csv")
    assert await settled(running, inbox, 0.6) == []


async def test_hard_links_fire_though_no_writer_closes_them(
    make_file_trigger: MakeFileTrigger, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    running = await make_file_trigger(stable_s=8.0)  # read on the create event, not after a timer
    (tmp_path / "outside.csv").write_bytes(b"linked")
    os.link(tmp_path / "outside.csv", inbox / "linked.csv")
    (got,) = await running.emit.wait_for(1, timeout_s=4.0)  # under stable_s: no timer did it
    assert got.event["detail"]["object"]["etag"] == md5(b"linked")
    # maildir style: link into place, then drop the staging name (one link left)
    (tmp_path / "staged.csv").write_bytes(b"staged")
    os.link(tmp_path / "staged.csv", inbox / "staged.csv")
    os.unlink(tmp_path / "staged.csv")
    await running.emit.wait_for(2, timeout_s=4.0)  # under stable_s: no timer did it
    assert sorted(keys(await running.barrier(inbox))) == ["linked.csv", "staged.csv"]


async def test_hard_link_to_a_file_still_written_elsewhere_waits_for_its_writer(
    make_file_trigger: MakeFileTrigger, tmp_path: Path
) -> None:
    """Its close is reported in the other folder only: it is looked at again until nobody writes it."""
    inbox = tmp_path / "inbox"
    running = await make_file_trigger(stable_s=0.3)
    with hold(tmp_path / "growing.csv", "wb") as f:
        f.write(b"a")
        f.flush()
        os.link(tmp_path / "growing.csv", inbox / "growing.csv")
        await asyncio.sleep(1.0)
        assert running.emit.events == []
        f.write(b"bc")
    await wait_until(lambda: len(running.emit.events) == 1, timeout_s=5)
    obj = only(await settled(running, inbox, 0.6), "growing.csv")
    assert (obj["size"], obj["etag"]) == (3, md5(b"abc"))


async def test_quiet_period_mode_also_waits_for_an_open_writer(
    make_file_trigger: MakeFileTrigger, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    running = await make_file_trigger(close_write=False, stable_s=0.3)
    with hold(inbox / "q.csv", "wb") as f:
        f.write(b"first")
        f.flush()
        await asyncio.sleep(1.2)  # four quiet periods with no change, but still open
        assert running.emit.events == []
        f.write(b" second")
    obj = only(await settled(running, inbox, 0.8), "q.csv")
    assert (obj["size"], obj["etag"]) == (12, md5(b"first second"))


def test_the_shell_writer_is_seen_open_by_the_lease_probe(tmp_path: Path) -> None:
    """The kernel's answer the rule relies on: open for writing while any process holds it."""
    from triggers.readiness import Writers, writers

    path = tmp_path / "w.txt"
    proc = subprocess.Popen(["sh", "-c", f"(echo a; sleep 1) > '{path}'"])
    try:
        wait_until_sync(lambda: path.exists() and path.stat().st_size == 2)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert writers(fd) is Writers.SOME
            proc.wait(timeout=10)
            assert writers(fd) is Writers.NONE
        finally:
            os.close(fd)
    finally:
        proc.kill()
        proc.wait()


def wait_until_sync(predicate: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


async def test_an_empty_file_fires_once_on_its_close(
    make_file_trigger: MakeFileTrigger, tmp_path: Path
) -> None:
    """A zero-byte object is an object (S3 notifies for it): ``touch`` creates and closes it."""
    inbox = tmp_path / "inbox"
    running = await make_file_trigger()
    (inbox / "empty.csv").touch()
    obj = only(await settled(running, inbox, 0.6), "empty.csv")
    assert (obj["size"], obj["etag"]) == (0, md5(b""))


PROBER = """
import os, sys, time
from triggers.readiness import writers
path, end, n = sys.argv[1], time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < end:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    writers(fd)
    os.close(fd)
    n += 1
print(n)
"""

WRITER = """
import os, sys, time
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND))
"""


def test_a_writer_opening_during_the_probe_never_kills_the_prober(tmp_path: Path) -> None:
    """A lease broken by an opening writer signals its holder: SIGIO by default, which kills it."""
    path = tmp_path / "contended.txt"
    path.write_bytes(b"")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "2.5"])
    try:
        prober = subprocess.run(
            [sys.executable, "-c", PROBER, str(path), "2.0"], env=env, capture_output=True, timeout=30
        )
    finally:
        writer.wait(timeout=30)
    assert prober.returncode == 0, f"the prober died: {prober.returncode} {prober.stderr[-400:]!r}"
    assert int(prober.stdout) > 1000
