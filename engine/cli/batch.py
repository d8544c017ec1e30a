"""``sluice jobs|definitions|queues|environments``: Batch management against a running server.

urllib only, through :mod:`engine.cli.remote`'s helpers (same ``--server``/``--json``, same exit
codes: 0 done, 2 refused by the server or bad arguments, 1 unreachable or failed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from engine.cli.common import (
    TIMEOUT_S,
    RemoteError,
    command,
    common_options,
    emit,
    query,
    quote,
    request,
    table,
)


def _pairs(items: list[str] | None, where: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RemoteError(f"{where}: write NAME=VALUE, got {item!r}", 2)
        out[key] = value
    return out


def _dependency(text: str) -> dict[str, str]:
    if text.upper() == "SEQUENTIAL":
        return {"type": "SEQUENTIAL"}
    job, sep, mode = text.rpartition(":")
    if sep and mode.upper() in ("N_TO_N", "SEQUENTIAL", "ALL_DONE", "STANDARD"):
        return {"job_id": job, "type": mode.upper()}
    if sep and not mode.isdigit():  # JOB:3 is an array child; JOB:BOGUS is a mistyped type
        raise RemoteError(
            f"--depends-on {text}: {mode!r} is not a dependency type; write JOB, JOB:N_TO_N, "
            "JOB:SEQUENTIAL, JOB:ALL_DONE, or JOB:INDEX for an array child",
            2,
        )
    return {"job_id": text, "type": "STANDARD"}


def _json_arg(raw: str, where: str) -> Any:
    if raw.startswith("@"):
        try:
            with open(raw[1:], encoding="utf-8") as f:
                raw = f.read()
        except OSError as exc:
            raise RemoteError(f"{where}: cannot read {raw[1:]}: {exc.strerror}", 2) from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RemoteError(f"{where}: not valid JSON ({exc.msg})", 2) from None


# -- jobs -----------------------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"queue": args.queue, "definition": args.definition}
    if args.name:
        body["name"] = args.name
    if args.array_size is not None:
        body["array_size"] = args.array_size
    if args.depends_on:
        body["depends_on"] = [_dependency(d) for d in args.depends_on]
    if args.parameters:
        body["parameters"] = _pairs(args.parameters, "--parameters")
    if args.timeout is not None:
        body["timeout"] = args.timeout
    if args.attempts is not None:
        body["attempts"] = args.attempts
    if args.preemptible is not None:
        body["preemptible"] = args.preemptible
    if args.share is not None:
        body["share_identifier"] = args.share
    data = request(args.server, "POST", "/api/v1/jobs", body)
    return emit(args, data, f"job {data['job_id']} {data['status']}")


def cmd_list(args: argparse.Namespace) -> int:
    q = query(queue=args.queue, status=args.status, parent=args.parent, limit=args.limit)
    data = request(args.server, "GET", "/api/v1/jobs" + q)
    rows = [
        (j["job_id"], j["name"], j["queue"], j["status"], j["attempt_count"], j["status_reason"])
        for j in data["jobs"]
    ]
    return emit(args, data, table(rows, ("job", "name", "queue", "status", "attempts", "reason")))


def cmd_describe(args: argparse.Namespace) -> int:
    job = request(args.server, "GET", f"/api/v1/jobs/{quote(args.job)}")
    head = f"job {job['job_id']}  queue {job['queue']}  {job['status']}  ({job['status_reason']})"
    rows = [
        (
            a["attempt"],
            a["environment"] + (f" (host {a['host']})" if a.get("host") else ""),
            (a["container_id"] or "")[:12] or None,
            a["exit_code"],
            a["reason"],
        )
        for a in job["attempts"]
    ]
    human = head + "\n" + table(rows, ("attempt", "environment", "container", "exit", "reason"))
    if job.get("array_status_summary"):
        human += "\nchildren: " + ", ".join(f"{k} {v}" for k, v in job["array_status_summary"].items() if v)
    return emit(args, job, human)


def _stop(verb: str) -> Any:
    def cmd(args: argparse.Namespace) -> int:
        body = {"reason": args.reason} if args.reason else {}
        data = request(args.server, "POST", f"/api/v1/jobs/{quote(args.job)}/{verb}", body)
        return emit(args, data, f"job {data['job_id']} {data['status']} ({data['changed']} changed)")

    return cmd


def _log_chunk(server: str, job: str, attempt: int | None, offset: int) -> tuple[bytes, dict[str, str]]:
    url = f"{server}/api/v1/jobs/{quote(job)}/logs" + query(attempt=attempt, offset=offset)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            return resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"the server answered {exc.code}"
        raise RemoteError(message, 2 if exc.code < 500 else 1) from None
    except (urllib.error.URLError, OSError) as exc:
        raise RemoteError(f"cannot reach {server} ({exc}); is `sluice serve` running?", 1) from None


def cmd_logs(args: argparse.Namespace) -> int:
    """Print an attempt's log (the latest); with --follow, every attempt from the first (or from
    --attempt), polling until the job ends: a follower that starts late misses nothing."""
    attempt, offset = (1 if args.follow and args.attempt is None else args.attempt), 0
    while True:
        chunk, headers = _log_chunk(args.server, args.job, attempt, offset)
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        offset = int(headers.get("X-Sluice-Offset", offset))
        if not args.follow:
            return 0
        if chunk:
            continue
        ended = headers.get("X-Sluice-Job-Status") in ("SUCCEEDED", "FAILED")
        if "X-Sluice-Attempt" not in headers and ended:
            return 0  # it ended without ever starting (cancelled, a failed dependency)
        if headers.get("X-Sluice-Done") == "1":
            if ended and args.attempt is None:
                latest = _log_chunk(args.server, args.job, None, 0)[1].get("X-Sluice-Attempt")
                if latest is None or latest == headers.get("X-Sluice-Attempt"):
                    return 0
            elif args.attempt is not None:
                return 0
            attempt, offset = int(headers.get("X-Sluice-Attempt", "0")) + 1, 0
            continue
        if attempt is None and "X-Sluice-Attempt" in headers:
            attempt = int(headers["X-Sluice-Attempt"])  # pin it; move on when it is done
        time.sleep(0.5)


# -- definitions, queues, environments ------------------------------------------------------------


def cmd_definitions_register(args: argparse.Namespace) -> int:
    body = _json_arg(args.spec, "SPEC")
    if not isinstance(body, dict):
        raise RemoteError("SPEC: a JSON object (name, image, command, vcpus, memory, ...)", 2)
    if args.name:
        body["name"] = args.name
    data = request(args.server, "POST", "/api/v1/definitions", body)
    return emit(args, data, f"definition {data['name']}:{data['revision']} registered")


def cmd_definitions_list(args: argparse.Namespace) -> int:
    data = request(args.server, "GET", "/api/v1/definitions")
    rows = [
        (d["name"], d["revision"], d["status"], d["image"], d.get("vcpus"), d.get("memory"))
        for d in data["definitions"]
    ]
    return emit(args, data, table(rows, ("name", "revision", "status", "image", "vcpus", "memory")))


def _host_arg(text: str) -> dict[str, Any]:
    """``unix:///run/docker-b.sock,vcpus=2,memory=2GiB,name=b`` -> one entry of ``hosts``."""
    endpoint, *pairs = text.split(",")
    host: dict[str, Any] = {"endpoint": endpoint}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in ("vcpus", "memory", "name"):
            raise argparse.ArgumentTypeError(f"write ENDPOINT,vcpus=N,memory=SIZE[,name=NAME], got {text!r}")
        try:
            host[key] = float(value) if key == "vcpus" else value
        except ValueError:
            raise argparse.ArgumentTypeError(f"vcpus: a number, got {value!r}") from None
    return host


def _put(kind: str, fields: tuple[str, ...], nested: tuple[str, ...] = ()) -> Any:
    def cmd(args: argparse.Namespace) -> int:
        body: dict[str, Any] = {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}
        for group in nested:  # --slurm-shared-dir X -> {"slurm": {"shared_dir": X}}
            prefix = f"{group}_"
            values = {k.removeprefix(prefix): v for k, v in vars(args).items() if k.startswith(prefix)}
            if any(v is not None for v in values.values()):
                body[group] = {k: v for k, v in values.items() if v is not None}
        if args.action == "create":
            data = request(args.server, "POST", f"/api/v1/{kind}", {"name": args.name, **body})
        else:
            data = request(args.server, "PATCH", f"/api/v1/{kind}/{quote(args.name)}", body)
        return emit(args, data, _saved(args.action, data, *SHOWN[kind]))

    return cmd


def _saved(action: str, data: dict[str, Any], row: Any, heads: tuple[str, ...]) -> str:
    """What a create or update answers on a terminal: the object as its ``list`` shows it."""
    return f"{heads[0]} {data['name']} {action}d\n" + table([row(data)], heads)


def _queue_row(q: dict[str, Any]) -> tuple[Any, ...]:
    return (
        q["name"],
        q["priority"],
        q["state"],
        ",".join(q["environments"]),
        f"grace {q['preemption']['grace_s']:g}s" if q.get("preemption", {}).get("enabled") else "-",
        q.get("scheduling_policy") or "FIFO",
    )


QUEUE_HEADS = ("queue", "priority", "state", "environments", "preemption", "order")


def cmd_queues_list(args: argparse.Namespace) -> int:
    data = request(args.server, "GET", "/api/v1/queues")
    return emit(args, data, table([_queue_row(q) for q in data["queues"]], QUEUE_HEADS))


def _environment_row(e: dict[str, Any]) -> tuple[Any, ...]:
    return (
        e["name"],
        e["endpoint"],
        e["state"] + (" (reclaimed)" if e.get("reclaimed_at") else ""),
        "interruptible" if e.get("interruptible") else "on-demand",
        f"{e['used_vcpus']:g}",
        f"{e.get('min_vcpus', 0):g}/{e.get('desired_vcpus', 0):g}/{e['max_vcpus']:g}",
        e["max_memory"],
        " ".join(f"{h['name']}:{h['state']}" for h in e.get("hosts", [])) or "-",
    )


ENVIRONMENT_HEADS: tuple[str, ...] = ("environment", "endpoint", "state", "capacity", "vcpus used")
ENVIRONMENT_HEADS += ("min/desired/max", "max_memory", "hosts")


#: how ``queues``/``environments`` create and update show what they saved
SHOWN: dict[str, tuple[Any, tuple[str, ...]]] = {
    "queues": (_queue_row, QUEUE_HEADS),
    "environments": (_environment_row, ENVIRONMENT_HEADS),
}


def cmd_environments_list(args: argparse.Namespace) -> int:
    data = request(args.server, "GET", "/api/v1/environments")
    return emit(args, data, table([_environment_row(e) for e in data["environments"]], ENVIRONMENT_HEADS))


def _weights(items: list[str] | None) -> list[dict[str, Any]] | None:
    if items is None:
        return None
    out = []
    for item in items:
        ident, sep, weight = item.partition("=")
        try:
            out.append({"share_identifier": ident, "weight_factor": float(weight) if sep else 1.0})
        except ValueError:
            raise RemoteError(
                f"--share: write ID=WEIGHT (a number; lower gets more), got {item!r}", 2
            ) from None
    return out


def cmd_policies_put(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name}
    if args.decay is not None:
        body["share_decay_s"] = args.decay
    if args.reservation is not None:
        body["compute_reservation"] = args.reservation
    shares = _weights(args.share)
    if shares is not None:
        body["share_distribution"] = shares
    if args.action == "create":
        data = request(args.server, "POST", "/api/v1/scheduling-policies", body)
    else:
        data = request(args.server, "PATCH", f"/api/v1/scheduling-policies/{quote(args.name)}", body)
    return emit(args, data, _saved(args.action, data, _policy_row, POLICY_HEADS))


def _policy_row(p: dict[str, Any]) -> tuple[Any, ...]:
    return (
        p["name"],
        f"{p['share_decay_s']:g}s",
        f"{p['compute_reservation']}%",
        " ".join(f"{d['share_identifier']}={d['weight_factor']:g}" for d in p["share_distribution"]) or "-",
        ",".join(p.get("queues", [])) or "-",
    )


POLICY_HEADS = ("policy", "decay", "reservation", "weights", "queues")


def cmd_policies_list(args: argparse.Namespace) -> int:
    data = request(args.server, "GET", "/api/v1/scheduling-policies")
    return emit(args, data, table([_policy_row(p) for p in data["scheduling_policies"]], POLICY_HEADS))


def cmd_policies_delete(args: argparse.Namespace) -> int:
    data = request(args.server, "DELETE", f"/api/v1/scheduling-policies/{quote(args.name)}")
    return emit(args, data, f"scheduling policy {args.name} deleted")


def cmd_queue_shares(args: argparse.Namespace) -> int:
    data = request(args.server, "GET", f"/api/v1/queues/{quote(args.name)}/shares")
    rows = [
        (s, f"{v['weight_factor']:g}", f"{v['running_vcpus']:g}", f"{v['usage_vcpu_s']:.1f}", v["runnable"])
        for s, v in data["shares"].items()
    ]
    return emit(args, data, table(rows, ("share", "weight", "vcpus running", "usage vcpu-s", "runnable")))


def cmd_environments_reclaim(args: argparse.Namespace) -> int:
    data = request(args.server, "POST", f"/api/v1/environments/{quote(args.name)}/reclaim", {})
    stopped = data.get("interrupted_jobs", [])
    return emit(
        args, data, f"environment {data['name']} reclaimed (DISABLED); {len(stopped)} job(s) interrupted"
    )


# -- parser ---------------------------------------------------------------------------------------


def _actions(sub: Any, name: str, help_text: str) -> Any:
    return sub.add_parser(name, help=help_text).add_subparsers(dest="action", metavar="ACTION", required=True)


JOB_STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")


def register(sub: Any) -> None:
    """Add ``jobs``, ``definitions``, ``queues`` and ``environments`` to the ``sluice`` parser."""
    jobs = _actions(sub, "jobs", "submit, list, describe, cancel or terminate batch jobs; read their logs")
    p = common_options(jobs.add_parser("submit", help="submit a job to a queue"))
    p.add_argument("--queue", default="default")
    p.add_argument("--definition", required=True, help="NAME or NAME:REVISION")
    p.add_argument("--name", default=None)
    p.add_argument("--array-size", type=int, default=None, help="2..10000 children")
    p.add_argument("--depends-on", action="append", metavar="ID[:N_TO_N|SEQUENTIAL|ALL_DONE]")
    p.add_argument("--parameters", nargs="*", metavar="K=V", help="values for Ref::K in the command")
    p.add_argument("--timeout", type=float, default=None, help="attempt timeout in seconds")
    p.add_argument("--attempts", type=int, default=None, help="retry strategy attempts (1..10)")
    p.add_argument(
        "--not-preemptible",
        dest="preemptible",
        action="store_const",
        const=False,
        default=None,
        help="never preempted by a higher-priority queue's job",
    )
    p.add_argument(
        "--share", default=None, metavar="ID", help="its shareIdentifier (a fair-share queue needs one)"
    )
    p.set_defaults(func=command(cmd_submit))
    p = common_options(jobs.add_parser("list", help="jobs, newest first"))
    p.add_argument("--queue", default=None)
    p.add_argument("--status", default=None, type=str.upper, choices=JOB_STATES, help=", ".join(JOB_STATES))
    p.add_argument("--parent", default=None, help="the children of this array job")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=command(cmd_list))
    for verb, help_text, func in (
        ("describe", "a job, its attempts and dependencies", cmd_describe),
        ("cancel", "fail a job that has not started (an array: every child)", _stop("cancel")),
        ("terminate", "stop a job, started or not (SIGTERM, grace, SIGKILL)", _stop("terminate")),
    ):
        p = common_options(jobs.add_parser(verb, help=help_text))
        p.add_argument("job")
        if verb != "describe":
            p.add_argument("--reason", default=None)
        p.set_defaults(func=command(func))
    p = common_options(jobs.add_parser("logs", help="an attempt's output (default: the latest)"))
    p.add_argument("job")
    p.add_argument("--attempt", type=int, default=None)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    p.set_defaults(func=command(cmd_logs))

    defs = _actions(sub, "definitions", "register or list job definitions")
    p = common_options(defs.add_parser("register", help="register SPEC (JSON or @file) as the next revision"))
    p.add_argument("spec", help='JSON, e.g. \'{"name": "hi", "image": "busybox:1.36", "command": ["echo"]}\'')
    p.add_argument("--name", default=None)
    p.set_defaults(func=command(cmd_definitions_register))
    p = common_options(defs.add_parser("list", help="every revision of every definition"))
    p.set_defaults(func=command(cmd_definitions_list))

    queues = _actions(sub, "queues", "create, update or list job queues; their fair-share usage")
    environments = _actions(sub, "environments", "create, update, list or reclaim compute environments")
    for action in ("create", "update"):
        p = common_options(queues.add_parser(action, help=f"{action} a job queue"))
        p.add_argument("name")
        p.add_argument("--priority", type=int, default=None)
        p.add_argument("--environments", type=lambda s: s.split(","), default=None, help="a,b,c in order")
        p.add_argument("--state", choices=("ENABLED", "DISABLED"), default=None)
        p.add_argument(
            "--preemption",
            dest="preemption_enabled",
            action="store_const",
            const=True,
            default=None,
            help="its head job may preempt lower-priority queues' RUNNING jobs",
        )
        p.add_argument("--no-preemption", dest="preemption_enabled", action="store_const", const=False)
        p.add_argument(
            "--preemption-grace", default=None, metavar="DURATION", help="SIGTERM to SIGKILL, e.g. 10s"
        )
        p.add_argument(
            "--scheduling-policy",
            dest="scheduling_policy",
            type=lambda v: "" if v.lower() == "none" else v,
            default=None,
            metavar="NAME",
            help="a fair-share policy (none: back to FIFO)",
        )
        queue_fields = ("priority", "environments", "state", "scheduling_policy")
        p.set_defaults(func=command(_put("queues", queue_fields, nested=("preemption",))))
        p = common_options(environments.add_parser(action, help=f"{action} a compute environment"))
        p.add_argument("name")
        p.add_argument("--max-vcpus", dest="max_vcpus", type=float, default=None)
        p.add_argument("--max-memory", dest="max_memory", type=int, default=None, help="bytes")
        p.add_argument(
            "--endpoint", default=None, help="local, unix:///path, tcp://HOST:PORT or ssh://USER@HOST"
        )
        p.add_argument("--state", choices=("ENABLED", "DISABLED"), default=None)
        p.add_argument(
            "--type",
            choices=("docker", "podman", "slurm"),
            default=None,
            help="docker (default), podman or slurm",
        )
        p.add_argument("--slurm-shared-dir", default=None, help="the same absolute path on every node")
        for flag in ("partition", "account", "qos"):
            p.add_argument(f"--slurm-{flag}", default=None, help=f"sbatch --{flag}")
        p.add_argument("--slurm-runtime", choices=("docker", "podman"), default=None, help="on the nodes")
        p.add_argument(
            "--slurm-rest-url",
            default=None,
            help="slurmrestd: unix:/path.sock or http://HOST:PORT ($SLURM_JWT)",
        )
        for flag in ("ca", "cert", "key"):
            p.add_argument(
                f"--tls-{flag}", default=None, help=f"for tcp:// with --tlsverify: the {flag} PEM file"
            )
        p.add_argument(
            "--insecure", action="store_const", const=True, default=None, help="allow plain tcp://"
        )
        fields: tuple[str, ...] = (
            "max_vcpus",
            "max_memory",
            "endpoint",
            "state",
            "type",
            "tls_ca",
            "tls_cert",
            "tls_key",
            "insecure",
            "ssh_identity",
            "ssh_known_hosts",
            "interruptible",
            "min_vcpus",
        )
        p.add_argument(
            "--interruptible",
            action="store_const",
            const=True,
            default=None,
            help="Spot-like: its capacity can be reclaimed at any time",
        )
        p.add_argument("--min-vcpus", dest="min_vcpus", type=float, default=None)
        p.add_argument("--ssh-identity", default=None, help="for ssh://: the private key file")
        p.add_argument("--ssh-known-hosts", default=None, help="for ssh://: the host keys to trust")
        p.add_argument(
            "--host",
            dest="hosts",
            action="append",
            type=_host_arg,
            default=None,
            help="one of several Docker hosts, in order: ENDPOINT,vcpus=N,memory=SIZE[,name=NAME] "
            "(repeat it; instead of --endpoint)",
        )
        p.add_argument(
            "--scale-in-cooldown",
            dest="scale_in_cooldown",
            default=None,
            help="with --host: a draining host leaves after this long idle (30s, 5m; default 60s)",
        )
        fields = (*fields, "hosts", "scale_in_cooldown")
        p.set_defaults(func=command(_put("environments", fields, nested=("slurm",))))
    p = common_options(queues.add_parser("list", help="queues by name"))
    p.set_defaults(func=command(cmd_queues_list))
    p = common_options(queues.add_parser("shares", help="a fair-share queue's shares and their usage"))
    p.add_argument("name")
    p.set_defaults(func=command(cmd_queue_shares))

    policies = _actions(sub, "policies", "fair-share scheduling policies: create, update, list, delete")
    for action in ("create", "update"):
        p = common_options(policies.add_parser(action, help=f"{action} a scheduling policy"))
        p.add_argument("name")
        p.add_argument(
            "--share",
            action="append",
            metavar="ID=WEIGHT",
            help="weightFactor (lower gets more); ID* a prefix",
        )
        p.add_argument(
            "--decay", type=float, default=None, metavar="SECONDS", help="shareDecaySeconds (0: now only)"
        )
        p.add_argument(
            "--reservation", type=int, default=None, metavar="PERCENT", help="computeReservation 0..99"
        )
        p.set_defaults(func=command(cmd_policies_put))
    p = common_options(policies.add_parser("list", help="policies, their weights and the queues using them"))
    p.set_defaults(func=command(cmd_policies_list))
    p = common_options(policies.add_parser("delete", help="delete a policy no queue uses"))
    p.add_argument("name")
    p.set_defaults(func=command(cmd_policies_delete))
    p = common_options(environments.add_parser("list", help="environments and their use"))
    p.set_defaults(func=command(cmd_environments_list))
    p = common_options(
        environments.add_parser(
            "reclaim", help="take an interruptible environment's capacity back (its jobs' attempts end)"
        )
    )
    p.add_argument("name")
    p.set_defaults(func=command(cmd_environments_reclaim))
