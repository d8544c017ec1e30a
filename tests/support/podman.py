"""Fixtures for tests against a real Podman service (``podman system service``) and its ``busybox:1.36``.

``.ci/podman-setup.sh`` installs Podman, builds the image into its store and starts the service on
``/run/podman/podman.sock``. As for Docker, nothing skips silently in CI: with ``CI`` set and the
service not answering (or the image missing), a Podman test *fails* saying what to run.
Containers a test made through ``make_container_request`` carry its label; teardown removes them
and fails the test if any was left.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import pytest_asyncio

from engine.executors.docker_api import DockerClient, DockerError
from engine.executors.podman import default_host
from tests.support.docker import TEST_IMAGE, TEST_LABEL


async def _probe() -> str | None:
    try:
        async with DockerClient(default_host(), call_timeout_s=5.0) as client:
            version = await client.version()
            if "podman" not in str(version.get("Components", "")).lower():
                return f"{default_host()} answers, but it is not Podman"
            if not await client.image_exists(TEST_IMAGE):
                return f"image {TEST_IMAGE} is missing from Podman's store"
    except DockerError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def podman_ready() -> None:
    """Skip (locally) or fail (when ``CI`` is set) unless the Podman service answers with the image."""
    # in a thread of its own: the first to ask may be an async fixture, inside a running loop
    with ThreadPoolExecutor(1) as pool:
        problem = pool.submit(lambda: asyncio.run(_probe())).result()
    if problem is None:
        return
    message = f"Podman is not usable: {problem} (run .ci/podman-setup.sh as root)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so Podman tests may not skip. {message}", pytrace=False)
    pytest.skip(message)


async def remove_leftovers(client: DockerClient, label: str) -> None:
    """Remove the containers carrying ``label``; fail the test if there were any."""
    left = await client.list({TEST_LABEL: label}, all=True)
    for container in left:
        await client.remove(container["Id"], force=True)
    if left:
        names = ", ".join(f"{c['Names'][0]} ({c['State']})" for c in left)
        pytest.fail(f"Podman containers left behind by the test: {names}", pytrace=False)


@pytest_asyncio.fixture
async def podman_client(podman_ready: None, docker_test_label: str) -> AsyncIterator[DockerClient]:
    """A client of the Podman service; teardown removes (and reports) the test's containers."""
    client = DockerClient(default_host())
    try:
        yield client
        await remove_leftovers(client, docker_test_label)
    finally:
        await client.aclose()
