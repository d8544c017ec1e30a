"""The OpenAPI document covers every served route, and real answers match it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jsonschema
import pytest

from engine.api.openapi import document
from engine.config import ServerConfig
from engine.engine import Engine, Settings
from engine.server import Server, compose
from tests.support.engines import write_flow
from workflows.loader import load_dir

#: the routes the document promises; the dashboard's pages and its login form are for browsers
DOCUMENTED = re.compile(r"^/(api/v1/|hooks/|healthz$|readyz$|metrics$)")

FLOW = """
name: quick
steps:
  one: {function: "handlers:one"}
"""
HANDLERS = "def one(event, context):\n    return 1\n"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Server]:
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    settings = Settings(data_dir=tmp_path / "data", workers=1, grace_s=1, port=0)
    engine = Engine(settings, load_dir(tmp_path / "flows"))
    server = compose(engine, ServerConfig())
    async with engine:
        yield server


async def test_every_route_is_in_the_document(served: Server) -> None:
    assert served.http.runner is not None
    app = served.http.runner.app
    doc = document()
    missing = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if not DOCUMENTED.match(path) or route.method == "HEAD":
            continue
        ops = doc["paths"].get(path, {})
        methods = ["post"] if route.method == "*" else [route.method.lower()]
        missing += [f"{m.upper()} {path}" for m in methods if m not in ops]
    assert not missing, f"routes missing from engine/api/openapi.py: {missing}"


async def test_answers_match_the_document(served: Server) -> None:
    base = f"http://127.0.0.1:{served.http.port}"
    doc = document()
    schemas = doc["components"]["schemas"]

    def check(path: str, status: int, body: object) -> None:
        answer = doc["paths"][path]["get"]["responses"][str(status)]
        schema = answer["content"]["application/json"]["schema"]
        jsonschema.validate(body, {**schema, "components": {"schemas": schemas}})  # refs resolve in it

    run = await served.engine.run_to_end("quick", timeout_s=20)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/v1/openapi.json") as resp:
            assert resp.status == 200 and (await resp.json())["openapi"] == "3.1.0"
        async with http.get(f"{base}/api/v1/runs") as resp:
            check("/api/v1/runs", 200, await resp.json())
        async with http.get(f"{base}/api/v1/runs/{run['run_id']}") as resp:
            check("/api/v1/runs/{id}", 200, await resp.json())
        async with http.get(f"{base}/api/v1/runs/r-nope") as resp:
            check("/api/v1/runs/{id}", 404, await resp.json())
