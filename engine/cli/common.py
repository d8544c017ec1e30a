"""What every ``sluice`` command shares: exit codes, reading ``--input``, talking to a server, tables.

``urllib`` only (no aiohttp import): the management commands start in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workflows import jsontext

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input: printed as ``sluice: error: ...`` with exit 2."""


def parse_input(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    text, where = raw, "--input"
    if raw.startswith("@"):
        path = Path(raw[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--input {raw}: cannot read {path}: {exc.strerror}") from None
        where = f"--input {raw}"
    try:
        data = jsontext.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "write an object, e.g. --input '{\"size\": 128}'"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"{where}: must be a JSON object of params, got {type(data).__name__}")
    return data


# -- talking to a server ------------------------------------------------------------------------


DEFAULT_SERVER = "http://127.0.0.1:8765"
TIMEOUT_S = 30.0


class RemoteError(Exception):
    """A request that failed; ``exit_code`` is 2 for the caller's fault, 1 otherwise."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def default_server(arg: str | None = None) -> str:
    """``--server``, then ``$SLUICE_SERVER``, then http://127.0.0.1:8765; ``host:port`` is taken
    as ``http://host:port``, as curl takes it."""
    server = (arg or os.environ.get("SLUICE_SERVER") or DEFAULT_SERVER).rstrip("/")
    return server if "://" in server else f"http://{server}"


def request(
    server: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bool = False,
    headers: dict[str, str] | None = None,
) -> Any:
    """One HTTP call; returns parsed JSON (or text with ``raw``). Raises RemoteError.

    ``headers``: a dict to fill with the answer's headers."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server + path, data=data, method=method)
    if data is not None or method not in ("GET", "HEAD"):
        req.add_header("Content-Type", "application/json")
    token = api_token()
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            payload = resp.read()
            if headers is not None:
                headers.update(resp.headers.items())
    except urllib.error.HTTPError as exc:
        message = _error_message(exc)
        if exc.code == 401:
            message = (
                f"{server} needs its API token: set $SLUICE_API_TOKEN (or $SLUICE_API_TOKEN_FILE) "
                "to the token the server was started with" + (" (the one set was refused)" if token else "")
            )
        raise RemoteError(message, 2 if 400 <= exc.code < 500 else 1) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RemoteError(
            f"cannot reach {server} ({reason}); is `sluice serve` running? set --server or $SLUICE_SERVER", 1
        ) from None
    return payload.decode("utf-8", "replace") if raw else json.loads(payload)


def api_token() -> str | None:
    """The token for a server started with one: ``$SLUICE_API_TOKEN``, else the file named by
    ``$SLUICE_API_TOKEN_FILE`` (never a command-line argument: other users can read those in ps)."""
    token = os.environ.get("SLUICE_API_TOKEN")
    if token:
        return token.strip()
    path = os.environ.get("SLUICE_API_TOKEN_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise RemoteError(f"$SLUICE_API_TOKEN_FILE={path}: cannot read it: {exc.strerror}", 2) from None


#: the API's hints name its routes; the CLI's name the commands that do the same
CLI_HINTS = {
    "GET /api/v1/runs": "`sluice runs list`",
    "GET /api/v1/workflows": "`sluice workflows list`",
    "GET /api/v1/jobs": "`sluice jobs list`",
    'a retry without "from"': "`sluice runs retry RUN` without --from-failed",
}


def cli_hints(message: str) -> str:
    for route, cmd in CLI_HINTS.items():
        message = message.replace(f"with {route}", f"with {cmd}").replace(route, cmd)
    return message


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        return cli_hints(str(json.loads(exc.read())["error"]["message"]))
    except (ValueError, KeyError, TypeError):
        return f"the server answered {exc.code} {exc.reason}"


def query(**params: Any) -> str:
    kept = {k: v for k, v in params.items() if v is not None}
    return "?" + urllib.parse.urlencode(kept) if kept else ""


def quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


# -- output ---------------------------------------------------------------------------------------


def is_terminal(stream: Any) -> bool:
    """A terminal not asked to be plain (``NO_COLOR``, ``TERM=dumb``): where rich's output goes."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed, or not a file
        return False


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Columns aligned to their widest cell; ``None`` prints as ``-``. On a terminal, rich's table
    with states in colour; piped, plain columns (what scripts and the golden tests read)."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    if is_terminal(sys.stdout):
        from engine.cli.terminal import rich_table

        return rich_table(cells, headers)
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def when(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def emit(args: argparse.Namespace, data: Any, human: str) -> int:
    print(json.dumps(data, indent=2, ensure_ascii=False) if args.json else human)
    return 0


def common_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--server", default=None, help=f"server URL (default: $SLUICE_SERVER or {DEFAULT_SERVER})")
    p.add_argument("--json", action="store_true", help="print the server's JSON answer")
    return p


def command(func: Any) -> Any:
    """Wrap a command: resolve the server, turn RemoteError into a message and an exit code."""

    def call(args: argparse.Namespace) -> int:
        args.server = default_server(args.server)
        try:
            return int(func(args))
        except RemoteError as exc:
            print(f"sluice: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            return 130

    return call
