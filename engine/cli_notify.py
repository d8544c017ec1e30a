"""``sluice notifications dlq list|retry|purge`` and ``sluice events replay`` (talk to a server).

``events`` is shared with ``engine/cli_remote.py`` (``put``/``list``): :func:`register` adds
``replay`` to an existing ``events`` sub-command, or creates it when it is not there yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:8765"
TIMEOUT_S = 60.0


class Failed(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _server(arg: str | None) -> str:
    """``--server``, then ``$SLUICE_SERVER``, then http://127.0.0.1:8765."""
    return (arg or os.environ.get("SLUICE_SERVER") or DEFAULT_SERVER).rstrip("/")


def call(server: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"the server answered {exc.code} {exc.reason}"
        raise Failed(message, 2 if 400 <= exc.code < 500 else 1) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Failed(
            f"cannot reach {server} ({reason}); is `sluice serve` running? set --server", 1
        ) from None


def _out(args: argparse.Namespace, data: Any, human: str) -> int:
    print(json.dumps(data, indent=2, ensure_ascii=False) if args.json else human)
    return 0


def cmd_dlq_list(args: argparse.Namespace) -> int:
    data = call(args.server, "GET", f"/api/v1/notifications/dlq?limit={args.limit}")
    lines = [
        f"{d['id']:>5}  {d['subscriber']:<20} {d['event_id']}  attempts={d['attempts']} "
        f"status={d['last_status']}  {d['last_error'] or ''}"
        for d in data["dead_letters"]
    ]
    return _out(args, data, "\n".join(lines) or "no dead letters")


def cmd_dlq_retry(args: argparse.Namespace) -> int:
    data = call(args.server, "POST", "/api/v1/notifications/dlq/retry", _ids_body(args))
    return _out(args, data, f"{data['retried']} dead letters back in the outbox")


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    if not args.ids and not args.all:
        raise Failed("give dead-letter ids, or --all to purge every one", 2)
    data = call(args.server, "POST", "/api/v1/notifications/dlq/purge", _ids_body(args))
    return _out(args, data, f"{data['purged']} dead letters purged")


def _ids_body(args: argparse.Namespace) -> dict[str, Any]:
    return {"ids": args.ids} if args.ids else {}


def cmd_replay(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"since": args.since, "dry_run": args.dry_run, "force": args.force}
    if args.until:
        body["until"] = args.until
    if args.workflow:
        body["workflow"] = args.workflow
    if args.name:
        body["name"] = args.name
    if args.pattern:
        try:
            body["pattern"] = json.loads(args.pattern)
        except json.JSONDecodeError as exc:
            raise Failed(
                f'--pattern: not valid JSON ({exc.msg}); write e.g. \'{{"source": ["x"]}}\'', 2
            ) from None
    data = call(args.server, "POST", "/api/v1/events/replay", body)
    verb = "would start" if data["dry_run"] else "started"
    lines = [f"replay {data['replay_name']}: {data['events']} events, {verb} {len(data['planned'])} runs"]
    lines += [f"  {p['workflow']:<20} from {p['event_id']} ({p['via']})" for p in data["planned"]]
    lines += [f"  skipped {s['workflow']} for {s['event_id']}: {s['reason']}" for s in data["skipped"]]
    return _out(args, data, "\n".join(lines))


def _wrap(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        args.server = _server(args.server)
        try:
            return int(func(args))
        except Failed as exc:
            print(f"sluice: error: {exc}", file=sys.stderr)
            return exc.exit_code

    return run


def _common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--server", default=None, help=f"server URL (default: $SLUICE_SERVER or {DEFAULT_SERVER})")
    p.add_argument("--json", action="store_true", help="print the server's JSON answer")
    return p


def _events_actions(sub: Any) -> Any:
    """The ``events`` sub-command's actions, whoever registered it first."""
    existing = sub.choices.get("events")
    if existing is not None:
        for action in existing._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
        return existing.add_subparsers(dest="action", metavar="ACTION", required=True)
    parser = sub.add_parser("events", help="put, list or replay events")
    return parser.add_subparsers(dest="action", metavar="ACTION", required=True)


def register(sub: Any) -> None:
    """Add ``notifications dlq ...`` and ``events replay`` to the ``sluice`` parser."""
    notifications = sub.add_parser("notifications", help="dead-lettered notifications on a server")
    dlq = notifications.add_subparsers(dest="area", metavar="AREA", required=True).add_parser(
        "dlq", help="notifications that could not be delivered"
    )
    actions = dlq.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = _common(actions.add_parser("list", help="dead letters, oldest first"))
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=_wrap(cmd_dlq_list))
    for name, func, text in (
        ("retry", cmd_dlq_retry, "send dead letters again (all, or the ids given)"),
        ("purge", cmd_dlq_purge, "delete dead letters (the ids given, or --all)"),
    ):
        p = _common(actions.add_parser(name, help=text))
        p.add_argument("ids", nargs="*", type=int, help="dead-letter ids (from `dlq list`)")
        if name == "purge":
            p.add_argument("--all", action="store_true", help="purge every dead letter")
        p.set_defaults(func=_wrap(func))

    p = _common(
        _events_actions(sub).add_parser("replay", help="re-deliver archived events to the current rules")
    )
    p.add_argument("--since", required=True, help="ISO 8601 with a zone, Unix seconds, or 2h (two hours ago)")
    p.add_argument("--until", help="end of the window (same forms; default: now)")
    p.add_argument("--pattern", help="only events matching this event pattern (JSON)")
    p.add_argument("--workflow", help="only start runs of this workflow")
    p.add_argument("--name", help="the replay-name the copies carry (default: replay-<time>-<hex>)")
    p.add_argument("--dry-run", action="store_true", help="say what would start, start nothing")
    p.add_argument("--force", action="store_true", help="start runs even where one exists for the event")
    p.set_defaults(func=_wrap(cmd_replay))
