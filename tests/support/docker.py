"""Fixtures for tests that need a real Docker engine and the local ``busybox:1.36`` image.

Loaded for every test by ``tests/conftest.py`` (``pytest_plugins``); import
the helpers from ``tests.support.docker``. Mark such tests ``@pytest.mark.docker``.

Nothing is skipped silently in CI: when the ``CI`` environment variable is set and Docker
is unreachable (or the image is missing), every test that asks for Docker *fails* with what
to run; elsewhere they skip with the same reason. ``.ci/docker-setup.sh`` makes both true.

Every container a test creates through :func:`make_container_request` carries a label unique
to that test; teardown force-removes whatever still carries it and fails the test if
anything did, because the runner promises to remove its containers.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from engine.executors.docker import ContainerRequest, ContainerRunner
from engine.executors.docker_api import DockerClient, DockerError

#: the image every Docker test uses; .ci/docker-setup.sh builds it from busybox-static
TEST_IMAGE = "busybox:1.36"
#: label carrying the per-test value that cleanup filters on
TEST_LABEL = "sluice.test"


async def _probe() -> str | None:
    """None when Docker answers and has the test image; otherwise why not."""
    try:
        async with DockerClient(call_timeout_s=5.0) as client:
            await client.ping()
            if not await client.image_exists(TEST_IMAGE):
                return f"image {TEST_IMAGE} is missing"
    except DockerError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """Skip (locally) or fail (when ``CI`` is set) unless Docker and the test image are there."""
    problem = asyncio.run(_probe())
    if problem is None:
        return
    message = f"Docker is not usable: {problem} (run .ci/docker-setup.sh as root)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so Docker tests may not skip. {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def docker_test_label() -> str:
    """A label value unique to this test; containers carrying it are removed at teardown."""
    return f"t-{uuid.uuid4().hex[:12]}"


async def _leftovers(client: DockerClient, label: str) -> list[dict[str, Any]]:
    return await client.list({TEST_LABEL: label}, all=True)


@pytest_asyncio.fixture
async def docker_client(docker_ready: None, docker_test_label: str) -> AsyncIterator[DockerClient]:
    """A DockerClient on this test's loop; teardown removes (and reports) the test's containers."""
    client = DockerClient()
    try:
        yield client
        left = await _leftovers(client, docker_test_label)
        for container in left:
            await client.remove(container["Id"], force=True)
        if left:
            names = ", ".join(f"{c['Names'][0]} ({c['State']})" for c in left)
            pytest.fail(f"containers left behind by the test: {names}", pytrace=False)
    finally:
        await client.aclose()


@pytest.fixture
def container_runner(docker_client: DockerClient) -> ContainerRunner:
    """A ContainerRunner on ``docker_client``, with a short pull timeout for offline machines."""
    return ContainerRunner(docker_client, pull_timeout_s=10.0)


@pytest.fixture
def docker_leftovers(docker_client: DockerClient, docker_test_label: str) -> Callable[[], Any]:
    """``await docker_leftovers()``: containers of this test that still exist (expect [])."""

    async def leftovers() -> list[dict[str, Any]]:
        return await _leftovers(docker_client, docker_test_label)

    return leftovers


@pytest.fixture
def make_container_request(tmp_path: Path, docker_test_label: str) -> Callable[..., ContainerRequest]:
    """Factory: ``make_container_request(command=[...], **overrides) -> ContainerRequest``.

    Defaults: the test image, 0.5 vCPU, 64 MiB, no network, a fresh log file under
    ``tmp_path``, a unique job id, and the test label (so teardown can find the container).
    """
    counter = iter(range(1, 1_000_000))

    def make(**overrides: Any) -> ContainerRequest:
        n = next(counter)
        labels = {**overrides.pop("labels", {}), TEST_LABEL: docker_test_label}
        fields: dict[str, Any] = {
            "job_id": f"{docker_test_label}-job{n}",
            "attempt": 1,
            "image": TEST_IMAGE,
            "command": ["true"],
            "vcpus": 0.5,
            "memory_bytes": 64 << 20,
            "network": "none",
            "log_path": str(tmp_path / f"job{n}.log"),
            "stop_grace_s": 2.0,
        }
        fields.update(overrides)
        return ContainerRequest(labels=labels, **fields)

    return make
