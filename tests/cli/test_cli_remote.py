"""``sluice runs|logs|events|workflows`` in a subprocess against a live server; ``sluice serve`` e2e."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.engines import write_flow
from tests.support.http import Serve, Served
from tests.support.paths import ROOT

FLOW = """
name: greet
description: Say hello.
triggers:
  - webhook: {name: hook, auth: none}
params:
  who: {type: string, default: world}
steps:
  hello: {function: "handlers:hello", input: {who: "{{ params.who }}"}}
outputs: {greeting: "{{ steps.hello.output }}"}
"""

SLEEPY = """
name: sleepy
steps:
  nap: {wait: 60s}
"""

HANDLERS = """
import os, time

def hello(event, context):
    print("log line for", event["who"])
    return "hello " + event["who"]

def chatty(event, context):
    print("working on it", flush=True)
    deadline = time.monotonic() + 20
    while not os.path.exists(event["gate"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    print("done")
    return "ok"
"""

CHATTY = """
name: chatty
params: {gate: {type: string}}
steps:
  talk: {function: "handlers:chatty", input: {gate: "{{ params.gate }}"}}
"""

KEYED = """
name: keyed
params: {gate: {type: string}}
steps:
  talk:
    function: "handlers:chatty"
    input: {gate: "{{ params.gate }}"}
    concurrency: {key: one, limit: 1}
"""


async def sluice(*args: str, server: str | None = None) -> tuple[int, str, str]:
    """Run the CLI in a fresh interpreter (as a user would) and collect its output."""
    env = {k: v for k, v in os.environ.items() if k != "SLUICE_SERVER"}
    extra = [] if server is None else ["--server", server]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.cli",
        *args,
        *extra,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def live(serve: Serve, tmp_path: Path) -> Served:
    flows = tmp_path / "flows"
    write_flow(flows, FLOW, HANDLERS)
    write_flow(flows, SLEEPY, name="sleepy.yaml")
    write_flow(flows, CHATTY, name="chatty.yaml")
    write_flow(flows, KEYED, name="keyed.yaml")
    return await serve(flows)


async def test_runs_logs_and_workflows(live: Served) -> None:
    run_id = await live.engine.start_run("greet", {"who": "Ada"})
    await live.engine.orchestrator.wait(run_id, 20)

    code, out, err = await sluice("runs", "list", server=live.url)
    assert code == 0, err
    header, row = out.splitlines()[:2]
    assert header.split() == ["RUN", "WORKFLOW", "STATUS", "CREATED", "DURATION_S", "REASON"]
    assert row.startswith(run_id) and "SUCCEEDED" in row
    assert header.index("STATUS") == row.index("SUCCEEDED")  # columns aligned

    code, out, _ = await sluice("runs", "show", run_id, "--json", server=live.url)
    assert code == 0 and json.loads(out)["outputs"] == {"greeting": "hello Ada"}
    code, out, _ = await sluice("runs", "show", run_id, server=live.url)
    assert "hello" in out and "SUCCEEDED" in out and 'outputs: {"greeting": "hello Ada"}' in out

    code, out, _ = await sluice("logs", run_id, "--step", "hello", server=live.url)
    assert code == 0 and "log line for Ada" in out

    code, out, _ = await sluice("workflows", "list", server=live.url)
    assert code == 0 and "webhook:hook" in out and "Say hello." in out
    code, out, _ = await sluice("workflows", "list", "--json", server=live.url)
    assert {w["name"] for w in json.loads(out)["workflows"]} == {"greet", "sleepy", "chatty", "keyed"}

    code, out, _ = await sluice("runs", "retry", run_id, "--json", server=live.url)
    assert code == 0 and json.loads(out)["retry_of"] == run_id


async def test_runs_start_on_the_server_with_and_without_waiting(live: Served, tmp_path: Path) -> None:
    """The way to run a workflow while `sluice serve` owns the data dir (a second engine is refused)."""
    code, out, err = await sluice(
        "runs", "start", "greet", "--input", '{"who": "Bo"}', "--wait", server=live.url
    )
    assert code == 0, err
    assert json.loads(out) == {"greeting": "hello Bo"}

    code, out, err = await sluice("runs", "start", "greet", server=live.url)
    assert code == 0, err
    run_id = out.split()[1]
    assert out.strip() == f"run {run_id} started"
    assert await live.engine.orchestrator.wait(run_id, 20) == "SUCCEEDED"

    params = tmp_path / "params.json"
    params.write_text('{"who": 7}', encoding="utf-8")
    code, _, err = await sluice("runs", "start", "greet", "--input", f"@{params}", server=live.url)
    assert code == 2 and "who" in err and "string" in err  # the workflow's params check, nothing started
    code, _, err = await sluice("runs", "start", "nope", server=live.url)
    assert code == 2 and "no workflow 'nope'" in err
    code, _, err = await sluice("runs", "start", "greet", "--input", "{oops", server=live.url)
    assert code == 2 and "--input: not valid JSON" in err
    runs = await live.engine.store.read(lambda c: c.execute("SELECT count(*) FROM runs").fetchone()[0])
    assert runs == 2


async def test_logs_follow_prints_a_running_step_live_and_each_line_once(
    live: Served, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    run_id = await live.engine.start_run("chatty", {"gate": str(gate)})
    follow = asyncio.ensure_future(sluice("logs", run_id, "--follow", server=live.url))
    deadline = time.monotonic() + 20
    while "working on it" not in await _logs(live, run_id):  # printed, and the step still runs
        assert time.monotonic() < deadline and not follow.done()
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.5)  # the follower polls once a second: let it print the live part first
    gate.touch()
    code, out, err = await asyncio.wait_for(follow, 30)
    assert code == 0, err
    assert out == "==> talk attempt 1 <==\nworking on it\ndone\n"


async def test_runs_list_follow_prints_a_line_per_new_run_and_change(live: Served, tmp_path: Path) -> None:
    done = await live.engine.run_to_end("greet", {"who": "Bo"}, timeout_s=20)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli", "runs", "list", "--follow", "--server", live.url,
        cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "SLUICE_SERVER"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out = proc.stdout
    assert out is not None

    async def line_with(*parts: str) -> str:
        async with asyncio.timeout(20):
            while True:
                line = (await out.readline()).decode()
                assert line, "runs list --follow ended"
                if all(p in line for p in parts):
                    return line

    try:
        first = await line_with(done["run_id"])  # what is there already, one line each
        assert first.split()[1:] == [done["run_id"], "greet", "SUCCEEDED"]
        gate = tmp_path / "gate"
        run_id = await live.engine.start_run("chatty", {"gate": str(gate)})
        await line_with(run_id, "chatty", "RUNNING")
        gate.touch()
        await line_with(run_id, "SUCCEEDED")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 130 and b"Traceback" not in err, err
    code, _, err = await sluice("runs", "list", "--follow", "--before", run_id, server=live.url)
    assert code == 2 and "--before" in err


async def test_runs_show_follow_is_the_live_view_of_sluice_run(live: Served, tmp_path: Path) -> None:
    """Started, what the handler prints (while it runs), ended, the run's end; outputs; exit code."""
    gate = tmp_path / "gate"
    run_id = await live.engine.start_run("chatty", {"gate": str(gate)})
    follow = asyncio.ensure_future(sluice("runs", "show", run_id, "--follow", server=live.url))
    deadline = time.monotonic() + 20
    while "working on it" not in await _logs(live, run_id):
        assert time.monotonic() < deadline and not follow.done()
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # several polls while the step still runs
    gate.touch()
    code, out, err = await asyncio.wait_for(follow, 30)
    assert code == 0, err
    assert json.loads(out) == "ok"  # the outputs on stdout, as `sluice run` prints them
    lines = [line.split(maxsplit=1)[1] for line in err.splitlines()]  # without the elapsed time
    assert lines[0] == f"→ run {run_id} of chatty started"
    assert [line.split() for line in lines[1:4]] == [
        ["→", "talk", "started"], ["talk", "│", "working", "on", "it"], ["talk", "│", "done"],
    ]  # fmt: skip
    assert lines[4].startswith("✓ talk") and lines[5].startswith(f"✓ run {run_id} SUCCEEDED in ")
    assert len(lines) == 6  # each line once
    at = [float(line.split(maxsplit=1)[0].rstrip("s")) for line in err.splitlines()]
    assert at[4] - at[2] > 0.7, "the handler's first line was shown only when the step ended"

    failing = await live.engine.start_run("greet", {"who": "x"})
    await live.engine.orchestrator.wait(failing, 20)
    code, _, err = await sluice("runs", "show", failing, "-f", server=live.url)  # ended already
    assert code == 0 and "✓ run" in err and "log line for x" in err
    code, _, err = await sluice("runs", "show", "r-nope", "--follow", server=live.url)
    assert code == 2 and "r-nope" in err


async def test_runs_show_follow_says_what_a_step_waits_for(live: Served, tmp_path: Path) -> None:
    """A step waiting for its concurrency key is shown waiting, with the reason, then started."""
    first, second = tmp_path / "first", tmp_path / "second"
    ahead = await live.engine.start_run("keyed", {"gate": str(first)})
    run_id = await live.engine.start_run("keyed", {"gate": str(second)})
    follow = asyncio.ensure_future(sluice("runs", "show", run_id, "--follow", server=live.url))
    deadline = time.monotonic() + 20
    while live.engine.orchestrator.keys.reason(run_id, "talk") is None:
        assert time.monotonic() < deadline and not follow.done()
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # several polls while it waits
    first.touch()
    await live.engine.orchestrator.wait(ahead, 20)
    second.touch()
    code, _, err = await asyncio.wait_for(follow, 30)
    assert code == 0, err
    lines = [line.split(maxsplit=1)[1] for line in err.splitlines()]
    assert lines[1] == (
        "… talk         waiting for concurrency key 'one': 1 of 1 attempts running, 0 waiting ahead of it"
    )
    assert lines[2] == "→ talk         started", lines
    assert lines[-1].startswith(f"✓ run {run_id} SUCCEEDED") and len(lines) == 7  # each line once
    at = [float(line.split(maxsplit=1)[0].rstrip("s")) for line in err.splitlines()]
    assert at[2] - at[1] > 0.7, "started while it still waited"


async def _logs(live: Served, run_id: str) -> str:
    url = f"{live.url}/api/v1/runs/{run_id}/logs?step=talk"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.text()


async def test_cancel_and_errors(live: Served) -> None:
    run_id = await live.engine.start_run("sleepy", {})
    code, out, err = await sluice("runs", "cancel", run_id, "--reason", "enough", server=live.url)
    assert code == 0, err
    assert out.strip() == f"run {run_id} CANCELLED"
    code, out, err = await sluice("runs", "cancel", run_id, server=live.url)
    assert code == 2 and err.startswith("sluice: error: run ") and "not running" in err
    code, _, err = await sluice("runs", "show", "r-nope", server=live.url)
    assert code == 2 and "no run 'r-nope'" in err


async def test_triggers_list_pause_and_resume(live: Served) -> None:
    code, out, err = await sluice("triggers", "list", server=live.url)
    assert code == 0, err
    assert out.splitlines()[0].split() == ["TRIGGER", "KIND", "STATE", "NEXT_FIRE"]
    assert out.splitlines()[1].split() == ["greet/hook", "webhook", "active", "-"]
    code, out, err = await sluice("triggers", "pause", "greet/hook", server=live.url)
    assert (code, out.strip()) == (0, "trigger greet/hook paused"), err
    code, out, _ = await sluice("triggers", "pause", "greet/hook", server=live.url)
    assert out.strip() == "trigger greet/hook paused (it was paused already)"
    assert live.engine.pauses.is_paused("greet", "hook")
    code, out, _ = await sluice("triggers", "list", "--json", server=live.url)
    assert json.loads(out)["triggers"][0]["paused"] is True
    code, out, _ = await sluice("triggers", "list", server=live.url)
    assert "paused since " in out.splitlines()[1]
    code, out, _ = await sluice("triggers", "resume", "greet/hook", server=live.url)
    assert (code, out.strip()) == (0, "trigger greet/hook active")
    code, _, err = await sluice("triggers", "pause", "greet", server=live.url)
    assert code == 2 and "WORKFLOW/TRIGGER" in err
    code, _, err = await sluice("triggers", "pause", "greet/nope", server=live.url)
    assert code == 2 and "no trigger 'nope'" in err and "hook" in err


async def test_events_put_and_list(live: Served, tmp_path: Path) -> None:
    detail = tmp_path / "detail.json"
    detail.write_text('{"id": 5}', encoding="utf-8")
    code, out, err = await sluice(
        "events", "put", "--source", "com.example", "--detail-type", "Thing", "--detail", f"@{detail}",
        server=live.url,
    )  # fmt: skip
    assert code == 0 and out.startswith("event ") and out.strip().endswith("accepted"), err
    code, out, _ = await sluice(
        "events", "put", "--source", "com.example", "--detail-type", "Other", "--detail", '{"id": 6}',
        server=live.url,
    )  # fmt: skip
    assert code == 0
    code, out, err = await sluice("events", "put", "--source", "x", "--detail-type", "y", "--detail", "{bad")
    assert code == 2 and "--detail: not valid JSON" in err
    code, out, _ = await sluice("events", "list", "--source", "com.example", "--json", server=live.url)
    events = json.loads(out)["events"]
    assert [e["detail"]["id"] for e in events] == [6, 5]
    code, out, _ = await sluice("events", "list", "--detail-type", "Thing", server=live.url)
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "TIME", "SOURCE", "DETAIL-TYPE", "RESOURCES"] and len(lines) == 2
    code, out, _ = await sluice("events", "list", "--since", str(time.time() + 60), "--json", server=live.url)
    assert json.loads(out)["events"] == []


async def test_unreachable_server_exits_1_with_a_hint() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: refused
        code, _, err = await sluice("runs", "list", server=f"http://127.0.0.1:{port}")
    assert code == 1 and "is `sluice serve` running? set --server" in err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        return await resp.json()


async def test_serve_end_to_end(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    flows = tmp_path / "flows"
    write_flow(flows, FLOW, HANDLERS)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SLUICE_SERVER", "SLUICE_CONFIG")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli", "serve", str(flows), "--port", str(port),
        "--data-dir", str(tmp_path / "data"), "--workers", "1", "--grace", "2",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):  # ready when it says so: the port is bound before this line
            while b"Sluice is running" not in (line := await proc.stdout.readline()):
                assert line, "sluice serve exited before it was ready"
        base = f"http://127.0.0.1:{port}"
        async with http.post(f"{base}/hooks/greet/hook?wait=20", json={"x": 1}) as resp:
            assert resp.status == 200
            answer = await resp.json()
        assert answer["status"] == "SUCCEEDED" and answer["outputs"] == {"greeting": "hello world"}
        run = await _get_json(http, f"{base}/api/v1/runs/{answer['run_id']}")
        assert run["status"] == "SUCCEEDED"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stdout.read(), 15)
        code = await asyncio.wait_for(proc.wait(), 15)
        assert code == 0, rest.decode()
        assert time.monotonic() - started < 10
        assert b"HTTP server stopped" in rest and b"engine stopped" in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
