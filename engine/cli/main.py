"""``sluice``: validate workflows, run one to the end in-process, or serve them.

Exit codes (DESIGN.md): 0 the run SUCCEEDED (or all files are valid), 1 the run
FAILED or was cancelled, 2 bad input (an invalid workflow, bad ``--input``,
input that violates ``params``) — and bad input changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import __version__
from engine.cli import batch, notify, remote
from engine.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, UsageError, parse_input

if TYPE_CHECKING:  # the engine is imported only by the commands that run it: the others start fast
    from engine.engine import Settings
    from workflows.loader import Catalog
    from workflows.spec import Workflow

log = logging.getLogger("sluice")


def count(text: str) -> int:
    """A positive whole number (argparse prints the message, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {text!r}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 86400:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be seconds from 0 to 86399, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice", description="Self-hosted, event-driven workflows: functions and container jobs."
    )
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("validate", help="check a workflow file, or every workflow file under a folder")
    p.add_argument(
        "dir", nargs="?", default=".", metavar="FILE|DIR", help="a workflow file or a folder (default: .)"
    )
    p.add_argument("--json", action="store_true", help="print {valid, workflows, errors} as JSON")
    p.add_argument(
        "--data-dir",
        default=None,
        help="the server's data dir, which container volumes may mount, as may $SLUICE_VOLUME_ALLOW"
        " (default: $SLUICE_DATA_DIR or ./.sluice)",
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="run one workflow to the end, in this process")
    p.add_argument("workflow", help="a workflow name (found under --dir) or a path to a workflow file")
    p.add_argument(
        "--dir", default=None, help="load this whole folder (default: the file alone; for a name, .)"
    )
    p.add_argument("--input", default=None, help="run input as JSON, or @file.json")
    p.add_argument("--json", action="store_true", help="print the result as JSON (no progress lines)")
    p.add_argument("--data-dir", default=None, help="store and logs (default: $SLUICE_DATA_DIR or ./.sluice)")
    p.add_argument("--workers", type=count, default=None, help="warm function workers (default: cores)")
    p.add_argument("--max-workers", type=count, default=None, help="scale-out ceiling (default: 32)")
    p.add_argument(
        "--api",
        action="store_true",
        help="serve a private API on loopback for the run's functions (context.sluice) and attach Docker",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("serve", help="run the engine, triggers and HTTP API until stopped")
    p.add_argument("dir", nargs="?", default=".", help="folder of workflow files (default: .)")
    p.add_argument(
        "--host", default="127.0.0.1", help="default: 127.0.0.1 (off loopback it needs $SLUICE_API_TOKEN)"
    )
    p.add_argument("--port", type=port, default=8765, help="0 to 65535 (0: any free port; default: 8765)")
    p.add_argument("--data-dir", default=None, help="store and logs (default: $SLUICE_DATA_DIR or ./.sluice)")
    p.add_argument("--workers", type=count, default=None, help="warm function workers (default: cores)")
    p.add_argument("--max-workers", type=count, default=None, help="scale-out ceiling (default: 32)")
    p.add_argument(
        "--grace",
        type=seconds,
        default=30.0,
        help="seconds running steps get to finish on stop (default: 30)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("token", help="print a new random API token (for $SLUICE_API_TOKEN)")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser(
        "completion",
        help='print the shell completion script: eval "$(sluice completion bash)" (or zsh) in your rc file',
    )
    p.add_argument("shell", choices=("bash", "zsh"))
    p.set_defaults(func=cmd_completion)
    # management commands that talk to a running server (one line per module)
    remote.register(sub)
    notify.register(sub)  # after remote: adds to its `events`
    batch.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (see `sluice completion`)
        import argcomplete

        argcomplete.autocomplete(parser)  # answers and exits
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if args.command == "serve" else logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(args.func(args))
    except BrokenPipeError:  # piped into `head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush is quiet too
        return EXIT_OK
    except UsageError as exc:
        print(f"sluice: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as exc:
        from engine.config import ConfigError  # here: only `serve` reads the config

        if not isinstance(exc, ConfigError):
            raise
        print(f"sluice: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as exc:
        from engine.store.store import StoreUnavailable  # here: remote commands never load the store

        if not isinstance(exc, StoreUnavailable):
            raise
        print(f"sluice: error: {exc}", file=sys.stderr)
        if exc.held_by is not None and args.command == "run":
            print(
                "sluice: if that engine is `sluice serve`, start the run there: "
                "sluice runs start WORKFLOW --input '{...}' --wait",
                file=sys.stderr,
            )
        return EXIT_BAD_INPUT


# -- validate -----------------------------------------------------------------------------------


def _load_dir(path: Path, data_dir: str | None, *, report: bool = True) -> Any:
    """The catalog, volumes checked against the allow-list the engine on ``data_dir`` will use.

    ``report``: print every problem and exit 2; else raise SpecErrors."""
    from engine.engine import default_data_dir
    from workflows.errors import SpecErrors
    from workflows.hostpaths import volume_roots
    from workflows.loader import load_dir

    if not path.is_dir():
        raise UsageError(f"{path}: not a folder (give the folder that holds your workflow .yaml files)")
    try:
        return load_dir(path, volume_roots=volume_roots(default_data_dir(data_dir)))
    except SpecErrors as errs:
        if not report:
            raise
        for err in errs.errors:
            print(err, file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None


def _load_file(path: Path, data_dir: str | None) -> Any:
    """One workflow file alone (its folder's other files are not read); raises SpecErrors."""
    from engine.engine import default_data_dir
    from workflows.hostpaths import volume_roots
    from workflows.loader import load_file

    return load_file(path, volume_roots=volume_roots(default_data_dir(data_dir)))


def cmd_validate(args: argparse.Namespace) -> int:
    from workflows.errors import SpecErrors

    target = Path(args.dir)
    if not target.exists():
        raise UsageError(f"{target}: no such file or folder (give a workflow .yaml file or its folder)")
    errors: list[Any] = []
    try:
        names = (
            [_load_file(target, args.data_dir).name]
            if target.is_file()
            else sorted(_load_dir(target, args.data_dir, report=False))
        )
    except SpecErrors as errs:
        names, errors = [], errs.errors
    if args.json:
        fields = ("file", "path", "problem", "hint")
        found = [{k: getattr(e, k) for k in fields} for e in errors]
        print(json.dumps({"valid": not errors, "workflows": names, "errors": found}, indent=2))
    else:
        for err in errors:
            print(err, file=sys.stderr)
        if not errors:
            print(f"{len(names)} workflow{'' if len(names) == 1 else 's'} OK: {', '.join(names) or 'none'}")
    return EXIT_BAD_INPUT if errors else EXIT_OK


# -- run ----------------------------------------------------------------------------------------


def _find_workflow(args: argparse.Namespace) -> tuple[Any, Any]:
    target = Path(args.workflow)
    if target.suffix in (".yaml", ".yml") or target.is_file():
        if not target.is_file():
            raise UsageError(f"{target}: no such workflow file")
        if not args.dir:  # that file alone: a broken neighbour does not stop it
            from workflows.errors import SpecErrors
            from workflows.loader import Catalog

            try:
                wf = _load_file(target, args.data_dir)
            except SpecErrors as errs:
                for err in errs.errors:
                    print(err, file=sys.stderr)
                raise SystemExit(EXIT_BAD_INPUT) from None
            return Catalog({wf.name: wf}), wf
        catalog = _load_dir(Path(args.dir), args.data_dir)
        for wf in catalog.values():
            if Path(wf.file).resolve() == target.resolve():
                return catalog, wf
        raise UsageError(f"{target}: not found among the workflows of {args.dir or target.parent}")
    catalog = _load_dir(Path(args.dir or "."), args.data_dir)
    if args.workflow not in catalog:
        known = ", ".join(sorted(catalog)) or "none"
        raise UsageError(f"no workflow named {args.workflow!r} in {args.dir or '.'} (known: {known})")
    return catalog, catalog[args.workflow]


def cmd_run(args: argparse.Namespace) -> int:
    from workflows.errors import InputError
    from workflows.loader import resolve_input

    catalog, wf = _find_workflow(args)
    check_workers(args)
    data = parse_input(args.input)
    try:
        params = resolve_input(wf, data)
    except InputError as exc:
        raise UsageError(f"--input: {exc}") from None
    from engine.engine import Settings, default_data_dir, tune_gc

    tune_gc()
    # a one-shot run leaves other unfinished runs alone: `sluice serve` on the data dir resumes them
    settings = Settings(
        data_dir=writable_data_dir(default_data_dir(args.data_dir)),
        workers=args.workers,
        max_workers=args.max_workers,
        recover=False,
        host="127.0.0.1",
        port=0,  # the private API of --api: an ephemeral port, loopback only
    )
    return asyncio.run(_run_once(settings, catalog, wf, params, as_json=args.json, api=args.api))


async def _run_once(
    settings: Settings,
    catalog: Catalog,
    wf: Workflow,
    params: dict[str, Any],
    *,
    as_json: bool,
    api: bool = False,
) -> int:
    from engine.cli.progress import ProgressPrinter, live_view, render_outputs
    from engine.engine import Engine

    engine = Engine(settings, catalog)
    if api:  # for context.sluice: a token nobody is told, so only the run's own token gets in
        from engine.api import batch as batch_api
        from engine.api.app import HttpService
        from engine.api.auth import AuthPolicy, new_token

        http = HttpService(engine, [batch_api.routes(engine)], auth=AuthPolicy("127.0.0.1", new_token()))
        engine.add_service(http, closer=http.aclose)
    printer = ProgressPrinter(sys.stderr, live=None if as_json else live_view(sys.stderr))
    try:
        async with engine:
            if not as_json:
                engine.orchestrator.listeners.append(printer)
            run_id = await engine.start_run(wf.name, params)
            printer.run_id = run_id
            await _wait_or_cancel(engine, run_id)
            summary = await engine.describe_run(run_id)
    finally:
        printer.close()
    assert summary is not None
    if as_json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    elif summary["status"] == "SUCCEEDED":
        print(render_outputs(summary["outputs"]))
    else:
        print(f"run {run_id} {summary['status']}: {summary['reason'] or ''}", file=sys.stderr)
    return EXIT_OK if summary["status"] == "SUCCEEDED" else EXIT_FAILED


async def _wait_or_cancel(engine: Any, run_id: str) -> None:
    """Wait for the run; CTRL+C (or SIGTERM) cancels it, recorded as cancelled by the user."""
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted.set)
    try:
        waiter = asyncio.ensure_future(engine.orchestrator.wait(run_id))
        stopper = asyncio.ensure_future(interrupted.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            print("interrupted: cancelling the run", file=sys.stderr)
            await engine.orchestrator.cancel(run_id, "cancelled by user (signal)")
            await waiter
        stopper.cancel()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def cmd_completion(args: argparse.Namespace) -> int:
    """argcomplete's script: the shell calls ``sluice`` back, which completes from this parser."""
    import argcomplete

    print(argcomplete.shellcode(["sluice"], shell=args.shell))
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    import secrets

    print(secrets.token_urlsafe(32))
    return EXIT_OK


# -- serve --------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.engine import Settings, default_data_dir, tune_gc

    tune_gc()
    catalog = _load_dir(Path(args.dir), args.data_dir)
    settings = Settings(
        data_dir=writable_data_dir(default_data_dir(args.data_dir)),
        workers=args.workers,
        max_workers=args.max_workers,
        grace_s=args.grace,
        host=args.host,
        port=args.port,
    )
    check_workers(args)
    check_bind(args.host, args.port)
    try:
        return asyncio.run(_serve(settings, catalog, Path(args.dir)))
    except OSError as exc:  # the bind lost a race with another process after check_bind
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        raise UsageError(f"cannot serve on {args.host}:{args.port}: {exc.strerror}") from None


def writable_data_dir(path: Path) -> Path:
    """The data dir, created if need be; a UsageError naming it when it cannot be used."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".sluice-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(
            f"data dir {path}: cannot write there ({exc.strerror}); "
            "choose a writable folder with --data-dir or $SLUICE_DATA_DIR"
        ) from None
    return path


def check_workers(args: argparse.Namespace) -> None:
    if args.workers and args.max_workers and args.max_workers < args.workers:
        raise UsageError(f"--max-workers {args.max_workers} must be at least --workers {args.workers}")


def check_bind(host: str, port_number: int) -> None:
    """Bind and release the address first, so a port in use is one line, not a stopped engine."""
    try:
        infos = socket.getaddrinfo(host, port_number, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: not an address this machine has ({exc.strerror})") from None
    for family, kind, proto, _, addr in infos[:1]:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
            try:
                sock.bind(addr)
            except OSError as exc:
                hint = "another `sluice serve`? pick another --port" if exc.errno == errno.EADDRINUSE else ""
                raise UsageError(
                    f"cannot serve on {host}:{port_number}: {exc.strerror}" + (f" ({hint})" if hint else "")
                ) from None


async def _serve(settings: Settings, catalog: Catalog, workflows_dir: Path) -> int:
    from engine.server import build_server

    engine = build_server(settings, catalog, workflows_dir)
    return await engine.serve(handle_signals=True)  # 1 when a component crashed: never 0 after a crash


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
