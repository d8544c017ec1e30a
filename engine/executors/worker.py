"""The function worker: a long-lived process that runs handler attempts one at a time.

Started by :class:`engine.executors.function.FunctionExecutor` as ``python <this file>`` (by path,
not ``-m``), so the worker needs nothing from Sluice to be importable: the ``python`` the user picks
may be another virtualenv, and running by path also keeps the engine package from being imported
(and from shadowing user modules) inside the worker. It imports only the standard library, and
only light parts of it up front, so a fresh worker is ready in a few tens of milliseconds.

Protocol: frames of a 4-byte big-endian length followed by UTF-8 JSON. The parent writes one
request on our stdin and reads one reply on our stdout; the first frame we send is ``{"ready":
true}``. EOF on stdin means "exit now". Because the handler's own stdout/stderr must go to the
attempt's log file at the file-descriptor level, the protocol pipes are moved off fds 0 and 1 at
start (to non-inheritable fds, so the handler's subprocesses never hold them open).

Logs: during an attempt fds 1 and 2 point at this worker's scratch file (:func:`scratch_path`),
emptied before each attempt. Only an attempt that wrote something gets its log file (and its
run's log folder), copied from the scratch when it ends: most steps print nothing, and creating
a folder and a file per attempt was the largest cost of a trivial step. If the worker dies or is
killed mid-attempt, the parent copies what the scratch holds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import sys
import time
from types import ModuleType

TYPE_CHECKING = False  # not importing typing (nor tempfile) keeps a fresh worker's start short
if TYPE_CHECKING:
    from typing import Any

_HEADER = struct.Struct(">I")
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# errorType values; kept literal here (the worker must not import the engine), checked by tests
OUT_OF_MEMORY = "Sluice.OutOfMemory"
BAD_OUTPUT = "Sluice.InvalidOutput"
HANDLER_NOT_FOUND = "Sluice.HandlerNotFound"


def scratch_path(pid: int, folder: str | None = None) -> str:
    """Where worker ``pid`` collects an attempt's output: in ``folder``, the ``TMPDIR`` the pool
    starts its workers with (the parent derives the same path; default: ours)."""
    return os.path.join(folder or os.environ.get("TMPDIR") or "/tmp", f"sluice-worker-{pid}.out")


def copy_output(scratch_fd: int, log_path: str) -> None:
    """Append everything in the scratch file to ``log_path`` (creating its folder); no-op if empty."""
    size = os.fstat(scratch_fd).st_size
    if not size:
        return
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    out = os.open(log_path, os.O_WRONLY | os.O_CREAT, 0o644)  # sendfile refuses O_APPEND targets
    try:
        os.lseek(out, 0, os.SEEK_END)
        offset = 0
        while offset < size:
            sent = os.sendfile(out, scratch_fd, offset, size - offset)
            if sent == 0:
                break
            offset += sent
    finally:
        os.close(out)


class HandlerNotFound(Exception):
    """The handler's module could not be found or imported, or it has no such callable."""


class Context:
    """The second argument of a handler, shaped like Lambda's context object.

    Attributes: ``run_id``, ``step``, ``attempt``, ``index``, ``attempt_id``, ``deadline`` (epoch
    seconds or None), ``logger``, ``memory_limit_in_mb``, the Lambda aliases ``aws_request_id`` and
    ``function_name``, every item of the call's ``extra``, and ``sluice``: a client of the engine
    this runs in, with a token good for this run only (engine/executors/api_client.py).
    """

    def __init__(self, msg: dict[str, Any], logger: logging.Logger) -> None:
        for key, value in (msg.get("extra") or {}).items():
            setattr(self, key, value)  # first, so the fields below always win over extra
        self.run_id: str = msg["run_id"]
        self.step: str = msg["step"]
        self.attempt: int = msg["attempt"]
        self.index: int | None = msg.get("index")
        self.attempt_id: str = msg["attempt_id"]
        self.deadline: float | None = msg.get("deadline")
        self.logger = logger
        self.aws_request_id = self.attempt_id
        self.function_name: str = msg["handler"]
        memory = msg.get("memory_bytes")
        self.memory_limit_in_mb: int | None = None if memory is None else memory // (1024 * 1024)
        self._api: dict[str, str] | None = msg.get("api")
        self._client: Any = None

    @property
    def sluice(self) -> Any:
        """The engine's API for this run: submit and wait for jobs, put events, start runs."""
        if self._client is None:
            if not self._api:
                raise RuntimeError(
                    "context.sluice needs the engine's HTTP API and this engine serves none: run the "
                    "workflow under `sluice serve`, or as `sluice run --api` (a private API on loopback)"
                )
            self._client = _api_client().Client(self._api["url"], self._api["token"])
        return self._client

    def remaining_time_s(self) -> float | None:
        """Seconds left before the engine kills this attempt; None when it has no timeout."""
        return None if self.deadline is None else max(0.0, self.deadline - time.time())

    def get_remaining_time_in_millis(self) -> int:
        """Lambda's spelling; without a timeout it answers 15 minutes, Lambda's largest."""
        left = self.remaining_time_s()
        return 900_000 if left is None else int(left * 1000)

    def __repr__(self) -> str:
        return f"<Context {self.attempt_id} remaining_s={self.remaining_time_s()}>"


def _api_client() -> ModuleType:
    """engine/executors/api_client.py, loaded by path on first use like this file (no engine import)."""
    name = "_sluice_api_client"
    module = sys.modules.get(name)
    if module is None:
        import importlib.util

        spec = importlib.util.spec_from_file_location(name, os.path.join(_ENGINE_DIR, "api_client.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return module


class _Scope:
    """Gives each base_dir its own view of sibling modules while it imports or runs.

    Two workflows in different folders may each have ``helpers.py``; both import it as
    ``helpers``. On entry we put the base_dir first on ``sys.path`` and restore the modules that
    folder imported before; on exit we move every module whose file lies under base_dir out of
    ``sys.modules`` again, so the next folder imports its own. Checking is O(1) unless the attempt
    imported something.
    """

    owned: dict[str, dict[str, ModuleType]] = {}

    def __init__(self, base_dir: str) -> None:
        self.base_dir = base_dir
        self.prefix = os.path.join(base_dir, "")
        self.mine = self.owned.setdefault(base_dir, {})
        self.count = 0

    def __enter__(self) -> _Scope:
        sys.path.insert(0, self.base_dir)
        sys.modules.update(self.mine)
        self.count = len(sys.modules)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(ValueError):
            sys.path.remove(self.base_dir)
        if len(sys.modules) != self.count:
            for name, module in list(sys.modules.items()):
                if (getattr(module, "__file__", None) or "").startswith(self.prefix):
                    self.mine[name] = module
        for name in self.mine:
            sys.modules.pop(name, None)


_handlers: dict[tuple[str, str], Any] = {}
_modules: dict[tuple[str, str], ModuleType] = {}


def _import(base_dir: str, module_name: str) -> ModuleType:
    """Import one handler module, turning any failure into HandlerNotFound (MemoryError aside)."""
    import importlib
    import importlib.util

    if "." in module_name:
        try:
            return importlib.import_module(module_name)
        except MemoryError:
            raise
        except Exception as exc:
            where = f"{module_name!r} from {base_dir}"
            raise HandlerNotFound(f"cannot import {where}: {type(exc).__name__}: {exc}") from exc
    path = os.path.join(base_dir, module_name + ".py")
    if not os.path.isfile(path):
        raise HandlerNotFound(f"no module {module_name!r}: {path} does not exist")
    unique = f"_sluice_fn{len(_modules)}_{module_name}"
    spec = importlib.util.spec_from_file_location(unique, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module  # kept (dataclasses, pickle and typing look modules up by name)
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(unique, None)
        if not isinstance(exc, Exception) or isinstance(exc, MemoryError):
            raise
        raise HandlerNotFound(f"cannot import {path}: {type(exc).__name__}: {exc}") from exc
    return module


def _load(base_dir: str, handler: str) -> Any:
    """Resolve ``module:callable`` from base_dir once and cache it by (base_dir, handler).

    A top-level module is loaded by file path under a name unique in this worker, so two
    ``handlers.py`` never collide. A dotted module (``pkg.mod``) is imported normally inside its
    folder's scope (see :class:`_Scope`), which keeps relative imports inside the package working.
    """
    key = (base_dir, handler)
    cached = _handlers.get(key)
    if cached is not None:
        return cached
    module_name, sep, attr = handler.partition(":")
    if not sep or not module_name or not attr:
        raise HandlerNotFound(f"handler {handler!r} is not of the form 'module:function'")
    module = _modules.get((base_dir, module_name))
    if module is None:
        with _Scope(base_dir):
            module = _import(base_dir, module_name)
        _modules[(base_dir, module_name)] = module
    func: Any = module
    for part in attr.split("."):
        func = getattr(func, part, None)
        if func is None:
            raise HandlerNotFound(f"module {module_name!r} in {base_dir} has no attribute {attr!r}")
    if not callable(func):
        raise HandlerNotFound(f"{handler!r} is a {type(func).__name__}, not a callable")
    _handlers[key] = func
    return func


class _Attempt:
    """One attempt's side effects on the process: log redirection and the memory limit."""

    def __init__(self, msg: dict[str, Any], idle_out: int, idle_err: int, scratch: int) -> None:
        self.log_path: str | None = msg.get("log_path")
        self.scratch = scratch
        self.memory_bytes: int | None = msg.get("memory_bytes")
        self.idle_out, self.idle_err = idle_out, idle_err
        self.old_limit: tuple[int, int] | None = None

    def __enter__(self) -> _Attempt:
        if self.log_path:
            os.ftruncate(self.scratch, 0)  # O_APPEND: writes then start at 0 again
            os.dup2(self.scratch, 1)
            os.dup2(self.scratch, 2)
        if self.memory_bytes:
            import resource

            # Soft limit only, relative to what the worker already maps, so it can be restored.
            with open("/proc/self/statm") as statm:
                pages = int(statm.read().split()[0])
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            limit = pages * os.sysconf("SC_PAGE_SIZE") + self.memory_bytes
            if hard != resource.RLIM_INFINITY:
                limit = min(limit, hard)
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
            self.old_limit = (soft, hard)
        return self

    def restore_memory(self) -> None:
        if self.old_limit is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, self.old_limit)
            self.old_limit = None

    def __exit__(self, *exc: object) -> None:
        self.restore_memory()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a handler may have closed or replaced them
                stream.flush()
        if self.log_path:
            os.dup2(self.idle_out, 1)
            os.dup2(self.idle_err, 2)
            try:
                copy_output(self.scratch, self.log_path)
            except OSError as exc:  # a full disk must not turn a finished attempt into a crash
                print(f"sluice worker: could not write {self.log_path}: {exc}", file=sys.stderr)


class _Environ:
    """Each call's environment: the worker's clean one, the step's ``env:``, the Lambda-like names.

    The pool's workers are shared by every step, so each call gets its own environment in
    ``os.environ`` (and so for the handler's subprocesses). What a handler sets in ``os.environ``
    ends with its call: the worker's own environment is put back. The Lambda-like names come last
    (a step cannot set them; the loader refuses them too) and, as Lambda's, name the function,
    not the call: a call's own facts are on ``context``. Calls of one step in a row find their
    environment in place, so they change nothing (a ``putenv`` per variable per call was ~20 us).
    """

    def __init__(self, base: dict[str, str]) -> None:
        self.base = base
        self.applied = dict(base)
        self.snapshot: dict[bytes, bytes] = {}

    def enter(self, msg: dict[str, Any]) -> None:
        wanted = dict(self.base)
        wanted.update((str(k), str(v)) for k, v in (msg.get("env") or {}).items())
        wanted.update(
            _HANDLER=msg["handler"],
            LAMBDA_TASK_ROOT=msg["base_dir"],
            AWS_LAMBDA_FUNCTION_NAME=msg["handler"],
            AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
        )
        if msg.get("memory_bytes"):
            wanted["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = str(msg["memory_bytes"] // (1024 * 1024))
        if wanted != self.applied:
            for name in self.applied.keys() - wanted.keys():
                os.environ.pop(name, None)
            for name, value in wanted.items():
                if self.applied.get(name) != value:
                    os.environ[name] = value
            self.applied = wanted
        self.snapshot = dict(os.environ._data)  # type: ignore[attr-defined]  # CPython's own bytes

    def leave(self) -> None:
        if os.environ._data != self.snapshot:  # type: ignore[attr-defined]  # the handler changed it
            os.environ.clear()
            os.environ.update(self.base)
            self.applied = dict(self.base)


_ENGINE_DIR = os.path.dirname(os.path.abspath(__file__))


def _error(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    """Lambda's error shape: errorType, errorMessage, stackTrace.

    As Lambda's Python runtime gives it: one entry per frame (``  File "...", line N, in f`` and
    its source line), the user's frames only (none of the worker's, no "Traceback" header, no
    final exception line: that is errorType and errorMessage)."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    start = 0
    while start < len(frames) and os.path.dirname(os.path.abspath(frames[start].filename)) == _ENGINE_DIR:
        start += 1
    trace = traceback.format_list(frames[start:])
    return {"errorType": error_type or type(exc).__name__, "errorMessage": str(exc), "stackTrace": trace}


def _die_with_engine(proto_in: int, scratch: str) -> None:
    """Kill this worker's process group (the worker, its handler's children) when the engine is gone.

    The engine holds the only write end of our request pipe, so the kernel hangs it up the moment
    the engine exits, ``kill -9`` included. The main thread may be deep in a handler that never
    reads the pipe again (a sleep, a loop, a socket), and an attempt left running with no engine
    has no timeout and would overlap its own retry after a restart. A thread blocked in
    ``poll()`` for the hang-up alone (no POLLIN: it never takes a request from the main thread)
    notices at once. A polite EOF (the pool retiring an idle worker) ends the worker just the same.
    """
    import select
    import signal
    import threading

    def watch() -> None:
        poller = select.poll()
        poller.register(proto_in, 0)  # POLLHUP and POLLERR are always reported
        while True:
            try:
                if poller.poll():
                    break
            except InterruptedError:
                continue
        with contextlib.suppress(OSError):
            os.unlink(scratch)
        me = os.getpid()
        if os.getpgid(0) == me:  # our own group (start_new_session or setsid): the children too
            os.killpg(me, signal.SIGKILL)
        os.kill(me, signal.SIGKILL)

    threading.Thread(target=watch, name="sluice-engine-watch", daemon=True).start()


class Worker:
    """The request loop; one attempt at a time."""

    def __init__(self) -> None:
        self.proto_in = os.dup(0)  # os.dup makes non-inheritable fds
        self.proto_out = os.dup(1)
        # once, at start: a step's env: may set TMPDIR for its calls, the scratch file stays put
        self.scratch_path = scratch_path(os.getpid())
        _die_with_engine(self.proto_in, self.scratch_path)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)  # between attempts (and without a log_path) prints go to the engine's stderr
        self.idle_out = os.dup(1)
        self.idle_err = os.dup(2)
        self.scratch = os.open(self.scratch_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        os.set_inheritable(self.scratch, False)
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        root = logging.getLogger()
        handler = logging.StreamHandler(sys.stderr)  # fd 2, so it follows the per-attempt redirect
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        self.runner: Any = None
        self.environ = _Environ(dict(os.environ))  #: the clean one the pool started us with

    def read_exact(self, n: int) -> bytes | None:
        chunks: list[bytes] = []
        while n:
            chunk = os.read(self.proto_in, n)
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def send(self, data: bytes) -> None:
        view = memoryview(_HEADER.pack(len(data)) + data)
        while view:
            view = view[os.write(self.proto_out, view) :]

    def serve(self) -> None:
        self.send(b'{"ready":true,"pid":%d}' % os.getpid())
        while True:
            header = self.read_exact(_HEADER.size)
            if header is None:
                return
            body = self.read_exact(_HEADER.unpack(header)[0])
            if body is None:
                return
            reply, retire = self.attempt(json.loads(body))
            self.send(reply)
            if retire:
                return

    def call(self, func: Any, event: Any, context: Context) -> Any:
        result = func(event, context)
        if hasattr(result, "__await__"):
            if self.runner is None:
                import asyncio

                self.runner = asyncio.Runner()
            result = self.runner.run(result)
        return result

    def attempt(self, msg: dict[str, Any]) -> tuple[bytes, bool]:
        """Run one attempt; answer the reply frame and whether this worker must retire."""
        logger = logging.getLogger(f"sluice.function.{msg['step']}")
        failure: BaseException | None = None
        result: Any = None
        with _Attempt(msg, self.idle_out, self.idle_err, self.scratch) as attempt:
            try:
                self.environ.enter(msg)  # a failure here is the attempt's, reported as one
                func = _load(msg["base_dir"], msg["handler"])
                with _Scope(msg["base_dir"]):
                    result = self.call(func, msg["event"], Context(msg, logger))
            except BaseException as exc:  # everything the handler does is reported, even SystemExit
                attempt.restore_memory()  # before formatting, which allocates
                failure = exc
            finally:
                self.environ.leave()
            if isinstance(failure, MemoryError) and msg.get("memory_bytes"):
                limit = msg["memory_bytes"] / (1024 * 1024)
                print(f"Sluice: attempt exceeded its memory limit of {limit:.0f} MiB", file=sys.stderr)
        if failure is not None:
            return self.failed(failure, msg)
        try:
            return json.dumps({"ok": True, "output": result}, allow_nan=False).encode(), False
        except (TypeError, ValueError, RecursionError) as exc:
            error = {
                "errorType": BAD_OUTPUT,
                "errorMessage": f"the handler returned a {type(result).__name__} that is not JSON: {exc}",
                "stackTrace": [],
            }
            return json.dumps({"ok": False, "error": error}).encode(), False

    def failed(self, exc: BaseException, msg: dict[str, Any]) -> tuple[bytes, bool]:
        retire = False
        if isinstance(exc, HandlerNotFound):
            # the import failure's own traceback says where the module broke
            error = _error(exc.__cause__ or exc, HANDLER_NOT_FOUND)
            error["errorMessage"] = str(exc)
        elif isinstance(exc, MemoryError) and msg.get("memory_bytes"):
            error = _error(exc, OUT_OF_MEMORY)
            limit = msg["memory_bytes"] / (1024 * 1024)
            error["errorMessage"] = f"the attempt exceeded its memory limit of {limit:.0f} MiB"
            retire = True  # the heap may be fragmented or half-built: never reuse after an OOM
        else:
            error = _error(exc)
        exc.__traceback__ = None
        try:
            data = json.dumps({"ok": False, "error": error, "retire": retire}, default=repr).encode()
        except (TypeError, ValueError):
            error["errorMessage"] = repr(error["errorMessage"])
            data = json.dumps({"ok": False, "error": error, "retire": retire}, default=repr).encode()
        return data, retire


def main() -> None:
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)  # run by path: don't let engine/executors/*.py shadow user modules
    scratch = scratch_path(os.getpid())
    try:
        Worker().serve()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(scratch)


if __name__ == "__main__":
    main()
