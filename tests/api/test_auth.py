"""The API token, the Host allow-list and the CSRF rule, over real HTTP against a started engine."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.api.app import HttpService
from engine.api.auth import COOKIE, AuthConfigError, AuthPolicy
from engine.engine import Engine, Settings
from tests.support.engines import write_flow
from tests.support.http import Serve, Served
from tests.support.paths import ROOT
from workflows.loader import load_dir

API_TOKEN = "test-api-token-0123456789abcdef"

FLOW = """
name: greet
triggers:
  - webhook: {name: open, auth: none}
params:
  who: {type: string, default: world}
steps:
  hello: {function: "handlers:hello", input: {who: "{{ params.who }}"}}
"""

HANDLERS = """
def hello(event, context):
    return "hello " + event["who"]
"""


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    folder = tmp_path / "flows"
    write_flow(folder, FLOW, HANDLERS)
    return folder


@pytest.fixture
async def locked(serve: Serve, flows: Path) -> Served:
    return await serve(flows, auth=AuthPolicy("127.0.0.1", API_TOKEN))


@pytest.fixture
async def open_server(serve: Serve, flows: Path) -> Served:
    return await serve(flows, auth=AuthPolicy("127.0.0.1", None, frozenset({"sluice.example.com"})))


async def runs_of(engine: Engine) -> int:
    return int(await engine.store.read(lambda c: c.execute("SELECT COUNT(*) FROM runs").fetchone()[0]))


def bearer(token: str = API_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_off_loopback_without_a_token_refuses_to_start(tmp_path: Path, flows: Path) -> None:
    engine = Engine(Settings(data_dir=tmp_path / "d", host="0.0.0.0", port=0), load_dir(flows))
    with pytest.raises(AuthConfigError, match="SLUICE_API_TOKEN"):
        HttpService(engine)
    with pytest.raises(AuthConfigError, match="too short"):
        AuthPolicy("0.0.0.0", "short")
    assert AuthPolicy("0.0.0.0", API_TOKEN).token == API_TOKEN  # with a token it may


async def test_serve_off_loopback_without_token_is_one_line_exit_2(tmp_path: Path, flows: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli", "serve", str(flows), "--host", "0.0.0.0", "--port", "0",
        "--data-dir", str(tmp_path / "data"), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, err
    assert "Traceback" not in err.decode()
    assert "refusing to serve on 0.0.0.0 without an API token" in err.decode()
    assert "sluice token" in err.decode()


async def test_token_guards_every_route_but_healthz_and_webhooks(
    locked: Served, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{locked.url}/api/v1/runs") as resp:
        assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    async with http.get(f"{locked.url}/api/v1/runs", headers=bearer("wrong-token-0123456789")) as resp:
        assert resp.status == 401
    async with http.post(f"{locked.url}/api/v1/workflows/greet/runs", json={}) as resp:
        assert resp.status == 401
    assert await runs_of(locked.engine) == 0
    async with http.get(f"{locked.url}/api/v1/runs", headers=bearer()) as resp:
        assert resp.status == 200
    async with http.get(f"{locked.url}/healthz") as resp:
        assert resp.status == 200 and await resp.json() == {"status": "ok"}
    async with http.post(f"{locked.url}/hooks/greet/open", json={"who": "x"}) as resp:
        assert resp.status == 202  # the webhook's own auth (here: none, by choice) decides
    async with http.post(f"{locked.url}/hooks/greet/nope", json={}) as resp:
        body = await resp.json()
        assert resp.status == 404 and "greet/open" not in body["error"]["message"]


async def test_an_aws_signature_header_opens_no_route_but_the_aws_ones(
    locked: Served, http: aiohttp.ClientSession
) -> None:
    """AWS routes check SigV4 themselves (tests/aws); the header alone opens nothing else."""
    forged = {"Authorization": "AWS4-HMAC-SHA256 Credential=sluice/20261203/local/batch/aws4_request, x"}
    async with http.post(f"{locked.url}/api/v1/workflows/greet/runs", json={}, headers=forged) as resp:
        assert resp.status == 401
    async with http.get(f"{locked.url}/api/v1/runs", headers=forged) as resp:
        assert resp.status == 401
    assert await runs_of(locked.engine) == 0


async def test_dashboard_login_sets_a_cookie_that_is_not_the_token(locked: Served) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # an IP host
        async with http.get(f"{locked.url}/", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"].startswith("/login")
        async with http.post(f"{locked.url}/login", data={"token": "nope", "next": "/"}) as resp:
            assert resp.status == 401 and "not the token" in await resp.text()
        form = {"token": API_TOKEN, "next": "//evil.example/"}
        async with http.post(f"{locked.url}/login", data=form, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/"
            cookie = resp.cookies[COOKIE]
            assert cookie.value and API_TOKEN not in cookie.value
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
        async with http.get(f"{locked.url}/", allow_redirects=False) as resp:
            assert resp.status == 200 and "text/html" in resp.content_type
        async with http.get(f"{locked.url}/api/v1/runs") as resp:
            assert resp.status == 200  # the cookie is accepted by the API too (the dashboard's fetches)
        # but with the cookie alone a state change must still be JSON (a form from another page is not)
        async with http.post(f"{locked.url}/api/v1/workflows/greet/runs", data="{}") as resp:
            assert resp.status == 415
        async with http.post(f"{locked.url}/api/v1/workflows/greet/runs", json={}) as resp:
            assert resp.status == 201
        async with http.post(f"{locked.url}/logout", allow_redirects=False) as resp:
            assert resp.status == 303
        async with http.get(f"{locked.url}/api/v1/runs") as resp:
            assert resp.status == 401


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("evil.example", 403),
        ("evil.example:8765", 403),
        ("127.0.0.2", 403),
        ("localhost", 200),
        ("LOCALHOST:1234", 200),
        ("127.0.0.1", 200),
        ("[::1]:8765", 200),
        ("sluice.example.com", 200),
    ],
)
async def test_foreign_host_headers_are_refused(
    open_server: Served, http: aiohttp.ClientSession, host: str, status: int
) -> None:
    async with http.get(f"{open_server.url}/api/v1/runs", headers={"Host": host}) as resp:
        assert resp.status == status
        if status == 403:
            assert (await resp.json())["error"]["code"] == "host_not_allowed"


async def test_a_foreign_host_cannot_start_a_run(open_server: Served, http: aiohttp.ClientSession) -> None:
    url = f"{open_server.url}/api/v1/workflows/greet/runs"
    async with http.post(url, json={}, headers={"Host": "rebound.evil.example"}) as resp:
        assert resp.status == 403
    assert await runs_of(open_server.engine) == 0


def test_wildcard_bind_serves_ip_literals_and_configured_names_only() -> None:
    policy = AuthPolicy("0.0.0.0", API_TOKEN, frozenset({"ops.example"}))
    assert policy.host_allowed("10.1.2.3") and policy.host_allowed("ops.example")
    assert policy.host_allowed("localhost") and not policy.host_allowed("evil.example")
    named = AuthPolicy("192.168.1.5", API_TOKEN)
    assert named.host_allowed("192.168.1.5") and not named.host_allowed("127.0.0.1")


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Type": "text/plain"}, b'{"who": "csrf"}'),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"who=csrf"),
        ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x--"),
        ({}, b""),
    ],
)
async def test_state_changes_need_json_so_a_web_page_cannot_forge_them(
    open_server: Served, http: aiohttp.ClientSession, headers: dict[str, str], body: bytes
) -> None:
    for path in ("/api/v1/workflows/greet/runs", "/api/v1/events", "/api/v1/runs/r-x/cancel"):
        async with http.post(f"{open_server.url}{path}", data=body, headers=headers) as resp:
            answer = await resp.json()
            assert resp.status == 415, (path, answer)
            assert answer["error"]["code"] == "json_required"
    assert await runs_of(open_server.engine) == 0


async def test_a_method_no_route_has_is_405_not_a_content_type_error(
    open_server: Served, http: aiohttp.ClientSession
) -> None:
    """Found by schemathesis: TRACE or PUT on a GET route answered 415 json_required. Nothing runs
    for a 405, so there is nothing for the JSON rule to protect."""
    for method in ("TRACE", "PUT", "DELETE", "POST"):
        async with http.request(method, f"{open_server.url}/api/v1/runs/r-x") as resp:
            answer = await resp.json()
            assert resp.status == 405 and answer["error"]["code"] == "method_not_allowed", (method, answer)
    async with http.put(f"{open_server.url}/api/v1/runs/r-x/cancel", data=b"x") as resp:
        assert resp.status == 405
    async with http.post(f"{open_server.url}/api/v1/runs/r-x/cancel", data=b"x") as resp:
        assert resp.status == 415  # a route that takes the method: the JSON rule holds


async def test_a_server_without_a_token_documents_no_security(
    open_server: Served, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{open_server.url}/api/v1/openapi.json") as resp:
        doc = await resp.json()
    assert doc["security"] == [] and "401" not in doc["paths"]["/api/v1/runs"]["get"]["responses"]


async def test_a_server_with_a_token_documents_it(locked: Served, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{locked.url}/api/v1/openapi.json", headers=bearer()) as resp:
        doc = await resp.json()
    assert doc["security"] == [{"bearer": []}] and "401" in doc["paths"]["/api/v1/runs"]["get"]["responses"]


async def test_a_cross_origin_request_is_refused_even_as_json(
    open_server: Served, http: aiohttp.ClientSession
) -> None:
    url = f"{open_server.url}/api/v1/workflows/greet/runs"
    async with http.post(url, json={}, headers={"Origin": "https://evil.example"}) as resp:
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "cross_origin"
    hook = f"{open_server.url}/hooks/greet/open"
    async with http.post(hook, json={}, headers={"Origin": "http://evil.example"}) as resp:
        assert resp.status == 403  # a no-auth webhook cannot be posted to from a web page either
    assert await runs_of(open_server.engine) == 0
    async with http.post(url, json={}, headers={"Origin": open_server.url}) as resp:
        assert resp.status == 201  # the dashboard's own fetches carry its origin


async def test_the_bearer_token_stands_in_for_the_json_content_type(
    locked: Served, http: aiohttp.ClientSession
) -> None:
    url = f"{locked.url}/api/v1/runs/r-none/cancel"
    async with http.post(url, headers=bearer()) as resp:
        assert resp.status == 404  # past auth and CSRF: the run is unknown


async def test_cli_remote_commands_send_the_token(locked: Served, tmp_path: Path) -> None:
    async def cli(env_extra: dict[str, str], *args: str) -> tuple[int, str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")} | env_extra
        env["SLUICE_SERVER"] = locked.url
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine.cli", *args, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, _, err = await cli({}, "workflows", "list")
    assert code == 2 and "needs its API token" in err and "SLUICE_API_TOKEN" in err and "Traceback" not in err
    code, out, err = await cli({"SLUICE_API_TOKEN": API_TOKEN}, "runs", "start", "greet", "--json")
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    (tmp_path / "token").write_text(API_TOKEN + "\n")
    code, out, err = await cli({"SLUICE_API_TOKEN_FILE": str(tmp_path / "token")}, "runs", "cancel", run_id)
    assert code in (0, 2), err  # reached the server: cancelled, or already ended
    assert "needs its API token" not in err
    code, out, _ = await cli({}, "token")
    assert code == 0 and len(out.strip()) >= 40


def _raw(port: int, data: bytes) -> Any:
    async def send() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return answer

    return send()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
    ],
)
async def test_malformed_requests_get_json_400_and_no_traceback(
    open_server: Served, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    port = int(open_server.url.rsplit(":", 1)[1])
    answer = await _raw(port, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1].startswith(b"4"), head
    assert b"application/json" in head
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= 40], caplog.text
