"""The management API and dashboard over real HTTP against a started engine."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.engine import Engine
from tests.support.engines import write_flow
from tests.support.http import SECRET, TOKEN, Serve, Served
from tests.support.waiting import wait_until

FLOWS: dict[str, str] = {
    "greet.yaml": f"""
        name: greet
        description: Say hello to someone.
        triggers:
          - webhook: {{name: hook, secret: "{SECRET}"}}
          - webhook: {{name: tok, token: "{TOKEN}"}}
          - schedule: rate(1 day)
        params:
          who: {{type: string, required: true, description: whom to greet}}
          times: {{type: integer, default: 1}}
        steps:
          hello: {{function: "handlers:hello", input: {{who: "{{{{ params.who }}}}"}}}}
        outputs: {{greeting: "{{{{ steps.hello.output }}}}"}}
        """,
    "chatty.yaml": """
        name: chatty
        params: {gate: {type: string}}
        steps:
          talk: {function: "handlers:chatty", input: {gate: "{{ params.gate }}"}}
        """,
    "sleepy.yaml": """
        name: sleepy
        steps:
          nap: {wait: 60s}
        """,
    "orders.yaml": """
        name: orders
        triggers:
          - event:
              pattern:
                source: [com.example.shop]
                detail-type: [Order Placed]
                detail: {total: [{numeric: [">", 10]}]}
            input: {order: "{{ event.detail.id }}"}
        params: {order: {type: integer}}
        steps:
          ship: {function: "handlers:hello", input: {who: "{{ params.order }}"}}
        """,
}

HANDLERS = """
import os, time

def hello(event, context):
    print("hello-log-line for", event["who"])
    return "hello " + str(event["who"])

def chatty(event, context):
    print("working on", event["gate"], flush=True)
    deadline = time.monotonic() + 20
    while not os.path.exists(event["gate"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    print("done")
    return "ok"
"""


@pytest.fixture
async def api(serve: Serve, tmp_path: Path) -> Served:
    flows = tmp_path / "flows"
    for name, text in FLOWS.items():
        write_flow(flows, text, HANDLERS, name=name)
    return await serve(flows)


async def call(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"} if method != "GET" else {}  # the API's CSRF rule
    async with http.request(method, url, data=data, headers=headers) as resp:
        text = await resp.text()
        if resp.content_type == "application/json":
            return resp.status, json.loads(text)
        return resp.status, text


async def until(engine: Engine, sql: str, args: tuple[Any, ...] = (), timeout_s: float = 20) -> list[Any]:
    """Poll the store until ``sql`` returns rows (a condition with a deadline, never a fixed sleep)."""
    rows: list[Any] = await wait_until(
        lambda: engine.store.read(lambda c: c.execute(sql, args).fetchall()), timeout_s, what=sql
    )
    return rows


async def test_health_and_workflows_hide_secrets(api: Served, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "GET", f"{api.url}/api/v1/health")
    assert status == 200 and body["status"] == "ok" and body["workflows"] == len(FLOWS)
    assert body["active_runs"] == 0 and body["held_runs"] == 0
    async with http.get(f"{api.url}/api/v1/workflows") as resp:
        text = await resp.text()
    assert SECRET not in text and TOKEN not in text
    greet = next(w for w in json.loads(text)["workflows"] if w["name"] == "greet")
    assert greet["description"] == "Say hello to someone."
    assert greet["params"]["who"] == {
        "type": "string",
        "default": None,
        "required": True,
        "description": "whom to greet",
    }
    kinds = [(t["kind"], t["name"]) for t in greet["triggers"]]
    assert kinds == [("webhook", "hook"), ("webhook", "tok"), ("schedule", "schedule-1")]
    assert greet["triggers"][0]["url"] == "/hooks/greet/hook"


async def test_start_get_list_retry_and_logs(api: Served, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "POST", f"{api.url}/api/v1/workflows/greet/runs", {"who": "Ada"})
    assert status == 201
    run_id = body["run_id"]
    await api.engine.orchestrator.wait(run_id, 20)
    status, run = await call(http, "GET", f"{api.url}/api/v1/runs/{run_id}")
    assert status == 200 and run["status"] == "SUCCEEDED" and run["outputs"] == {"greeting": "hello Ada"}
    assert run["steps"]["hello"]["status"] == "SUCCEEDED"
    [attempt] = run["attempts"]["hello"]
    assert attempt["attempt"] == 1 and attempt["status"] == "SUCCEEDED" and "log_path" not in attempt

    status, text = await call(http, "GET", f"{api.url}/api/v1/runs/{run_id}/logs?step=hello&attempt=1")
    assert status == 200 and "hello-log-line for Ada" in text
    status, text = await call(http, "GET", f"{api.url}/api/v1/runs/{run_id}/logs?tail=1")
    assert status == 200 and "hello attempt 1" in text
    status, body = await call(http, "GET", f"{api.url}/api/v1/runs/{run_id}/logs?step=nope")
    assert status == 404 and body["error"]["code"] == "no_attempts"

    status, retry = await call(http, "POST", f"{api.url}/api/v1/runs/{run_id}/retry")
    assert status == 201 and retry["retry_of"] == run_id and retry["run_id"] != run_id
    await api.engine.orchestrator.wait(retry["run_id"], 20)
    again = await api.engine.describe_run(retry["run_id"])
    assert again is not None and again["status"] == "SUCCEEDED" and again["params"] == run["params"]
    event = json.loads(
        (await until(api.engine, "SELECT body FROM events WHERE id=?", (again["event_id"],)))[0][0]
    )
    assert event["source"] == "sluice.manual" and event["detail-type"] == "Retry Run"
    assert event["detail"]["retry_of"] == run_id

    status, page1 = await call(http, "GET", f"{api.url}/api/v1/runs?workflow=greet&limit=1")
    assert status == 200 and [r["run_id"] for r in page1["runs"]] == [retry["run_id"]]
    assert page1["runs"][0]["duration_s"] is not None
    status, page2 = await call(
        http, "GET", f"{api.url}/api/v1/runs?workflow=greet&limit=1&before={page1['next']}"
    )
    assert [r["run_id"] for r in page2["runs"]] == [run_id]
    status, page3 = await call(
        http, "GET", f"{api.url}/api/v1/runs?workflow=greet&limit=1&before={page2['next']}"
    )
    assert page3 == {"runs": [], "next": None}
    status, failed = await call(http, "GET", f"{api.url}/api/v1/runs?status=FAILED")
    assert failed["runs"] == []


async def test_cancel_a_waiting_run(api: Served, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "POST", f"{api.url}/api/v1/workflows/sleepy/runs")
    assert status == 201
    run_id = body["run_id"]
    await until(api.engine, "SELECT 1 FROM steps WHERE run_id=? AND status='RUNNING'", (run_id,))
    status, body = await call(http, "POST", f"{api.url}/api/v1/runs/{run_id}/cancel", {"reason": "not today"})
    assert status == 200 and body == {"run_id": run_id, "status": "CANCELLED"}
    run = await api.engine.describe_run(run_id)
    assert run is not None and run["status"] == "CANCELLED" and "not today" in (run["reason"] or "")
    status, body = await call(http, "POST", f"{api.url}/api/v1/runs/{run_id}/cancel")
    assert status == 409 and "CANCELLED" in body["error"]["message"]


async def test_put_events_mixed_entries_start_a_pattern_workflow(
    api: Served, http: aiohttp.ClientSession
) -> None:
    entries = [
        {
            "Source": "com.example.shop",
            "DetailType": "Order Placed",
            "Detail": json.dumps({"id": 7, "total": 50}),
        },
        {"DetailType": "Order Placed", "Detail": {}},
        {"Source": "com.example.shop", "DetailType": "Order Placed", "Detail": "{not json"},
        {"Source": "com.example.shop", "DetailType": "Order Placed", "Detail": '{"total": NaN}'},
        {"Source": "com.example.shop", "DetailType": "Order Placed", "Detail": {"id": 8, "total": 5}},
        {
            "Source": "com.example.other",
            "DetailType": "Ping",
            "Resources": ["a"],
            "Time": "2026-01-02T03:04:05Z",
        },
    ]
    status, body = await call(http, "POST", f"{api.url}/api/v1/events", {"Entries": entries})
    assert status == 200 and body["FailedEntryCount"] == 3
    ok = [e for e in body["Entries"] if "EventId" in e]
    assert len(ok) == 3
    assert (
        body["Entries"][1]["ErrorCode"] == "InvalidArgument"
        and "Source" in body["Entries"][1]["ErrorMessage"]
    )
    assert "Detail is not valid JSON" in body["Entries"][2]["ErrorMessage"]
    assert "NaN is not JSON" in body["Entries"][3]["ErrorMessage"]
    rows = await until(api.engine, "SELECT id, status FROM runs WHERE workflow='orders'")
    assert len(rows) == 1  # total 5 does not match the numeric pattern
    await api.engine.orchestrator.wait(rows[0][0], 20)
    run = await api.engine.describe_run(rows[0][0])
    assert run is not None and run["status"] == "SUCCEEDED" and run["params"] == {"order": 7}

    status, listed = await call(http, "GET", f"{api.url}/api/v1/events?source=com.example.shop")
    assert [e["detail"]["id"] for e in listed["events"]] == [8, 7]  # newest first
    status, listed = await call(http, "GET", f"{api.url}/api/v1/events?detail_type=Ping")
    [ping] = listed["events"]
    assert ping["time"] == "2026-01-02T03:04:05Z" and ping["resources"] == ["a"]
    future = time.time() + 3600
    status, listed = await call(http, "GET", f"{api.url}/api/v1/events?since={future}")
    assert listed["events"] == []
    status, listed = await call(http, "GET", f"{api.url}/api/v1/events?until=2000-01-01T00:00:00Z&limit=5")
    assert listed["events"] == []
    status, listed = await call(http, "GET", f"{api.url}/api/v1/events?limit=2")
    assert len(listed["events"]) == 2


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/api/v1/nope", None, 404, "not_found"),
        ("GET", "/api/v1/runs/r-missing", None, 404, "unknown_run"),
        ("POST", "/api/v1/runs/r-missing/cancel", None, 404, "unknown_run"),
        ("GET", "/api/v1/runs?limit=abc", None, 400, "bad_param"),
        ("GET", "/api/v1/runs?before=r-nope", None, 400, "bad_cursor"),
        ("GET", "/api/v1/events?since=yesterday", None, 400, "bad_param"),
        ("POST", "/api/v1/workflows/ghost/runs", {}, 404, "unknown_workflow"),
        ("POST", "/api/v1/workflows/greet/runs", {"times": 2}, 400, "bad_input"),
        ("POST", "/api/v1/workflows/greet/runs", b"{oops", 400, "bad_json"),
        ("POST", "/api/v1/workflows/greet/runs", b'{"times": Infinity}', 400, "bad_json"),
        ("POST", "/api/v1/workflows/greet/runs", [1], 400, "bad_body"),
        ("POST", "/api/v1/events", {"Entries": []}, 400, "bad_body"),
        ("POST", "/api/v1/events", {"Entries": [{}] * 11}, 400, "bad_body"),
        ("DELETE", "/api/v1/health", None, 405, "method_not_allowed"),
    ],
)
async def test_errors_are_json(
    api: Served,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any,
    status: int,
    code: str,
) -> None:
    got, answer = await call(http, method, api.url + path, body)
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert answer["error"]["message"]


async def test_dashboard_pages_escape_values(api: Served, http: aiohttp.ClientSession) -> None:
    status, body = await call(
        http, "POST", f"{api.url}/api/v1/workflows/greet/runs", {"who": "<script>x</script>"}
    )
    run_id = body["run_id"]
    await api.engine.orchestrator.wait(run_id, 20)
    status, page = await call(http, "GET", f"{api.url}/")
    assert status == 200 and run_id in page and 'data-live="fragment"' in page  # live over SSE, no reload
    assert f'href="/runs/{run_id}"' in page and "SUCCEEDED" in page
    status, page = await call(http, "GET", f"{api.url}/runs/{run_id}")
    assert status == 200 and "hello" in page and "attempt 1" in page
    assert "<script>x</script>" not in page
    status, _ = await call(http, "GET", f"{api.url}/runs/r-missing")
    assert status == 404


async def test_route_groups_are_added(serve: Serve, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """The composition root adds route groups (batch jobs, notifications) to the HTTP service."""
    from aiohttp import web

    from engine.api.app import HttpService

    flows = tmp_path / "flows"
    write_flow(flows, FLOWS["sleepy.yaml"])
    served = await serve(flows)

    async def ping(request: web.Request) -> web.Response:
        return web.json_response({"pong": True})

    extra = HttpService(served.engine, [lambda app: app.router.add_get("/api/v1/ping", ping)])
    await extra.start()
    try:
        _, body = await call(http, "GET", f"http://127.0.0.1:{extra.port}/api/v1/ping")
        assert body == {"pong": True}
    finally:
        await extra.aclose()


async def test_logs_refuse_paths_outside_the_data_dir(
    api: Served, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.log"
    outside.write_text("private text\n", encoding="utf-8")
    run_id = await api.engine.start_run("greet", {"who": "Bo"})
    await api.engine.orchestrator.wait(run_id, 20)
    await api.engine.store.write(
        lambda c: c.execute(
            "INSERT INTO attempts (run_id, step, idx, attempt, status, started_at, log_path) "
            "VALUES (?, 'hello', -1, 9, 'FAILED', 0, ?)",
            (run_id, str(outside)),
        )
    )
    status, text = await call(http, "GET", f"{api.url}/api/v1/runs/{run_id}/logs")
    assert status == 200 and "hello-log-line for Bo" in text and "private text" not in text
    status, page = await call(http, "GET", f"{api.url}/runs/{run_id}")
    assert status == 200 and "private text" not in page


async def test_a_running_function_attempts_output_is_readable_before_it_ends(
    api: Served, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    status, body = await call(http, "POST", f"{api.url}/api/v1/workflows/chatty/runs", {"gate": str(gate)})
    assert status == 201
    run_id, logs = body["run_id"], f"{api.url}/api/v1/runs/{body['run_id']}/logs?step=talk"
    deadline = time.monotonic() + 20
    while True:  # the attempt printed its first line and now waits for the gate
        status, text = await call(http, "GET", logs)
        if "working on" in text:
            break
        assert time.monotonic() < deadline, f"no live output; last answer {status}: {text!r}"
        await asyncio.sleep(0.05)
    assert status == 200 and "done" not in text
    assert (await api.engine.describe_run(run_id))["status"] == "RUNNING"
    async with http.get(logs) as resp:  # the cursor of what was printed so far (from the scratch file)
        cursor = resp.headers["Sluice-Log-Cursor"]
    gate.touch()
    assert await api.engine.orchestrator.wait(run_id, 20) == "SUCCEEDED"
    status, text = await call(http, "GET", logs)  # now from the attempt's own log file
    assert status == 200 and "working on" in text and "done" in text
    status, text = await call(http, "GET", f"{logs}&after={cursor}")  # what `logs --follow` asks
    assert (status, text) == (200, "done\n")
    status, body = await call(http, "GET", f"{logs}&after=bm90LWEtY3Vyc29y")
    assert status == 400 and body["error"]["code"] == "bad_cursor"


async def test_put_events_refuses_the_engines_own_sources(api: Served, http: aiohttp.ClientSession) -> None:
    """A caller cannot forge a run's or a job's state change (a pattern on ``sluice.run`` SUCCEEDED
    would start the next workflow of a chain): ``sluice.*`` and ``aws.*`` are refused, as the AWS
    endpoint refuses them, and nothing is stored."""
    forged = [
        {"Source": "sluice.run", "DetailType": "Run State Change", "Detail": {"status": "SUCCEEDED"}},
        {"Source": "aws.batch", "DetailType": "Batch Job State Change", "Detail": {}},
    ]
    status, body = await call(http, "POST", f"{api.url}/api/v1/events", {"Entries": forged})
    assert status == 200 and body["FailedEntryCount"] == 2, body
    for answer, source in zip(body["Entries"], ("sluice.run", "aws.batch"), strict=True):
        assert answer["ErrorCode"] == "NotAuthorizedForSource"
        assert answer["ErrorMessage"].startswith(f"Source {source} is reserved"), answer
    status, listed = await call(http, "GET", f"{api.url}/api/v1/events?detail_type=Batch Job State Change")
    assert listed["events"] == []
