"""A workflow without ``params`` takes any JSON object, as a Step Functions execution's input is free-form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.engines import write_flow
from tests.support.paths import ROOT

FREE = """
name: echo
steps:
  say:
    function: handlers:say
    input: {msg: "{{ params.msg }}", all: "{{ params }}"}
"""

HANDLERS = """
def say(event, context):
    return event
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("SLUICE_DATA_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", *args, "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_a_workflow_without_params_takes_any_json_object(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flows", FREE, HANDLERS)
    result = _run(tmp_path, str(flow), "--input", '{"msg": "m", "n": 2}')
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "SUCCEEDED"
    assert summary["outputs"] == {"msg": "m", "all": {"msg": "m", "n": 2}}


def test_declared_params_stay_strict(tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path / "flows",
        FREE.replace("steps:", "params: {msg: {type: string}}\nsteps:").replace(', all: "{{ params }}"', ""),
        HANDLERS,
    )
    result = _run(tmp_path, str(flow), "--input", '{"msg": "m", "n": 2}')
    assert result.returncode == 2
    assert "unknown param 'n'" in result.stderr
    assert not (tmp_path / ".sluice").exists()
