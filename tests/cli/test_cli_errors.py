"""Operational mistakes are one line with a hint and exit 2, never a traceback (golden output)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

FLOW = "name: q\nsteps:\n  one: {wait: 0s}\n"


def sluice(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=cwd, env=base | (env or {}), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def here(tmp_path: Path) -> Path:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "q.yaml").write_text(FLOW)
    return tmp_path


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (
            ["serve", "flows", "--data-dir", "/proc/nope", "--port", "0"],
            {},
            "sluice: error: data dir /proc/nope: cannot write there (No such file or directory); "
            "choose a writable folder with --data-dir or $SLUICE_DATA_DIR",
        ),
        (
            ["run", "flows/q.yaml", "--data-dir", "/proc/nope"],
            {},
            "sluice: error: data dir /proc/nope: cannot write there (No such file or directory); "
            "choose a writable folder with --data-dir or $SLUICE_DATA_DIR",
        ),
        (
            ["serve", "flows", "--port", "0", "--data-dir", "d"],
            {"SLUICE_CONFIG": "missing.yaml"},
            "sluice: error: missing.yaml: cannot read the server config: "
            "[Errno 2] No such file or directory: 'missing.yaml'",
        ),
        (
            ["serve", "flows", "--host", "nosuch.invalid", "--port", "0", "--data-dir", "d"],
            {},
            "sluice: error: --host nosuch.invalid: not an address this machine has",
        ),
        (
            ["serve", "flows", "--host", "0.0.0.0", "--port", "0", "--data-dir", "d"],
            {},
            "sluice: error: refusing to serve on 0.0.0.0 without an API token",
        ),
        (
            ["run", "flows/q.yaml", "--workers", "2", "--max-workers", "1", "--data-dir", "d"],
            {},
            "sluice: error: --max-workers 1 must be at least --workers 2",
        ),
        (  # refused before any request: no server is needed to say so
            [
                "jobs",
                "submit",
                "--definition",
                "d",
                "--depends-on",
                "j-1:BOGUS",
                "--server",
                "http://127.0.0.1:9",
            ],
            {},
            "sluice: error: --depends-on j-1:BOGUS: 'BOGUS' is not a dependency type; write JOB, JOB:N_TO_N",
        ),
    ],
)
def test_operational_errors_are_one_line(here: Path, args: list[str], env: dict[str, str], line: str) -> None:
    done = sluice(*args, cwd=here, env=env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    [only] = done.stderr.strip().splitlines()
    assert only.startswith(line), only


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["serve", "flows", "--port", "99999"],
            "--port: must be a port from 0 to 65535, got '99999'",
        ),
        (
            ["serve", "flows", "--workers", "0"],
            "--workers: must be a whole number of at least 1, got '0'",
        ),
        (["run", "flows/q.yaml", "--max-workers", "x"], "argument --max-workers: must be a whole number"),
        (
            ["serve", "flows", "--grace", "nan"],
            "--grace: must be seconds from 0 to 86399, got 'nan'",
        ),
        (["runs", "list", "--status", "BOGUS"], "argument --status: invalid choice: 'BOGUS' (choose from"),
        (["jobs", "list", "--status", "nope"], "argument --status: invalid choice: 'NOPE' (choose from"),
    ],
)
def test_bad_arguments_are_refused_with_the_valid_values(here: Path, args: list[str], line: str) -> None:
    done = sluice(*args, cwd=here)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert line in done.stderr.strip().splitlines()[-1]


def test_a_port_in_use_is_one_line(here: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = sluice("serve", "flows", "--port", str(port), "--data-dir", "d", cwd=here)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"sluice: error: cannot serve on 127.0.0.1:{port}: Address already in use "
        "(another `sluice serve`? pick another --port)"
    )


def test_output_piped_into_a_closed_reader_ends_quietly(here: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # as `| head -1` does once it has its line
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        done = subprocess.run(
            [sys.executable, "-m", "engine.cli", "validate", "flows"],
            cwd=here, env=env | {"PYTHONPATH": str(ROOT)}, stdout=write, stderr=subprocess.PIPE, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write)
    assert done.returncode == 0 and done.stderr == b""


def test_hints_name_cli_commands_not_http_routes() -> None:
    from engine.cli.common import cli_hints

    message = cli_hints("no run 'r-x'; list runs with GET /api/v1/runs")
    assert message == "no run 'r-x'; list runs with `sluice runs list`"
    message = cli_hints("run r-x is SUCCEEDED: only a FAILED run is retried from its failed steps "
                        "(a retry without \"from\" starts it over)")  # fmt: skip
    assert message.endswith("(`sluice runs retry RUN` without --from-failed starts it over)")


def test_a_server_without_a_scheme_is_taken_as_http(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.cli.common import default_server

    monkeypatch.delenv("SLUICE_SERVER", raising=False)
    assert default_server("localhost:8765") == "http://localhost:8765"  # not "unknown url type"
    assert default_server("https://sluice.example/") == "https://sluice.example"
    monkeypatch.setenv("SLUICE_SERVER", "10.0.0.5:8765")
    assert default_server() == "http://10.0.0.5:8765"
