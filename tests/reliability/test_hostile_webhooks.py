"""Hostile HTTP at a real ``sluice serve``: any request gets an answer below 500, and no traceback.

One server (a subprocess on a free 127.0.0.1 port, with an API token) takes raw requests written
byte by byte on fresh sockets: methods, paths (webhooks of every auth kind, the API, the
dashboard, junk), query strings, Host and Origin values, content types and encodings, bodies
(JSON nested deep, 400-digit and 1e400 numbers, lone surrogates, NaN, gzip and deflate, gzip of
junk, bytes that are no UTF-8), wrong Content-Length, chunked bodies, and now and then a correct
HMAC signature or token so the body is parsed. Every answer is checked: a status line, a status
below 500, no traceback and no secret in it; a 4xx from our routes uses the JSON error shape. At
the end the server's log holds no traceback and no secret, and the server still answers.

``CI`` set: derandomized (``tests/support/hypothesis_profiles.py``), the same examples each run.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import os
import socket
import string
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tests.support.engines import write_flow
from tests.support.hypothesis_profiles import examples
from tests.support.paths import ROOT
from tests.support.waiting import wait_until_sync

pytestmark = pytest.mark.timeout(240)

HOOK_SECRET = "hook-secret-never-shown-5d1"
HOOK_TOKEN = "hook-token-never-shown-9f2"
API_TOKEN = "api-token-never-shown-77c1e0"
SECRETS = (HOOK_SECRET, HOOK_TOKEN, API_TOKEN)

FLOW = """
name: hooks
triggers:
  - webhook: {name: open, auth: none, max_body: 64KiB}
  - webhook: {name: signed, secret: "${env:HOOK_SECRET}", timestamp_header: X-Timestamp, tolerance: 5m}
  - webhook: {name: tok, token: "${env:HOOK_TOKEN}"}
  - webhook:
      name: typed
      auth: none
      schema: {type: object, required: [n], properties: {n: {type: integer, maximum: 100}}}
steps:
  done: {wait: 0s}
"""


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        status, _, _ = send(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    except (OSError, AssertionError):  # refused, or closed without an answer while starting
        return False
    return status == 200


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hostile-http")
    write_flow(root / "flows", FLOW)
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOOK_SECRET=HOOK_SECRET, HOOK_TOKEN=HOOK_TOKEN)
    env.update(SLUICE_API_TOKEN=API_TOKEN, SLUICE_DATA_DIR=str(root / "data"))
    log = root / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "serve", "flows", "--port", str(port), "--workers", "1"],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until_sync(lambda: _healthy(port) or proc.poll() is not None, 60, what="sluice serve to answer")
        assert proc.poll() is None, log.read_text()
        yield Server(port, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# --- raw HTTP --------------------------------------------------------------------------------------


def send(
    port: int, request: bytes, timeout_s: float = 15.0, *, half_close: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """Write ``request`` on a fresh connection and read the whole answer (``Connection: close``).

    ``half_close`` ends our side after the request, for a body shorter than its Content-Length;
    otherwise the connection stays open as a real client's does (a server may drop a request
    whose client hung up, and that is no answer to check).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    if half_close and not raw:
        return 0, {}, b""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    assert len(parts) >= 2 and parts[0].startswith("HTTP/1."), raw[:300]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, body


def sign(body: bytes, stamp: str) -> str:
    digest = hmac.new(HOOK_SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


# --- strategies ----------------------------------------------------------------------------------

LATIN = st.text(alphabet=st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=30)
#: mostly printable: a control character anywhere makes the request a parser's 400, which is checked
#: too, but should not be all there is
JUNK = st.one_of(
    *[st.text(alphabet=string.ascii_letters + string.digits + " -_.~%!$&'()*+,;=:@/?", max_size=30)] * 4,
    LATIN,
)
PATHS = st.one_of(
    st.sampled_from(["/hooks/hooks/open", "/hooks/hooks/signed", "/hooks/hooks/tok", "/hooks/hooks/typed"]),
    st.sampled_from(["/hooks/hooks/open"] * 4),
    st.sampled_from(
        [
            "/hooks/nope/x",
            "/hooks/hooks/",
            "/hooks/hooks/open/x",
            "/hooks/%00/%ff",
            "/hooks/../api",
            "/api/v1/runs",
            "/api/v1/runs/r-nope",
            "/api/v1/runs/x/cancel",
            "/api/v1/runs/x/retry",
            "/api/v1/events",
            "/api/v1/events/replay",
            "/api/v1/workflows",
            "/api/v1/workflows/hooks/runs",
            "/api/v1/jobs",
            "/api/v1/jobs/j-1",
            "/api/v1/definitions",
            "/api/v1/queues",
            "/api/v1/environments",
            "/api/v1/notifications/dlq",
            "/api/v1/openapi.json",
            "/healthz",
            "/readyz",
            "/metrics",
            "/",
            "/runs/x",
            "/workflows",
            "/batch",
            "/events",
            "/login",
            "/logout",
            "/static/../../etc/passwd",
            "/" + "a" * 9000,
            "//",
            "*",
            "/%",
            "/\x7f",
        ]
    ),
    JUNK.map(lambda p: "/" + p.replace(" ", "%20")),
)
QUERIES = st.one_of(
    st.just(""),
    st.sampled_from(
        [
            "?wait=nan",
            "?wait=1e400",
            "?wait=-1",
            "?wait=5",
            "?limit=-1",
            "?limit=99999999999999999999",
            "?since=garbage",
            "?after=%ff",
            "?status=NOPE",
            "?a=1&a=2",
            "?" + "x=1&" * 500,
            "?%",
            "?==",
        ]
    ),
    JUNK.map(lambda q: "?" + q.replace(" ", "+")),
)
METHODS = st.sampled_from(
    ["POST"] * 12 + ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO", "get"]
)
CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=latin-1",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/octet-stream",
            "application/vnd.x+json",
            "",
            "json",
            ";;;",
            "a/b/c",
        ]
    ),
    JUNK,
)


def _nest(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
    ),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=8,
)
BODIES = st.one_of(
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"n": st.one_of(st.integers(-5, 200), st.text(max_size=3))}).map(
        lambda v: json.dumps(v).encode()
    ),
    st.sampled_from(
        [
            b"",
            b"{",
            b"null",
            b"[]",
            b'{"a": NaN}',
            b'{"a": Infinity}',
            b'{"a": -Infinity}',
            b'{"n": 1e400}',
            b'{"n": -1e400}',
            b'{"n": ' + b"9" * 5000 + b"}",
            b'"\\ud800"',
            b'{"\\udfff": 1}',
            b"\xff\xfe\x00",
            b'{"a": "\x00"}',
            _nest(1000),
            _nest(50),
            b'{"a":' * 2000 + b"1" + b"}" * 2000,
            b"x" * 70_000,
            b'{"n": 1}' + b" " * 70_000,
            b"a=1&b=%ff",
            b"--x\r\n\r\n--x--",
        ]
    ),
    st.binary(max_size=64),
)
ENCODINGS = st.sampled_from(
    ["", "", "", "gzip", "deflate", "x-gzip", "br", "identity", "gzip, gzip", "GZIP", "zstd"]
)


def _frame(draw: st.DrawFn, body: bytes, friendly: bool) -> tuple[str, list[str], bytes]:
    """How the body is delimited: right, or a Content-Length that lies, or chunks (some broken)."""
    headers: list[str] = []
    framings = ["length", "short", "long", "none", "chunked", "bad-chunked", "both"]
    framing = draw(st.sampled_from(["length"] * 6 + framings[: 1 if friendly else None] + ["chunked"]))
    length = {"short": max(0, len(body) - 1), "long": len(body) + 10}.get(framing, len(body))
    if framing in ("length", "short", "long", "both"):
        headers.append(f"Content-Length: {length}")
    if framing in ("chunked", "bad-chunked", "both"):
        headers.append("Transfer-Encoding: chunked")
        if framing == "bad-chunked":
            body = b"zz\r\n" + body + b"\r\n0\r\n\r\n"
        else:
            body = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" if body else b"0\r\n\r\n"
    return framing, headers, body


@st.composite
def requests(draw: st.DrawFn, port: int) -> tuple[str, bytes]:
    """One raw request; half of them well framed POSTs to a webhook, so the body gets parsed."""
    friendly = draw(st.booleans())
    if friendly:
        method, path = "POST", draw(st.sampled_from(["/hooks/hooks/open", "/hooks/hooks/typed"]))
        query = draw(st.just("") | QUERIES)
    else:
        method, path, query = draw(METHODS), draw(PATHS), draw(QUERIES)
    body = draw(BODIES)
    encoding = draw(ENCODINGS)
    if encoding in ("gzip", "x-gzip", "GZIP") and draw(st.booleans()):
        body = gzip.compress(body)
    elif encoding == "deflate" and draw(st.booleans()):
        body = zlib.compress(body)
    hosts = [f"127.0.0.1:{port}"] * 4 + ["localhost", "evil.example", ""]
    headers = [f"Host: {hosts[0] if friendly else draw(st.sampled_from(hosts))}"]
    ctype = draw(st.just("application/json") | CONTENT_TYPES) if friendly else draw(CONTENT_TYPES)
    if ctype or draw(st.booleans()):
        headers.append(f"Content-Type: {ctype}")
    if encoding:
        headers.append(f"Content-Encoding: {encoding}")
    stamp = draw(st.sampled_from([str(int(time.time())), "nan", "inf", "1e400", "-1", "0", "", "9" * 400]))
    if draw(st.booleans()):
        headers.append(f"X-Timestamp: {stamp}")
    if draw(st.booleans()):
        good = draw(st.booleans())
        headers.append(f"X-Hub-Signature-256: {sign(body, stamp) if good else draw(JUNK)}")
    auth = draw(
        st.sampled_from(["", "", f"Bearer {API_TOKEN}", f"Bearer {HOOK_TOKEN}", "Bearer x", "Basic ??"])
    )
    if auth:
        headers.append(f"Authorization: {auth}")
    if draw(st.booleans()):
        headers.append(f"Idempotency-Key: {draw(st.one_of(JUNK, st.just('k' * 300)))}")
    if not friendly and draw(st.integers(0, 9)) == 0:
        headers.append(
            f"Origin: {draw(st.sampled_from(['http://evil.example', 'null', f'http://127.0.0.1:{port}']))}"
        )
    names = st.sampled_from(["X-Request-Id", "X-GitHub-Event", "User-Agent", "X-Api-Key", "Accept"]) | JUNK
    if (
        not friendly and draw(st.integers(0, 5)) == 0
    ):  # a junk header name makes the whole request a parser's 400
        extra = draw(st.lists(st.tuples(names, JUNK), max_size=2))
        headers += [f"{name or 'X-Empty'}: {value}" for name, value in extra]
    framing, framed, body = _frame(draw, body, friendly)
    headers += framed
    headers.append("Connection: close")
    head = f"{method} {path}{query} HTTP/1.1\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    return f"{method} {path.split('?')[0][:40]} {framing}", head.encode("latin-1", "replace") + body


# --- the property ---------------------------------------------------------------------------------


def check_answer(what: str, status: int, headers: dict[str, str], body: bytes) -> None:
    assert status < 500, (what, status, body[:300])
    text = body.decode("utf-8", "replace")
    assert "Traceback" not in text and 'File "' not in text, (what, text[:500])
    assert not any(secret in text for secret in SECRETS), what
    json_body = headers.get("content-type", "").startswith("application/json") and body
    if 400 <= status < 500 and json_body and not what.startswith("HEAD "):
        error = json.loads(body)["error"]
        assert error["code"] and error["message"], (what, error)


@examples(1200)
@given(st.data())
def test_any_request_gets_an_answer_below_500_and_no_traceback(server: Server, data: st.DataObject) -> None:
    what, request = data.draw(requests(server.port))
    status, headers, body = send(server.port, request, half_close=what.endswith(" long"))
    event(f"status {status // 100}xx")
    if body.startswith(b'{"error"'):
        event(f"{status} {json.loads(body)['error']['code']}")
    check_answer(what, status, headers, body)


def _post(port: int, head: str, body: bytes, length: int | None = None) -> bytes:
    return (
        f"POST /hooks/hooks/open HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        + head
        + f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1") + body


def test_header_bytes_that_are_not_utf8_are_refused_or_replaced_not_a_503(server: Server) -> None:
    # both made the event unstorable: 503 "retry later", for a request that can never succeed
    status, _, body = send(server.port, _post(server.port, "Idempotency-Key: \x80\xff\r\n", b"{}"))
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_idempotency_key", body
    status, _, body = send(server.port, _post(server.port, "X-Request-Id: caf\xe9\r\n", b"{}"))
    assert status == 202, body


def test_a_client_that_hangs_up_mid_body_leaves_no_traceback(server: Server) -> None:
    before = server.log.read_text(encoding="utf-8", errors="replace").count("Traceback")
    status, _, _ = send(server.port, _post(server.port, "", b"{", length=100), half_close=True)
    assert status in (0, 400)
    wait_until_sync(lambda: "closed the connection before" in server.log.read_text(errors="replace"), 10)
    assert server.log.read_text(encoding="utf-8", errors="replace").count("Traceback") == before


def test_after_the_storm_the_log_has_no_traceback_and_the_server_answers(server: Server) -> None:
    # runs after the property in file order; alone, it checks a fresh server's log
    assert _healthy(server.port)
    body = json.dumps({"n": 7}).encode()
    request = (
        f"POST /hooks/hooks/typed HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    status, _, answer = send(server.port, request)
    assert status == 202, answer
    log = server.log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log, log[log.find("Traceback") - 500 : log.find("Traceback") + 3000]
    assert "Error handling request" not in log
    assert not any(secret in log for secret in SECRETS)
    assert server.proc.poll() is None
