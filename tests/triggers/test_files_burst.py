"""A burst of dropped files through ``sluice serve``: exactly one run per file, across kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.engines import write_flow
from tests.support.paths import ROOT

FLOW = """
name: burst
triggers:
  - files: {path: drop, suffix: .dat}
steps:
  size: {function: handlers:size, input: "{{ event.detail.Records[0].s3.object }}"}
outputs: {size: "{{ steps.size.output }}"}
"""

HANDLERS = """
def size(event, context):
    return event["size"]
"""

FILES, WRITERS = 2000, 4


def _serve(tmp_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "serve", "flows", "--port", "0"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def _writer(folder: Path, start: int, stop: int, slow: bool, progress: list[int]) -> None:
    for i in range(start, stop):
        path = folder / f"file-{i:05d}.dat"
        with path.open("wb") as f:
            if slow and i % 50 == 0:  # a slow writer: the event must wait for the close
                for _ in range(3):
                    f.write(b"x" * 1000)
                    f.flush()
                    time.sleep(0.01)
            else:
                f.write(b"y" * (100 + i % 7))
        progress.append(i)


def test_two_thousand_files_exactly_one_run_each_across_kill_9(tmp_path: Path) -> None:
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    drop = tmp_path / "flows" / "drop"
    drop.mkdir()
    db = tmp_path / ".sluice" / "sluice.db"
    server = _serve(tmp_path)
    progress: list[int] = []
    per = FILES // WRITERS
    writers = [
        threading.Thread(target=_writer, args=(drop, w * per, (w + 1) * per, w == 0, progress))
        for w in range(WRITERS)
    ]
    try:
        # files dropped before the watch is armed are found by the start-up scan, so the schema is enough
        _wait(lambda: _count(db, "SELECT count(*) FROM sqlite_master WHERE name='runs'") > 0, 30, "serve")
        for thread in writers:
            thread.start()
        _wait(lambda: _count(db, "SELECT count(*) FROM runs") >= 300, 60, "a few hundred runs")
        server.kill()  # SIGKILL mid-burst: no cleanup at all
        server.wait(timeout=10)
        for thread in writers:  # the rest lands while the engine is down
            thread.join(timeout=60)
        assert len(progress) == FILES
        server = _serve(tmp_path)
        _wait(
            lambda: _count(db, "SELECT count(*) FROM runs WHERE status='SUCCEEDED'") >= FILES,
            120,
            f"{FILES} succeeded runs",
        )
        time.sleep(0.5)  # anything that would fire twice has had its chance
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    finally:
        server.kill()
        for thread in writers:
            if thread.is_alive():
                thread.join(timeout=60)
    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM runs").fetchone()
        keys = conn.execute(
            "SELECT count(DISTINCT json_extract(e.body, '$.detail.Records[0].s3.object.key')) "
            "FROM runs r JOIN events e ON e.id = r.event_id"
        ).fetchone()[0]
        statuses = dict(conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
    assert runs == (FILES, FILES), "exactly one run per file, no duplicates after the crash"
    assert keys == FILES
    assert statuses == {"SUCCEEDED": FILES}
