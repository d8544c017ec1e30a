"""The Slurm batch script's cleanup (engine/executors/slurm_batch.py), with real processes."""

from __future__ import annotations

import stat
from pathlib import Path

from engine.executors import slurm_batch


def runtime(tmp_path: Path, body: str) -> tuple[str, Path]:
    """An executable standing in for ``docker``/``podman``: each call appends its arguments to a log."""
    calls = tmp_path / "calls"
    path = tmp_path / "runtime"
    path.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path), calls


def test_a_removal_killed_by_scancels_sigterm_is_asked_again(tmp_path: Path) -> None:
    """scancel while the script removes the container: its SIGTERM kills the runtime's CLI (Go
    programs die of it), and the container stayed behind; the script asks once more."""
    marker = tmp_path / "signalled"
    cli, calls = runtime(tmp_path, f"if [ ! -e {marker} ]; then touch {marker}; kill -TERM $$; fi\nexit 0")
    assert slurm_batch.remove(cli, "job-s7") is True
    assert calls.read_text().splitlines() == ["rm -f job-s7", "rm -f job-s7"]


def test_a_removal_that_ends_by_itself_is_not_repeated(tmp_path: Path) -> None:
    """A runtime that answers (even 'no such container', exit 1) is not asked twice."""
    cli, calls = runtime(tmp_path, "exit 1")
    assert slurm_batch.remove(cli, "job-s8") is True
    assert calls.read_text().splitlines() == ["rm -f job-s8"]


def test_a_runtime_killed_every_time_is_given_up_on(tmp_path: Path) -> None:
    cli, calls = runtime(tmp_path, "kill -TERM $$")
    assert slurm_batch.remove(cli, "job-s9", tries=3) is False
    assert len(calls.read_text().splitlines()) == 3
