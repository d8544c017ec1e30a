"""Slow writers through a real ``sluice serve``: one run per finished file, none on a partial one."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.engines import write_flow
from tests.support.files import md5
from tests.support.paths import ROOT

pytestmark = pytest.mark.timeout(90)

FLOW = """
name: slow
triggers:
  - files: {path: drop}
steps:
  seen: {function: handlers:seen, input: "{{ event.detail.Records[0].s3.object }}"}
"""

HANDLERS = """
def seen(event, context):
    return {"key": event["key"], "size": event["size"], "eTag": event["eTag"]}
"""


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return list(conn.execute(sql).fetchall())
    except sqlite3.OperationalError:  # the schema is not there yet
        return []


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.05)


def test_slow_python_and_shell_writers_start_one_run_each(tmp_path: Path) -> None:
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    drop = tmp_path / "flows" / "drop"
    drop.mkdir()
    (drop / "link.csv").symlink_to("/etc/hostname")  # refused: a log line and an audit row
    db = tmp_path / ".sluice" / "sluice.db"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "serve", "flows", "--port", "0"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    bursts = [os.urandom(10_000) for _ in range(3)]

    def python_writer() -> None:  # holds the file open 5 s, pausing longer than `stable` (2 s)
        with open(drop / "upload.bin", "wb") as f:
            for i, burst in enumerate(bursts):
                f.write(burst)
                f.flush()
                if i < 2:
                    time.sleep(2.5)

    try:
        # a file already open when the watch is armed is found by the start-up scan: same rule
        _wait(lambda: bool(_rows(db, "SELECT 1 FROM sqlite_master WHERE name='runs'")), 30, "serve")
        writer = threading.Thread(target=python_writer)
        writer.start()
        shell = subprocess.Popen(["sh", "-c", "(echo a; sleep 2; echo b; sleep 2; echo c) > f.txt"], cwd=drop)
        assert shell.wait(timeout=20) == 0
        writer.join(timeout=20)
        done = "SELECT count(*) FROM runs WHERE status IN ('SUCCEEDED', 'FAILED')"
        _wait(lambda: _rows(db, done)[0][0] >= 2, 30, "two runs")
        time.sleep(2.5)  # a wrong quiet-period timer (2 s) would have started a third by now
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    finally:
        server.kill()
        server.wait()
    runs = _rows(
        db,
        "SELECT r.status, json_extract(e.body, '$.detail.Records[0].s3.object') "
        "FROM runs r JOIN events e ON e.id = r.event_id ORDER BY r.created_at",
    )
    got = sorted((o["key"], o["size"], o["eTag"], s) for s, o in ((s, json.loads(str(o))) for s, o in runs))
    assert got == [
        ("f.txt", 6, md5(b"a\nb\nc\n"), "SUCCEEDED"),
        ("upload.bin", 30_000, md5(b"".join(bursts)), "SUCCEEDED"),
    ]
    (audit,) = _rows(db, "SELECT subject, detail FROM audit WHERE kind='file-refused'")
    assert str(audit[0]).startswith("slow/")
    assert json.loads(str(audit[1]))["key"] == "link.csv"
