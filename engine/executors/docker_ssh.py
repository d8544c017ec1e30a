"""``ssh://user@host`` Docker endpoints, done as the Docker CLI does them: ``docker system dial-stdio``.

An :class:`SshTunnel` is a unix socket in a private temp folder. Each connection made to it
runs ``ssh user@host docker system dial-stdio`` and pipes the bytes both ways, so the Engine API
client speaks HTTP to the remote daemon through ssh. Nothing listens on the network. The
remote user needs access to the daemon there, and ssh authenticates with a key (BatchMode: a
password prompt would hang). The host key is checked against ``known_hosts`` when one is
given, otherwise against the engine user's own ssh setup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SshOptions:
    identity: str | None = None  #: private key file (``ssh -i``)
    known_hosts: str | None = None  #: the host keys to trust (``UserKnownHostsFile``, checked strictly)


class SshTunnel:
    def __init__(self, url: str, options: SshOptions | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ssh" or not parts.hostname:
            raise ValueError(f"an ssh endpoint is ssh://[user@]host[:port], got {url!r}")
        self.target = f"{parts.username}@{parts.hostname}" if parts.username else parts.hostname
        self.port = parts.port
        self.options = options or SshOptions()
        self._folder = tempfile.mkdtemp(prefix="sluice-ssh-")
        self.path = str(Path(self._folder) / "docker.sock")
        self._server: asyncio.AbstractServer | None = None
        self._starting: asyncio.Lock | None = None
        self._links: set[asyncio.Task[None]] = set()

    def argv(self) -> list[str]:
        argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.options.identity:
            argv += ["-i", self.options.identity, "-o", "IdentitiesOnly=yes"]
        if self.options.known_hosts:
            argv += [
                "-o",
                f"UserKnownHostsFile={self.options.known_hosts}",
                "-o",
                "StrictHostKeyChecking=yes",
            ]
        return [*argv, "--", self.target, "docker", "system", "dial-stdio"]

    async def ensure(self) -> None:
        """Listen on the socket (once); every API call awaits this before it connects."""
        if self._server is not None:
            return
        self._starting = self._starting or asyncio.Lock()
        async with self._starting:
            if self._server is None:
                self._server = await asyncio.start_unix_server(self._link, path=self.path)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._links.add(task)
        proc = await asyncio.create_subprocess_exec(
            *self.argv(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            await asyncio.gather(_pump(reader, proc.stdin), _pump(proc.stdout, writer))
        finally:
            if proc.returncode is None:
                proc.terminate()
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(proc.wait())
            err = (await proc.stderr.read()).decode(errors="replace").strip()
            if proc.returncode not in (0, -15) and err:
                log.warning("ssh %s: %s", self.target, err[:300])
            writer.close()
            if task is not None:
                self._links.discard(task)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)
        shutil.rmtree(self._folder, ignore_errors=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, BrokenPipeError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
