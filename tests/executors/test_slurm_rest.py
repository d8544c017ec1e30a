"""slurmrestd over http with JWT auth: the headers, the token's absence, a refused token.

CI's slurmrestd serves rest_auth/local on a unix socket (a JWT key in slurm.conf would mean
restarting the shared cluster). So the JWT side is a real aiohttp server on 127.0.0.1 that
does what slurmrestd's auth/jwt does with the two headers, and passes what it lets through to
the real slurmrestd behind it.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from engine.executors.docker import EXITED, ContainerRequest
from engine.executors.docker_api import DockerClient
from engine.executors.slurm import SlurmConfig, SlurmRunner
from engine.executors.slurm_squeue import SlurmError
from tests.support.slurm import cancel_and_wait

pytestmark = [pytest.mark.docker, pytest.mark.slurm]

TOKEN = "jwt-never-shown-4f1a"


@pytest.fixture
async def jwt_gate(slurmrestd_ready: str) -> AsyncIterator[str]:
    """``http://127.0.0.1:PORT``: checks X-SLURM-USER-NAME/-TOKEN, then forwards to slurmrestd."""
    upstream = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=slurmrestd_ready[5:]))

    async def gate(request: web.Request) -> web.StreamResponse:
        if (request.headers.get("X-SLURM-USER-NAME"), request.headers.get("X-SLURM-USER-TOKEN")) != (
            getpass.getuser(),
            TOKEN,
        ):
            return web.Response(text="Authentication failure", status=401)
        body = await request.read()
        async with upstream.request(request.method, "http://x" + request.path_qs, data=body or None,
                                    headers={"Content-Type": "application/json"}) as resp:  # fmt: skip
            return web.Response(body=await resp.read(), status=resp.status, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", gate)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await upstream.close()


async def test_a_job_through_slurmrestd_with_a_jwt(
    jwt_gate: str,
    make_container_request: Callable[..., ContainerRequest],
    tmp_path: Path,
    docker_client: DockerClient,
    docker_test_label: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    config = SlurmConfig.from_json(
        {"shared_dir": str(tmp_path / "shared"), "poll_s": 0.3, "rest_url": jwt_gate}
    )
    runner = SlurmRunner(config, pull_timeout_s=10.0)
    try:
        monkeypatch.delenv("SLURM_JWT", raising=False)
        with pytest.raises(SlurmError, match="needs a JWT: set SLURM_JWT"):
            await runner.run(make_container_request(command=["true"]))
        monkeypatch.setenv("SLURM_JWT", "not-the-token")
        with pytest.raises(SlurmError, match="refused our credentials"):
            await runner.run(make_container_request(command=["true"]))
        monkeypatch.setenv("SLURM_JWT", TOKEN)  # read at each call: no new runner needed
        result = await runner.run(make_container_request(command=["sh", "-c", "exit 5"]))
        assert (result.exit_code, result.status_reason) == (5, EXITED)
        assert TOKEN not in caplog.text and "not-the-token" not in caplog.text
    finally:
        await cancel_and_wait(
            lambda j: str(j.get("comment")).startswith(f"sluice.job-id={docker_test_label}"),
            docker_client,
            docker_test_label,
        )
        await runner.aclose()
