"""``sluice run``'s output, line for line, against golden files (tests/cli/golden/).

Times, run ids and durations vary from run to run and are masked; everything else a user reads is
fixed: the glyphs, the order, what a handler printed under its step, a fan-out's count, where the
user's code failed and which log has the rest. ``SLUICE_GOLDEN=update`` rewrites the files.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.engines import write_flow
from tests.support.paths import ROOT

GOLDEN = Path(__file__).with_name("golden")

HANDLERS = """
import os

def fetch(event, context):
    print("fetched 3 rows")
    print("  (from the fixture)")
    return [1, 2, 3]

def flaky(event, context):
    marker = os.path.join(os.path.dirname(__file__), "tried")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionError("the service hung up")
    return "ok"

def square(event, context):
    return event["n"] * event["n"]

def parse(text):
    return int(text)

def broken(event, context):
    print("parsing", event["text"])
    return parse(event["text"])
"""

GOOD = """
name: good
steps:
  fetch: {function: "handlers:fetch"}
  flaky: {needs: [fetch], function: "handlers:flaky", retry: {attempts: 2, interval: 0.1s}}
  square:
    needs: [flaky]
    for_each: "{{ steps.fetch.output }}"
    function: "handlers:square"
    input: {n: "{{ item }}"}
"""

BAD = """
name: bad
steps:
  broken: {function: "handlers:broken", input: {text: "twelve"}}
"""


def masked(text: str) -> str:
    text = re.sub(r"^ *\d+\.\d\ds ", "", text, flags=re.M)  # the elapsed-time column
    text = re.sub(r"r-[0-9a-f]{22}", "r-RUN", text)
    text = re.sub(r"\d+\.\d\ds", "N.NNs", text)  # durations and delays
    return re.sub(r"line \d+", "line N", text)


def run(tmp_path: Path, workflow: str) -> tuple[int, str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("SLUICE_DATA_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", f"flows/{workflow}.yaml"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return proc.returncode, proc.stdout, masked(proc.stderr)


def check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("SLUICE_GOLDEN") == "update":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"differs from {path} (SLUICE_GOLDEN=update rewrites it)"


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    write_flow(tmp_path / "flows", GOOD, HANDLERS, name="good.yaml")
    write_flow(tmp_path / "flows", BAD, name="bad.yaml")
    return tmp_path


def test_a_run_that_retries_and_fans_out(flows: Path) -> None:
    code, out, err = run(flows, "good")
    assert code == 0, err
    assert out == "[\n  1,\n  4,\n  9\n]\n"
    items = [line for line in err.splitlines() if line.startswith("⋯ square")]
    assert items[-1].split() == ["⋯", "square", "3/3"]  # how many lines before it depends on timing
    check("run_good.txt", "\n".join(line for line in err.splitlines() if line not in items[:-1]) + "\n")


def test_a_failed_step_names_the_users_line_and_its_log(flows: Path) -> None:
    code, out, err = run(flows, "bad")
    assert code == 1 and out == ""
    check("run_bad.txt", err)
    log = flows / ".sluice" / "logs"
    assert [p.name for p in log.glob("*/broken.1.log")] == ["broken.1.log"]
