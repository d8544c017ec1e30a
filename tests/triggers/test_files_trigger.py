"""The file trigger against real folders and real inotify; only the bus is a recording fake."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import unquote_plus

import pytest

from tests.support.files import MakeFileTrigger, keys, md5
from tests.support.triggers import MemoryKV, RecordingEmit
from tests.support.waiting import wait_until
from triggers.files import FileTriggerRunner
from triggers.s3 import decode_key, encode_key

pytestmark = pytest.mark.timeout(60)

Make = MakeFileTrigger


@pytest.fixture
def make(make_file_trigger: Make) -> Make:
    return make_file_trigger


async def test_one_file_one_event_with_s3_fields(make: Make, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    running = await make()
    data = b"a,b\n1,2\n"
    closed_at = time.monotonic()
    (inbox / "red flower ü.csv").write_bytes(data)
    closed_at = time.monotonic()
    (got,) = await running.emit.wait_for(1)
    latency_ms = (got.at - closed_at) * 1000
    print(f"close -> emit latency: {latency_ms:.1f} ms")

    event = got.event
    assert event["source"] == "sluice.files"
    assert event["detail-type"] == "Object Created"
    assert event["account"] == event["region"] == "local"
    assert event["resources"] == [str(inbox)]
    record = event["detail"]["Records"][0]
    assert record["eventVersion"] == "2.1"
    assert record["eventSource"] == "sluice:files"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["eventTime"].endswith("Z") and record["eventTime"] == event["time"]
    assert record["s3"]["bucket"]["name"] == "inbox"
    obj = record["s3"]["object"]
    assert obj["key"] == "red+flower+%C3%BC.csv"
    assert unquote_plus(obj["key"]) == "red flower ü.csv"  # what an S3 Lambda handler does
    assert obj["size"] == len(data)
    assert obj["eTag"] == md5(data)
    int(obj["sequencer"], 16)
    flat = event["detail"]["object"]
    assert event["detail"]["bucket"] == {"name": "inbox"}
    assert flat == {"key": obj["key"], "size": len(data), "etag": md5(data), "sequencer": obj["sequencer"]}
    st = os.stat(inbox / "red flower ü.csv")
    assert got.dedupe_key == f"files:wf:drop:{obj['key']}:{len(data)}:{st.st_mtime_ns}:{md5(data)}"
    assert got.workflow == "wf"

    assert keys(await running.barrier(inbox)) == [obj["key"]]
    assert running.emit.calls == 2


async def test_slow_writer_fires_once_after_close_with_full_size(make: Make, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    running = await make()
    chunks = [os.urandom(64 * 1024) for _ in range(4)]
    emitted_while_open: list[int] = []

    def write() -> None:
        with open(inbox / "big.bin", "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                f.flush()
                time.sleep(0.1)  # a slow producer (in its own thread), 400 ms in all
                emitted_while_open.append(len(running.emit.events))

    await asyncio.to_thread(write)
    (got,) = await running.emit.wait_for(1)
    assert emitted_while_open == [0, 0, 0, 0]
    assert got.event["detail"]["object"]["size"] == 4 * 64 * 1024
    assert got.event["detail"]["object"]["etag"] == md5(b"".join(chunks))
    assert keys(await running.barrier(inbox)) == ["big.bin"]


async def test_quiet_period_mode_waits_for_a_slow_writer(make: Make, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    running = await make(close_write=False, stable_s=0.4)

    def write() -> None:
        with open(inbox / "slow.bin", "wb") as f:
            for _ in range(4):
                f.write(b"x" * 1000)
                f.flush()
                time.sleep(0.1)

    await asyncio.to_thread(write)
    (got,) = await running.emit.wait_for(1)
    assert got.event["detail"]["object"]["size"] == 4000
    assert keys(await running.barrier(inbox)) == ["slow.bin"]


async def test_atomic_rename_fires_once_for_the_final_name(make: Make, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    running = await make()
    (inbox / "x.tmp").write_bytes(b"payload")
    os.rename(inbox / "x.tmp", inbox / "x.csv")
    (got,) = await running.emit.wait_for(1)
    assert got.event["detail"]["object"]["key"] == "x.csv"
    assert got.event["detail"]["object"]["etag"] == md5(b"payload")
    assert keys(await running.barrier(inbox)) == ["x.csv"]


async def test_file_moved_in_from_outside_fires(make: Make, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    running = await make()
    (tmp_path / "elsewhere.csv").write_bytes(b"moved")
    os.rename(tmp_path / "elsewhere.csv", inbox / "moved.csv")
    (got,) = await running.emit.wait_for(1)
    assert got.event["detail"]["object"]["key"] == "moved.csv"


async def test_prefix_suffix_and_glob_filters(make: Make, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    for sub in ("in", "out", "in/deep"):
        (inbox / sub).mkdir(parents=True)
    running = await make(recursive=True, prefix="in/", suffix=".csv", glob="*/a*")
    for rel in ("in/a1.csv", "in/a2.txt", "out/a3.csv", "in/b4.csv", "in/deep/a5.csv", "a6.csv"):
        (inbox / rel).write_bytes(rel.encode())
    await wait_until(lambda: len(running.emit.events) >= 2)
    assert sorted(keys(await running.barrier(inbox, "in/a-barrier.csv"))) == ["in/a1.csv", "in/deep/a5.csv"]


async def test_after_move_only_after_emit_returned_and_target_never_fires(make: Make, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    emit = RecordingEmit(delay_s=0.5)
    seen_at_call: list[bool] = []
    emit.on_call = lambda event: seen_at_call.append(
        (inbox / decode_key(event["detail"]["object"]["key"])).exists()
    )
    running = await make(emit=emit, recursive=True, after="move:done")
    (inbox / "a.csv").write_bytes(b"A")
    await wait_until(lambda: emit.in_flight == 1)
    assert (inbox / "a.csv").exists()  # the slow emit has not returned: nothing acknowledged yet
    await emit.wait_for(1)
    await wait_until(lambda: (inbox / "done" / "a.csv").exists())
    assert not (inbox / "a.csv").exists()
    assert seen_at_call == [True]
    # a second a.csv does not overwrite the first in done/
    (inbox / "a.csv").write_bytes(b"A2")
    await emit.wait_for(2)
    await wait_until(lambda: len(list((inbox / "done").iterdir())) == 2)
    assert keys(await running.barrier(inbox)) == ["a.csv", "a.csv"]
    assert emit.calls == 3  # nothing fired for the files arriving in done/


async def test_after_delete_only_after_emit_returned(make: Make, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    emit = RecordingEmit(delay_s=0.5)
    await make(emit=emit, after="delete")
    (inbox / "d.csv").write_bytes(b"D")
    await wait_until(lambda: emit.in_flight == 1)
    assert (inbox / "d.csv").exists()
    await emit.wait_for(1)
    await wait_until(lambda: not (inbox / "d.csv").exists())


async def test_failed_emit_acknowledges_nothing(
    make: Make, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="triggers.files")
    inbox = tmp_path / "inbox"
    emit = RecordingEmit(fail=True)
    await make(emit=emit, after="delete")
    (inbox / "f.csv").write_bytes(b"F")
    await wait_until(lambda: "failed on 'f.csv'; retrying in 5s" in caplog.text)
    assert (inbox / "f.csv").exists()


async def test_restart_reconciles_without_firing_twice(make: Make, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    kv = MemoryKV()
    first = await make(kv=kv, events=("created", "removed"))
    (inbox / "seen.csv").write_bytes(b"1")
    (inbox / "gone.csv").write_bytes(b"2")
    await first.emit.wait_for(2)
    await first.stop()

    (inbox / "new while down.csv").write_bytes(b"3")
    (inbox / "gone.csv").unlink()
    emit = RecordingEmit()  # a fresh bus: only the trigger's own index can prevent a second fire
    second = await make(emit=emit, kv=kv, events=("created", "removed"))
    events = await emit.wait_for(2)
    by_type = {e.event["detail-type"]: e.event["detail"]["object"]["key"] for e in events}
    assert by_type == {"Object Created": "new+while+down.csv", "Object Deleted": "gone.csv"}
    await second.barrier(inbox)
    assert emit.calls == 3  # seen.csv was neither re-hashed nor re-emitted
    seqs = [int(e.event["detail"]["object"]["sequencer"], 16) for e in [*first.emit.events, *emit.events]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_restart_after_crash_between_emit_and_move_acknowledges_once(
    make: Make, tmp_path: Path
) -> None:
    """The bus has the event but the file was never moved: the re-emit is a duplicate; then it moves."""
    inbox = tmp_path / "inbox"
    emit = RecordingEmit()
    inbox.mkdir()
    (inbox / "c.csv").write_bytes(b"C")
    st = os.stat(inbox / "c.csv")
    dedupe = f"files:wf:drop:c.csv:1:{st.st_mtime_ns}:{md5(b'C')}"
    await emit({"detail": {}}, dedupe_key=dedupe)  # committed before the "crash"
    await make(emit=emit, after="move:../done", stable_s=0.0)
    await wait_until(lambda: (tmp_path / "done" / "c.csv").exists())
    assert emit.duplicates == [dedupe]
    assert len(emit.events) == 1


async def test_hostile_names(make: Make, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    running = await make()
    names = [
        "with space.csv",
        "ünï 文字.csv",
        "new\nline.csv",
        "-rf --all.csv",
        "L" * 250 + ".csv",
        "a+b%c:d.csv",
    ]
    for name in names:
        (inbox / name).write_bytes(name.encode())
    os.close(os.open(os.fsencode(inbox) + b"/bad-\xff.csv", os.O_CREAT | os.O_WRONLY, 0o644))
    events = await running.barrier(inbox)
    got = {unquote_plus(k) for k in keys(events) if not k.startswith("bad-")}
    assert got == set(names)
    assert "bad-%FF.csv" in keys(events)
    for e in events:
        assert e.event["detail"]["object"]["key"] == encode_key(
            decode_key(e.event["detail"]["object"]["key"])
        )
    assert running.emit.calls == len(names) + 2


async def test_symlink_out_of_folder_is_refused(
    make: Make, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="triggers.files")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (tmp_path / "secret.txt").write_bytes(b"outside")
    (inbox / "link-at-start.csv").symlink_to(tmp_path / "secret.txt")
    running = await make()
    (inbox / "link-while-running.csv").symlink_to(tmp_path / "secret.txt")
    assert keys(await running.barrier(inbox)) == []
    assert "refused 'link-at-start.csv': symlink (not followed)" in caplog.text
    await running.stop()
    assert running.emit.calls == 1


async def test_file_deleted_before_read_is_skipped_with_a_log_line(
    make: Make, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="triggers.files")
    inbox = tmp_path / "inbox"
    running = await make(close_write=False, stable_s=0.3)
    (inbox / "fleeting.csv").write_bytes(b"x")
    (inbox / "fleeting.csv").unlink()
    await wait_until(lambda: "skipped 'fleeting.csv': deleted before it was read" in caplog.text)
    assert keys(await running.barrier(inbox)) == []


async def test_removed_events(make: Make, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    running = await make(events=("created", "removed"))
    (inbox / "r.csv").write_bytes(b"R")
    await running.emit.wait_for(1)
    (inbox / "r.csv").unlink()
    events = await running.emit.wait_for(2)
    removed = events[1].event
    assert removed["detail-type"] == "Object Deleted"
    record = removed["detail"]["Records"][0]
    assert record["eventName"] == "ObjectRemoved:Delete"
    assert record["s3"]["object"]["key"] == "r.csv"
    assert int(record["s3"]["object"]["sequencer"], 16) > int(
        events[0].event["detail"]["object"]["sequencer"], 16
    )
    assert events[1].dedupe_key is not None and events[1].dedupe_key.endswith(":removed")


async def test_overflow_triggers_a_reconcile_scan(make: Make, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="triggers.files")
    await make()
    logging.getLogger("watchdog.observers.inotify_c").warning(
        "Inotify queue overflowed; filesystem events were lost"
    )
    await wait_until(lambda: "scan (inotify overflow)" in caplog.text)


async def test_burst_of_2000_files_from_4_writers(make: Make, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    running = await make()

    def writer(n: int) -> None:
        for i in range(500):
            (inbox / f"w{n}-{i:04d}.dat").write_bytes(f"{n}:{i}".encode() * 10)

    started = time.monotonic()
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    await asyncio.to_thread(lambda: [t.join() for t in threads])
    await running.emit.wait_for(2000, timeout_s=40)
    print(f"2000 files -> 2000 events in {time.monotonic() - started:.2f}s")
    events = await running.barrier(inbox)
    assert len(events) == 2000
    assert len(set(keys(events))) == 2000
    assert running.emit.calls == 2001


def test_from_spec_reads_the_spec_fields(tmp_path: Path) -> None:
    from workflows.spec import FileTrigger

    spec = FileTrigger(
        name="drop",
        path=tmp_path / "in",
        recursive=True,
        suffix=".jpg",
        events=("created", "removed"),
        after="move:done",
    )
    r = FileTriggerRunner.from_spec("thumbs", spec, kv=MemoryKV(), concurrency=4)
    assert (r.name, r.workflow, r.root, r.recursive, r.suffix, r.prefix) == (
        "drop",
        "thumbs",
        tmp_path / "in",
        True,
        ".jpg",
        "",
    )
    assert r.events == {"created", "removed"} and r.after == "move" and r.move_dir == tmp_path / "in" / "done"
    assert r.stable_s == 2.0 and r.concurrency == 4 and r.state_key == "files:thumbs:drop:state"


async def test_new_and_moved_in_subfolders_fire_every_file(make: Make, tmp_path: Path) -> None:
    """Files written into a brand-new sub-folder before its watch exists, and a whole folder moved in."""
    inbox = tmp_path / "inbox"
    running = await make(recursive=True)
    (inbox / "fresh").mkdir()
    for i in range(20):
        (inbox / "fresh" / f"{i}.csv").write_bytes(b"x")
    staged = tmp_path / "staged"
    staged.mkdir()
    for i in range(5):
        (staged / f"{i}.csv").write_bytes(b"y")
    os.rename(staged, inbox / "moved")
    await running.emit.wait_for(25)
    events = await running.barrier(inbox)
    assert sorted(keys(events)) == sorted(
        [f"fresh/{i}.csv" for i in range(20)] + [f"moved/{i}.csv" for i in range(5)]
    )


def folder_elsewhere(tmp_path: Path) -> Path:
    """A fresh folder on another file system than ``tmp_path`` (``/dev/shm``), or skip."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the test's folder")
    return Path(tempfile.mkdtemp(dir=shm, prefix="sluice-test-"))


async def test_after_move_to_another_file_system_copies_then_removes(make: Make, tmp_path: Path) -> None:
    target = folder_elsewhere(tmp_path)
    try:
        inbox = tmp_path / "inbox"
        await make(after=f"move:{target}")
        (inbox / "x.csv").write_bytes(b"across")
        mtime_ns = os.stat(inbox / "x.csv").st_mtime_ns
        await wait_until(lambda: (target / "x.csv").exists() and not (inbox / "x.csv").exists())
        assert (target / "x.csv").read_bytes() == b"across"
        assert os.stat(target / "x.csv").st_mtime_ns == mtime_ns
    finally:
        shutil.rmtree(target)
