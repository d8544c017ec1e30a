"""``sluice run --api``: a one-shot run whose function uses ``context.sluice`` (a private API on
loopback); without ``--api`` the handler is told what to do instead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli import sluice
from tests.support.engines import write_flow
from tests.support.paths import ROOT

SELF = """
name: self
steps:
  me: {function: handlers:me}
"""

HANDLERS = """
def me(event, context):
    return context.sluice.describe_run(context.run_id)["status"]
"""


def test_without_api_the_handler_is_told_to_use_serve_or_api(tmp_path: Path) -> None:
    write_flow(tmp_path / "flows", SELF, HANDLERS)
    result = sluice("run", "flows/flow.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "context.sluice needs the engine's HTTP API" in result.stderr
    assert "sluice run --api" in result.stderr
    result = sluice("run", "flows/flow.yaml", "--api", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["steps"]["me"]["output"] == "RUNNING"


@pytest.mark.docker
def test_the_example_submits_an_array_job_and_waits_for_it(tmp_path: Path, docker_ready: None) -> None:
    example = ROOT / "examples/lambda-batch/render.yaml"
    result = sluice(
        "run", str(example), "--api", "--json", "--input", '{"frames": 2}', cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)["outputs"]["render"]
    assert out["status"] == "SUCCEEDED" and out["frames"]["SUCCEEDED"] == 2
