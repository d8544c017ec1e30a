"""Function workers start with a clean environment: what the step declares, and nothing of the engine's."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.executors.base import FunctionCall
from engine.executors.function import FunctionExecutor
from engine.states import Status
from tests.support.engines import MakeEngine, write_flow
from workflows.errors import SpecErrors
from workflows.loader import load_dir

HANDLERS = """
import os
import subprocess
import sys

def environ(event, context):
    child = subprocess.run([sys.executable, "-c", "import os, json; print(json.dumps(dict(os.environ)))"],
                           capture_output=True, text=True, check=True).stdout
    return {"env": dict(os.environ), "child": child}

def leak_env(event, context):
    names = sorted(os.environ)
    os.environ["LEAKED"] = "yes"
    os.environ.pop("PATH")
    return names

def env_names(event, context):
    return sorted(os.environ)
"""

FLOW = """
name: clean
steps:
  dump:
    function: handlers:environ
    memory: 128MiB
    env: {MODE: fast, RETRIES: 3, DEBUG: true, TOKEN: "${env:FP_T_TOKEN}"}
"""


async def test_a_handler_sees_its_declared_env_and_none_of_the_engines(
    make_engine: MakeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FP_T_CANARY", "engine-only-7c21")  # any engine variable, secret or not
    monkeypatch.setenv("HOOK_SECRET", "hook-secret-3e9a")
    monkeypatch.setenv("FP_T_TOKEN", "step-token-55b0")
    flows = tmp_path / "flows"
    write_flow(flows, FLOW, HANDLERS)
    engine = await make_engine(flows)
    run = await engine.run_to_end("clean", timeout_s=30)
    assert run["status"] == Status.SUCCEEDED, run
    # the stored output hides the secret's value (records.dumps): read it from the worker itself
    env = run["outputs"]["env"]
    assert "FP_T_CANARY" not in env and "HOOK_SECRET" not in env
    assert "engine-only-7c21" not in run["outputs"]["child"], "a handler's subprocess saw the engine's env"
    assert {env["MODE"], env["RETRIES"], env["DEBUG"]} == {"fast", "3", "true"}
    assert env["TOKEN"] == "${env:FP_T_TOKEN}"  # it reached the handler; hidden where it is stored
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "handlers:environ"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert env["_HANDLER"] == "handlers:environ" and env["LAMBDA_TASK_ROOT"] == str(flows)
    assert env["PATH"].endswith("/usr/local/bin:/usr/bin:/bin")
    assert Path(env["HOME"]).name == "home"
    assert Path(env["TMPDIR"]).name == "tmp"
    allowed = {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "HOME", "TMPDIR", "PWD"}
    allowed |= {"MODE", "RETRIES", "DEBUG", "TOKEN", "_HANDLER", "LAMBDA_TASK_ROOT"}
    assert {k for k in env if not k.startswith(("AWS_LAMBDA_", "SLUICE_"))} <= allowed


async def test_a_calls_env_and_a_handlers_changes_end_with_the_call(tmp_path: Path) -> None:
    """The pool is shared by every step: one worker, two steps, each sees only its own env."""
    flows = tmp_path / "flows"
    write_flow(flows, FLOW, HANDLERS)
    async with FunctionExecutor(workers=1, max_workers=1) as fx:

        def call(handler: str, env: dict[str, str], n: int) -> FunctionCall:
            return FunctionCall(f"r-1/s#{n}", handler, str(flows), None, "r-1", "s", n, env=env)

        first = await fx.execute(call("handlers:leak_env", {"A": "1"}, 1))
        second = await fx.execute(call("handlers:env_names", {"B": "2"}, 2))
    assert first.ok and second.ok, (first, second)
    assert "A" in first.output and "LEAKED" not in first.output
    assert "B" in second.output and "PATH" in second.output
    assert "A" not in second.output and "LEAKED" not in second.output


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ("{X: '{{ event.detail }}'}", "never a template"),
        ("{AWS_LAMBDA_FUNCTION_NAME: x}", "set by Sluice"),
        ("{SLUICE_RUN_ID: x}", "set by Sluice"),
        ("{'A-B': x}", "letters, digits and _"),
        ("{X: [1]}", "a string or a number"),
        ('{X: "a\\0b"}', "NUL"),
        ("[X]", "mapping of names"),
    ],
)
def test_a_bad_function_env_is_refused_at_load(tmp_path: Path, env: str, problem: str) -> None:
    write_flow(tmp_path, f"name: bad\nsteps:\n  s: {{function: handlers:environ, env: {env}}}\n", HANDLERS)
    with pytest.raises(SpecErrors) as info:
        load_dir(tmp_path)
    assert problem in str(info.value)


def test_env_belongs_to_function_steps(tmp_path: Path) -> None:
    write_flow(tmp_path, "name: bad\nsteps:\n  s: {wait: 1s, env: {A: b}}\n")
    with pytest.raises(SpecErrors, match="env is for function steps"):
        load_dir(tmp_path)
