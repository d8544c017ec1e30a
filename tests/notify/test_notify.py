"""Notifications against real HTTP receivers (aiohttp apps on 127.0.0.1) and real engines."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from engine.engine import Engine, Settings
from engine.notify.sender import NotifyService
from engine.notify.subscribers import Subscriber, Transform, subscribers_from_config
from engine.server import add_notifications
from tests.support.engines import write_flow
from tests.support.paths import ROOT as REPO_ROOT
from tests.support.waiting import wait_until
from workflows.loader import load_dir

HANDLERS = """
def inc(event, context):
    return (event or {}).get("n", 0) + 1

def echo(event, context):
    return event
"""

FLOW = """
name: {name}
params: {{n: {{type: integer, default: 0}}}}
steps:
  a: {{function: handlers:inc, input: {{n: "{{{{ params.n }}}}"}}}}
outputs: {{n: "{{{{ steps.a.output }}}}"}}
"""

SECRET = "s3cr3t-never-shown"
JSON = {"Content-Type": "application/json"}
ROOT = str(REPO_ROOT)
Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Receiver:
    """A small aiohttp app that records every POST and answers through ``reply`` (swappable)."""

    def __init__(self, reply: Reply | None = None) -> None:
        self.got: list[dict[str, Any]] = []
        self.reply = reply or self.ok
        self.arrived = asyncio.Event()
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self.app = app
        self.server: TestServer | None = None

    @staticmethod
    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200, text="ok")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.got.append({"headers": dict(request.headers), "body": body, "at": time.monotonic()})
        self.arrived.set()
        return await self.reply(request)

    async def start(self, port: int | None = None) -> str:
        self.server = TestServer(self.app, port=port)
        await self.server.start_server()
        return str(self.server.make_url("/hook"))

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(g["body"]) for g in self.got]


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[tuple[Receiver, str]]]]:
    made: list[Receiver] = []

    async def make(reply: Reply | None = None, port: int | None = None) -> tuple[Receiver, str]:
        rec = Receiver(reply)
        made.append(rec)
        return rec, await rec.start(port)

    yield make
    for rec in made:
        await rec.close()


def sender_of(engine: Engine) -> NotifyService:
    """The notification sender composed into ``engine`` (engine/server.py)."""
    return next(s for s in engine.services if isinstance(s, NotifyService))


@pytest.fixture
async def engine_with() -> AsyncIterator[Callable[..., Awaitable[Engine]]]:
    """Engines with notifications installed before start (what ``sluice serve`` does)."""
    engines: list[Engine] = []

    async def make(flows: Path, data: Path, subs: list[Subscriber] | None = None) -> Engine:
        engine = Engine(Settings(data_dir=data, workers=2, grace_s=5), load_dir(flows))
        add_notifications(engine, subs or [])
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.stop(grace_s=0)


def docs_verify(secret: str, body: bytes, header: str, tolerance_s: int = 300) -> bool:
    """The receiver recipe of docs/events.md, verbatim."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    t, received = int(parts["t"]), parts["v1"]
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return abs(time.time() - t) <= tolerance_s and hmac.compare_digest(expected, received)


def flow(folder: Path, name: str = "job", notify: str = "") -> Path:
    text = FLOW.format(name=name) + (f"notify:\n{notify}" if notify else "")
    return write_flow(folder, text, HANDLERS, name=f"{name}.yaml")


def sub(url: str, **kw: Any) -> Subscriber:
    return subscribers_from_config([{"url": url, "name": kw.pop("name", "g"), **kw}])[0]


async def test_signed_notification_verifies_with_the_documented_recipe(
    tmp_path: Path, receivers: Any, engine_with: Any
) -> None:
    rec, url = await receivers()
    flows = tmp_path / "flows"
    flow(flows, notify=f'  - {{url: "{url}", secret: {SECRET}, headers: {{X-Team: ops}}}}\n')
    engine = await engine_with(flows, tmp_path / "data")
    summary = await engine.run_to_end("job", {"n": 41}, timeout_s=20)
    await wait_until(lambda: rec.got, what="the notification")
    got = rec.got[0]
    event = json.loads(got["body"])
    assert event["detail"]["run_id"] == summary["run_id"] and event["detail"]["status"] == "SUCCEEDED"
    assert event["detail"]["outputs"] == {"n": 42}
    assert got["headers"]["Sluice-Event-Id"] == event["id"]
    assert got["headers"]["X-Team"] == "ops" and got["headers"]["Content-Type"] == "application/json"
    header = got["headers"]["Sluice-Signature"]
    assert docs_verify(SECRET, got["body"], header)
    assert not docs_verify("wrong-secret", got["body"], header)
    assert not docs_verify(SECRET, got["body"] + b" ", header)
    old = f"t={int(time.time()) - 3600}," + header.split(",", 1)[1]
    assert not docs_verify(SECRET, got["body"], old)
    await asyncio.sleep(0.3)
    assert len(rec.got) == 1  # RUNNING is not in the default on: [SUCCEEDED, FAILED]


async def test_500_then_200_is_retried_and_delivered(
    tmp_path: Path, receivers: Any, engine_with: Any
) -> None:
    answers = iter([500, 200])

    async def reply(request: web.Request) -> web.Response:
        return web.Response(status=next(answers, 200))

    rec, url = await receivers(reply)
    flows = tmp_path / "flows"
    flow(flows)
    engine = await engine_with(flows, tmp_path / "data", [sub(url)])
    await engine.run_to_end("job", timeout_s=20)
    await wait_until(lambda: len(rec.got) >= 2, what="the retry")
    assert rec.got[0]["body"] == rec.got[1]["body"]
    assert rec.got[0]["headers"]["Sluice-Event-Id"] == rec.got[1]["headers"]["Sluice-Event-Id"]
    await wait_until(lambda: sender_of(engine).delivered == 1, what="delivered")
    row = await engine.store.read(lambda c: c.execute("SELECT status, attempts FROM outbox").fetchone())
    assert tuple(row) == ("delivered", 2)


async def test_a_delivery_finishing_during_the_lanes_read_is_not_sent_twice(
    tmp_path: Path, receivers: Any, engine_with: Any
) -> None:
    """The lane's read takes its snapshot, the in-flight POST commits meanwhile: no second POST.

    The store's reads are slowed so this interleaving happens every time (it used to happen
    under load only, and sent the notification again).
    """
    rec, url = await receivers()
    flows = tmp_path / "flows"
    flow(flows)
    engine = await engine_with(flows, tmp_path / "data", [sub(url)])
    read = engine.store.read

    async def slow_read(fn: Callable[[Any], Any]) -> Any:
        def snapshot_then_wait(conn: Any) -> Any:
            conn.execute("SELECT COUNT(*) FROM outbox").fetchone()  # the snapshot starts here
            time.sleep(0.3)  # the delivery in flight answers and commits in the meantime
            return fn(conn)

        return await read(snapshot_then_wait)

    engine.store.read = slow_read  # type: ignore[method-assign]
    await engine.run_to_end("job", timeout_s=20)
    await wait_until(lambda: sender_of(engine).delivered == 1, what="delivered")
    await asyncio.sleep(1.0)  # a few more lane reads, each with the window open
    assert len(rec.got) == 1
    row = await read(lambda c: c.execute("SELECT status, attempts FROM outbox").fetchone())
    assert tuple(row) == ("delivered", 1)


async def test_400_goes_to_dead_letters_at_once_then_retry_and_purge(
    tmp_path: Path, receivers: Any, engine_with: Any
) -> None:
    status = {"code": 400}

    async def reply(request: web.Request) -> web.Response:
        return web.Response(status=status["code"], text="bad")

    rec, url = await receivers(reply)
    flows = tmp_path / "flows"
    flow(flows)
    engine = await engine_with(flows, tmp_path / "data", [sub(url, secret=SECRET, headers={"X-Key": SECRET})])
    from engine.api import notify as notify_api
    from engine.api.app import build_app  # the served app: notify's routes are one of its groups

    app = build_app(engine, [notify_api.routes(engine.bus, sender_of(engine))])
    async with TestClient(TestServer(app)) as client:
        await engine.run_to_end("job", timeout_s=20)
        await wait_until(lambda: sender_of(engine).dead == 1, what="a dead letter")
        assert len(rec.got) == 1
        resp = await client.get("/api/v1/notifications/dlq")
        text = await resp.text()
        assert SECRET not in text
        (dead,) = json.loads(text)["dead_letters"]
        assert dead["attempts"] == 1 and dead["last_status"] == 400 and "400" in dead["last_error"]
        status["code"] = 200
        resp = await client.post("/api/v1/notifications/dlq/retry", json={"ids": [dead["id"]]})
        assert (await resp.json()) == {"retried": 1}
        await wait_until(lambda: sender_of(engine).delivered == 1, what="the retried delivery")
        assert len(rec.got) == 2
        resp = await client.post("/api/v1/notifications/dlq/purge", json={})
        assert (await resp.json()) == {"purged": 0}
        resp = await client.post("/api/v1/notifications/dlq/retry", json={"ids": ["x"]})
        assert resp.status == 400 and "error" in await resp.json()
        resp = await client.post("/api/v1/notifications/dlq/purge", data=b"[3]", headers=JSON)
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_body"
        resp = await client.post("/api/v1/events/replay", data=b"{oops", headers=JSON)
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_json"


async def test_retry_after_is_honoured(tmp_path: Path, receivers: Any, engine_with: Any) -> None:
    answers = iter([web.Response(status=503, headers={"Retry-After": "2"})])

    async def reply(request: web.Request) -> web.Response:
        return next(answers, web.Response(status=204))

    rec, url = await receivers(reply)
    flows = tmp_path / "flows"
    flow(flows)
    engine = await engine_with(flows, tmp_path / "data", [sub(url, backoff_cap="100ms")])
    await engine.run_to_end("job", timeout_s=20)
    await wait_until(lambda: len(rec.got) >= 2, what="the retry")
    gap = rec.got[1]["at"] - rec.got[0]["at"]
    assert 1.9 <= gap < 4.0, gap  # the backoff alone (cap 100 ms) would have retried at once


async def test_receiver_down_then_up_gets_every_notification_in_order(
    tmp_path: Path, receivers: Any, engine_with: Any
) -> None:
    with socket.socket() as s:  # a port nobody listens on, yet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    flows = tmp_path / "flows"
    flow(flows)
    engine = await engine_with(flows, tmp_path / "data", [sub(url, ordered=True, backoff_cap="300ms")])
    run_ids = [(await engine.run_to_end("job", {"n": i}, timeout_s=20))["run_id"] for i in range(6)]
    await asyncio.sleep(1.0)  # the first attempts are refused
    attempts = await engine.store.read(lambda c: c.execute("SELECT MAX(attempts) FROM outbox").fetchone()[0])
    assert attempts >= 1
    rec, _ = await receivers(port=port)
    await wait_until(lambda: len(rec.got) >= 6, what="all six notifications")
    await asyncio.sleep(0.3)
    assert [e["detail"]["run_id"] for e in rec.events()] == run_ids  # ordered: true keeps order


async def test_a_hanging_receiver_delays_neither_runs_nor_other_subscribers(
    tmp_path: Path, receivers: Any, engine_with: Any
) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=200)

    slow, slow_url = await receivers(hang)
    fast, fast_url = await receivers()
    flows = tmp_path / "flows"
    flow(flows)
    subs = [sub(slow_url, name="slow", timeout="60s"), sub(fast_url, name="fast")]
    engine = await engine_with(flows, tmp_path / "data", subs)
    await engine.run_to_end("job", timeout_s=20)  # warm up the workers
    t0 = time.monotonic()
    await asyncio.gather(*(engine.run_to_end("job", {"n": i}, timeout_s=20) for i in range(20)))
    runs_s = time.monotonic() - t0
    await wait_until(lambda: len(fast.got) == 21, timeout_s=5, what="the fast subscriber's 21 notifications")
    fast_s = time.monotonic() - t0
    await wait_until(lambda: len(slow.got) >= 4, timeout_s=5, what="four hanging requests")
    await asyncio.sleep(0.2)
    assert len(slow.got) == 4  # its concurrency: four requests hang, the rest wait their turn
    assert runs_s < 10 and fast_s < runs_s + 2, (runs_s, fast_s)
    release.set()
    await wait_until(lambda: len(slow.got) == 21, what="the slow subscriber catching up")


async def test_transform_renders_a_template_and_never_evaluates_data(
    tmp_path: Path, receivers: Any, engine_with: Any
) -> None:
    rec, url = await receivers()
    flows = tmp_path / "flows"
    write_flow(
        flows,
        """
        name: echoer
        params: {text: {type: string}}
        steps:
          a: {function: handlers:echo, input: {text: "{{ params.text }}"}}
        outputs: {text: "{{ steps.a.output.text }}"}
        """,
        HANDLERS,
    )
    transform = {
        "paths": {"run": "$.detail.run_id", "text": "$.detail.outputs.text", "missing": "$.detail.nope[3]"},
        "template": '{"run": <run>, "said": "run <run> said <text>", "raw": <text>, "none": <missing>}',
    }
    engine = await engine_with(flows, tmp_path / "data", [sub(url, transform=transform)])
    summary = await engine.run_to_end("echoer", {"text": '{{ 7*7 }} "quoted" <run>'}, timeout_s=20)
    await wait_until(lambda: rec.got, what="the notification")
    body = json.loads(rec.got[0]["body"])
    text = '{{ 7*7 }} "quoted" <run>'
    assert body == {"run": summary["run_id"], "said": f"run {summary['run_id']} said {text}", "raw": text,
                    "none": None}  # fmt: skip
    with pytest.raises(ValueError, match="not in paths"):
        Transform.parse({"paths": {}, "template": '{"a": <b>}'})


async def test_secrets_never_appear_in_logs_events_or_answers(
    tmp_path: Path, receivers: Any, engine_with: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answers = iter([500, 404])

    async def reply(request: web.Request) -> web.Response:
        return web.Response(status=next(answers, 200), text=request.headers.get("Sluice-Signature", ""))

    rec, url = await receivers(reply)
    flows = tmp_path / "flows"
    flow(
        flows,
        notify=f'  - {{url: "{url}", secret: {SECRET}, headers: {{Authorization: "Bearer {SECRET}"}}}}\n',
    )
    engine = await engine_with(flows, tmp_path / "data", [sub(url + f"?token={SECRET}", secret=SECRET)])
    await engine.run_to_end("job", timeout_s=20)
    await wait_until(lambda: len(rec.got) >= 3, what="three deliveries")
    await wait_until(lambda: sender_of(engine).dead >= 1, what="the dead letter")
    dump = await engine.store.read(
        lambda c: "\n".join(
            str(tuple(row))
            for table in ("events", "outbox", "dead_letters", "audit", "runs")
            for row in c.execute(f"SELECT * FROM {table}")
        )
    )
    assert SECRET not in dump
    ours = [r for r in caplog.records if not r.name.startswith("aiohttp.access")]  # the receiver's own log
    assert ours and not [r for r in ours if SECRET in r.getMessage()]
    assert SECRET not in repr(sender_of(engine).subscribers)
    assert SECRET not in repr(engine.catalog["job"].notify)


CHILD = """
import asyncio, sys
from pathlib import Path
sys.path[:0] = [{root!r}]
from engine.engine import Engine, Settings
from engine.notify.subscribers import subscribers_from_config
from engine.server import add_notifications
from workflows.loader import load_dir

async def main(phase):
    engine = Engine(Settings(data_dir=Path({data!r}), workers=1, grace_s=1), load_dir({flows!r}))
    add_notifications(engine, subscribers_from_config([{{"url": {url!r}, "name": "hook", "concurrency": 2}}]))
    await engine.start()
    pending = "SELECT COUNT(*) FROM outbox WHERE status='pending'"
    if phase in ("first", "second"):
        for i in range(3):
            await engine.run_to_end("job", {{"n": i}}, timeout_s=30)
    if phase in ("first", "drain"):
        while await engine.store.read(lambda c: c.execute(pending).fetchone()[0]):
            await asyncio.sleep(0.02)
    print(phase, "done", flush=True)
    if phase == "second":
        await asyncio.sleep(3600)  # killed -9 while the receiver holds the requests
    await engine.stop(grace_s=0)

asyncio.run(main(sys.argv[1]))
"""


async def test_kill_9_between_commit_and_send_delivers_exactly_the_owed_after_restart(
    tmp_path: Path, receivers: Any
) -> None:
    mode = {"hang": False}
    gate = asyncio.Event()

    async def reply(request: web.Request) -> web.Response:
        if mode["hang"]:
            await gate.wait()
        return web.Response(status=200)

    rec, url = await receivers(reply)
    flows = tmp_path / "flows"
    flow(flows)
    script = tmp_path / "child.py"
    root = ROOT
    script.write_text(CHILD.format(root=root, data=str(tmp_path / "data"), flows=str(flows), url=url))

    async def child(phase: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, str(script), phase, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": root}
        )

    async def wait_line(proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            line = await proc.stdout.readline()
        assert line.endswith(b"done\n"), line

    first = await child("first")
    await wait_line(first)
    assert (await first.wait()) == 0
    acked_first = {e["id"] for e in rec.events()}
    assert len(acked_first) == 3

    mode["hang"] = True
    second = await child("second")
    await wait_line(second)
    await wait_until(lambda: len(rec.got) >= 5, timeout_s=20, what="two held requests")
    second.send_signal(signal.SIGKILL)
    assert (await second.wait()) == -signal.SIGKILL
    held = {e["id"] for e in rec.events()} - acked_first

    mode["hang"] = False
    gate.set()
    third = await child("drain")
    await wait_line(third)
    assert (await third.wait()) == 0
    ids = [e["id"] for e in rec.events()]
    owed = set(ids) - acked_first
    assert len(owed) == 3 and held <= owed  # the three of phase two, none lost
    assert sorted(ids).count(next(iter(acked_first))) == 1  # phase one is never re-sent
    assert all(ids.count(i) == 1 for i in acked_first)
    late = rec.events()[5:]
    assert {e["id"] for e in late} == owed  # after restart: exactly the owed ones (held ones again)


def docs_receiver(secret: str) -> Any:
    """The ten-line receiver of docs/events.md, executed as written (minus ``run_app``)."""
    text = (Path(ROOT) / "docs" / "events.md").read_text(encoding="utf-8")
    code = text.split("### Verifying a signature", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace("web.run_app(", "# web.run_app(").replace("the subscriber's secret", secret)
    scope: dict[str, Any] = {}
    exec(compile(code, "docs/events.md", "exec"), scope)
    return scope["hook"]


async def test_the_documented_receiver_accepts_ours_and_refuses_forgeries(
    tmp_path: Path, receivers: Any, engine_with: Any
) -> None:
    good, good_url = await receivers(docs_receiver(SECRET))
    _, bad_url = await receivers(docs_receiver("another-secret"))
    flows = tmp_path / "flows"
    flow(flows)
    subs = [sub(good_url, name="good", secret=SECRET), sub(bad_url, name="bad", secret=SECRET)]
    engine = await engine_with(flows, tmp_path / "data", subs)
    await engine.run_to_end("job", timeout_s=20)
    sender = sender_of(engine)
    await wait_until(lambda: sender.delivered == 1 and sender.dead == 1, what="both outcomes")
    dead = await engine.store.read(
        lambda c: c.execute("SELECT subscriber, last_status FROM dead_letters").fetchall()
    )
    assert [tuple(d) for d in dead] == [("bad", 401)]
    app = web.Application()
    app.router.add_post("/hook", docs_receiver(SECRET))
    body = good.got[0]["body"]
    async with TestClient(TestServer(app)) as client:
        old = int(time.time()) - 600
        stale = hmac.new(SECRET.encode(), f"{old}.".encode() + body, hashlib.sha256).hexdigest()
        resp = await client.post(
            "/hook", data=body, headers={"Sluice-Signature": f"t={old},v1={stale}", "Sluice-Event-Id": "x"}
        )
        assert resp.status == 401  # a correct MAC on an old timestamp: a replayed capture
        resp = await client.post(
            "/hook",
            data=body,
            headers={"Sluice-Signature": good.got[0]["headers"]["Sluice-Signature"], "Sluice-Event-Id": "x"},
        )
        assert resp.status == 204


async def test_big_outputs_are_truncated_in_the_event_with_a_pointer(
    tmp_path: Path, receivers: Any, engine_with: Any
) -> None:
    rec, url = await receivers()
    flows = tmp_path / "flows"
    write_flow(
        flows,
        """
        name: big
        params: {size: {type: integer}}
        steps:
          a: {function: handlers:blob, input: {size: "{{ params.size }}"}}
        outputs: {blob: "{{ steps.a.output }}"}
        """,
        "def blob(event, context):\n    return 'x' * event['size']\n",
    )
    engine = await engine_with(flows, tmp_path / "data", [sub(url)])
    small = await engine.run_to_end("big", {"size": 1000}, timeout_s=20)
    large = await engine.run_to_end("big", {"size": 70_000}, timeout_s=20)
    await wait_until(lambda: len(rec.got) == 2, what="two notifications")
    by_run = {e["detail"]["run_id"]: e["detail"] for e in rec.events()}
    assert by_run[small["run_id"]]["outputs"] == {"blob": "x" * 1000}
    cut = by_run[large["run_id"]]
    assert cut["outputs"] is None
    assert cut["outputs_truncated"] == {"size_bytes": 70_011, "url": f"/api/v1/runs/{large['run_id']}"}
    assert large["outputs"] == {"blob": "x" * 70_000}  # the store keeps all of it


def test_server_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.config import load_config

    path = tmp_path / "sluice.yaml"
    path.write_text(
        'retention_days: 7\nsubscribers:\n  - {url: "http://127.0.0.1:9/x", on: [FAILED], rate: 5}\n'
    )
    monkeypatch.setenv("SLUICE_CONFIG", str(path))
    config = load_config()
    (one,) = subscribers_from_config(config.subscribers)
    assert config.retention_days == 7 and one.on == ("FAILED",) and one.rate_per_s == 5.0
    path.write_text("subscriber: []\n")
    with pytest.raises(ValueError, match="unknown setting 'subscriber'"):
        load_config()
    with pytest.raises(ValueError, match=r"subscribers\[0\]: unknown field 'retries'"):
        subscribers_from_config([{"url": "http://x/", "retries": 3}])
    with pytest.raises(ValueError, match="not in paths"):
        subscribers_from_config([{"url": "http://x/", "transform": {"template": "<a>"}}])


async def test_url_destinations_receive_a_signed_invocation_record(
    tmp_path: Path, receivers: Any, engine_with: Any
) -> None:
    rec, url = await receivers()
    flows = tmp_path / "flows"
    text = FLOW.format(name="dest") + f'on_success: {{url: "{url}", secret: {SECRET}}}\n'
    write_flow(flows, text, HANDLERS, name="dest.yaml")
    engine = await engine_with(flows, tmp_path / "data")
    summary = await engine.run_to_end("dest", {"n": 1}, timeout_s=20)
    await wait_until(lambda: rec.got, what="the invocation record")
    got = rec.got[0]
    record = json.loads(got["body"])
    assert record["requestContext"]["requestId"] == summary["run_id"]
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["requestPayload"]["detail"] == {"n": 1}  # the invocation's event, as Lambda's record
    assert record["responsePayload"] == {"n": 2}
    assert docs_verify(SECRET, got["body"], got["headers"]["Sluice-Signature"])
