"""The file trigger's "files seen" index: one KV row per file, so a flush writes only what changed
(issue 19: re-encoding the whole index on every flush was half the loop's work in a flood), and an
index stored in the first format (one value holding every file) is read and rewritten as rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.files import MakeFileTrigger, md5
from tests.support.triggers import MemoryKV
from tests.support.waiting import wait_until as until

pytestmark = pytest.mark.timeout(60)

STATE, SEEN = "files:wf:drop:state", "files:wf:drop:seen:"


async def test_a_flush_writes_only_the_entries_that_changed(
    make_file_trigger: MakeFileTrigger, tmp_path: Path
) -> None:
    inbox, kv = tmp_path / "inbox", MemoryKV()
    running = await make_file_trigger(kv=kv, events=("created", "removed"))
    for i in range(20):
        (inbox / f"f{i:02}.csv").write_bytes(b"%d" % i)
    await running.emit.wait_for(20)
    await until(lambda: all(f"{SEEN}f{i:02}.csv" in kv.data for i in range(20)))
    kv.written.clear()
    (inbox / "f03.csv").unlink()
    (inbox / "new.csv").write_bytes(b"n")
    await running.emit.wait_for(22)
    await until(lambda: SEEN + "new.csv" in kv.data and SEEN + "f03.csv" not in kv.data)
    assert set(kv.written) <= {STATE, SEEN + "new.csv", SEEN + "f03.csv"}
    assert json.loads(kv.data[SEEN + "new.csv"])[0] == 1
    assert "files" not in json.loads(kv.data[STATE])


async def test_an_index_in_the_first_format_is_read_and_rewritten_as_rows(
    make_file_trigger: MakeFileTrigger, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "old.csv").write_bytes(b"1")
    mtime_ns = os.stat(inbox / "old.csv").st_mtime_ns
    kv = MemoryKV()
    await kv.set(STATE, {"v": 1, "sequencer": 5, "files": {"old.csv": [1, mtime_ns, md5(b"1")]}})
    running = await make_file_trigger(kv=kv)
    assert await running.barrier(inbox) == []  # old.csv is known: not emitted again
    await until(lambda: SEEN + "old.csv" in kv.data and "files" not in json.loads(kv.data[STATE]))
    assert json.loads(kv.data[SEEN + "old.csv"]) == [1, mtime_ns, md5(b"1")]
    assert json.loads(kv.data[STATE])["sequencer"] > 5
