"""The ``sluice`` command as users run it: real subprocesses, exit codes, signals, kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.engines import write_flow
from tests.support.paths import ROOT
from tests.support.waiting import wait_until_sync

SLUICE = [sys.executable, "-m", "engine.cli"]


def sluice(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SLUICE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env()
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.pop("SLUICE_DATA_DIR", None)
    return env


def test_validate_the_bundled_examples(tmp_path: Path) -> None:
    result = sluice("validate", str(ROOT / "examples"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "workflows OK" in result.stdout


def test_validate_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    write_flow(
        tmp_path / "flows", "name: a\nsteps:\n  x: {function: nope:missing, tmeout: 3s}\n", name="a.yaml"
    )
    write_flow(
        tmp_path / "flows", "name: b\nsteps:\n  y: {needs: [z], function: json:dumps}\n", name="b.yaml"
    )
    result = sluice("validate", "flows", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any(
        line.startswith("flows/a.yaml: steps.x.tmeout: unknown field") and "timeout" in line for line in lines
    )
    assert any(line.startswith("flows/b.yaml: steps.y.needs") and "z" in line for line in lines)


def test_validate_names_files_the_same_way_for_problems_across_files(tmp_path: Path) -> None:
    write_flow(tmp_path / "flows", "name: a\non_failure: {workflow: gone}\nsteps:\n  x: {wait: 1s}\n")
    result = sluice("validate", "flows", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("flows/flow.yaml: on_failure.workflow: no workflow named 'gone'"), (
        result.stderr
    )


def test_run_prints_progress_and_outputs(tmp_path: Path) -> None:
    result = sluice(
        "run",
        str(ROOT / "examples/diamond/diamond.yaml"),
        "--input",
        '{"numbers": [2, 7, 1, 8], "label": "e"}',
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"report": "e: total 18, max 8", "count": 4}
    assert "✓ report" in result.stderr and "SUCCEEDED" in result.stderr
    assert (tmp_path / ".sluice" / "sluice.db").exists()


def test_run_json_and_failure_exit_code(tmp_path: Path) -> None:
    result = sluice(
        "run",
        str(ROOT / "examples/retry/flaky.yaml"),
        "--input",
        '{"fail_attempts": 9}',
        "--json",
        "--data-dir",
        "state",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["status"] == "FAILED"
    assert summary["steps"]["call"]["attempts"] == 4
    assert summary["steps"]["save"]["status"] == "SKIPPED"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "{nope"], "--input: not valid JSON"),
        (["--input", '{"numbers": [NaN]}'], "NaN is not JSON"),
        (["--input", "[1, 2]"], "must be a JSON object"),
        (["--input", '{"numbers": "many"}'], "numbers"),
        (["--input", '{"colour": "red"}'], "colour"),
        (["--input", "@missing.json"], "cannot read"),
    ],
)
def test_bad_input_exits_2_and_changes_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    result = sluice("run", str(ROOT / "examples/diamond/diamond.yaml"), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / ".sluice").exists(), "bad input must not create a store"


def test_unknown_workflow_name_lists_the_known_ones(tmp_path: Path) -> None:
    result = sluice("run", "nope", "--dir", str(ROOT / "examples"), cwd=tmp_path)
    assert result.returncode == 2
    assert "no workflow named 'nope'" in result.stderr and "diamond" in result.stderr


SLOW = """
import os, time

def mark(event, context):
    with open(os.path.join(event["dir"], f"{context.step}.count"), "a") as f:
        f.write(f"{context.attempt}\\n")
    return context.attempt

def slow(event, context):
    mark(event, context)
    if context.attempt == 1:
        time.sleep(60)
    return "done"
"""

SLOW_FLOW = """
name: slow
params: {dir: {type: string}}
steps:
  first: {function: handlers:mark, input: {dir: "{{ params.dir }}"}}
  second: {function: handlers:slow, needs: [first], input: {dir: "{{ params.dir }}"}}
  third: {function: handlers:mark, needs: [second], input: {dir: "{{ params.dir }}"}}
outputs: {second: "{{ steps.second.output }}"}
"""


def _status(db_path: Path) -> str:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT status FROM runs WHERE workflow='slow'").fetchone()[0]


def _counts(folder: Path, step: str) -> list[str]:
    path = folder / f"{step}.count"
    return path.read_text().split() if path.exists() else []


def _start_slow_run(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """``sluice run slow`` in a subprocess, returned once its slow second step has started."""
    write_flow(tmp_path / "flows", SLOW_FLOW, SLOW)
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = subprocess.Popen(
        [*SLUICE, "run", "slow", "--dir", "flows", "--input", json.dumps({"dir": str(marks)})],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until_sync(lambda: _counts(marks, "second") == ["1"], what="the slow step to start")
    except BaseException:
        proc.kill()
        raise
    return proc, marks


def test_sigterm_cancels_a_one_shot_run_and_records_it(tmp_path: Path) -> None:
    proc, _ = _start_slow_run(tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert "cancelling the run" in err
    db = sqlite3.connect(tmp_path / ".sluice" / "sluice.db")
    run = db.execute("SELECT status, reason FROM runs").fetchone()
    steps = dict(db.execute("SELECT step, status FROM steps WHERE idx=-1").fetchall())
    assert run == ("CANCELLED", "cancelled by user (signal)")
    assert steps == {"first": "SUCCEEDED", "second": "CANCELLED", "third": "CANCELLED"}


def test_a_second_engine_on_the_same_data_dir_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """Two engines on one store would resume each other's runs: the second one must say so and stop."""
    proc, marks = _start_slow_run(tmp_path)
    try:
        second = sluice(
            "run", "slow", "--dir", "flows", "--input", json.dumps({"dir": str(marks)}), cwd=tmp_path
        )
        assert second.returncode == 2, second.stderr
        assert f"another Sluice engine (pid {proc.pid}) is using this data dir" in second.stderr
        assert "--data-dir" in second.stderr and "Traceback" not in second.stderr
        assert "sluice runs start WORKFLOW" in second.stderr  # the way to run beside a server
        db = sqlite3.connect(tmp_path / ".sluice" / "sluice.db")
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
        db.close()
    finally:
        proc.send_signal(signal.SIGTERM)  # cancels the run, which stops its sleeping worker
        proc.communicate(timeout=20)
        proc.kill()
    # the first engine released the lock on its way out
    asyncio.run(_open_and_close(tmp_path / ".sluice" / "sluice.db"))


async def _open_and_close(path: Path) -> None:
    from engine.store.store import Store

    store = Store(path)
    await store.open()
    await store.close()


def test_kill_9_then_restart_resumes_without_rerunning_finished_steps(tmp_path: Path) -> None:
    proc, marks = _start_slow_run(tmp_path)
    proc.kill()  # SIGKILL: no cleanup at all
    proc.wait(timeout=10)
    for pipe in (proc.stdout, proc.stderr):  # the orphaned worker still holds their other ends
        assert pipe is not None
        pipe.close()
    # the orphaned worker may still sleep; it is not the engine and holds no state
    db_path = tmp_path / ".sluice" / "sluice.db"
    status = sqlite3.connect(db_path).execute("SELECT status FROM runs").fetchone()[0]
    assert status == "RUNNING"
    # `sluice serve` on the same data dir resumes the run
    server = subprocess.Popen(
        [*SLUICE, "serve", "flows", "--port", "0"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_sync(lambda: _counts(marks, "third") == ["1"], what="the resumed run to finish")
        wait_until_sync(lambda: _status(db_path) == "SUCCEEDED", what="the run to be SUCCEEDED")
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    except AssertionError as exc:
        server.kill()
        _, err = server.communicate(timeout=30)
        raise AssertionError(f"{exc}; the server said:\n{err}") from None
    finally:
        server.kill()
        server.wait(timeout=30)
    assert server.returncode == 0, err
    assert "engine stopped" in err
    db = sqlite3.connect(db_path)
    run = db.execute("SELECT status, outputs FROM runs WHERE workflow='slow'").fetchone()
    assert run[0] == "SUCCEEDED"
    assert json.loads(run[1]) == {"second": "done"}
    assert _counts(marks, "first") == ["1"], "a SUCCEEDED step must never run again"
    assert _counts(marks, "second") == ["1", "2"], "the interrupted attempt is retried (at least once)"
    attempts = db.execute(
        "SELECT attempt, status FROM attempts WHERE step='second' ORDER BY attempt"
    ).fetchall()
    assert attempts == [(1, "CANCELLED"), (2, "SUCCEEDED")]


GRACEFUL = """
import os, time

def slow(event, context):
    folder = os.environ["MARKS"]
    with open(os.path.join(folder, "started"), "a") as f:
        f.write(f"{context.attempt}\\n")
    time.sleep(float(os.environ.get("SLOW_S", "1.5")))
    with open(os.path.join(folder, "finished"), "a") as f:
        f.write(f"{context.attempt}\\n")
    return "ok"

def after(event, context):
    with open(os.path.join(os.environ["MARKS"], "after"), "a") as f:
        f.write("x\\n")
    return "after"
"""

GRACEFUL_FLOW = """
name: graceful
triggers:
  - schedule: rate(1 second)
steps:  # a function sees only the env its step declares, not the engine's
  slow: {function: handlers:slow, env: {MARKS: "${env:MARKS}", SLOW_S: "${env:SLOW_S}"}}
  after: {function: handlers:after, needs: [slow], env: {MARKS: "${env:MARKS}"}}
"""


def _serve(tmp_path: Path, marks: Path, *extra: str, slow_s: str = "1.5") -> subprocess.Popen[str]:
    env = _env() | {"MARKS": str(marks), "SLOW_S": slow_s}
    return subprocess.Popen(
        [*SLUICE, "serve", "flows", "--port", "0", *extra],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("grace", ["10", "0.2"])
def test_sigterm_on_serve_stops_in_stages_and_records_interrupted_steps(tmp_path: Path, grace: str) -> None:
    write_flow(tmp_path / "flows", GRACEFUL_FLOW, GRACEFUL)
    marks = tmp_path / "marks"
    marks.mkdir()
    server = _serve(tmp_path, marks, "--grace", grace)
    try:
        wait_until_sync(lambda: (marks / "started").exists(), what="a scheduled run's step to start")
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    finally:
        server.kill()
    assert server.returncode == 0, err
    assert "stopping intake" in err and "engine stopped" in err
    db = sqlite3.connect(tmp_path / ".sluice" / "sluice.db")
    first_run = db.execute("SELECT id, status FROM runs ORDER BY created_at LIMIT 1").fetchone()
    assert first_run[1] == "RUNNING", "an unfinished run stays RUNNING to resume on the next start"
    attempts = db.execute(
        "SELECT status, error FROM attempts WHERE run_id=? AND step='slow'", (first_run[0],)
    ).fetchall()
    if grace == "10":  # the running step was allowed to finish; nothing new was started
        assert (marks / "finished").exists()
        assert attempts == [("SUCCEEDED", None)]
        assert not (marks / "after").exists()
        assert "drained: 1 runs finished, 0 interrupted" in err or "drained:" in err
    else:  # the grace period ran out: the attempt is recorded as interrupted by the shutdown
        assert not (marks / "finished").exists()
        assert attempts[0][0] == "CANCELLED" and "Sluice.EngineShutdown" in attempts[0][1]
        audit = db.execute("SELECT detail FROM audit WHERE kind='shutdown'").fetchone()
        assert audit is not None and json.loads(audit[0])["attempts_interrupted"] >= 1
    # the next start resumes the run to the end
    server = _serve(tmp_path, marks, slow_s="0")
    try:
        wait_until_sync(lambda: (marks / "after").exists(), what="the resumed run to finish")
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    status = (
        sqlite3.connect(tmp_path / ".sluice" / "sluice.db")
        .execute("SELECT status FROM runs WHERE id=?", (first_run[0],))
        .fetchone()[0]
    )
    assert status == "SUCCEEDED"


def test_run_file_loads_that_file_alone_and_validate_takes_a_file_or_a_folder(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    write_flow(flows, "name: good\nsteps:\n  x: {function: handlers:one}\n", "def one(e, c):\n    return 1\n",
               name="good.yaml")  # fmt: skip
    (flows / "broken.yaml").write_text("name: [oops\n", encoding="utf-8")
    result = sluice("run", "flows/good.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr  # the broken neighbour is not read
    assert result.stdout.strip() == "1"
    result = sluice("run", "flows/good.yaml", "--dir", "flows", cwd=tmp_path)
    assert result.returncode == 2 and "broken.yaml" in result.stderr  # asked to load the folder

    result = sluice("validate", "flows/good.yaml", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "1 workflow OK: good\n")
    result = sluice("validate", "flows", "--json", cwd=tmp_path)
    assert result.returncode == 2
    answer = json.loads(result.stdout)
    assert answer["valid"] is False and answer["workflows"] == []
    (error,) = answer["errors"]
    assert error["file"] == "flows/broken.yaml" and "YAML" in error["problem"] and error["hint"]
    (flows / "broken.yaml").unlink()
    result = sluice("validate", "flows", "--json", cwd=tmp_path)
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"valid": True, "workflows": ["good"], "errors": []}
    result = sluice("validate", "nope.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "no such file or folder" in result.stderr
