"""``${env:...}`` values are secrets wherever they go, against a real ``sluice serve`` and Docker.

A workflow takes secrets from the environment into a container's env (alone and inside a
string), a param's default and description, and a function step's input. The run succeeds, the
container and the function see the real values, and no API answer, event, dashboard page,
server log line or byte of ``sluice.db`` holds any of them. A function step sees only the
secrets its step names, not the engine's other variables.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.engines import MakeEngine, write_flow
from tests.support.serving import free_port, healthy, serve
from tests.support.waiting import wait_until, wait_until_sync

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

SECRETS = {
    "SLUICE_T_ENV": "env-secret-4f1d9a",
    "SLUICE_T_PARAM": "param-secret-77c2e0",
    "SLUICE_T_DESC": "desc-secret-0b93aa",
    "SLUICE_T_FN": "fn-secret-e5d1c4",
    "SLUICE_API_TOKEN": "api-token-secret-3b8c27d4e1",
}

FLOW = """
name: keyed
description: Uses secrets from the environment.
triggers:
  - webhook: {name: go, auth: none}
params:
  token:
    type: string
    default: "${env:SLUICE_T_PARAM}"
    description: "the token (${env:SLUICE_T_DESC})"
steps:
  fn:
    function: handlers:probe
    input: {named: "${env:SLUICE_T_FN}", token: "{{ params.token }}"}
  box:
    needs: [fn]
    container:
      image: busybox:1.36
      command: [sh, -c, 'echo "$API_TOKEN|$FROM_PARAM|$PLAIN" > /out/seen']
      env:
        API_TOKEN: "Bearer ${env:SLUICE_T_ENV}"
        FROM_PARAM: "{{ params.token }}"
        PLAIN: "{{ steps.fn.output.size }}"
      memory: 32MiB
      vcpus: 0.25
      network: none
      volumes: ["BOX:/out"]
"""

HANDLERS = """
import json, os
from pathlib import Path


def probe(event, context):
    names = sorted(k for k in os.environ if k.startswith(("SLUICE_T_", "SLUICE_API")))
    seen = {"input": event, "environ": names}
    Path(__file__).with_name("fn-saw.json").write_text(json.dumps(seen))
    print("the handler prints its token:", event["token"])
    context.logger.info("and logs it: %s", event["named"])
    return {"size": 3, "echo": event["token"]}
"""


def fetch(base: str, path: str, body: bytes | None = None) -> tuple[int, str]:
    req = urllib.request.Request(base + path, data=body, method="POST" if body is not None else "GET")
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {SECRETS['SLUICE_API_TOKEN']}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def leaks(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


def test_env_secrets_reach_the_container_and_the_function_but_no_answer_event_log_or_store(
    tmp_path: Path,
) -> None:
    flows, box = tmp_path / "flows", tmp_path / "box"
    box.mkdir()
    write_flow(flows, FLOW.replace("BOX", str(box)), HANDLERS)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve(tmp_path, port, grace_s=2, verbose=True, env={"SLUICE_VOLUME_ALLOW": str(box), **SECRETS})
    try:
        wait_until_sync(lambda: healthy(base), 30, what="the server to start")
        status, answer = fetch(base, "/hooks/keyed/go", b"{}")
        assert status == 202, answer
        (run_id,) = json.loads(answer)["run_ids"]

        def ended() -> dict[str, Any] | None:
            run = json.loads(fetch(base, f"/api/v1/runs/{run_id}")[1])
            return run if run["status"] in ("SUCCEEDED", "FAILED") else None

        run = wait_until_sync(ended, 90, what="the run to end")
        assert run["status"] == "SUCCEEDED", run

        # the container and the function saw the real values
        env, param, fn = SECRETS["SLUICE_T_ENV"], SECRETS["SLUICE_T_PARAM"], SECRETS["SLUICE_T_FN"]
        assert (box / "seen").read_text() == f"Bearer {env}|{param}|3\n"
        saw = json.loads((flows / "fn-saw.json").read_text())
        assert saw["input"] == {"named": fn, "token": param}
        assert saw["environ"] == [], "a function step saw secrets its step does not name"

        # ... and nothing that leaves the engine holds them
        jobs = json.loads(fetch(base, "/api/v1/jobs")[1])["jobs"]
        assert jobs, "the container step made no job"
        paths = [
            "/api/v1/workflows",
            "/api/v1/runs",
            f"/api/v1/runs/{run_id}",
            f"/api/v1/runs/{run_id}/logs",
            "/api/v1/events",
            "/api/v1/jobs",
            *(f"/api/v1/jobs/{j['job_id']}" for j in jobs),
            *(f"/api/v1/jobs/{j['job_id']}/logs" for j in jobs),
            "/",
            f"/runs/{run_id}",
            "/workflows",
            "/batch",
            "/events",
            "/metrics",
        ]
        answers = {path: fetch(base, path) for path in paths}
        for path, (status, text) in answers.items():
            assert status == 200, f"{path}: {status} {text[:200]}"
            assert leaks(text) == [], f"{path} shows {leaks(text)}: {text[:2000]}"
        job = json.loads(answers[f"/api/v1/jobs/{jobs[0]['job_id']}"][1])
        shown = json.dumps(job)
        assert "${env:SLUICE_T_ENV}" in shown, "the job should show the reference it resolves at launch"
        logs = answers[f"/api/v1/runs/{run_id}/logs"][1]
        assert "the handler prints its token: ${env:SLUICE_T_PARAM}" in logs

        # a retry starts from the stored params, which hold the reference: the step gets the value
        (flows / "fn-saw.json").unlink()
        status, answer = fetch(base, f"/api/v1/runs/{run_id}/retry", b"{}")
        assert status == 201, answer
        run_id = json.loads(answer)["run_id"]
        assert wait_until_sync(ended, 90, what="the retried run to end")["status"] == "SUCCEEDED"
        assert json.loads((flows / "fn-saw.json").read_text())["input"] == {"named": fn, "token": param}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    data = tmp_path / ".sluice"
    for path in sorted(data.glob("sluice.db*")):
        raw = path.read_bytes().decode("latin-1")
        assert leaks(raw) == [], f"{path.name} stores {leaks(raw)} in clear"
    log = (tmp_path / "serve.log").read_text()
    assert leaks(log) == [], f"the server log shows {leaks(log)}"


RESUMED = """
name: resumed
params:
  token: {default: "${env:SLUICE_T_RESUME}"}
steps:
  wait_for_go:
    function: handlers:wait_for_go
    input: {token: "{{ params.token }}"}
"""

WAIT_FOR_GO = """
import json, time
from pathlib import Path

HERE = Path(__file__).parent


def wait_for_go(event, context):
    (HERE / f"saw-{context.attempt}.json").write_text(json.dumps(event))
    while not (HERE / "go").exists():
        time.sleep(0.02)
    return {}
"""


async def test_a_resumed_run_gets_the_secret_of_its_param_default_not_its_reference(
    tmp_path: Path, make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store keeps ``${env:NAME}`` where the secret was; the engine that resumes the run
    hands the step the value again (from the param's default), never the reference text."""
    monkeypatch.setenv("SLUICE_T_RESUME", "resume-secret-5a1c")
    flows, data = tmp_path / "flows", tmp_path / "data"
    write_flow(flows, RESUMED, WAIT_FOR_GO)
    first = await make_engine(flows, data_dir=data)
    await first.start_run("resumed", {})
    await wait_until(lambda: (flows / "saw-1.json").exists(), 30, what="the first attempt")
    await first.stop(grace_s=0)
    (flows / "go").touch()
    second = await make_engine(flows, data_dir=data)
    seen = await wait_until(lambda: sorted(flows.glob("saw-*.json"))[1:], 30, what="the resumed attempt")
    assert json.loads(seen[0].read_text()) == {"token": "resume-secret-5a1c"}
    await second.stop(grace_s=5)
    for path in data.glob("sluice.db*"):
        assert b"resume-secret-5a1c" not in path.read_bytes(), path.name


IN_COMMAND = """
name: argv
params:
  token: {default: "${env:SLUICE_T_ARGV}"}
steps:
  box:
    container:
      image: busybox:1.36
      command: [echo, "{{ params.token }}"]
      memory: 32MiB
"""


@pytest.mark.docker
async def test_a_secret_in_a_containers_command_fails_the_step_and_says_where_it_belongs(
    tmp_path: Path, make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command is shown in the job's description (as Batch shows it): the secret goes in env.
    ``validate`` refuses ``${env:...}`` written in a command; one rendered into it is caught here."""
    monkeypatch.setenv("SLUICE_T_ARGV", "argv-secret-9d0e")
    write_flow(tmp_path / "flows", IN_COMMAND)
    engine = await make_engine(tmp_path / "flows")
    run_id = await engine.start_run("argv", {})
    await engine.orchestrator.wait(run_id, 60)
    run = await engine.describe_run(run_id)
    assert run is not None and run["status"] == "FAILED"
    shown = json.dumps(run)
    assert "pass it through env:" in shown and "argv-secret-9d0e" not in shown
