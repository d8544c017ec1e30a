"""A fork server for function workers: new workers in ~2 ms instead of an interpreter start.

Scale-out used to start one fresh interpreter per worker (~15-20 ms of CPU each, plus imports):
20 sleeping steps on 2 cores paid ~0.3 s before the last one began. The fork server is one extra
process, started once as ``python <this file> <fd>`` (by path, like the worker: it imports nothing
from Sluice), that has already imported the worker module. For each new worker the parent makes
two pipes and sends the child's ends over a unix socket (``SCM_RIGHTS``); the server forks, the
child moves the pipes to fds 0/1 and runs the worker loop, the server answers with the pid.

Why not ``multiprocessing``'s forkserver: it pickles, owns the children's lifetime and cannot hand
us plain pipes with a pid we may SIGKILL at a deadline. Why not fork the engine: it has threads.

The server is the children's parent, so it reaps them and reports each exit status; the engine's
side (:class:`ForkServer`) turns that into a process object with the same surface as
``asyncio.subprocess.Process`` (pid, returncode, wait, kill, stdin, stdout). Children die with the
server (``PR_SET_PDEATHSIG``); if the server dies, their exits are reported as SIGKILL and the pool
goes back to starting interpreters. On EOF from the engine (the engine exited, even by ``kill -9``)
the server stops forking, kills each child's process group and exits once it has reaped them; each
worker also kills its own group when the engine's end of its stdin hangs up (worker.py), busy or not.

Messages, server to engine, one per line: ``S <pid>`` (forked, in request order), ``E <reason>``
(fork failed, in request order), ``X <pid> <returncode>`` (exited; negative = killed by signal).
"""

from __future__ import annotations

import os
import signal
import socket
import sys

# --- the server process (runs by path; standard library only) ----------------------------------


def _load_worker() -> object:
    """Import worker.py under a private name: a user module called ``worker`` must stay theirs."""
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("_sluice_worker", os.path.join(here, "worker.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_sluice_worker"] = module
    spec.loader.exec_module(module)
    return module


def _prctl() -> object | None:
    """libc's prctl, loaded once in the server (ctypes costs milliseconds to import per child)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: children outlive a dead server (still reaped)
        return None


def _die_with_parent(prctl: object | None, server_pid: int) -> None:
    if prctl is None:
        return
    prctl(1, signal.SIGKILL)  # type: ignore[operator]  # PR_SET_PDEATHSIG
    if os.getppid() != server_pid:  # the server died before prctl took effect
        os._exit(1)


def _child(keep: list[int], close: list[int], worker: object, prctl: object | None) -> None:
    """In the forked child: become a worker on the two pipes in ``keep``; never returns."""
    server_pid = os.getppid()
    code = 1
    try:
        os.setsid()  # like start_new_session: a Ctrl-C on the engine's terminal must not hit it
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in close:  # the server's socket and wakeup pipe, other workers' pipe ends
            os.close(fd)
        _die_with_parent(prctl, server_pid)
        os.dup2(keep[0], 0)
        os.dup2(keep[1], 1)
        os.close(keep[0])
        os.close(keep[1])
        worker.main()  # type: ignore[attr-defined]
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # the worker reports its handlers' errors itself; this is a crash
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _send(sock: socket.socket | None, line: str) -> socket.socket | None:
    """Tell the engine; answers None once it is gone (then nothing more is sent)."""
    if sock is None:
        return None
    try:
        sock.sendall(line.encode())
    except OSError:
        return None
    return sock


def _reap(sock: socket.socket | None, children: set[int]) -> socket.socket | None:
    """Collect exited children; report each to the engine while it is there to hear it."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            break
        if pid == 0:
            break
        children.discard(pid)
        sock = _send(sock, f"X {pid} {os.waitstatus_to_exitcode(status)}\n")
    return sock


def _kill_groups(children: set[int]) -> None:
    """SIGKILL each child's process group: the worker and whatever its handler started.

    Each worker also kills itself when its request pipe hangs up (worker.py); this covers one
    that cannot, and the server then only waits to reap them."""
    for pid in children:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:  # ProcessLookupError: already gone
            continue


def serve(fd: int) -> None:
    """The server loop: fork on request, report exits, leave when the engine is gone."""
    import selectors

    worker = _load_worker()
    prctl = _prctl()
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd is written
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    children: set[int] = set()
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    engine: socket.socket | None = sock
    while engine is not None or children:
        for key, _ in sel.select(timeout=1.0):
            if key.fileobj is not sock:
                os.read(wake_r, 512)
                continue
            try:
                msg, fds, _flags, _addr = socket.recv_fds(sock, 64, 32)
            except OSError:
                msg, fds = b"", []
            if not msg or engine is None:  # the engine is gone: its workers must not run on
                engine = None
                sel.unregister(sock)
                for fd_ in fds:
                    os.close(fd_)
                _kill_groups(children)
                break
            for n in range(len(msg)):  # one request byte per pair of fds
                pair = fds[2 * n : 2 * n + 2]
                if len(pair) != 2:
                    engine = _send(engine, "E the request came without its two pipes\n")
                    continue
                try:
                    pid = os.fork()
                except OSError as exc:
                    engine = _send(engine, f"E {exc}\n")
                    pid = -1
                if pid == 0:
                    others = fds[2 * n + 2 :]
                    _child(pair, [sock.fileno(), wake_r, wake_w, sel.fileno(), *others], worker, prctl)
                for fd_ in pair:
                    os.close(fd_)
                if pid > 0:
                    children.add(pid)
                    engine = _send(engine, f"S {pid}\n")
        engine = _reap(engine, children)


if __name__ == "__main__":
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)  # run by path: engine/executors/*.py must not shadow user modules
    serve(int(sys.argv[1]))
