"""Finding the script of a shell in an argv: the one argument payload data must never reach.

A command is an argv list, so a rendered value is one argument and nothing re-parses it, except
when the program is a shell given ``-c SCRIPT``: the shell parses SCRIPT, and a value spliced into
it (``{{ params.v }}``, ``Ref::v``) runs as code: ``x; echo INJECTED $(id -u)``. Data reaches a
shell script safely only through the environment (``"$KEY"``) or as a positional argument after
the script (``sh -c 'echo "$1"' sh "{{ params.v }}"``). :func:`script_index` finds SCRIPT so the
loader and the Batch API refuse templates and ``Ref::`` there.

>>> script_index(["sh", "-c", "echo hi"])
2
>>> script_index(["/usr/bin/env", "FOO=1", "bash", "-euxo", "pipefail", "-c", "echo hi", "arg0"])
6
>>> script_index(["python", "-c", "print(1)"]) is None
True
"""

from __future__ import annotations

import re
from collections.abc import Sequence

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ash", "ksh", "mksh"})
#: programs that run the argv after their own options: ``env``'s NAME=value too
_WRAPPERS = frozenset({"env", "exec", "nohup", "command"})
_OPTION_ARG = frozenset({"--rcfile", "--init-file"})
_ENV_OPTION_ARG = frozenset({"-u", "--unset", "-C", "--chdir", "-S", "--split-string"})
_ASSIGN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.DOTALL)
#: what a shell script argument may not hold: a template, or a Batch parameter reference
DATA_MARKERS = ("{{", "{%", "Ref::")


def _name(arg: str) -> str:
    return arg.rsplit("/", 1)[-1]


def script_index(argv: Sequence[str]) -> int | None:
    """The index of the script a shell runs with ``-c``, or None if ``argv`` runs no shell script."""
    i = _program_index(argv)
    if i is None:
        return None
    wants_script = False
    i += 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or arg == "-":
            i += 1
            break
        if arg in _OPTION_ARG:
            i += 2
            continue
        if arg[:1] in ("-", "+") and len(arg) > 1 and not arg.startswith("--"):
            wants_script = wants_script or "c" in arg[1:]
            i += 1 + sum(flag in "oO" for flag in arg[1:])  # -euxo pipefail: o takes the next one
            continue
        if arg.startswith("--"):
            i += 1
            continue
        break
    return i if wants_script and i < len(argv) else None


def _program_index(argv: Sequence[str]) -> int | None:
    """Where the shell's own name is, past ``env``-like wrappers; None when the program is no shell."""
    i = 0
    while i < len(argv):
        name = _name(argv[i])
        if name in SHELLS:
            return i
        if name == "busybox" and i + 1 < len(argv) and _name(argv[i + 1]) in SHELLS:
            return i + 1
        if name not in _WRAPPERS:
            return None
        i += 1
        while i < len(argv) and (argv[i].startswith("-") or _ASSIGN.fullmatch(argv[i])):
            i += 2 if argv[i] in _ENV_OPTION_ARG else 1
    return None


def data_in_script(argv: Sequence[str], markers: Sequence[str] = DATA_MARKERS) -> int | None:
    """The index of a shell script argument that holds a template or ``Ref::``, else None."""
    i = script_index(argv)
    if i is not None and any(marker in argv[i] for marker in markers):
        return i
    return None


HINT = (
    'pass the value through env, e.g. env: {V: "{{ params.v }}"} and "$V" in the script,'
    ' or as an argument after the script: [sh, -c, \'echo "$1"\', sh, "{{ params.v }}"]'
)
