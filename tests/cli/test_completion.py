"""Shell completion as a user gets it: the script ``sluice completion bash`` prints, loaded into a real
bash, completes commands and options by calling ``sluice`` back; zsh is asked the way its script asks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

BIN = Path(sys.executable).parent


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), PATH=f"{BIN}:{os.environ.get('PATH', '')}")


def script(shell: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "completion", shell],
                          capture_output=True, text=True, env=env(), timeout=30)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.skipif(
    not (BIN / "sluice").exists(), reason="the sluice script is installed by `pip install -e .`"
)
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("sluice ru", ["run", "runs"]),
        ("sluice runs s", ["show", "start"]),
        ("sluice runs show --f", ["--follow"]),
        ("sluice runs list --status ", ["CANCELLED", "FAILED", "PENDING", "RUNNING", "SUCCEEDED"]),
        ("sluice completion ", ["bash", "zsh"]),
    ],
)
def test_bash_completes_commands_options_and_choices(tmp_path: Path, line: str, expected: list[str]) -> None:
    (tmp_path / "completion.bash").write_text(script("bash"), encoding="utf-8")
    words = line.split() + ([""] if line.endswith(" ") else [])
    program = f"""
source {tmp_path / "completion.bash"}
COMP_WORDS=({" ".join(repr(w) for w in words)})
COMP_CWORD={len(words) - 1}
COMP_LINE={line!r}
COMP_POINT={len(line)}
_python_argcomplete sluice
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    bash = shutil.which("bash")
    assert bash is not None
    proc = subprocess.run(
        [bash, "-c", program], capture_output=True, text=True, env=env(), timeout=30, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    got = sorted(w.strip() for w in proc.stdout.splitlines() if w.strip())
    if not words[-1].startswith("-"):  # an empty word is offered the options too (-h, --help)
        got = [w for w in got if not w.startswith("-")]
    assert got == expected


def test_zsh_gets_completions_with_their_help(tmp_path: Path) -> None:
    assert script("zsh").startswith("#compdef sluice")
    out = tmp_path / "out"
    line = "sluice ru"
    ask = dict(env(), _ARGCOMPLETE="1", _ARGCOMPLETE_SHELL="zsh", COMP_LINE=line, COMP_POINT=str(len(line)),
               _ARGCOMPLETE_STDOUT_FILENAME=str(out))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli"], capture_output=True, text=True, env=ask, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    answers = dict(a.split(":", 1) for a in out.read_text().split("\v") if a)  # zsh: name:help
    assert set(answers) == {"run", "runs"}
    assert "in this process" in answers["run"]
