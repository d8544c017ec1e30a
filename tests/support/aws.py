"""A composed ``sluice serve`` (engine/server.py) on a free port, boto3 clients for it, and a check
that every answer fits botocore's documented output shape.

boto3 is synchronous: its calls run in a thread (``await aws(client.op, ...)``) while the server
runs on the test's loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.validate import ParamValidator, ValidationErrors

from engine.config import ServerConfig
from engine.engine import Engine, Settings
from engine.server import compose
from tests.support.docker import TEST_LABEL
from workflows.loader import load_dir


@dataclass
class AwsServer:
    engine: Engine
    url: str
    token: str | None = None

    def client(self, service: str, *, secret: str | None = None, key: str = "sluice") -> Any:
        """A boto3 client signed with ``key``/``secret`` (default: the server's token, or ``x``)."""
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret or self.token or "x",
            config=Config(
                retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=60
            ),
        )


MakeAwsServer = Callable[..., Awaitable[AwsServer]]


@pytest.fixture
async def aws_server(
    tmp_path: Path, docker_client: Any, docker_test_label: str
) -> AsyncIterator[MakeAwsServer]:
    """``await aws_server(flows, token=None)``: the composed server, its containers test-labelled."""
    engines: list[Engine] = []

    async def make(flows: Path | None = None, *, token: str | None = None, data: str = "data") -> AwsServer:
        if flows is None:
            flows = tmp_path / "flows"
            flows.mkdir(exist_ok=True)
        settings = Settings(data_dir=tmp_path / data, workers=1, grace_s=2, port=0)
        engine = Engine(settings, load_dir(flows))
        old = os.environ.get("SLUICE_API_TOKEN")
        os.environ.pop("SLUICE_API_TOKEN", None)
        if token is not None:
            os.environ["SLUICE_API_TOKEN"] = token
        try:
            server = compose(engine, ServerConfig())
        finally:
            os.environ.pop("SLUICE_API_TOKEN", None)
            if old is not None:
                os.environ["SLUICE_API_TOKEN"] = old
        engines.append(engine)
        await engine.start()
        assert engine.batch is not None
        engine.batch.labels[TEST_LABEL] = docker_test_label
        engine.batch.stop_grace_s = 1.0
        return AwsServer(engine, f"http://127.0.0.1:{server.http.port}", token)

    yield make
    for engine in engines:
        await engine.stop(grace_s=0)


async def aws(fn: Callable[..., Any], **kw: Any) -> Any:
    """Run one boto3 call in a thread (the server shares this loop) and check its answer's shape."""
    out = await asyncio.to_thread(fn, **kw)
    check_shape(fn, out)
    return out


#: members botocore's model marks required that AWS itself leaves out (startedAt of a job not
#: started yet)
_OPTIONAL_IN_PRACTICE = {"startedAt"}


def check_shape(fn: Any, answer: dict[str, Any]) -> None:
    """The answer, as botocore parsed it, fits the operation's output shape exactly."""
    client = fn.__self__
    op_name = client.meta.method_to_api_mapping[fn.__name__]
    shape = client.meta.service_model.operation_model(op_name).output_shape
    body = {k: v for k, v in answer.items() if k != "ResponseMetadata"}
    if shape is None:
        assert body == {}, body
        return
    errors = ValidationErrors()
    ParamValidator()._validate(body, shape, errors, "answer")  # what botocore runs on every request
    problems = [
        e for e in errors._errors
        if not (e[0] == "missing required field" and e[2].get("required_name") in _OPTIONAL_IN_PRACTICE)
    ]  # fmt: skip
    assert not problems, problems
