"""Payload data never reaches a shell script: ``{{ }}`` and ``Ref::`` in ``sh -c SCRIPT`` are refused.

A container command is an argv list, so a value is one argument, unless the program is a shell
whose ``-c`` script parses it again: ``command: [sh, -c, "echo {{ params.v }}"]`` ran
``x; echo INJECTED $(id -u)`` as code. The loader refuses a template or ``Ref::`` in the script
of any shell (also behind ``env`` or ``busybox``, and with options before ``-c``), and says how
to pass the value: through ``env``, or as an argument after the script.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from workflows.loader import validate
from workflows.shell import script_index


def _lines(tmp_path: Path, command: str, extra: str = "") -> list[str]:
    path = tmp_path / "wf.yaml"
    path.write_text(
        f"params: {{v: {{type: string, default: x}}}}\nsteps:\n  a:\n    container:\n      image: busybox\n"
        f"      command: {command}\n{extra}",
        encoding="utf-8",
    )
    return [str(e)[len(f"{path}: ") :] for e in validate(path)]


@pytest.mark.parametrize(
    ("command", "index"),
    [
        ('[sh, -c, "echo {{ params.v }}"]', 2),
        ('[/bin/sh, -c, "echo {{ params.v }}"]', 2),
        ('[bash, -euxo, pipefail, -c, "echo {{ params.v }}"]', 4),
        ('[bash, -lc, "{{ params.v }}"]', 2),
        ('[env, A=1, sh, -c, "echo {{ params.v }}"]', 4),
        ('[/usr/bin/env, -i, dash, -c, "echo {{ params.v }}"]', 4),
        ('[busybox, sh, -c, "echo {{ params.v }}"]', 3),
        ('[zsh, -c, "{% if true %}rm{% endif %}"]', 2),
        ("[ash, -c, 'echo Ref::v']", 2),
        ("[ksh, -c, Ref::v]", 2),
    ],
)
def test_templates_and_refs_in_a_shell_script_are_refused(tmp_path: Path, command: str, index: int) -> None:
    assert _lines(tmp_path, command, "      parameters: {v: x}\n") == [
        f"steps.a.container.command[{index}]: a shell script cannot hold {{{{ }}}} or Ref:: (the value would"
        ' run as shell code) (pass the value through env, e.g. env: {V: "{{ params.v }}"} and "$V" in the'
        ' script, or as an argument after the script: [sh, -c, \'echo "$1"\', sh, "{{ params.v }}"])'
    ]


@pytest.mark.parametrize(
    "command",
    [
        "[sh, -c, 'echo \"$V\"']",  # the value comes in through env
        '[sh, -c, \'echo "$1"\', sh, "{{ params.v }}"]',  # or as a positional argument
        "[sh, -c, 'echo \"$1\"', sh, Ref::v]",
        '[echo, "{{ params.v }}", "Ref::v"]',  # no shell: one argument each
        '[python, -c, "print(1)", "{{ params.v }}"]',
        '[sh, "./run.sh", "{{ params.v }}"]',  # a script file, not a -c string
    ],
)
def test_values_outside_the_script_still_load(tmp_path: Path, command: str) -> None:
    assert _lines(tmp_path, command, '      env: {V: "{{ params.v }}"}\n      parameters: {v: x}\n') == []


@pytest.mark.parametrize(
    ("argv", "index"),
    [
        (["sh", "-c", "x"], 2),
        (["sh", "-x", "-c", "--", "x"], 4),
        (["bash", "--norc", "-O", "extglob", "-c", "x", "arg0"], 5),
        (["nohup", "zsh", "-c", "x"], 3),
        (["sh", "x.sh", "-c"], None),
        (["sh", "-c"], None),
        (["echo", "sh", "-c", "x"], None),
        (["sh", "-s", "x"], None),
        ([], None),
        (["env"], None),
    ],
)
def test_script_index_finds_the_script_a_shell_parses(argv: list[str], index: int | None) -> None:
    assert script_index(argv) == index
