"""The engine's clients: ``context.sluice`` in a function (Lambda submitting a Batch job) and
``engine.client`` for scripts, against a real engine serving its real HTTP API on a free port,
with real containers."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.api import batch as batch_api
from engine.api.app import HttpService
from engine.api.auth import AuthPolicy
from engine.bus.bus import MAX_DEPTH
from engine.client import Sluice, SluiceError, SluiceSync, WaitTimeout
from engine.engine import Engine, Settings
from engine.executors.docker_api import DockerClient
from tests.support.docker import TEST_IMAGE, TEST_LABEL
from tests.support.engines import write_flow
from workflows.loader import load_dir

pytestmark = pytest.mark.docker

ADMIN = "admin-token-for-the-client-tests-0123456789"
BOX = {"image": TEST_IMAGE, "vcpus": 0.25, "memory": 32 << 20, "network": "none"}

FLOWS = """
name: submitter
steps:
  go:
    function: handlers:go
    timeout: 120s
"""

LOOP = """
name: loop
steps:
  again: {function: handlers:again}
"""

RESUMED = """
name: resumed
steps:
  ask: {function: handlers:ask, input: {gate: "{{ event.detail.gate }}"}, timeout: 60s}
"""

HANDOFF = """
name: handoff
steps:
  make: {function: handlers:make, timeout: 60s}
  pause: {needs: [make], wait: {seconds: 2}}
  use: {needs: [pause], function: handlers:use, input: "{{ steps.make.output }}", timeout: 90s}
"""

QUICK = """
name: quick
steps:
  one: {function: handlers:one}
"""

LISTENS = """
name: listens
triggers:
  - event: {pattern: {source: [com.example.grant]}}
steps:
  one: {function: handlers:one}
"""

NAPPER = """
name: napper
steps:
  nap:
    function: handlers:nap
"""

HANDLERS = f"""
import json, os, pathlib, time

def one(event, context):
    return 1

def make(event, context):
    c = context.sluice
    job = c.submit_job("default", container={{**{BOX!r}, "command": ["true"]}}, array_size=2)
    return {{"job": job["job_id"], "run": c.start_run("quick")}}

def use(event, context):
    c = context.sluice
    return {{"job": c.wait_job(event["job"], timeout_s=60)["status"],
            "child": c.describe_job(event["job"] + ":1")["status"],
            "run": c.wait_run(event["run"], timeout_s=30)["status"]}}

def nap(event, context):
    time.sleep(60)

def ask(event, context):
    while not pathlib.Path(event["gate"]).exists():
        time.sleep(0.02)
    return context.sluice.describe_run(context.run_id)["status"]

def again(event, context):
    return context.sluice.start_run("loop")

def go(event, context):
    os.environ["http_proxy"] = "http://127.0.0.1:9"  # a proxy would see the token: it is not used
    try:
        return _go(event, context)
    finally:
        del os.environ["http_proxy"]

def _go(event, context):
    c = context.sluice
    me = c.describe_run(context.run_id)
    job = c.submit_job("default", container={{**{BOX!r}, "command": ["sh", "-c", "echo from-the-job"]}})
    done = c.wait_job(job["job_id"], timeout_s=90)
    arr = c.submit_job("default", container={{**{BOX!r}, "command": ["true"]}}, array_size=2)
    arr_done = c.wait_job(arr["job_id"], timeout_s=90)
    child = c.describe_job(arr["job_id"] + ":1")["status"]
    logs = c.job_logs(job["job_id"])
    event_id = c.put_event("com.example.fn", "Job Done", {{"job": job["job_id"]}})
    out = {{"me": me["status"], "job": job["job_id"], "status": done["status"], "array": arr_done["status"],
           "child": child, "event": event_id, "logs": logs, "client": repr(c)}}
    # for the test alone: what a leaked token could do after the run (the test tries it)
    pathlib.Path(event["detail"]["leak"]).write_text(json.dumps({{"token": c._token, "url": c.url}}))
    if event["detail"].get("peek"):
        try:
            c.describe_job(event["detail"]["peek"])
            out["peek"] = "allowed"
        except Exception as exc:
            out["peek"] = f"{{exc.status}} {{exc.code}}"
    return out
"""


def flows_dir(tmp_path: Path) -> Path:
    flows = tmp_path / "flows"
    write_flow(flows, FLOWS, HANDLERS)
    write_flow(flows, NAPPER, name="napper.yaml")
    write_flow(flows, LOOP, name="loop.yaml")
    write_flow(flows, RESUMED, name="resumed.yaml")
    write_flow(flows, HANDOFF, name="handoff.yaml")
    write_flow(flows, QUICK, name="quick.yaml")
    write_flow(flows, LISTENS, name="listens.yaml")
    return flows


async def start_served(tmp_path: Path, label: str) -> tuple[str, Engine]:
    """An engine as `sluice serve` composes it for jobs: the HTTP service (with a token) last."""
    settings = Settings(data_dir=tmp_path / "data", workers=2, grace_s=5, port=0)
    engine = Engine(settings, load_dir(flows_dir(tmp_path)))
    http = HttpService(engine, [batch_api.routes(engine)], auth=AuthPolicy("127.0.0.1", ADMIN))
    engine.add_service(http, closer=http.aclose)
    await engine.start()
    assert engine.batch is not None
    engine.batch.labels[TEST_LABEL] = label
    return f"http://127.0.0.1:{http.port}", engine


@pytest.fixture
async def served(
    tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> AsyncIterator[tuple[str, Engine]]:
    base, engine = await start_served(tmp_path, docker_test_label)
    try:
        yield base, engine
    finally:
        await engine.stop(grace_s=0)


async def _get(base: str, path: str, token: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as s, s.get(base + path, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_a_function_submits_a_container_job_and_waits_for_it(
    served: tuple[str, Engine], tmp_path: Path
) -> None:
    base, engine = served
    async with Sluice(base, ADMIN) as admin:  # a job of someone else's, that no run made
        other = await admin.submit_job("default", container={**BOX, "command": ["true"]})
    leak = tmp_path / "leak.json"
    async with asyncio.timeout(150):
        summary = await engine.run_to_end("submitter", {"leak": str(leak), "peek": other["job_id"]})
    assert summary["status"] == "SUCCEEDED", summary["steps"]["go"]["error"]
    out = summary["steps"]["go"]["output"]
    assert out["me"] == "RUNNING" and out["status"] == "SUCCEEDED"
    assert out["array"] == "SUCCEEDED" and out["child"] == "SUCCEEDED"
    assert out["peek"] == "403 not_this_runs"  # another's job is out of the run token's reach
    assert "sluice-run." not in out["client"]  # the client's repr never shows the token
    async with Sluice(base, ADMIN) as admin:
        job = await admin.describe_job(out["job"])
        assert job["status"] == "SUCCEEDED"
        assert job["spec"]["tags"]["sluice:run"] == summary["run_id"]  # submitted on behalf of that run
        assert await admin.job_logs(out["job"]) == out["logs"] == "from-the-job\n"
    # the token is in no event and no answer about the run
    leaked = json.loads(leak.read_text())
    token = leaked["token"]
    assert token.startswith("sluice-run.") and leaked["url"] == base
    status, run = await _get(base, f"/api/v1/runs/{summary['run_id']}", ADMIN)
    assert status == 200 and token not in json.dumps(run)
    status, events = await _get(base, "/api/v1/events?limit=500", ADMIN)
    assert status == 200 and token not in json.dumps(events)
    (done_event,) = [e for e in events["events"] if e["detail-type"] == "Job Done"]
    assert done_event["id"] == out["event"]
    assert done_event["resources"] == [f"sluice:run/{summary['run_id']}"]
    # after the run ended, the token is void
    status, body = await _get(base, f"/api/v1/jobs/{out['job']}", token)
    assert status == 401 and body["error"]["code"] == "run_token_expired"


async def test_a_run_token_reaches_only_its_own_run(served: tuple[str, Engine], tmp_path: Path) -> None:
    base, engine = served
    second = await engine.start_run("napper")
    first = await engine.start_run("napper")
    tokens = engine.orchestrator.tokens
    token = tokens.mint(first)  # the token that run's functions get
    try:
        status, body = await _get(base, f"/api/v1/runs/{first}", token)
        assert status == 200 and body["run_id"] == first
        status, body = await _get(base, f"/api/v1/runs/{second}", token)
        assert status == 403 and body["error"]["code"] == "not_this_runs"
        status, body = await _get(base, "/api/v1/runs", token)  # listing is no run's business
        assert status == 403 and body["error"]["code"] == "not_for_run_tokens"
        forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
        status, body = await _get(base, f"/api/v1/runs/{first}", forged)
        assert status == 401
    finally:
        for run_id in (first, second):
            await engine.orchestrator.cancel(run_id, "test over")
    status, body = await _get(base, f"/api/v1/runs/{first}", token)
    assert status == 401 and body["error"]["code"] == "run_token_expired"


async def test_the_script_clients_say_what_went_wrong(served: tuple[str, Engine]) -> None:
    base, _engine = served
    async with Sluice(base, "not-the-token-but-long-enough") as bad:
        with pytest.raises(SluiceError) as info:
            await bad.describe_run("r-nope")
        assert info.value.status == 401 and info.value.code == "unauthorized"
    async with Sluice(base, ADMIN) as sluice:
        with pytest.raises(SluiceError) as info:
            await sluice.start_run("no-such-flow")
        assert info.value.status == 404 and "GET /api/v1/workflows" in info.value.message
        with pytest.raises(SluiceError) as info:
            await sluice.submit_job("default", container=BOX, array_size=1)
        assert str(info.value).startswith("400 array_size: an integer 2..10000"), str(info.value)  # once
        job = await sluice.submit_job("default", container={**BOX, "command": ["sleep", "5"]})
        with pytest.raises(WaitTimeout) as waited:
            await sluice.wait_job(job["job_id"], timeout_s=0.5)
        assert waited.value.last["status"] in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
        await sluice.request("POST", f"/api/v1/jobs/{job['job_id']}/terminate", {"reason": "test over"})
        done = await sluice.wait_job(job["job_id"], timeout_s=60)
        assert done["status"] == "FAILED"
    sync = SluiceSync(base, ADMIN)
    with pytest.raises(ValueError, match="give a job definition name or a container"):
        sync.submit_job("default")
    assert (await asyncio.to_thread(sync.describe_job, job["job_id"]))["status"] == "FAILED"
    with pytest.raises(SluiceError) as info:
        await asyncio.to_thread(SluiceSync("http://127.0.0.1:9", ADMIN, timeout_s=2).describe_run, "r-x")
    assert info.value.code == "unreachable" and "cannot reach the engine at http://127.0.0.1:9" in str(
        info.value
    )


async def test_a_function_that_starts_its_own_workflow_stops_at_the_chain_limit(
    served: tuple[str, Engine],
) -> None:
    _base, engine = served
    first = await engine.start_run("loop")

    def chain(conn: sqlite3.Connection) -> list[tuple[str, int, str]]:
        return conn.execute(
            "SELECT id, depth, status FROM runs WHERE workflow='loop' ORDER BY rowid"
        ).fetchall()

    deadline = time.monotonic() + 60
    while True:
        runs = await engine.store.read(chain)
        if runs and runs[-1][2] in ("SUCCEEDED", "FAILED") and all(r[2] != "RUNNING" for r in runs):
            break
        assert time.monotonic() < deadline, runs
        await asyncio.sleep(0.05)
    assert runs[0][0] == first
    assert [depth for _, depth, _ in runs] == list(range(MAX_DEPTH + 1))
    assert [status for _, _, status in runs] == ["SUCCEEDED"] * MAX_DEPTH + ["FAILED"]
    last = await engine.describe_run(runs[-1][0])
    assert last is not None and "chain_too_deep" in last["steps"]["again"]["error"]["errorMessage"]


async def test_a_step_resumed_after_a_restart_reaches_the_api(
    tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> None:
    """Recovery resumes steps before the HTTP service binds (it starts last); they wait for it."""
    gate = tmp_path / "gate"
    _base, first = await start_served(tmp_path, docker_test_label)
    try:
        run_id = await first.start_run("resumed", {"gate": str(gate)})
        deadline = time.monotonic() + 10
        while (await first.describe_run(run_id) or {}).get("status") != "RUNNING":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # the handler is in its loop
    finally:
        await first.stop(grace_s=0)  # the attempt is cut off; the run resumes on the next start
    gate.touch()
    _base, second = await start_served(tmp_path, docker_test_label)
    try:
        assert await second.orchestrator.wait(run_id, 30) == "SUCCEEDED"
        summary = await second.describe_run(run_id)
        assert summary is not None and summary["steps"]["ask"]["output"] == "RUNNING"
        assert summary["steps"]["ask"]["attempts"] == 2
    finally:
        await second.stop(grace_s=0)


async def test_what_a_run_made_is_still_its_own_after_a_restart(
    tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> None:
    """Step ``make`` submits a job and starts a run; the engine restarts while the run waits; step
    ``use`` (a new attempt, with a new token) still reaches both: what a run made is its own for
    the run's whole life, not only for the engine process that saw it being made."""
    _base, first = await start_served(tmp_path, docker_test_label)
    try:
        run_id = await first.start_run("handoff", {})
        deadline = time.monotonic() + 60
        while (await first.describe_run(run_id) or {})["steps"].get("pause", {}).get("status") != "RUNNING":
            assert time.monotonic() < deadline, await first.describe_run(run_id)
            await asyncio.sleep(0.02)
    finally:
        await first.stop(grace_s=0)
    _base, second = await start_served(tmp_path, docker_test_label)
    try:
        status = await second.orchestrator.wait(run_id, 90)
        assert status == "SUCCEEDED", json.dumps(await second.describe_run(run_id), indent=1)
        summary = await second.describe_run(run_id)
        assert summary is not None
        done = {"job": "SUCCEEDED", "child": "SUCCEEDED", "run": "SUCCEEDED"}
        assert summary["steps"]["use"]["output"] == done
    finally:
        await second.stop(grace_s=0)


async def test_a_resource_written_into_an_event_grants_a_run_nothing(served: tuple[str, Engine]) -> None:
    """What the store says a run made comes from what the engine wrote: an event that names
    ``sluice:run/<id>`` among its resources does not make the run it starts that run's own."""
    base, engine = served
    napper = await engine.start_run("napper", {})
    token = engine.orchestrator.tokens.mint(napper)
    deadline = time.monotonic() + 10
    while engine.orchestrator.tokens.run_of(token) is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    entry = {"Source": "com.example.grant", "DetailType": "Grant", "Detail": "{}",
             "Resources": [f"sluice:run/{napper}"]}  # fmt: skip
    headers = {"Authorization": f"Bearer {ADMIN}"}
    url = f"{base}/api/v1/events"
    async with aiohttp.ClientSession() as s, s.post(url, json={"Entries": [entry]}, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
    deadline = time.monotonic() + 10
    while not (found := [r for r in await engine.store.read(_runs_of("listens"))]):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    status, body = await _get(base, f"/api/v1/runs/{found[0]}", token)
    assert status == 403 and body["error"]["code"] == "not_this_runs", body
    assert (await _get(base, f"/api/v1/runs/{napper}", token))[0] == 200  # its own run it reaches


def _runs_of(workflow: str) -> Any:
    return lambda c: [r[0] for r in c.execute("SELECT id FROM runs WHERE workflow=?", (workflow,))]
