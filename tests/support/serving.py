"""``sluice serve`` as a real subprocess, for the tests that ``kill -9`` it or watch it from outside."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from tests.support.paths import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(
    cwd: Path,
    port: int,
    *,
    grace_s: float = 1,
    env: Mapping[str, str] | None = None,
    verbose: bool = False,
) -> subprocess.Popen[bytes]:
    """``sluice serve flows`` in ``cwd``; its log is appended to ``cwd/serve.log``."""
    child = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    argv = [sys.executable, "-m", "engine.cli", *(["-v"] if verbose else []), "serve", "flows"]
    argv += ["--port", str(port), "--grace", f"{grace_s:g}"]
    with (cwd / "serve.log").open("ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(argv, cwd=cwd, env=child, stdout=subprocess.DEVNULL, stderr=log)


def healthy(base: str) -> bool:
    """The server answers its liveness probe (no token needed)."""
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not ended by ``timeout_s``."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
