"""Management commands that talk to a running ``sluice serve`` over its HTTP API.

Exit codes: 0 done, 2 the server refused the request (a 4xx, printed as
``sluice: error: <message>``) or bad arguments, 1 the server is unreachable or failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from engine.cli.common import (
    RemoteError,
    UsageError,
    command,
    common_options,
    emit,
    parse_input,
    query,
    quote,
    request,
    table,
    when,
)

RUN_STATES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")

# -- commands -------------------------------------------------------------------------------------


#: how often ``runs list --follow`` asks the server (seconds)
WATCH_POLL_S = 1.0


def _watch(args: argparse.Namespace) -> int:
    """``runs list --follow``: the newest runs, then one line per new run or change of state, as
    ``kubectl get -w`` does, until Ctrl-C. Polls; watches the newest ``--limit`` runs."""
    q = query(workflow=args.workflow, status=args.status, limit=args.limit)
    seen: dict[str, str] = {}
    while True:
        runs = request(args.server, "GET", "/api/v1/runs" + q)["runs"]
        for r in reversed(runs):  # oldest first, so lines come in the order things happened
            if seen.get(r["run_id"]) == r["status"]:
                continue
            if args.json:
                print(json.dumps(r, ensure_ascii=False), flush=True)
            else:
                cells = (
                    time.strftime("%H:%M:%S"),
                    r["run_id"],
                    r["workflow"],
                    r["status"],
                    r["reason"] or "",
                )
                print("  ".join(cells).rstrip(), flush=True)
        seen = {r["run_id"]: r["status"] for r in runs}
        time.sleep(WATCH_POLL_S)


def cmd_runs_list(args: argparse.Namespace) -> int:
    if args.follow:
        if args.before:
            raise RemoteError("--follow watches the newest runs; it does not take --before", 2)
        return _watch(args)
    q = query(workflow=args.workflow, status=args.status, limit=args.limit, before=args.before)
    data = request(args.server, "GET", "/api/v1/runs" + q)
    rows = [
        (r["run_id"], r["workflow"], r["status"], when(r["created_at"]), r["duration_s"], r["reason"])
        for r in data["runs"]
    ]
    human = table(rows, ("run", "workflow", "status", "created", "duration_s", "reason"))
    if data.get("next"):
        human += f"\n(more: --before {data['next']})"
    return emit(args, data, human)


def cmd_runs_show(args: argparse.Namespace) -> int:
    if args.follow:
        return _follow(args)
    run = request(args.server, "GET", f"/api/v1/runs/{quote(args.run)}")
    head = f"run {run['run_id']}  workflow {run['workflow']}  {run['status']}"
    if run.get("reason"):
        head += f"  ({run['reason']})"
    rows = [(name, s["status"], s["attempts"], s["reason"]) for name, s in run["steps"].items()]
    human = head + "\n" + table(rows, ("step", "status", "attempts", "reason"))
    if run.get("outputs") is not None:
        human += "\noutputs: " + json.dumps(run["outputs"], ensure_ascii=False)
    if run.get("error"):
        human += "\nerror: " + json.dumps(run["error"], ensure_ascii=False)
    return emit(args, run, human)


def _follow(args: argparse.Namespace) -> int:
    """``sluice run``'s live view of a run on the server; its outputs and exit code at the end."""
    from engine.cli.progress import FOLLOW_POLL_S, ProgressPrinter, RunFollower, live_view, render_outputs

    args.step = args.attempt = None  # the whole run's logs
    run = request(args.server, "GET", f"/api/v1/runs/{quote(args.run)}")  # an unknown run: one line
    printer = ProgressPrinter(sys.stderr, args.run, live=live_view(sys.stderr))
    follower, cursor = RunFollower(printer), None
    try:
        while True:
            text, cursor = _logs(args, after=cursor)
            if follower.update(run, text):
                break
            time.sleep(FOLLOW_POLL_S)
            run = request(args.server, "GET", f"/api/v1/runs/{quote(args.run)}")
    finally:
        printer.close()
    if args.json:
        print(json.dumps(run, indent=2, ensure_ascii=False))
    elif run["status"] == "SUCCEEDED":
        print(render_outputs(run["outputs"]))
    return 0 if run["status"] == "SUCCEEDED" else 1


def cmd_runs_start(args: argparse.Namespace) -> int:
    """Start a run on the server (the way to run while ``serve`` owns the data dir)."""
    try:
        params = parse_input(args.input)
    except UsageError as exc:  # the same --input rules and messages as `sluice run`
        raise RemoteError(str(exc), 2) from None
    data = request(args.server, "POST", f"/api/v1/workflows/{quote(args.workflow)}/runs", params)
    run_id = data["run_id"]
    if not args.wait:
        return emit(args, data, f"run {run_id} started")
    while True:  # like `sluice run`: the outputs on stdout, exit 0 only for SUCCEEDED
        run = request(args.server, "GET", f"/api/v1/runs/{quote(run_id)}")
        if run["status"] not in ("PENDING", "RUNNING"):
            break
        time.sleep(0.2)
    if args.json:
        print(json.dumps(run, indent=2, ensure_ascii=False))
    elif run["status"] == "SUCCEEDED":
        print(json.dumps(run["outputs"], indent=2, ensure_ascii=False))
    else:
        print(f"run {run_id} {run['status']}: {run.get('reason') or ''}", file=sys.stderr)
    return 0 if run["status"] == "SUCCEEDED" else 1


def cmd_runs_cancel(args: argparse.Namespace) -> int:
    body = {"reason": args.reason} if args.reason else {}
    data = request(args.server, "POST", f"/api/v1/runs/{quote(args.run)}/cancel", body)
    return emit(args, data, f"run {data['run_id']} {data['status']}")


def cmd_runs_retry(args: argparse.Namespace) -> int:
    body = {"from": "failed"} if args.from_failed else {}
    data = request(args.server, "POST", f"/api/v1/runs/{quote(args.run)}/retry", body)
    return emit(args, data, f"run {data['run_id']} started (retry of {data['retry_of']})")


def cmd_logs(args: argparse.Namespace) -> int:
    text, cursor = _logs(args, tail=args.tail)
    sys.stdout.write(text)
    while args.follow:  # poll until the run ends; the cursor makes each answer only what is new
        sys.stdout.flush()
        run = request(args.server, "GET", f"/api/v1/runs/{quote(args.run)}")
        time.sleep(1.0)
        text, cursor = _logs(args, after=cursor)
        sys.stdout.write(text)
        if run["status"] not in ("PENDING", "RUNNING"):
            break
    return 0


def _logs(args: argparse.Namespace, *, tail: int | None = None, after: str | None = None) -> tuple[str, str]:
    """One read of a run's logs: the text and the cursor to read on from."""
    answer: dict[str, str] = {}
    q = query(step=args.step, attempt=args.attempt, tail=tail, after=after)
    text = request(args.server, "GET", f"/api/v1/runs/{quote(args.run)}/logs{q}", raw=True, headers=answer)
    cursor = next((v for k, v in answer.items() if k.lower() == "sluice-log-cursor"), None)
    if cursor is None and args.follow:
        raise RemoteError(f"{args.server} sent no log cursor (an older Sluice?); --follow needs one", 1)
    return text, cursor or ""


def _read_detail(raw: str) -> Any:
    text, where = raw, "--detail"
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise RemoteError(f"--detail {raw}: cannot read the file: {exc.strerror}", 2) from None
        where = f"--detail {raw}"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RemoteError(
            f"{where}: not valid JSON ({exc.msg}); write e.g. --detail '{{\"id\": 1}}'", 2
        ) from None


def cmd_events_put(args: argparse.Namespace) -> int:
    entry = {"Source": args.source, "DetailType": args.detail_type, "Detail": _read_detail(args.detail)}
    if args.resource:
        entry["Resources"] = args.resource
    data = request(args.server, "POST", "/api/v1/events", {"Entries": [entry]})
    answer = data["Entries"][0]
    if "ErrorCode" in answer:
        if args.json:
            print(json.dumps(data, indent=2))
        raise RemoteError(f"{answer['ErrorCode']}: {answer['ErrorMessage']}", 2)
    return emit(args, data, f"event {answer['EventId']} accepted")


def cmd_events_list(args: argparse.Namespace) -> int:
    q = query(
        source=args.source, detail_type=args.detail_type, since=args.since, until=args.until, limit=args.limit
    )
    data = request(args.server, "GET", "/api/v1/events" + q)
    rows = [
        (e["id"], e["time"], e["source"], e["detail-type"], ",".join(e.get("resources", [])))
        for e in data["events"]
    ]
    return emit(args, data, table(rows, ("id", "time", "source", "detail-type", "resources")))


def cmd_workflows_list(args: argparse.Namespace) -> int:
    data = request(args.server, "GET", "/api/v1/workflows")
    rows = [
        (w["name"], ", ".join(f"{t['kind']}:{t['name']}" for t in w["triggers"]) or None, w["description"])
        for w in data["workflows"]
    ]
    return emit(args, data, table(rows, ("workflow", "triggers", "description")))


def cmd_triggers_list(args: argparse.Namespace) -> int:
    data = request(args.server, "GET", "/api/v1/workflows")
    found = [
        {"workflow": w["name"], **t}
        for w in data["workflows"]
        for t in w["triggers"]
        if args.workflow in (None, w["name"])
    ]
    rows = [
        (
            f"{t['workflow']}/{t['name']}",
            t["kind"],
            f"paused since {when(t['paused_at'])}" if t.get("paused") else "active",
            when(t.get("next_fire")),
        )
        for t in found
    ]
    return emit(args, {"triggers": found}, table(rows, ("trigger", "kind", "state", "next_fire")))


def _trigger_path(ref: str) -> str:
    workflow, slash, trigger = ref.partition("/")
    if not slash or not workflow or not trigger:
        raise RemoteError(f"{ref!r}: name the trigger as WORKFLOW/TRIGGER (see `sluice triggers list`)", 2)
    return f"/api/v1/workflows/{quote(workflow)}/triggers/{quote(trigger)}"


def cmd_triggers_pause(args: argparse.Namespace) -> int:
    verb = "pause" if args.action == "pause" else "resume"
    data = request(args.server, "POST", f"{_trigger_path(args.trigger)}/{verb}", {})
    state = "paused" if data["paused"] else "active"
    note = "" if data["changed"] else f" (it was {state} already)"
    return emit(args, data, f"trigger {data['workflow']}/{data['trigger']} {state}{note}")


# -- parser ---------------------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Add ``runs``, ``logs``, ``events``, ``workflows`` and ``triggers`` to the ``sluice`` parser."""
    runs = sub.add_parser("runs", help="start, list, show, cancel or retry runs on a server").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = common_options(runs.add_parser("start", help="start a run of a workflow the server has loaded"))
    p.add_argument("workflow", help="workflow name (see `sluice workflows list`)")
    p.add_argument("--input", help="params as JSON, or @file.json")
    p.add_argument(
        "--wait", action="store_true", help="wait for the end; print the outputs, exit 1 if it failed"
    )
    p.set_defaults(func=command(cmd_runs_start))
    p = common_options(runs.add_parser("list", help="recent runs, newest first"))
    p.add_argument("--workflow")
    p.add_argument("--status", type=str.upper, choices=RUN_STATES, help=", ".join(RUN_STATES))
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--before", help="a run id: list runs older than it (paging)")
    p.add_argument(
        "--follow", "-f", action="store_true",
        help="then keep printing a line per new run or change of state, until Ctrl-C",
    )  # fmt: skip
    p.set_defaults(func=command(cmd_runs_list))
    for name, func, text in (
        ("show", cmd_runs_show, "one run with its steps"),
        ("cancel", cmd_runs_cancel, "cancel a running run"),
        ("retry", cmd_runs_retry, "start a new run with the same params"),
    ):
        p = common_options(runs.add_parser(name, help=text))
        p.add_argument("run", help="run id (r-...)")
        if name == "show":
            p.add_argument(
                "--follow", "-f", action="store_true",
                help="the live view of `sluice run` until the run ends; its outputs, exit 1 if it failed",
            )  # fmt: skip
        if name == "cancel":
            p.add_argument("--reason", default=None)
        if name == "retry":
            p.add_argument(
                "--from-failed",
                action="store_true",
                help="keep the steps that succeeded; run the failed ones and what needs them (a redrive)",
            )
        p.set_defaults(func=command(func))

    p = common_options(sub.add_parser("logs", help="print the logs of a run's attempts"))
    p.add_argument("run", help="run id (r-...)")
    p.add_argument("--step")
    p.add_argument("--attempt", type=int)
    p.add_argument("--tail", type=int, help="only the last N lines of each attempt")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    p.set_defaults(func=command(cmd_logs))

    events = sub.add_parser(
        "events", help="put events on the bus, list stored ones, or replay them"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    p = common_options(events.add_parser("put", help="put one custom event on the bus"))
    p.add_argument("--source", required=True)
    p.add_argument("--detail-type", required=True)
    p.add_argument("--detail", default="{}", help="a JSON object, or @file.json")
    p.add_argument("--resource", action="append", help="a resource string (repeatable)")
    p.set_defaults(func=command(cmd_events_put))
    p = common_options(events.add_parser("list", help="stored events, newest first"))
    p.add_argument("--source")
    p.add_argument("--detail-type")
    p.add_argument("--since", help="Unix seconds or ISO 8601")
    p.add_argument("--until", help="Unix seconds or ISO 8601")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=command(cmd_events_list))

    workflows = sub.add_parser("workflows", help="workflows loaded by a server").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = common_options(workflows.add_parser("list", help="names, triggers and descriptions"))
    p.set_defaults(func=command(cmd_workflows_list))

    triggers = sub.add_parser("triggers", help="list, pause or resume a server's triggers").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = common_options(triggers.add_parser("list", help="every trigger, active or paused"))
    p.add_argument("--workflow")
    p.set_defaults(func=command(cmd_triggers_list))
    for name, text in (
        (
            "pause",
            "stop a trigger emitting (kept across restarts; see docs/operator.md for what arrives meanwhile)",
        ),
        ("resume", "let a paused trigger emit again"),
    ):
        p = common_options(triggers.add_parser(name, help=text))
        p.add_argument("trigger", help="WORKFLOW/TRIGGER (see `sluice triggers list`)")
        p.set_defaults(func=command(cmd_triggers_pause))
