"""The engine's side of the fork server (see forkserver.py): workers as process-like objects.

:class:`ForkServer` starts the server process, asks it for workers and keeps the children's exit
statuses it reports; :class:`ForkedProcess` offers what the pool uses of
``asyncio.subprocess.Process``, so the pool handles exec'd and forked workers alike.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections import deque
from pathlib import Path

log = logging.getLogger(__name__)

SERVER_SCRIPT = str(Path(__file__).with_name("forkserver.py"))
_START_TIMEOUT_S = 30.0


class ForkServerGone(RuntimeError):
    """The fork server is not running (or just died): start the worker as a fresh interpreter."""


class ForkedProcess:
    """A worker forked by the server: ``pid``, ``returncode``, ``wait``, signals, the two pipes."""

    def __init__(self, pid: int, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.returncode: int | None = None
        self._exited = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"<ForkedProcess {self.pid} returncode={self.returncode}>"

    def _exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._exited.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:  # reaped pids may be reused: never signal after the exit report
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """One fork-server process. ``spawn()`` returns a started worker or raises ForkServerGone."""

    def __init__(
        self, python: str, keep_fds: tuple[int, ...] = (), env: dict[str, str] | None = None
    ) -> None:
        self.python = python
        self.env = {} if env is None else env  #: the server's environment, and so its workers'
        self.keep_fds = keep_fds  #: passed to the server, so every child it forks holds them too
        self.proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._waiting: deque[asyncio.Future[int]] = deque()  #: spawn answers come in request order
        self._children: dict[int, ForkedProcess] = {}
        self._early_exits: dict[int, int] = {}  #: exits reported before the pid was handed out
        self._abandoned: set[int] = set()  #: children whose spawn timed out: their exit is dropped
        self._reader: asyncio.Task[None] | None = None
        self.alive = False

    async def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                self.python,
                SERVER_SCRIPT,
                str(theirs.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                pass_fds=(theirs.fileno(), *self.keep_fds),
                env=self.env,  # the pool's clean environment (workers.clean_environ), not ours
                start_new_session=True,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self.alive = True
        self._reader = asyncio.create_task(self._read(), name="fork server reader")

    async def spawn(self) -> ForkedProcess:
        if not self.alive or self._sock is None:
            raise ForkServerGone("the fork server is not running")
        loop = asyncio.get_running_loop()
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        answer: asyncio.Future[int] = loop.create_future()
        try:
            socket.send_fds(self._sock, [b"F"], [in_r, out_w])
        except OSError as exc:
            os.close(in_w)
            os.close(out_r)
            raise ForkServerGone(f"cannot reach the fork server: {exc}") from exc
        finally:  # the child's ends: the server has its own copies now (each fd closed exactly once)
            os.close(in_r)
            os.close(out_w)
        self._waiting.append(answer)
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                pid = await answer
        except BaseException:
            os.close(in_w)
            os.close(out_r)
            raise
        stdout = asyncio.StreamReader(limit=2**26, loop=loop)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdout), os.fdopen(out_r, "rb", 0))
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), os.fdopen(in_w, "wb", 0)
        )
        stdin = asyncio.StreamWriter(transport, protocol, None, loop)
        child = ForkedProcess(pid, stdin, stdout)
        self._children[pid] = child
        if pid in self._early_exits:
            child._exit(self._early_exits.pop(pid))
        return child

    async def _read(self) -> None:
        assert self._sock is not None
        loop, buf = asyncio.get_running_loop(), b""
        try:
            while True:
                data = await loop.sock_recv(self._sock, 65536)
                if not data:
                    break
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._message(line.decode())
        except OSError as exc:
            log.warning("fork server: %s", exc)
        finally:
            self._gone()

    def _message(self, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "S":
            if self._waiting:
                fut, pid = self._waiting.popleft(), int(rest)
                if fut.done():  # its spawn timed out: the child sees EOF on its pipes and exits
                    self._abandoned.add(pid)
                self._answer(fut, pid, None)
        elif kind == "E":
            if self._waiting:
                self._answer(self._waiting.popleft(), None, ForkServerGone(f"fork failed: {rest}"))
        elif kind == "X":
            pid, code = (int(x) for x in rest.split())
            child = self._children.pop(pid, None)
            if child is not None:
                child._exit(code)
            elif pid in self._abandoned:
                self._abandoned.discard(pid)
            else:
                self._early_exits[pid] = code

    @staticmethod
    def _answer(fut: asyncio.Future[int], pid: int | None, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            assert pid is not None
            fut.set_result(pid)

    def _gone(self) -> None:
        """The server exited: its children were killed with it (PR_SET_PDEATHSIG); say so."""
        if self.alive:
            log.warning("the function fork server exited; new workers start as fresh interpreters")
        self.alive = False
        while self._waiting:
            self._answer(self._waiting.popleft(), None, ForkServerGone("the fork server exited"))
        for child in self._children.values():
            child._exit(-signal.SIGKILL)
        self._children.clear()

    async def aclose(self) -> None:
        """Close the socket (the server exits once its children have) and wait for it."""
        self.alive = False  # a planned exit: the reader's end must not warn about it
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._gone()
        if self.proc is not None and self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
