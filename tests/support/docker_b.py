"""The second real Docker daemon (.ci/docker-b-setup.sh), for environments with several hosts.

Loaded for every test by ``tests/conftest.py``; like the main daemon's fixtures, a test that asks
for it skips locally and fails in CI when it is not there.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from engine.executors.docker_api import DockerClient, DockerError
from tests.support.docker import TEST_IMAGE, TEST_LABEL

SOCK_B = os.environ.get("SLUICE_DOCKER_B_SOCK", "/run/docker-b.sock")
B = f"unix://{SOCK_B}"


@pytest_asyncio.fixture
async def docker_b(docker_client: DockerClient, docker_test_label: str) -> AsyncIterator[DockerClient]:
    """The second daemon (skips locally, fails in CI, when it is not there); removes the test's
    leftover containers there and fails the test if there were any."""
    client = DockerClient(B, call_timeout_s=5.0)
    try:
        await client.ping()
        if not await client.image_exists(TEST_IMAGE):
            raise DockerError(404, f"image {TEST_IMAGE} is missing there")
    except DockerError as exc:
        await client.aclose()
        message = f"the second Docker daemon at {B} is not usable: {exc} (run .ci/docker-b-setup.sh as root)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield client
        left = await client.list({TEST_LABEL: docker_test_label}, all=True)
        for container in left:
            await client.remove(container["Id"], force=True)
        assert not left, f"containers left on {B}: {[c['Names'] for c in left]}"
    finally:
        await client.aclose()
