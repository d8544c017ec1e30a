"""Prefect 3 and Luigi running W0-W3, each in its own virtualenv under ``bench/peers/``.

The peers are not project dependencies: the harness creates ``bench/peers/<name>`` with the
interpreter it runs on, installs the pinned requirements once, and writes a ``.bench-ready`` marker
with the installed versions. Later runs reuse the venv. ``--quick`` never installs (an install takes
minutes and CI's smoke run must stay under two); it skips a peer that is not ready, with a note.

The workloads themselves live in ``bench/peer_workloads/*.py`` and run inside the peer venv; each
prints one JSON line that the harness parses. W0 is timed here, from process start to exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .core import BENCH_DIR, Context, Skip, Workload, register, run_measured, tail, temp_dir

PEERS_DIR = BENCH_DIR / "peers"
SCRIPTS_DIR = BENCH_DIR / "peer_workloads"
INSTALL_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Peer:
    name: str
    requirements: tuple[str, ...]
    probe: str  # Python printing a JSON object of versions; proves the venv imports
    script: str

    @property
    def venv(self) -> Path:
        return PEERS_DIR / self.name

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def marker(self) -> Path:
        return self.venv / ".bench-ready"


PREFECT = Peer(
    "prefect",
    # Prefect 3.8's ephemeral server broke with the newest FastAPI here; 0.139.0 works (issue 6).
    ("prefect>=3,<4", "fastapi==0.139.0"),
    "import json, prefect, fastapi; print(json.dumps({'prefect': prefect.__version__,"
    " 'fastapi': fastapi.__version__}))",
    "prefect_workloads.py",
)
LUIGI = Peer(
    "luigi",
    ("luigi",),
    "import json, luigi; from importlib.metadata import version;"
    " print(json.dumps({'luigi': version('luigi')}))",
    "luigi_workloads.py",
)


def _probe(peer: Peer) -> dict[str, str] | None:
    if not peer.python.exists():
        return None
    done = subprocess.run([str(peer.python), "-c", peer.probe], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return None
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def ensure_peer(peer: Peer, *, install: bool) -> dict[str, str]:
    """Return the peer's versions, installing its venv first when allowed and missing.

    A venv made by hand (or by an interrupted run) that imports fine is adopted and marked ready.
    """
    if peer.marker.exists():
        return dict(json.loads(peer.marker.read_text()))
    versions = _probe(peer)
    if versions is None:
        if not install:
            raise Skip(
                f"peer venv {peer.venv.relative_to(BENCH_DIR.parent)} not installed yet "
                "(--quick never installs; run the full `python -m bench` once)"
            )
        PEERS_DIR.mkdir(exist_ok=True)
        if not peer.python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(peer.venv)], check=True, timeout=120)
        pip = [str(peer.python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        done = subprocess.run(
            [*pip, *peer.requirements], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
        )
        if done.returncode != 0:
            raise Skip(f"pip install {' '.join(peer.requirements)} failed: {tail(done.stderr, 3)}")
        versions = _probe(peer)
        if versions is None:
            raise Skip(f"{peer.name} installed but does not import")
    peer.marker.write_text(json.dumps(versions))
    return versions


def _env(peer: Peer, home: Path) -> dict[str, str]:
    """A clean environment for the peer: local mode, quiet logs, no telemetry, fresh state dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VIRTUAL_ENV", "PYTHON"))}
    env.update({"DO_NOT_TRACK": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    if peer is PREFECT:
        env.update(
            {
                "PREFECT_HOME": str(home),
                "PREFECT_LOGGING_LEVEL": "WARNING",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            }
        )
    return env


def _run_script(
    peer: Peer, ctx: Context, args: list[str], timeout_s: float
) -> tuple[dict[str, float], float, float]:
    home = temp_dir(f"{peer.name}-home")
    cmd = [str(peer.python), str(SCRIPTS_DIR / peer.script), *args]
    if peer is LUIGI:
        cmd += ["--dir", str(home / "targets")]
    m = run_measured(cmd, env=_env(peer, home), cwd=home, timeout_s=timeout_s)
    if m.timed_out:
        raise Skip(f"{peer.name} {' '.join(args)} exceeded {timeout_s:.0f}s")
    if m.returncode != 0:
        # The last line of a traceback names the exception; that is enough for the table.
        raise RuntimeError(f"{peer.name} {' '.join(args)} exit {m.returncode}: {tail(m.stderr, 1)[:300]}")
    lines = [ln for ln in m.stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{peer.name} printed no JSON result: {tail(m.stdout + m.stderr)}")
    return dict(json.loads(lines[-1])), m


def _setup(peer: Peer) -> Callable[[Context], None]:
    def setup(ctx: Context) -> None:
        versions = ensure_peer(peer, install=not ctx.quick)
        ctx.note(", ".join(f"{k} {v}" for k, v in versions.items()))

    return setup


def _w0(peer: Peer) -> Callable[[Context], Mapping[str, float]]:
    def w0(ctx: Context) -> Mapping[str, float]:
        """Fresh process, fresh state dir: a 1-step flow from interpreter start to exit."""
        _, m = _run_script(peer, ctx, ["w0"], timeout_s=120)
        return {"w0_s": m.wall_s, "peak_rss_mb": m.peak_rss_mb, "peak_pss_mb": m.peak_pss_mb}

    return w0


def _w13(peer: Peer) -> Callable[[Context], Mapping[str, float]]:
    def w13(ctx: Context) -> Mapping[str, float]:
        """W1-W3 in one process (so the peer's own start-up is paid once, as a server would)."""
        args = ["w1-3"]
        if peer is PREFECT and ctx.quick:
            args += ["--w1-runs", "10", "--no-w2-1000"]
            ctx.note("--quick: W1 over 10 runs, W2-1000 skipped")
        if peer is LUIGI:
            ctx.note("W2 with workers=2; W3 with workers=20 (w3_s) and workers=2 (w3_workers2_s)")
            if ctx.quick:
                args += ["--no-w3-workers2"]
        result, m = _run_script(peer, ctx, args, timeout_s=600)
        return {**result, "peak_rss_mb": m.peak_rss_mb, "peak_pss_mb": m.peak_pss_mb}

    return w13


_UNITS_W0 = {"w0_s": "s", "peak_rss_mb": "MB", "peak_pss_mb": "MB"}
_UNITS_W13 = {
    "w1_runs_per_s": "runs/s",
    "w1_p50_ms": "ms",
    "w1_p99_ms": "ms",
    "w1_runs": "n",
    "w2_100_s": "s",
    "w2_1000_s": "s",
    "w3_s": "s",
    "w3_workers2_s": "s",
    "peak_rss_mb": "MB",
    "peak_pss_mb": "MB",
}

for _peer, _w0_reps in ((LUIGI, 3), (PREFECT, 3)):
    register(
        Workload(
            f"peer.{_peer.name}.W0",
            "peers",
            _w0(_peer),
            f"{_peer.name}: cold start of a 1-step flow, fresh process and state dir to exit",
            units=_UNITS_W0,
            reps=_w0_reps,
            quick_reps=1,
            setup=_setup(_peer),
        )
    )
    register(
        Workload(
            f"peer.{_peer.name}.W1-W3",
            "peers",
            _w13(_peer),
            f"{_peer.name}: W1 chain x50, W2 fan-out 100/1000 + join, W3 20 x sleep 1 s",
            units=_UNITS_W13,
            reps=3,
            quick_reps=1,
            timeout_s=900,
            setup=_setup(_peer),
        )
    )
