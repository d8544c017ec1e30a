"""Disk full: intake answers 503 with Retry-After, nothing acknowledged is lost, and the engine
recovers by itself when space returns. The data dir is a small tmpfs the test mounts (root)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.engines import write_flow
from tests.support.http import Serve

FLOW = """
name: intake
triggers:
  - webhook: {name: in, auth: none}
steps:
  keep: {function: "handlers:keep"}
"""
HANDLERS = "def keep(event, context):\n    return event['detail']['body']\n"


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        message = f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); run as root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> Path:
    """Take every free byte (a file grown until ENOSPC)."""
    filler = folder / "filler"
    with filler.open("wb") as f:
        chunk = b"\0" * (1 << 16)
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with contextlib.suppress(OSError), filler.open("ab") as f:
        while True:  # the last few bytes
            f.write(b"\0")
            f.flush()
    return filler


async def test_a_full_disk_gives_503_loses_nothing_and_recovers(serve: Serve, tmp_path: Path) -> None:
    write_flow(tmp_path / "flows", FLOW, HANDLERS)
    with tmpfs(tmp_path / "disk", "24m") as disk:
        served = await serve(tmp_path / "flows", data_dir=disk / "data")
        url = f"{served.url}/hooks/intake/in"
        acked: list[str] = []
        async with aiohttp.ClientSession() as http:

            async def post(n: int) -> tuple[int, dict[str, str], dict]:
                async with http.post(url, json={"n": n}) as resp:
                    return resp.status, dict(resp.headers), await resp.json()

            for n in range(20):
                status, _, body = await post(n)
                assert status == 202
                acked.append(body["event_id"])
            filler = fill(disk)
            refused = 0
            for n in range(20, 200):
                status, headers, body = await post(n)
                assert status in (202, 503), (status, body)
                if status == 202:
                    acked.append(body["event_id"])
                else:
                    refused += 1
                    assert "Retry-After" in headers and body["error"]["code"] == "not_stored"
            assert refused > 0, "the disk never filled up"
            filler.unlink()
            for n in range(200, 210):
                for _ in range(50):  # as a client honouring Retry-After does
                    status, headers, body = await post(n)
                    if status == 202:
                        acked.append(body["event_id"])
                        break
                    await asyncio.sleep(min(0.2, float(headers.get("Retry-After", "1"))))
                else:
                    raise AssertionError("intake did not come back once the disk had space")
        engine = served.engine
        for event_id in acked:
            run = await engine.store.read(
                lambda c, e=event_id: c.execute("SELECT id FROM runs WHERE event_id=?", (e,)).fetchone()
            )
            assert run is not None, f"acknowledged event {event_id} has no run"
            assert await engine.orchestrator.wait(run[0], timeout_s=30) == "SUCCEEDED"
        await engine.stop(grace_s=1)
