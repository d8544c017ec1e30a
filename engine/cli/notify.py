"""``sluice notifications dlq list|retry|purge`` and ``sluice events replay`` (talk to a server).

``events`` is shared with ``engine/cli_remote.py`` (``put``/``list``): :func:`register` adds
``replay`` to an existing ``events`` sub-command, or creates it when it is not there yet.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from engine.cli.common import RemoteError, command, common_options, emit, request


def cmd_dlq_list(args: argparse.Namespace) -> int:
    data = request(args.server, "GET", f"/api/v1/notifications/dlq?limit={args.limit}")
    lines = [
        f"{d['id']:>5}  {d['subscriber']:<20} {d['event_id']}  attempts={d['attempts']} "
        f"status={d['last_status']}  {d['last_error'] or ''}"
        for d in data["dead_letters"]
    ]
    return emit(args, data, "\n".join(lines) or "no dead letters")


def cmd_dlq_retry(args: argparse.Namespace) -> int:
    data = request(args.server, "POST", "/api/v1/notifications/dlq/retry", _ids_body(args))
    return emit(args, data, f"{data['retried']} dead letters back in the outbox")


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    if not args.ids and not args.all:
        raise RemoteError("give dead-letter ids, or --all to purge every one", 2)
    data = request(args.server, "POST", "/api/v1/notifications/dlq/purge", _ids_body(args))
    return emit(args, data, f"{data['purged']} dead letters purged")


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
            raise RemoteError(
                f'--pattern: not valid JSON ({exc.msg}); write e.g. \'{{"source": ["x"]}}\'', 2
            ) from None
    data = request(args.server, "POST", "/api/v1/events/replay", body)
    verb = "would start" if data["dry_run"] else "started"
    skipped = f", skipped {len(data['skipped'])} that already ran" if data["skipped"] else ""
    lines = [
        f"replay {data['replay_name']}: {data['events']} events to re-deliver, {verb} "
        f"{len(data['planned'])} runs{skipped}"
    ]
    lines += [f"  {p['workflow']:<20} from {p['event_id']} ({p['via']})" for p in data["planned"]]
    lines += [f"  skipped {s['workflow']} for {s['event_id']}: {s['reason']}" for s in data["skipped"]]
    return emit(args, data, "\n".join(lines))


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
    p = common_options(actions.add_parser("list", help="dead letters, oldest first"))
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=command(cmd_dlq_list))
    for name, func, text in (
        ("retry", cmd_dlq_retry, "send dead letters again (all, or the ids given)"),
        ("purge", cmd_dlq_purge, "delete dead letters (the ids given, or --all)"),
    ):
        p = common_options(actions.add_parser(name, help=text))
        p.add_argument("ids", nargs="*", type=int, help="dead-letter ids (from `dlq list`)")
        if name == "purge":
            p.add_argument("--all", action="store_true", help="purge every dead letter")
        p.set_defaults(func=command(func))

    p = common_options(
        _events_actions(sub).add_parser("replay", help="re-deliver archived events to the current rules")
    )
    p.add_argument("--since", required=True, help="ISO 8601 with a zone, Unix seconds, or 2h (two hours ago)")
    p.add_argument("--until", help="end of the window (same forms; default: now)")
    p.add_argument("--pattern", help="only events matching this event pattern (JSON)")
    p.add_argument("--workflow", help="only start runs of this workflow")
    p.add_argument("--name", help="the replay-name the copies carry (default: replay-<time>-<hex>)")
    p.add_argument("--dry-run", action="store_true", help="say what would start, start nothing")
    p.add_argument("--force", action="store_true", help="start runs even where one exists for the event")
    p.set_defaults(func=command(cmd_replay))
