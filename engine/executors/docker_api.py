"""A small async client for the Docker Engine API, over the unix socket or TCP.

Why not the docker SDK or the CLI: the SDK is synchronous (a thread per blocking ``wait``
and per log stream would cap how many containers we can watch), and shelling out costs a
process per call (~18 ms here) and parses text meant for humans. The Engine API is a plain
HTTP/JSON API, so aiohttp covers it in a few hundred lines, with one connection per long
poll (``wait``, ``logs``) and no thread.

The API version is negotiated once (``/version`` is unversioned): the server's own version
capped at :data:`MAX_API_VERSION`, but never below the server's minimum, so the client keeps
working against old (20.10, API 1.41) and new (29.x, minimum 1.44) daemons alike. Every
field used here exists unchanged in all of those versions.

Example::

    client = DockerClient()                      # DOCKER_HOST, else /var/run/docker.sock
    try:
        cid = await client.create("hello", {"Image": "busybox:1.36", "Cmd": ["echo", "hi"]})
        await client.start(cid)
        async for stream, chunk in client.logs(cid):
            print(stream, chunk)
        print(await client.wait(cid))            # 0
        await client.remove(cid)
    finally:
        await client.aclose()
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import struct
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from engine.executors.docker_ssh import SshOptions, SshTunnel
from workflows.errors import SluiceError

DEFAULT_SOCKET = "/var/run/docker.sock"
#: highest API version this client asks for; see the module docstring
MAX_API_VERSION = "1.45"
#: Docker's multiplexed log frame header: stream (1 byte), 3 zero bytes, payload size (uint32 BE)
_FRAME_HEADER = struct.Struct(">BxxxL")
_STREAMS = {0: "stdin", 1: "stdout", 2: "stderr"}
#: plain calls (create, start, inspect, ...) answer in well under a second; a daemon that
#: takes longer than this is stuck, and a clear error beats a hang
DEFAULT_CALL_TIMEOUT_S = 60.0
#: long polls (wait, logs with follow) have no total deadline, only a connect one
_LONG_POLL = aiohttp.ClientTimeout(total=None, connect=10.0, sock_connect=10.0, sock_read=None)


class DockerError(SluiceError):
    """An error answer from the Docker daemon, or no answer at all.

    ``status`` is the HTTP status (404 no such container/image, 409 conflict, 500 daemon
    error), or ``0`` when there was no HTTP answer (daemon unreachable, client-side timeout).
    ``message`` is Docker's own message, which names the object and the problem.
    """

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"Docker API {self.status}: {self.message}" if self.status else f"Docker: {self.message}"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The client's side of a daemon run with ``--tlsverify``: the CA that signed the daemon's
    certificate, and our certificate and key (as ``docker --tlsverify --tlscacert --tlscert
    --tlskey`` takes them). The daemon's certificate must name the host we dial."""

    ca: str
    cert: str
    key: str

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def _split_host(url: str, tls: TlsFiles | None = None) -> tuple[aiohttp.BaseConnector, str, str]:
    """(connector, base URL, socket description) for a ``DOCKER_HOST``-style URL."""
    # limit=0: every running container holds two long polls (wait + logs); a pool limit
    # would silently queue the next job's create behind them.
    if url.startswith("unix://"):
        path = url[len("unix://") :]
        return aiohttp.UnixConnector(path=path, limit=0), "http://docker", path
    if url.startswith(("tcp://", "http://")) and tls is not None:
        base = "https://" + url.split("://", 1)[1].rstrip("/")
        return aiohttp.TCPConnector(limit=0, ssl=tls.context()), base, base
    if url.startswith(("tcp://", "http://")):
        base = "http://" + url.split("://", 1)[1].rstrip("/")
        return aiohttp.TCPConnector(limit=0), base, base
    raise DockerError(
        0, f"unsupported Docker host {url!r} (write unix:///var/run/docker.sock or tcp://HOST:2375)"
    )


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def _split_ref(ref: str) -> tuple[str, str | None]:
    """Image reference -> (repository, tag); the tag is None when a digest pins it."""
    if "@" in ref:
        return ref, None
    repo, sep, tag = ref.rpartition(":")
    # "localhost:5000/busybox" has a colon in the registry part, not a tag
    if not sep or "/" in tag:
        return ref, "latest"
    return repo, tag


class DockerClient:
    """Async Docker Engine API client; one aiohttp session shared by every call.

    Args:
        host: ``unix:///path`` or ``tcp://host:port``; default ``$DOCKER_HOST``, else the
            local socket.
        call_timeout_s: deadline of each non-streaming call.
        tls: client certificate files for a ``tcp://`` daemon run with ``--tlsverify``.
        ssh: the key and known hosts for an ``ssh://user@host`` daemon (through
            ``docker system dial-stdio`` there, as the Docker CLI does it).
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        tls: TlsFiles | None = None,
        ssh: SshOptions | None = None,
    ) -> None:
        self.host = host or os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
        self._tunnel: SshTunnel | None = None
        connector: aiohttp.BaseConnector
        if self.host.startswith("ssh://"):
            self._tunnel = SshTunnel(self.host, ssh)
            connector = aiohttp.UnixConnector(path=self._tunnel.path, limit=0)
            self._base, self._where = "http://docker", self.host
        else:
            connector, self._base, self._where = _split_host(self.host, tls)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=call_timeout_s)
        )
        self._api_version: str | None = None
        self._negotiating = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<DockerClient host={self.host!r} api={self._api_version or '?'}>"

    async def __aenter__(self) -> DockerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool; idempotent."""
        if not self._session.closed:
            await self._session.close()
        if self._tunnel is not None:
            await self._tunnel.aclose()

    # -- transport ---------------------------------------------------------------------

    async def _prefix(self) -> str:
        if self._api_version is None:
            async with self._negotiating:
                if self._api_version is None:
                    data = await self._call("GET", "/version", prefix="")
                    server = data.get("ApiVersion", "1.41")
                    minimum = data.get("MinAPIVersion", "1.12")
                    chosen = min(server, MAX_API_VERSION, key=_version_tuple)
                    self._api_version = max(chosen, minimum, key=_version_tuple)
        return f"/v{self._api_version}"

    async def _open(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        deadline: aiohttp.ClientTimeout | None = None,
        prefix: str | None = None,
    ) -> aiohttp.ClientResponse:
        """Send a request; return the response for a 2xx/304, raise DockerError otherwise."""
        if self._tunnel is not None:
            await self._tunnel.ensure()
        url = self._base + (await self._prefix() if prefix is None else prefix) + path
        kwargs: dict[str, Any] = {"params": params}
        if body is not None:
            kwargs["json"] = body
        if deadline is not None:
            kwargs["timeout"] = deadline
        try:
            resp = await self._session.request(method, url, **kwargs)
        except TimeoutError as exc:  # first: aiohttp's timeouts are also connection errors
            raise DockerError(0, f"{method} {path} got no answer from {self._where} in time") from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise DockerError(
                0, f"cannot reach the Docker daemon at {self._where}: {exc} (is dockerd running?)"
            ) from exc
        if resp.status < 300 or resp.status == 304:
            return resp
        async with resp:
            text = await resp.text()
        try:
            message = json.loads(text).get("message", text)
        except (ValueError, AttributeError):
            message = text.strip() or resp.reason or "no message"
        raise DockerError(resp.status, message)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        deadline: aiohttp.ClientTimeout | None = None,
        prefix: str | None = None,
    ) -> Any:
        """One request, fully read: parsed JSON, the text, or None for an empty answer."""
        resp = await self._open(method, path, params=params, body=body, deadline=deadline, prefix=prefix)
        async with resp:
            try:
                raw = await resp.read()
            except TimeoutError as exc:
                raise DockerError(0, f"{method} {path}: answer from {self._where} timed out") from exc
            except aiohttp.ClientError as exc:  # the daemon went away mid-answer (a restart)
                raise DockerError(0, f"{method} {path}: {self._where} closed the connection ({exc})") from exc
        if not raw:
            return None
        if resp.content_type == "application/json":
            return json.loads(raw)
        return raw.decode(errors="replace")

    # -- daemon ------------------------------------------------------------------------

    async def ping(self) -> bool:
        """True when the daemon answers ``/_ping``; raises DockerError when unreachable."""
        return await self._call("GET", "/_ping", prefix="") == "OK"

    async def version(self) -> dict[str, Any]:
        """The daemon's ``/version`` (Version, ApiVersion, MinAPIVersion, Os, Arch, ...)."""
        return await self._call("GET", "/version")

    async def info(self) -> dict[str, Any]:
        """The daemon's ``/info``; ``NCPU`` and ``MemTotal`` (bytes) size a compute environment."""
        return await self._call("GET", "/info")

    # -- images ------------------------------------------------------------------------

    async def image_exists(self, ref: str) -> bool:
        """True when ``ref`` (``name:tag`` or digest) is present locally."""
        try:
            await self._call("GET", f"/images/{ref}/json")
        except DockerError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def pull(self, ref: str, timeout_s: float = 60.0) -> None:
        """Pull ``ref`` from its registry, failing within ``timeout_s``.

        Docker reports most pull failures (unknown repository, denied, registry down)
        inside a 200 answer as ``{"error": ...}`` lines of the progress stream, so the whole
        stream is read and checked; an offline daemon answers at once with a 500.
        """
        repo, tag = _split_ref(ref)
        params = {"fromImage": repo} | ({"tag": tag} if tag else {})
        try:
            async with asyncio.timeout(timeout_s):
                resp = await self._open("POST", "/images/create", params=params, deadline=_LONG_POLL)
                async with resp:
                    async for line in resp.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if "error" in event:
                            raise DockerError(500, str(event["error"]))
        except TimeoutError as exc:
            raise DockerError(0, f"pull of {ref} did not finish within {timeout_s:g}s") from exc

    # -- containers --------------------------------------------------------------------

    async def create(self, name: str | None, config: Mapping[str, Any]) -> str:
        """Create a container from an Engine API ``ContainerConfig`` (with ``HostConfig``); its id."""
        params = {"name": name} if name else None
        data = await self._call("POST", "/containers/create", params=params, body=dict(config))
        return str(data["Id"])

    async def start(self, container_id: str) -> None:
        """Start a created container (a no-op for one already running)."""
        await self._call("POST", f"/containers/{container_id}/start")

    async def init(self, container_id: str) -> None:
        """Podman only (its libpod API): set a created container up, cgroup and all, without
        running its command; ``start`` then runs it. Docker has no such step."""
        await self._call("POST", f"/libpod/containers/{container_id}/init")

    async def wait(self, container_id: str) -> int:
        """Block until the container is not running; its exit code.

        A long poll with no client deadline: bound it with ``asyncio.timeout`` around the call.
        """
        data = await self._call(
            "POST",
            f"/containers/{container_id}/wait",
            params={"condition": "not-running"},
            deadline=_LONG_POLL,
        )
        error = (data.get("Error") or {}).get("Message")
        if error:
            raise DockerError(500, f"wait on {container_id[:12]}: {error}")
        return int(data["StatusCode"])

    async def inspect(self, container_id: str) -> dict[str, Any]:
        """The container's full inspect document (``State.OOMKilled``, ``ExitCode``, ``StartedAt``...)."""
        return await self._call("GET", f"/containers/{container_id}/json")

    async def kill(self, container_id: str, signal: str = "SIGKILL") -> None:
        """Send ``signal`` to the container's main process; 409 when it is not running."""
        await self._call("POST", f"/containers/{container_id}/kill", params={"signal": signal})

    async def stop(self, container_id: str, grace_s: float = 10.0) -> None:
        """Docker's stop: the image's stop signal (SIGTERM), ``grace_s`` (whole seconds), then SIGKILL."""
        seconds = max(0, round(grace_s))
        await self._call(
            "POST",
            f"/containers/{container_id}/stop",
            params={"t": str(seconds)},
            deadline=aiohttp.ClientTimeout(total=seconds + DEFAULT_CALL_TIMEOUT_S),
        )

    async def remove(self, container_id: str, force: bool = False) -> None:
        """Remove the container and its anonymous volumes; ``force`` kills it first if running."""
        params = {"force": "1" if force else "0", "v": "1"}
        await self._call("DELETE", f"/containers/{container_id}", params=params)

    async def logs(
        self, container_id: str, follow: bool = True, since: float | None = None
    ) -> AsyncIterator[tuple[str, bytes]]:
        """Yield ``(stream, chunk)`` as the container writes, ``stream`` being "stdout" or "stderr".

        Demultiplexes Docker's framing (8-byte header per chunk), so the two streams stay
        in the order the container wrote them. With ``follow`` the iterator ends when the
        container stops. ``since`` (epoch seconds) skips earlier output. Containers must
        not use a TTY (a TTY stream has no frames); ContainerRunner never asks for one.
        """
        params = {"stdout": "1", "stderr": "1", "follow": "1" if follow else "0"}
        if since is not None:
            params["since"] = f"{since:.9f}"
        resp = await self._open("GET", f"/containers/{container_id}/logs", params=params, deadline=_LONG_POLL)
        async with resp:
            while True:
                try:
                    header = await resp.content.readexactly(_FRAME_HEADER.size)
                except asyncio.IncompleteReadError:
                    return
                stream, size = _FRAME_HEADER.unpack(header)
                try:
                    payload = await resp.content.readexactly(size)
                except asyncio.IncompleteReadError as exc:
                    payload = exc.partial
                yield _STREAMS.get(stream, "stdout"), payload

    async def list(self, labels: Mapping[str, str | None] | None = None, all: bool = True) -> list[dict]:
        """Containers carrying every given label (``None`` as a value: the key, any value)."""
        params = {"all": "1" if all else "0"}
        if labels:
            wanted = [k if v is None else f"{k}={v}" for k, v in labels.items()]
            params["filters"] = json.dumps({"label": wanted})
        return await self._call("GET", "/containers/json", params=params)
