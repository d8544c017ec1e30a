"""Webhooks over real HTTP: auth, body kinds, limits, schema, idempotency, ?wait, commit-before-202."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from engine.engine import Engine
from tests.support.engines import write_flow
from tests.support.http import SECRET, TOKEN, Serve, Served
from triggers.base import EmitResult
from triggers.webhook import WebhookEndpoint
from workflows.spec import WebhookTrigger

HOOKS_FLOW = f"""
name: hooked
triggers:
  - webhook: {{name: signed, secret: "{SECRET}"}}
  - webhook: {{name: stamped, secret: "{SECRET}", timestamp_header: X-Timestamp, tolerance: 60s}}
  - webhook: {{name: bearer, token: "{TOKEN}"}}
  - webhook:
      name: typed
      auth: none
      max_body: 1KiB
      schema: {{type: object, required: [n], properties: {{n: {{type: integer}}}}}}
  - webhook: {{name: open, auth: none}}
steps:
  echo: {{function: "handlers:echo"}}
outputs:
  body: "{{{{ steps.echo.output }}}}"
"""

SLOW_FLOW = """
name: slow
triggers:
  - webhook: {name: go, auth: none}
steps:
  pause: {wait: 5s}
"""

HANDLERS = """
def echo(event, context):
    print("echo got", event["detail"]["body"])
    return event["detail"]["body"]
"""


@pytest.fixture
async def hooks(serve: Serve, tmp_path: Path) -> Served:
    flows = tmp_path / "flows"
    write_flow(flows, HOOKS_FLOW, HANDLERS)
    write_flow(flows, SLOW_FLOW, name="slow.yaml")
    return await serve(flows)


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def count(engine: Engine, table: str) -> int:
    """Rows of ``table``; for ``events`` only webhook ones (runs add their own state-change events)."""
    where = " WHERE source='sluice.webhook'" if table == "events" else ""
    sql = f"SELECT COUNT(*) FROM {table}{where}"
    return int(await engine.store.read(lambda c: c.execute(sql).fetchone()[0]))


async def post(
    http: aiohttp.ClientSession, url: str, body: Any = b"", **headers: str
) -> tuple[int, Any, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers.setdefault("Content-Type", "application/json")
    async with http.post(url, data=data, headers=headers) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None, resp.headers


async def test_signed_webhook_is_committed_before_202_and_runs(
    hooks: Served, http: aiohttp.ClientSession
) -> None:
    body = json.dumps({"order": 7, "note": "{{ 7*7 }}"}).encode()
    url = f"{hooks.url}/hooks/hooked/signed?team=ops"
    status, answer, _ = await post(
        http, url, body, **{"X-Hub-Signature-256": sign(body), "X-GitHub-Event": "push", "X-Custom": "c"}
    )
    assert status == 202, answer
    run_id = answer["run_ids"][0]
    assert answer["status_url"] == f"/api/v1/runs/{run_id}"
    # the event row exists the moment the answer arrived: 202 means committed
    stored = await hooks.engine.store.read(
        lambda c: c.execute("SELECT body FROM events WHERE id=?", (answer["event_id"],)).fetchone()
    )
    event = json.loads(stored[0])
    assert event["source"] == "sluice.webhook" and event["detail-type"] == "Webhook Received"
    assert event["resources"] == ["webhook/hooked/signed"]
    detail = event["detail"]
    assert detail["body"] == {"order": 7, "note": "{{ 7*7 }}"}
    assert detail["query"] == {"team": "ops"} and detail["webhook"] == "signed"
    assert detail["source_ip"] == "127.0.0.1"
    assert detail["headers"]["x-github-event"] == "push" and detail["headers"]["x-custom"] == "c"
    assert "x-hub-signature-256" not in detail["headers"]
    assert SECRET not in stored[0]
    await hooks.engine.orchestrator.wait(run_id, 20)
    done = await hooks.engine.describe_run(run_id)
    assert done is not None and done["status"] == "SUCCEEDED"
    assert done["outputs"] == {"body": {"order": 7, "note": "{{ 7*7 }}"}}


async def test_bad_or_missing_signature_is_401_and_stores_nothing(
    hooks: Served, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = b'{"a": 1}'
    url = f"{hooks.url}/hooks/hooked/signed"
    status, answer, _ = await post(http, url, body, **{"X-Hub-Signature-256": sign(body, "wrong")})
    assert status == 401 and answer["error"]["code"] == "bad_signature"
    status, answer, _ = await post(http, url, body)
    assert status == 401 and "missing X-Hub-Signature-256" in answer["error"]["message"]
    status, answer, _ = await post(http, url, body, **{"X-Hub-Signature-256": "md5=abc"})
    assert status == 401
    assert await count(hooks.engine, "events") == 0
    assert SECRET not in caplog.text


async def test_timestamped_signature_refuses_stale_and_replayed(
    hooks: Served, http: aiohttp.ClientSession
) -> None:
    url = f"{hooks.url}/hooks/hooked/stamped"
    body = b'{"fresh": true}'
    now = str(int(time.time()))
    headers = {"X-Timestamp": now, "X-Hub-Signature-256": sign(now.encode() + b"." + body)}
    status, answer, _ = await post(http, url, body, **headers)
    assert status == 202, answer
    # the same signature over the body alone (without the timestamp) is refused
    status, _, _ = await post(http, url, body, **{"X-Timestamp": now, "X-Hub-Signature-256": sign(body)})
    assert status == 401
    old = str(int(time.time()) - 3600)  # a captured request replayed an hour later
    headers = {"X-Timestamp": old, "X-Hub-Signature-256": sign(old.encode() + b"." + body)}
    status, answer, _ = await post(http, url, body, **headers)
    assert status == 401 and answer["error"]["code"] == "stale_timestamp"
    status, answer, _ = await post(http, url, body, **{"X-Hub-Signature-256": sign(body)})
    assert status == 401 and "X-Timestamp" in answer["error"]["message"]


async def test_bearer_token(hooks: Served, http: aiohttp.ClientSession) -> None:
    url = f"{hooks.url}/hooks/hooked/bearer"
    status, _, _ = await post(http, url, {"x": 1}, Authorization=f"Bearer {TOKEN}")
    assert status == 202
    status, answer, _ = await post(http, url, {"x": 1}, Authorization="Bearer nope")
    assert status == 401 and TOKEN not in json.dumps(answer)
    status, _, _ = await post(http, url, {"x": 1})
    assert status == 401
    sql = "SELECT body FROM events WHERE source='sluice.webhook'"
    event = (await hooks.engine.store.read(lambda c: c.execute(sql).fetchall()))[0][0]
    assert TOKEN not in event and "authorization" not in json.loads(event)["detail"]["headers"]


async def test_form_body_becomes_an_object(hooks: Served, http: aiohttp.ClientSession) -> None:
    body = b"name=Ada+Lovelace&tag=a&tag=b&empty="
    status, answer, _ = await post(
        http,
        f"{hooks.url}/hooks/hooked/open?wait=20",
        body,
        **{"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200, answer
    assert answer["status"] == "SUCCEEDED"
    assert answer["outputs"] == {"body": {"name": "Ada Lovelace", "tag": ["a", "b"], "empty": ""}}


async def test_error_codes(hooks: Served, http: aiohttp.ClientSession) -> None:
    base = f"{hooks.url}/hooks/hooked"
    status, answer, _ = await post(http, f"{hooks.url}/hooks/hooked/nope", {})
    # the other webhooks are not listed to a caller who may be anyone (issue 14)
    assert status == 404 and "hooked/signed" not in answer["error"]["message"]
    status, answer, _ = await post(http, f"{hooks.url}/hooks/ghost/signed", {})
    assert status == 404 and answer["error"]["code"] == "unknown_webhook"
    async with http.get(f"{base}/open") as resp:
        assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"
        assert resp.headers["Allow"] == "POST"
    status, answer, _ = await post(http, f"{base}/typed", json.dumps({"n": 1, "pad": "x" * 2000}).encode())
    assert status == 413 and "1024 bytes" in answer["error"]["message"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(4):
            yield b" " * 400

    async with http.post(
        f"{base}/typed", data=chunks(), headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
    status, answer, _ = await post(http, f"{base}/open", b"hello", **{"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in answer["error"]["message"]
    status, answer, _ = await post(http, f"{base}/open", b'{"a": 1,, }')
    assert status == 422 and "line 1 column 9" in answer["error"]["message"]
    status, answer, _ = await post(http, f"{base}/open", b'{"x": NaN}')  # Python's json takes it
    assert status == 422 and answer["error"]["code"] == "bad_json", answer
    assert "NaN is not JSON" in answer["error"]["message"]
    status, answer, _ = await post(http, f"{base}/typed", {"n": "seven"})
    assert status == 422 and answer["error"]["code"] == "schema_mismatch"
    assert "$.n" in answer["error"]["message"] and "integer" in answer["error"]["message"]
    status, answer, _ = await post(http, f"{base}/typed", {"m": 1})
    assert status == 422 and "'n' is a required property" in answer["error"]["message"]
    status, answer, _ = await post(http, f"{base}/open?wait=9999", {})
    assert status == 400 and answer["error"]["code"] == "bad_wait"
    status, _, _ = await post(http, f"{base}/typed", {"n": 3}, **{"Content-Type": "application/vnd.api+json"})
    assert status == 202
    assert await count(hooks.engine, "events") == 1


async def test_idempotency_key_replays_the_first_answer(hooks: Served, http: aiohttp.ClientSession) -> None:
    url = f"{hooks.url}/hooks/hooked/open"
    status1, first, h1 = await post(http, url, {"v": 1}, **{"Idempotency-Key": "delivery-42"})
    status2, second, h2 = await post(http, url, {"v": 2}, **{"Idempotency-Key": "delivery-42"})
    assert (status1, status2) == (202, 200)
    assert first == second and "Idempotent-Replayed" not in h1 and h2["Idempotent-Replayed"] == "true"
    assert await count(hooks.engine, "runs") == 1 and await count(hooks.engine, "events") == 1
    status3, third, _ = await post(http, url, {"v": 3}, **{"Idempotency-Key": "delivery-43"})
    assert status3 == 202 and third["run_ids"] != first["run_ids"]
    assert await count(hooks.engine, "runs") == 2


async def test_wait_returns_outputs_or_504(hooks: Served, http: aiohttp.ClientSession) -> None:
    status, answer, _ = await post(http, f"{hooks.url}/hooks/hooked/open?wait=20", {"k": "v"})
    assert status == 200 and answer["status"] == "SUCCEEDED" and answer["error"] is None
    assert answer["outputs"] == {"body": {"k": "v"}} and answer["run_id"].startswith("r-")
    started = time.monotonic()
    status, answer, _ = await post(http, f"{hooks.url}/hooks/slow/go?wait=0.3", {})
    assert status == 504 and answer["error"]["code"] == "run_not_finished"
    assert time.monotonic() - started < 3
    summary = await hooks.engine.describe_run(answer["run_id"])
    assert summary is not None and summary["status"] == "RUNNING"  # it keeps running


SECRET_FLOW = """
name: telling
params:
  token: {type: string, default: "${env:SLUICE_T_WAIT_TOKEN}"}
triggers:
  - webhook: {name: go, auth: none}
steps:
  tell: {function: "handlers:echo", input: {detail: {body: "token {{ params.token }}"}}}
"""


async def test_wait_answers_from_the_run_itself_and_hides_secrets_as_the_store_does(
    serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer is the run's own end (no store read after it), shaped as the stored summary."""
    monkeypatch.setenv("SLUICE_T_WAIT_TOKEN", "hush-4711")
    flows = tmp_path / "flows"
    write_flow(flows, SECRET_FLOW, HANDLERS)
    served = await serve(flows)
    reads: list[Any] = []
    store_read = served.engine.store.read

    async def counted(fn: Any) -> Any:
        reads.append(fn)
        return await store_read(fn)

    async with aiohttp.ClientSession() as http:
        await post(http, f"{served.url}/hooks/telling/go?wait=20", {})  # warm: the worker starts
        served.engine.store.read = counted  # type: ignore[method-assign]
        status, answer, _ = await post(http, f"{served.url}/hooks/telling/go?wait=20", {})
    served.engine.store.read = store_read  # type: ignore[method-assign]
    assert status == 200 and reads == []
    assert answer["outputs"] == "token ${env:SLUICE_T_WAIT_TOKEN}"
    summary = await served.engine.describe_run(answer["run_id"])
    assert summary is not None
    assert {k: summary[k] for k in ("run_id", "status", "outputs", "error")} == answer


async def test_429_when_too_many_requests_wait_for_the_store() -> None:
    """A fake ``emit`` (the boundary) that blocks lets us hold one request in flight."""
    release, entered = asyncio.Event(), asyncio.Event()

    async def emit(
        event: dict[str, Any], *, dedupe_key: str | None = None, workflow: str | None = None
    ) -> Any:
        entered.set()
        await release.wait()
        return EmitResult("e-1", ("r-1",))

    spec = WebhookTrigger(name="h", auth="none")
    endpoint = WebhookEndpoint("wf", spec, emit, None, max_inflight=1)
    app = web.Application()
    app.router.add_route("*", "/h", endpoint.handle)
    async with TestServer(app) as server, TestClient(server) as client:
        first = asyncio.ensure_future(client.post("/h", json={}))
        await entered.wait()
        resp = await client.post("/h", json={})
        assert resp.status == 429 and resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"]["code"] == "too_many_requests"
        release.set()
        resp = await first
        assert resp.status == 202 and (await resp.json())["run_ids"] == ["r-1"]


async def test_a_burst_with_runs_held_at_the_gate_loses_and_repeats_nothing(
    hooks: Served, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 POSTs from 16 clients while the admission gate is tight: every run once, all succeed."""
    orch = hooks.engine.orchestrator
    monkeypatch.setattr(orch.admission.settings, "admit_at", 2)
    most_held = 0
    todo = iter(range(1000))
    answers: dict[int, str] = {}

    async def client() -> None:
        nonlocal most_held
        for n in todo:
            status, body, _ = await post(http, f"{hooks.url}/hooks/hooked/open", {"n": n})
            assert status == 202, body
            answers[n] = body["run_ids"][0]
            most_held = max(most_held, orch.held)

    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(16))), 60)
    assert most_held > 0  # the gate did hold runs back during the burst
    run_ids = [answers[n] for n in range(1000)]
    assert len(set(run_ids)) == 1000
    finals = await asyncio.wait_for(asyncio.gather(*(orch.wait(r) for r in run_ids)), 60)
    assert set(finals) == {"SUCCEEDED"} and orch.held == 0
    outputs = await hooks.engine.store.read(
        lambda c: dict(c.execute("SELECT id, outputs FROM runs WHERE workflow='hooked'").fetchall())
    )
    assert [json.loads(outputs[r])["body"] for r in run_ids] == [{"n": n} for n in range(1000)]
    assert await count(hooks.engine, "attempts") == 1000
