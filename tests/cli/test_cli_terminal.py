"""On a terminal (a real pty) the CLI is rich's: coloured glyphs, a footer naming the running
steps with their fan-out counts, tables with states in colour; user text is never markup."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.support.engines import write_flow
from tests.support.paths import ROOT

FLOW = """
name: wide
steps:
  hello: {function: "handlers:hello"}
  each:
    needs: [hello]
    for_each: "{{ [1, 2, 3, 4, 5, 6] }}"
    function: "handlers:slow"
    input: {n: "{{ item }}"}
"""
HANDLERS = """
import time

def hello(event, context):
    print("[bold]not markup[/bold]")
    return 1

def slow(event, context):
    time.sleep(0.3 * event["n"])  # the items end one by one
    return event["n"]
"""


def on_a_terminal(argv: list[str], cwd: Path, timeout_s: float = 60) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on a pty; everything it wrote, and its exit code."""
    leader, follower = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TERM="xterm-256color", COLUMNS="120")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the child closed its end
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        return proc.wait(10), b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_sluice_run_on_a_terminal_shows_the_running_steps_and_colours(tmp_path: Path) -> None:
    write_flow(tmp_path / "flows", FLOW, HANDLERS, name="wide.yaml")
    code, out = on_a_terminal([sys.executable, "-m", "engine.cli", "run", "flows/wide.yaml"], tmp_path)
    assert code == 0, out
    assert "running: each 0/6" in out  # the footer names the running step
    assert any(f"running: each {n}/6" in out for n in range(1, 6))  # and counts its items
    assert "\x1b[32m✓" in out  # a green tick
    assert "[bold]not markup[/bold]" in out  # the handler's text as it printed it
    assert out.count("each         6/6") == 1  # the count line only at the end, on a terminal


def test_tables_are_plain_when_piped_and_rich_on_a_terminal(tmp_path: Path) -> None:
    program = (
        "from engine.cli.common import table; "
        "print(table([('r-1', 'SUCCEEDED', None)], ('run', 'status', 'reason')))"
    )
    piped = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=30)  # fmt: skip
    assert piped.stdout == "RUN  STATUS     REASON\nr-1  SUCCEEDED  -\n"
    code, out = on_a_terminal([sys.executable, "-c", program], tmp_path)
    assert code == 0
    assert "\x1b[32mSUCCEEDED" in out and "RUN" in out and "\x1b[1m" in out  # green state, bold header
