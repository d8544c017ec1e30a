"""Hostile webhook and API bodies on a live server: every one gets a 4xx with a reason, none a 5xx.

Compressed bodies are limited by their decoded size while decoding (a 5 KB gzip body once
stored a 5.2 MB event); deeply nested JSON, huge integers, 1e400 and lone surrogates are
refused as bad JSON instead of failing later in the store.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.engines import write_flow
from tests.support.http import Serve, Served

FLOW = """
name: inbox
triggers:
  - webhook: {name: open, auth: none, max_body: 64KiB}
  - webhook: {name: stamped, secret: "s3cr3t", timestamp_header: X-Timestamp, tolerance: 60s}
steps:
  keep: {function: "handlers:keep"}
"""
HANDLERS = "def keep(event, context):\n    return len(str(event))\n"


@pytest.fixture
async def inbox(serve: Serve, tmp_path: Path) -> Served:
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    return await serve(tmp_path / "flows")


async def post(http: aiohttp.ClientSession, url: str, data: bytes, **headers: str) -> tuple[int, Any]:
    headers.setdefault("Content-Type", "application/json")
    async with http.post(url, data=data, headers=headers, compress=None) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else None)


async def stored_events(served: Served) -> int:
    sql = "SELECT COUNT(*) FROM events WHERE source='sluice.webhook'"
    return int(await served.engine.store.read(lambda c: c.execute(sql).fetchone()[0]))


async def test_a_gzip_body_counts_its_decoded_size(inbox: Served, http: aiohttp.ClientSession) -> None:
    url = f"{inbox.url}/hooks/inbox/open"
    bomb = gzip.compress(json.dumps({"pad": " " * 5_000_000}).encode())  # ~5 KB on the wire
    assert len(bomb) < 64 * 1024
    status, answer = await post(http, url, bomb, **{"Content-Encoding": "gzip"})
    assert status == 413, answer
    assert "limit of 65536 bytes" in answer["error"]["message"]
    small = gzip.compress(b'{"ok": true}')
    status, answer = await post(http, url, small, **{"Content-Encoding": "gzip"})
    assert status == 202, answer
    status, answer = await post(http, url, zlib.compress(b'{"ok": 2}'), **{"Content-Encoding": "deflate"})
    assert status == 202, answer
    assert await stored_events(inbox) == 2


async def test_a_compression_header_on_a_plain_body_is_a_400(
    inbox: Served, http: aiohttp.ClientSession
) -> None:
    url = f"{inbox.url}/hooks/inbox/open"
    status, answer = await post(http, url, b'{"plain": true}', **{"Content-Encoding": "gzip"})
    assert status == 400 and answer["error"]["code"] == "bad_encoding", answer
    status, answer = await post(http, url, b'{"plain": true}', **{"Content-Encoding": "snappy"})
    assert status == 415 and "gzip" in answer["error"]["message"], answer
    truncated = gzip.compress(b'{"cut": "' + b"x" * 1000 + b'"}')[:-12]
    status, answer = await post(http, url, truncated, **{"Content-Encoding": "gzip"})
    assert status == 400 and answer["error"]["code"] == "bad_encoding", answer
    assert await stored_events(inbox) == 0


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"[" * 1000 + b"]" * 1000, "nested"),
        (b'{"n": ' + b"9" * 5000 + b"}", "digits"),
        (b'{"n": 1e400}', "finite"),
        (b'{"s": "\\ud800"}', "surrogate"),
    ],
    ids=["deep", "huge-int", "1e400", "lone-surrogate"],
)
async def test_json_that_cannot_be_stored_is_refused_at_the_door(
    inbox: Served, http: aiohttp.ClientSession, body: bytes, needle: str
) -> None:
    status, answer = await post(http, f"{inbox.url}/hooks/inbox/open", body)
    assert status == 422 and answer["error"]["code"] == "bad_json", answer
    assert needle in answer["error"]["message"]
    status, answer = await post(
        http, f"{inbox.url}/api/v1/events", b'{"Entries": [{"Detail": ' + body + b"}]}"
    )
    assert 400 <= status < 500, answer
    assert await stored_events(inbox) == 0


async def test_a_timestamp_that_is_not_a_finite_number_is_refused(
    inbox: Served, http: aiohttp.ClientSession
) -> None:
    url = f"{inbox.url}/hooks/inbox/stamped"
    for stamp in ("nan", "inf", "-inf", "1e999"):
        status, answer = await post(
            http, url, b"{}", **{"X-Timestamp": stamp, "X-Hub-Signature-256": "sha256=00"}
        )
        assert status == 401, (stamp, answer)
        assert "Unix seconds" in answer["error"]["message"]
    assert int(time.time()) > 0
