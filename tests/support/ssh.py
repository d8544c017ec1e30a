"""A private sshd on 127.0.0.1 for ``ssh://`` Docker endpoints: its own host key, one client key.

Runs Debian's openssh-server (``/usr/sbin/sshd -D``) as a child of the test, on an ephemeral
port, letting in only the test's key; the remote side is this machine, so ``docker system
dial-stdio`` there reaches the local dockerd. Skips (fails in CI) when sshd is not installed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class Sshd:
    url: str  #: ssh://root@127.0.0.1:PORT
    identity: Path
    known_hosts: Path
    stranger: Path  #: a key sshd does not know


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prepare(folder: Path) -> int:
    """Keys, config and known_hosts for a private sshd; returns its port."""
    if not Path(SSHD).exists() or shutil.which("ssh") is None:
        message = "sshd is not installed (.ci/docker-setup.sh installs openssh-server)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so ssh tests may not skip. {message}", pytrace=False)
        pytest.skip(message)
    folder.mkdir()
    for name in ("host", "client", "stranger"):
        _keygen(folder / name)
    (folder / "authorized_keys").write_text((folder / "client.pub").read_text())
    port = _free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\nLogLevel ERROR\n"
    )
    host_key = (folder / "host.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    return port


@pytest.fixture
async def sshd(tmp_path: Path) -> AsyncIterator[Sshd]:
    folder = tmp_path / "ssh"
    port = _prepare(folder)
    proc = await asyncio.create_subprocess_exec(SSHD, "-D", "-e", "-f", str(folder / "sshd_config"))
    try:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                break
            except OSError:
                await asyncio.sleep(0.05)
        yield Sshd(
            f"ssh://root@127.0.0.1:{port}", folder / "client", folder / "known_hosts", folder / "stranger"
        )
    finally:
        proc.terminate()
        await proc.wait()
