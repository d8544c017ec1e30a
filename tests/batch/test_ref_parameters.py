"""``Ref::`` parameters are whole arguments, and never reach a shell script (a departure from AWS).

AWS Batch replaces ``Ref::name`` inside any string, so ``["sh", "-c", "echo Ref::v"]`` with
``v = "x; echo INJECTED $(id -u)"`` printed ``INJECTED 0``: the parameter ran as shell code. Sluice
replaces an argument only when it is exactly ``Ref::name``, and refuses ``Ref::`` inside a shell's
``-c`` script when a definition is registered or a job submitted, naming the argument.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.batch.jobs import JobError
from tests.support.batch import MakeBatch, box, run_job

pytestmark = pytest.mark.docker

HOSTILE = "x; echo INJECTED $(id -u)"


def log_of(desc: dict[str, object]) -> str:
    return Path(desc["attempts"][-1]["log_path"]).read_text()  # type: ignore[index]


@pytest.mark.parametrize(
    "command",
    [
        ["sh", "-c", "echo Ref::v"],
        ["sh", "-c", "Ref::v"],
        ["/bin/sh", "-ec", 'echo "Ref::v"'],
        ["env", "A=1", "bash", "-c", "echo Ref::v"],
    ],
)
async def test_a_ref_in_a_shell_script_is_refused_at_submit_and_register(
    batch: MakeBatch, command: list[str]
) -> None:
    svc = await batch()
    index = len(command) - 1
    with pytest.raises(JobError, match=rf"command\[{index}\]: a shell script cannot hold Ref::"):
        await svc.submit({"queue": "default", "container": box(command), "parameters": {"v": HOSTILE}})
    with pytest.raises(JobError, match=r"pass it as an argument after the script"):
        await svc.register_definition({"name": "d", **box(command)})
    assert await svc.list_jobs(limit=10) == []


async def test_parameters_replace_whole_arguments_only_and_stay_data(batch: MakeBatch) -> None:
    svc = await batch()
    script = 'echo "$1"; echo "[$2]"'
    desc = await run_job(
        svc,
        container=box(["sh", "-c", script, "sh", "Ref::v", "pre-Ref::v"]),
        parameters={"v": HOSTILE},
    )
    assert desc["status"] == "SUCCEEDED", desc
    assert log_of(desc).splitlines() == [HOSTILE, "[pre-Ref::v]"]
